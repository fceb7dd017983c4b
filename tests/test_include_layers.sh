#!/usr/bin/env bash
# The include arrows point down: common/ <- kernels/ <- worker/ <- coordinator/, client/ (each
# folder includes only folders to its left), and nothing outside kernels/ and worker/ includes a
# CUDA, cuBLAS, cuDNN or NCCL header. Prints every include that breaks this and fails.
# usage: test_include_layers.sh REPO_ROOT
set -u
cd "$1" || exit 2
bad=0
check() { # check FOLDER REGEX-OF-FORBIDDEN-INCLUDES WHY
    local hits
    hits=$(grep -rnE --include='*.c' --include='*.h' --include='*.cu' --include='*.cuh' \
        "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($2)" "$1" 2>/dev/null)
    if [ -n "$hits" ]; then
        echo "FAIL: $3:" >&2
        echo "$hits" >&2
        bad=1
    fi
}
check common 'kernels/|worker/|coordinator/|client/' "common/ includes a folder above it"
check kernels 'worker/|coordinator/|client/' "kernels/ includes a folder above it"
check worker 'coordinator/|client/' "worker/ includes a folder above it"
check coordinator 'client/|cuda|cublas|cudnn|nccl' "coordinator/ includes client/ or a GPU header"
check client 'worker/|kernels/cuda/|cuda|cublas|cudnn|nccl' "client/ includes worker/ or a GPU header"
[ $bad -eq 0 ] && echo "include layers: ok"
exit $bad
