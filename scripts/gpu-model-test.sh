#!/usr/bin/env bash
# Model-level GPU tests: the whole GLM-4V forward on CUDA (bf16 and fp16 storage, DTYPES) against
# the CPU backend (fp32),
# on both golden checkpoints and on a random "wide" checkpoint (real widths, 2 + 2 layers, made by
# scripts/make_wide_checkpoint.py), at TP 1 and, with 2 or more GPUs, TP 2 over NCCL (and TP 4
# with 4 GPUs), after the communicator test (test_comm) at the same TP sizes. On the GPU machine,
# from a copy of the tree:
#   source .devdeps/env.sh && scripts/gpu-model-test.sh [TESTDATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
testdata=$(cd "${1:-../shared/testdata}" && pwd)
B=${BUILD_DIR:-build-gpu}
export NCCL_NVLS_ENABLE=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ! pkg-config --exists gnutls 2>/dev/null; then # the packed libmicrohttpd.pc names it
    mkdir -p "$B/pkgconfig-stubs"
    printf 'Name: gnutls\nDescription: stub\nVersion: 3.8.0\n' >"$B/pkgconfig-stubs/gnutls.pc"
    export PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}:$PWD/$B/pkgconfig-stubs"
fi
cmake -B "$B" -S . -DGLM4V_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" \
    -DGLM4V_TESTDATA="$testdata" >"$B.configure.log" 2>&1 || { tail -20 "$B.configure.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" --target test_model_backend test_comm test_comm_watchdog glm4v-run \
    test_quant_model test_quant_cuda \
    >"$B.build.log" 2>&1 ||
    { grep -E "error" "$B.build.log" | head -20; exit 1; }
ngpu=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
wide=${TMPDIR:-/tmp}/glm4v-wide
python3 scripts/make_wide_checkpoint.py configs/glm-4v-wide-test "$wide"

status=0
run() { echo "== $(date +%T) $*"; timeout "${STEP_TIMEOUT:-240}" "$@" || status=1; }
# the communicators: NCCL and its p2p all-reduce (worker/comm_p2p.c), with a timing table of
# both; GLM4V_P2P_ALLREDUCE=0 turns the p2p path off for the model runs below
for np in 2 4; do
    [ "$ngpu" -ge $np ] && run mpirun --bind-to none -np $np "$B/bin/test_comm" --device cuda
done
# the step watchdog on NCCL: deadlines, the silent peer named, keepalives (worker/comm_watchdog.c)
[ "$ngpu" -ge 2 ] && run mpirun --bind-to none -np 2 "$B/bin/test_comm_watchdog" --device cuda
for dtype in ${DTYPES:-bf16 f16}; do
    for m in glm4v-tiny-b "$wide" glm4v-tiny-a; do
        dir=$m
        [ -d "$dir" ] || dir=$testdata/$m
        args=(--dtype "$dtype")
        # bf16 storage on the random wide checkpoint: its rounding floor is ~1.2e-2 on any bf16
        # engine (docs/PERF.md, the emulation's error budget); fp16 storage is held to 1e-2
        [ "$dir" = "$wide" ] && [ "$dtype" = bf16 ] && args+=(--logits-bound 1.5e-2)
        run "$B/bin/test_model_backend" "$dir" "${args[@]}"
        for np in 2 4; do
            [ "$ngpu" -ge $np ] &&
                run mpirun --bind-to none -np $np "$B/bin/test_model_backend" "$dir" "${args[@]}"
        done
    done
done
# quantized weights (issue 15): every quantized path against the CPU semantics, then the whole
# model with fp8 / int8 / int4 weights against the CPU model of the same weights and against fp32
# (bounds in tests/worker/quant_tests.cmake and tests/cuda/CMakeLists.txt)
run ctest --test-dir "$B" -R 'test_quant_cuda|gpu_quant_' --output-on-failure
# glm4v-run on the GPU answers the golden image case exactly as on the CPU (greedy)
ids=$(python3 -c "import json; d=json.load(open('$testdata/glm4v-tiny-b/golden.json')); print(','.join(map(str,[c for c in d['cases'] if c['name']=='image'][0]['input_ids'])))")
for dtype in ${DTYPES:-bf16 f16}; do
    run "$B/bin/glm4v-run" --device cuda --dtype "$dtype" --model "$testdata/glm4v-tiny-b" \
        --input-ids "$ids" --pixels "$testdata/glm4v-tiny-b/golden.safetensors" \
        --max-new-tokens 12 --ignore-eos --json
done
# several images (issue 22): the golden two-image conversation, rebuilt from its messages, on the
# GPU beside the CPU (prints both; compare the ids, the CPU's are the golden greedy ids)
msgs=${TMPDIR:-/tmp}/glm4v-two-images.json
python3 -c "import json; d=json.load(open('$testdata/glm4v-tiny-b/golden-multi-image.json')); json.dump({'messages': [c for c in d['cases'] if c['name']=='two_images'][0]['messages']}, open('$msgs', 'w'))"
for device in cpu cuda; do
    run "$B/bin/glm4v-run" --device "$device" --model "$testdata/glm4v-tiny-b" --messages "$msgs" \
        --pixels "$testdata/glm4v-tiny-b/golden-multi-image.safetensors:two_images.pixel_values" \
        --max-new-tokens 12 --ignore-eos --json
done
exit $status
