#!/usr/bin/env bash
# Builds and runs every test: the full ctest suite (unit, golden, tensor-parallel on CPU ranks,
# end to end with redis-server and mpirun; the golden and loader tests also run under
# valgrind (registered in ctest as memcheck_*), then short fuzzing runs with ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
jobs=$(nproc 2>/dev/null || echo 2)

bash scripts/build.sh
# GPU tests (label gpu) need a GPU: scripts/gpu-test.sh and scripts/gpu-model-test.sh run them
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600 -LE gpu)


# short fuzzing runs (longer ones: scripts/fuzz.sh 600)
bash scripts/fuzz.sh "${GLM4V_FUZZ_SECONDS:-30}" image tokenizer
bash scripts/fuzz.sh "${GLM4V_FUZZ_SECONDS_SMALL:-10}" safetensors config job
