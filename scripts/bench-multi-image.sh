#!/usr/bin/env bash
# Several images per prompt (issue 22) on the GPU: time to first token and images/s of 1-, 2- and
# 4-image prompts against each other in one run, full-size GLM-4V-9B with random weights, through
# glm4v-run's path (tests/bench/bench_multi_image.c: scheduler, step driver, the vision tower on a
# prompt's images in one batch, chunked prefill, the first token drawn on the device).
#   source .devdeps/env.sh && scripts/bench-multi-image.sh [--tp N] [--dtype bf16|f16]
# Environment: BUILD_DIR (build-gpu), CUDA_ARCHS (90), JOBS (nproc), BENCH_ARGS (extra flags,
# e.g. --reps 9 --prefill-chunk 4096). BENCH_DEVICE=cpu BENCH_MODEL=<tiny checkpoint> runs it on
# the CPU backend as a smoke test (not a GPU figure). Prints a markdown table for docs/PERF.md.
set -euo pipefail
cd "$(dirname "$0")/.."
TP=1
DTYPE=bf16
while [ $# -gt 0 ]; do
    case "$1" in
    --tp) TP=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "bench-multi-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
B=${BUILD_DIR:-build-gpu}
DEVICE=${BENCH_DEVICE:-cuda}
MODEL=${BENCH_MODEL:-configs/glm-4v-9b}
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cuda=ON
[ "$DEVICE" = cuda ] || cuda=OFF
cmake -B "$B" -S . -DGLM4V_CUDA=$cuda -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
    -DCMAKE_BUILD_TYPE=Release >"$B.configure.log" 2>&1 || { tail -20 "$B.configure.log"; exit 1; }
cmake --build "$B" -j"${JOBS:-$(nproc)}" --target bench_multi_image >"$B.build.log" 2>&1 ||
    { grep -E "error" "$B.build.log" | head -20; exit 1; }
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)," \
    "tp $TP, $DEVICE, $DTYPE storage, $(date -u +%FT%TZ)"
dtype_args=()
[ "$DEVICE" = cuda ] && dtype_args=(--dtype "$DTYPE")
# shellcheck disable=SC2086
mpirun --bind-to none -np "$TP" "$B/bin/bench_multi_image" --model "$MODEL" --device "$DEVICE" \
    --tp "$TP" "${dtype_args[@]}" --images 1,2,4 ${BENCH_ARGS:-}
