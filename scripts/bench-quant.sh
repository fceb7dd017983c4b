#!/usr/bin/env bash
# Quantized weights on one GPU (issue 15), in one run: correctness first, then figures.
#   1. sim_quant_mma (the tensor-core kernel's source run on the host against the CPU semantics);
#      test_quant_cuda: every quantized path against the CPU semantics; --bench: the decode
#      kernels' weight-read rate against the copy rate per GLM-4V shape and format (TP 1 / 2 / 4
#      slices), batched decode (M 2..256) against bf16, prefill TFLOP/s (QUANT_BENCH=0 skips it);
#   2. the whole model with fp8 / int8 / int4 weights on the golden checkpoints (ctest gpu_quant_*);
#   3. bench_model on configs/glm-4v-9b (random weights) for each format: decode tok/s at batch
#      1 / 32 / 128 beside the floor for that format's bytes, vision and image prefill;
#   4. the memory runs: --gpu-memory 22 serving 16 sequences of 4 K with fp8 and int8, and
#      --gpu-memory 11 serving 4 sequences of 4 K with int4 (peak device memory measured);
#   5. time permitting (WIDE=1, under WIDE_BEFORE_S seconds so far), each format's accuracy on the
#      random "wide" checkpoint against fp32 (reported, not bounded).
# On the GPU machine, from a copy of the tree:
#   source .devdeps/env.sh && scripts/bench-quant.sh [TESTDATA_DIR] [OUT_DIR]
# FORMATS (default "bf16 fp8 int8 int4"), DECODE (default 1,32,128), STEPS, MEMORY_RUNS (empty:
# none), GPU_QUANT=0 (skip the model tests) and WIDE=0 narrow the run.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
testdata=$(cd "${1:-../shared/testdata}" && pwd)
out=${2:-bench-quant-out}
mkdir -p "$out"
B=${BUILD_DIR:-build-dev}
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ! pkg-config --exists gnutls 2>/dev/null; then # the packed libmicrohttpd.pc names it
    mkdir -p "$B/pkgconfig-stubs"
    printf 'Name: gnutls\nDescription: stub\nVersion: 3.8.0\n' >"$B/pkgconfig-stubs/gnutls.pc"
    export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}:$PWD/$B/pkgconfig-stubs"
fi
t0=$(date +%s)
cmake -B "$B" -S . -DGLM4V_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    -DGLM4V_TESTDATA="$testdata" >"$out/configure.log" 2>&1 || { tail -20 "$out/configure.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" --target test_quant_cuda sim_quant_mma test_quant_model bench_model \
    >"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -20; exit 1; }
echo "built in $(($(date +%s) - t0)) s"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100

status=0
# run LOG CMD...: the command's output into LOG (a timeout or failure marks the run failed)
run() {
    local log=$1
    shift
    echo "== $(date +%T) $*"
    timeout "${STEP_TIMEOUT:-300}" "$@" >"$log" 2>&1 || { status=1; echo "FAILED: $*"; }
}
run "$out/sim_quant_mma.log" "$B/bin/sim_quant_mma"
tail -1 "$out/sim_quant_mma.log"
bench_arg=--bench
[ "${QUANT_BENCH:-1}" = 0 ] && bench_arg=
run "$out/test_quant_cuda.log" "$B/bin/test_quant_cuda" ${bench_arg:+"$bench_arg"}
grep -vE "^(GLM4V_[A-Z_]+=[0-9]+: )?linear |^quantize |^graph replay" "$out/test_quant_cuda.log" | head -90
grep -E "CHECK" "$out/test_quant_cuda.log" | head -20
if [ "${GPU_QUANT:-1}" = 1 ]; then
    run "$out/gpu_quant.log" ctest --test-dir "$B" -R 'gpu_quant_' --output-on-failure
    grep -E "accuracy:|same-weights|CHECK|tests passed|Failed" "$out/gpu_quant.log" | cut -c1-260
fi
for fmt in ${FORMATS:-bf16 fp8 int8 int4}; do
    run "$out/bench_$fmt.log" "$B/bin/bench_model" --model configs/glm-4v-9b --device cuda \
        --weights "$fmt" --vision 1 --decode "${DECODE:-1,32,128}" --text-prefill 0 \
        --decode-steps "${STEPS:-16}" --warmup 1 --reps 3
    grep -E "^bench |rror" "$out/bench_$fmt.log"
done
for spec in ${MEMORY_RUNS-fp8:22:16 int8:22:16 int4:11:4}; do # format:GiB:sequences
    IFS=: read -r fmt gib seqs <<<"$spec"
    run "$out/memory_$fmt.log" "$B/bin/bench_model" --model configs/glm-4v-9b --device cuda \
        --weights "$fmt" --mode memory --gpu-memory "$gib" --mem-seqs "$seqs" --mem-ctx 4096
    tail -12 "$out/memory_$fmt.log"
done
# accuracy on the random "wide" checkpoint (real widths, 2 + 2 layers): against fp32 on the CPU
if [ "${WIDE:-1}" = 1 ] && [ $(($(date +%s) - t0)) -lt "${WIDE_BEFORE_S:-330}" ]; then
    wide=${TMPDIR:-/tmp}/glm4v-wide
    python3 scripts/make_wide_checkpoint.py configs/glm-4v-wide-test "$wide" >"$out/wide.log" 2>&1
    for fmt in fp8 int8 int4; do
        run "$out/wide_$fmt.log" "$B/bin/test_quant_model" "$wide" --device cuda --weights "$fmt" \
            --bound 1 --top1 0 --same-bound 0
        grep -E "accuracy:|CHECK" "$out/wide_$fmt.log" | cut -c1-300
    done
fi
echo "total $(($(date +%s) - t0)) s, status $status"
exit $status
