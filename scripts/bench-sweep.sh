#!/usr/bin/env bash
# Sweep benchmark on the GPU machine (issue 7): full-size GLM-4V-9B with random weights, one
# replica, a private redis-server, and a sweep of IMAGES x QUESTIONS image/question pairs (default
# 500 x 4 = 2000) of TOKENS generated tokens each (default 32, EOS ignored), run by glm4v-sweep:
#   cache    both caches on, the server's defaults: the vision cache (each image through the
#            vision tower once) and the prefix cache (a question about an image already seen
#            reuses the KV of the prompt up to its question)
#   vision   the vision cache only (--no-prefix-cache)
#   nocache  neither (--no-vision-reuse --no-prefix-cache): every pair prefilled in full
#   loop     a plain shell loop of glm4v-submit calls, one pair at a time (LOOP pairs)
#   ttft     time to first token of a single image question on an idle server, the image new
#            (uncached) and then seen before (another question about it: prefix cache hit);
#            TTFT_N images, median of the server's prefill_ms (admission to first token,
#            vision included) and of the client's wall time for a 1-token answer
# Prints one "sweep mode=..." (or "ttft ...") line per mode with pairs/s and tokens/s, and the
# cache/nocache and cache/vision ratios when those modes ran; modes can be run in separate calls
# (each line stands alone).
#   source .devdeps/env.sh && scripts/bench-sweep.sh [--tp N] [--modes "cache vision nocache loop ttft"]
#       [--images N] [--questions N] [--tokens N] [--loop N] [--window N] [--ttft-images N]
#       [--max-batch N]   (the replica's --max-batch in every mode, default 64; the vision cache
#                          gets room for every sequence that may run plus a window's images)
# On the CPU with the tiny model (a smoke run; figures are not GPU figures):
#   BENCH_DEVICE=cpu BENCH_MODEL=../shared/testdata/glm4v-tiny-b BUILD_DIR=build-cpu \
#       scripts/bench-sweep.sh --images 20 --modes "cache nocache ttft"
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 modes="cache vision nocache loop ttft" n_images=500 n_questions=4 tokens=32 loop=100 window=256
ttft_images=8 max_batch=64
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --images) n_images=$2; shift 2 ;;
    --questions) n_questions=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    --loop) loop=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --ttft-images) ttft_images=$2; shift 2 ;;
    --max-batch) max_batch=$2; shift 2 ;;
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
    bench_serve_start "sw-$mode" --max-batch "$max_batch" --vision-cache $((max_batch + 96)) "$@"
    local t0 t1
    # a mode run twice must not resume the first run's output nor find its Results in Redis
    rm -f "$work/answers-$mode.jsonl"
    t0=$(date +%s.%N)
    "$B/bin/glm4v-sweep" --in "$work/questions.jsonl" --out "$work/answers-$mode.jsonl" \
        --redis "$url" --prefix "sw-$mode" --job-prefix "$mode-$(date +%s%N)-" \
        --window "$window" --max-new-tokens "$tokens" \
        --ignore-eos --progress-interval 30 2>"$work/sweep-$mode.log" || true
    t1=$(date +%s.%N)
    grep -A8 "summary" "$work/sweep-$mode.log" || tail -5 "$work/sweep-$mode.log"
    "$B/bin/glm4v-submit" --redis "$url" --prefix "sw-$mode" --status | grep -i -E "cache|server" || true
    python3 - "$work/answers-$mode.jsonl" "$t0" "$t1" "$mode" "$pairs" "$work/rates" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = [r for r in rows if not r.get("error")]
dt = float(sys.argv[3]) - float(sys.argv[2])
toks = sum(len(r["token_ids"]) for r in ok)
print(f"sweep mode={sys.argv[4]} pairs={sys.argv[5]} answered={len(ok)} errors={len(rows) - len(ok)} "
      f"wall_s={dt:.1f} pairs_per_s={len(ok) / dt:.2f} tokens_per_s={toks / dt:.0f}")
with open(sys.argv[6], "a") as f:
    f.write(f"{sys.argv[4]} {len(ok) / dt}\n")
PY
    bench_serve_stop
    # where the server's loop spent the run (model steps by kind, host work around them)
    grep -o "loop time.*" "$work/serve-sw-$mode.log" | sed "s/^/server mode=$mode /" || true
}

# Time to first token, image new vs image seen: each of ttft_images images gets a first question
# (nothing cached) and then another (its prompt up to the question is in the prefix cache), one
# job at a time on an idle server, 1 token each.
ttft_mode() {
    bench_serve_start sw-ttft --max-batch "$max_batch" --vision-cache $((max_batch + 96))
    local i q kind t0 t1
    : >"$work/ttft.tsv"
    for i in $(seq 0 $((ttft_images - 1))); do
        for q in 0 1; do
            [ "$q" = 0 ] && kind=new || kind=seen
            t0=$(date +%s.%N)
            "$B/bin/glm4v-submit" --redis "$url" --prefix sw-ttft --id "ttft-$i-$q" \
                --image "$work/images/img$(printf %04d "$i").jpg" \
                --prompt "Question $q about this picture: what do you see?" --max-new-tokens 1 \
                --ignore-eos --temperature 0 --json >"$work/ttft-$i-$q.json"
            t1=$(date +%s.%N)
            printf '%s\t%s\t%s\t%s\n' "$kind" "$work/ttft-$i-$q.json" "$t0" "$t1" >>"$work/ttft.tsv"
        done
    done
    "$B/bin/glm4v-submit" --redis "$url" --prefix sw-ttft --status | grep -i -E "prefix|cache" || true
    python3 - "$work/ttft.tsv" <<'PY'
import json, statistics, sys
by = {"new": [], "seen": []}
for line in open(sys.argv[1]):
    kind, path, t0, t1 = line.rstrip("\n").split("\t")
    r = json.load(open(path))
    t = r.get("timings", {})
    by[kind].append((t.get("prefill_ms", float("nan")), (float(t1) - float(t0)) * 1e3))
for kind, v in by.items():
    print(f"ttft image={kind} n={len(v)} prefill_ms_median={statistics.median(x[0] for x in v):.1f} "
          f"client_ms_median={statistics.median(x[1] for x in v):.1f}")
PY
    bench_serve_stop
}

for m in $modes; do
    case $m in
    cache) sweep_mode cache ;;
    vision) sweep_mode vision --no-prefix-cache ;;
    nocache) sweep_mode nocache --no-vision-reuse --no-prefix-cache ;;
    ttft) ttft_mode ;;
    loop)
        # what a user without glm4v-sweep writes: one glm4v-submit per pair, waiting for each
        bench_serve_start sw-loop --max-batch "$max_batch" --vision-cache $((max_batch + 96))
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

# pairs/s ratios of the sweep modes that ran in this call
if [ -s "$work/rates" ]; then
    python3 - "$work/rates" <<'PY'
import sys
rate = dict(l.split() for l in open(sys.argv[1]))
for a, b in (("cache", "nocache"), ("cache", "vision"), ("vision", "nocache")):
    if a in rate and b in rate and float(rate[b]) > 0:
        print(f"sweep ratio {a}/{b} pairs_per_s={float(rate[a]) / float(rate[b]):.2f}x")
PY
fi
