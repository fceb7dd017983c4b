#!/usr/bin/env bash
# End-to-end serving benchmark on the GPU machine: full-size GLM-4V-9B with random weights, one
# replica `glm4v-serve --device cuda`, a private redis-server, and a stream of image + question
# jobs (64 generated tokens each) at increasing arrival rates, then at saturation. Prints images/s,
# generated tokens/s and time-to-first-token p50/p99 per rate, and the queue path's overhead: a
# lone job's total time through Redis against glm4v-run's vision + prefill + decode time for the
# same job.
# Every job carries an image no earlier job of the run sent (each rate gets its own set, the
# saturation run --saturation N of them), so each one runs the vision tower: the figure is the
# tower's and the engine's, not the vision cache's. --repeat-images K sends K images over and over
# instead (a busy service's cache hits, the old default of 16).
#   source .devdeps/env.sh && scripts/bench-serve.sh [--tp N] [--rates "0.5 1 2 4"] [--jobs N]
#       [--saturation N] [--repeat-images K]
# BENCH_WEIGHT_FLAGS="--weights fp8 --vision-weights fp8" serves (and runs the lone jobs) with
# quantized weights; BENCH_MAX_NEW sets the tokens a job generates (64).
set -euo pipefail
cd "$(dirname "$0")/.."
tp=1 rates="0.5 1 2 4" jobs=64 saturation=128 repeat=0 max_new=${BENCH_MAX_NEW:-64}
while [ $# -gt 0 ]; do
    case $1 in
    --tp) tp=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --saturation) saturation=$2; shift 2 ;;
    --repeat-images) repeat=$2; shift 2 ;;
    *) echo "bench-serve.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
work=$(mktemp -d)
source scripts/bench-common.sh
bench_build glm4v-serve glm4v-submit glm4v-run
bench_model_dir "$work/model"
bench_images "$work/images" 4 # the lone jobs' (glm4v-run and the queue path)
# N images no other call made: random pixels (bench_images draws from the same C rand() sequence
# in every process, so two of its sets hold the same pictures and would hit the vision cache)
fresh_images() {
    python3 - "$1" "$2" <<'PY'
import os, sys
from PIL import Image
os.makedirs(sys.argv[1], exist_ok=True)
for i in range(int(sys.argv[2])):
    Image.frombytes("RGB", (800, 600), os.urandom(800 * 600 * 3)).save(
        f"{sys.argv[1]}/img{i:04d}.jpg", quality=90)
PY
}
# glm4v-run's own timings for lone jobs (before the server takes the GPU's memory)
q="Describe the picture in detail."
for k in 1 2 3; do
    # shellcheck disable=SC2046 # bench_weights: flags split on purpose
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

# arrival-rate sweep, then saturation (rate 0: every job at once), each on images of its own
[ "$repeat" -gt 0 ] && bench_images "$work/repeat" "$repeat"
k=0
for r in $rates 0; do
    n=$jobs
    [ "$r" = 0 ] && n=$saturation
    dir="$work/repeat"
    if [ "$repeat" -eq 0 ]; then
        dir="$work/set$k"
        fresh_images "$dir" "$n"
    fi
    k=$((k + 1))
    echo "serve images: $( [ "$repeat" -gt 0 ] && echo "$repeat repeated" || echo "$n distinct")"
    python3 scripts/bench_serve_load.py "$B/bin/glm4v-submit" "$url" bench "$r" "$n" \
        "$dir" "$max_new" "http://127.0.0.1:$mport/metrics"
done
