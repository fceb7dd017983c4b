#!/usr/bin/env bash
# End-to-end serving benchmark on the GPU machine: full-size GLM-4V-9B with random weights, one
# replica `glm4v-serve --device cuda`, a private redis-server, and a stream of image + question
# jobs (64 generated tokens each) at increasing arrival rates, then at saturation. Prints images/s,
# generated tokens/s and time-to-first-token p50/p99 per rate, and the queue path's overhead: a
# lone job's total time through Redis against glm4v-run's vision + prefill + decode time for the
# same job.
#   source .devdeps/env.sh && scripts/bench-serve.sh [--tp N] [--rates "0.5 1 2 4"] [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 rates="0.5 1 2 4" jobs=64 max_new=${BENCH_MAX_NEW:-64}
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    *) echo "bench-serve.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
work=$(mktemp -d)
source scripts/bench-common.sh
bench_build glm4v-serve glm4v-submit glm4v-run
bench_model_dir "$work/model"
bench_images "$work/images" 16
# glm4v-run's own timings for lone jobs (before the server takes the GPU's memory)
q="Describe the picture in detail."
for k in 1 2 3; do
    # shellcheck disable=SC2046 # bench_weights is empty or two words
    "$B/bin/glm4v-run" --device "$device" --model "$work/model" $(bench_weights) \
        --image "$work/images/img000$k.jpg" --prompt "$q" --max-new-tokens "$max_new" --ignore-eos \
        --json 2>"$work/run$k.err" >"$work/run$k.json" || { tail -5 "$work/run$k.err"; exit 1; }
done
bench_redis_start
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# one vision-cache slot per sequence that may run (a slot also holds a running image job)
bench_serve_start bench --max-batch 64 --vision-cache 80 --metrics-port "$mport"
[ "$device" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1

# the queue path's latency overhead on lone jobs (each a new image: vision runs in both)
"$B/bin/glm4v-submit" --redis "$url" --prefix bench --json --ignore-eos --temperature 0 \
    --max-new-tokens "$max_new" --image "$work/images/img0000.jpg" --prompt "$q" >/dev/null # warm-up
for k in 1 2 3; do
    "$B/bin/glm4v-submit" --redis "$url" --prefix bench --json --ignore-eos --temperature 0 \
        --max-new-tokens "$max_new" --image "$work/images/img000$k.jpg" --prompt "$q" \
        >"$work/lone$k.json"
done
python3 - "$work" <<'PY'
import json, sys, statistics
w = sys.argv[1]
served = [json.load(open(f"{w}/lone{k}.json"))["timings"]["total_ms"] for k in (1, 2, 3)]
runs = [json.load(open(f"{w}/run{k}.json"))["timings_ms"] for k in (1, 2, 3)]
engine = statistics.median(r["vision"] + r["prefill"] + r["decode"] for r in runs)
s = statistics.median(served)
print(f"serve lone_job_total_ms={s:.1f} glm4v_run_engine_ms={engine:.1f} overhead_pct={100 * (s - engine) / engine:.1f}")
PY

# arrival-rate sweep, then saturation (rate 0: every job at once); a fresh image set per rate
# would defeat the cache less than real traffic does, so the 16 images repeat as in a busy service
for r in $rates 0; do
    python3 scripts/bench_serve_load.py "$B/bin/glm4v-submit" "$url" bench "$r" "$jobs" \
        "$work/images" "$max_new" "http://127.0.0.1:$mport/metrics"
done
