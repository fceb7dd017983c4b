#!/usr/bin/env bash
# Builds and runs every test: the full ctest suite (unit, golden, tensor-parallel on CPU ranks,
# end to end with redis-server and mpirun), then the golden and loader tests again under
# AddressSanitizer + LeakSanitizer, then short fuzzing runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
jobs=$(nproc 2>/dev/null || echo 2)

bash scripts/build.sh
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)

# memory: golden + loader tests under ASan/LSan (CPU only, no CUDA in this build)
cmake -B build-asan -S . -DGLM4V_CUDA=OFF -DGLM4V_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs" --target test_golden test_safetensors test_checkpoint \
    test_config test_kv_cache
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure \
    -R '^(golden_tiny_|unit_kv_cache|loader_)')

bash scripts/fuzz.sh "${GLM4V_FUZZ_SECONDS:-30}"
