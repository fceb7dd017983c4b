#!/usr/bin/env bash
# Sweep benchmark on the GPU machine (issue 7): full-size GLM-4V-9B with random weights, one
# replica, a private redis-server, and a sweep of IMAGES x QUESTIONS image/question pairs (default
# 500 x 4 = 2000) of TOKENS generated tokens each (default 32, EOS ignored), run by glm4v-sweep:
#   cache    the vision cache on (each image through the vision tower once)
#   nocache  the same server with --no-vision-reuse (every pair through the vision tower)
#   loop     a plain shell loop of glm4v-submit calls, one pair at a time (LOOP pairs)
# Prints one "sweep mode=..." line per mode with pairs/s and tokens/s; modes can be run in
# separate calls (each line stands alone).
#   source .devdeps/env.sh && scripts/bench-sweep.sh [--tp N] [--modes "cache nocache loop"]
#       [--images N] [--questions N] [--tokens N] [--loop N] [--window N]
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 modes="cache nocache loop" n_images=500 n_questions=4 tokens=32 loop=100 window=256
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --images) n_images=$2; shift 2 ;;
    --questions) n_questions=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --loop) loop=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    *) echo "bench-sweep.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
work=$(mktemp -d)
source scripts/bench-common.sh
bench_build glm4v-serve glm4v-submit glm4v-sweep
bench_model_dir "$work/model"
bench_images "$work/images" "$n_images"
python3 - "$work/questions.jsonl" "$n_images" "$n_questions" <<'PY'
import json, sys
qs = ["What is in the image?", "Describe the colors.", "Is there any text?", "Count the objects.",
      "What is the mood of the picture?", "Where was this taken?"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        for k in range(int(sys.argv[3])):
            f.write(json.dumps({"id": f"img{i:04d}-q{k}", "image": f"images/img{i:04d}.jpg",
                                "prompt": qs[k % len(qs)]}) + "\n")
PY
pairs=$((n_images * n_questions))
bench_redis_start
[ "$device" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1

# Runs the sweep against a server started with the given extra flags; prints its result line.
sweep_mode() {
    local mode=$1
    shift
    # one vision-cache slot per sequence that may run, plus room for the images of a window
    bench_serve_start "sw-$mode" --max-batch 64 --vision-cache 160 "$@"
    local t0 t1
    t0=$(date +%s.%N)
    "$B/bin/glm4v-sweep" --in "$work/questions.jsonl" --out "$work/answers-$mode.jsonl" \
        --redis "$url" --prefix "sw-$mode" --window "$window" --max-new-tokens "$tokens" \
        --ignore-eos --progress-interval 30 2>"$work/sweep-$mode.log" || true
    t1=$(date +%s.%N)
    grep -A8 "summary" "$work/sweep-$mode.log" || tail -5 "$work/sweep-$mode.log"
    "$B/bin/glm4v-submit" --redis "$url" --prefix "sw-$mode" --status | grep -i -E "cache|server" || true
    python3 - "$work/answers-$mode.jsonl" "$t0" "$t1" "$mode" "$pairs" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = [r for r in rows if not r.get("error")]
dt = float(sys.argv[3]) - float(sys.argv[2])
toks = sum(len(r["token_ids"]) for r in ok)
print(f"sweep mode={sys.argv[4]} pairs={sys.argv[5]} answered={len(ok)} errors={len(rows) - len(ok)} "
      f"wall_s={dt:.1f} pairs_per_s={len(ok) / dt:.2f} tokens_per_s={toks / dt:.0f}")
PY
    bench_serve_stop
}

for m in $modes; do
    case $m in
    cache) sweep_mode cache ;;
    nocache) sweep_mode nocache --no-vision-reuse ;;
    loop)
        # what a user without glm4v-sweep writes: one glm4v-submit per pair, waiting for each
        bench_serve_start sw-loop --max-batch 64 --vision-cache 160
        t0=$(date +%s.%N)
        head -n "$loop" "$work/questions.jsonl" | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(r["id"], r["image"], r["prompt"], sep="\t")' | while IFS=$'\t' read -r id img prompt; do
            "$B/bin/glm4v-submit" --redis "$url" --prefix sw-loop --id "$id" --image "$work/$img" \
                --prompt "$prompt" --max-new-tokens "$tokens" --ignore-eos --temperature 0 \
                --json >>"$work/loop.jsonl"
        done
        t1=$(date +%s.%N)
        python3 - "$work/loop.jsonl" "$t0" "$t1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
dt = float(sys.argv[3]) - float(sys.argv[2])
toks = sum(len(r["token_ids"]) for r in rows if not r.get("error"))
print(f"sweep mode=loop pairs={len(rows)} wall_s={dt:.1f} pairs_per_s={len(rows) / dt:.2f} tokens_per_s={toks / dt:.0f}")
PY
        bench_serve_stop
        ;;
    *) echo "bench-sweep.sh: unknown mode $m" >&2; exit 2 ;;
    esac
done
