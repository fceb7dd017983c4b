#!/usr/bin/env bash
# Configures and builds into build/ (CUDA on when nvcc is found; pass -DGLM4V_CUDA=OFF to skip).
# Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -B build -S . -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build build -j"$jobs"
