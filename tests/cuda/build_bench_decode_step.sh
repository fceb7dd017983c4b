#!/bin/bash
# Builds tests/cuda/bench_decode_step by hand (not in ctest): the worker sources it needs (no MPI,
# no NCCL; plan validation stubbed below) plus the kernel libraries of an existing CUDA build.
#   tests/cuda/build_bench_decode_step.sh [build dir]   -> [build dir]/bench_ds/bench_decode_step
set -e
B=${1:-build-gpu}; O=$B/bench_ds; mkdir -p $O
CU=${CUDA_HOME:-/usr/local/cuda}
cat > $O/plan_stub.c <<'EOC'
#include "worker/step_plan.h"
glm_status glm_step_plan_validate(const glm_step_plan *p, int a, int b, int c, int d, int e, int f,
                                  int g, glm_error *err)
{
    (void)p, (void)a, (void)b, (void)c, (void)d, (void)e, (void)f, (void)g, (void)err;
    return GLM_OK;
}
EOC
for f in worker/config.c worker/safetensors.c worker/checkpoint.c worker/shard_plan.c worker/weights.c worker/kv_cache.c worker/vision.c worker/decoder.c worker/model.c worker/comm_local.c tests/cuda/bench_decode_step.c $O/plan_stub.c; do
  cc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Werror -I. -I$CU/include $(pkg-config --cflags libcjson) -c $f -o $O/$(basename $f .c).o &
done; wait
cc -o $O/bench_decode_step $O/*.o $B/kernels/libglm4v_kernels.a $B/kernels/cuda/libglm4v_kernels_cuda.a $B/kernels/cpu/libglm4v_kernels_cpu.a $B/common/libglm4v_common.a $(pkg-config --libs libcjson) -L$CU/lib64 -lcudart -lcublasLt -lstdc++ -lm -fopenmp -lpthread
