/* Device helpers of the fp8 activations (ops.h "fp8 activations"): a row's E4M3 codes and scale
 * as glm_fp8_quantize_activation_row makes them (kernels/weight_format.h): scale amax / 448,
 * codes e4m3_satfinite(v * (448 / amax)); an all-zero row gets scale 1 and the codes of v * 0.
 * Used by the kernels that produce a GEMM input (norm.cu, elementwise.cu), so the quantization
 * costs no pass of its own. */
#ifndef GLM4V_CUDA_ACT_FP8_CUH
#define GLM4V_CUDA_ACT_FP8_CUH

#include <cuda_fp8.h>

#include "kernels/cuda/common.cuh"

__device__ __forceinline__ uint8_t act_e4m3(float v)
{
    return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

/* Max of v over the block (blockDim.x a multiple of 32); every thread gets it. Ends in a barrier,
 * so what the block's threads wrote to global memory before the call is visible after it. */
__device__ __forceinline__ float act_block_max(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    v = warp_max(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < (int)(blockDim.x / 32) ? part[lane] : 0.f;
        t = warp_max(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    float r = total;
    __syncthreads();
    return r;
}

/* The multiplier codes are made with, and the row's scale, from the row's amax. */
__device__ __forceinline__ float act_inv(float amax)
{
    return amax > 0.f ? GLM_FP8_MAX / amax : 0.f;
}
__device__ __forceinline__ float act_scale(float amax)
{
    return amax > 0.f ? amax / GLM_FP8_MAX : 1.f;
}

/* 8 codes as one 8-byte word (little-endian: element 0 in the lowest byte). */
__device__ __forceinline__ uint2 act_pack8(const float *v, float inv)
{
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        lo |= (uint32_t)act_e4m3(v[j] * inv) << (8 * j);
        hi |= (uint32_t)act_e4m3(v[4 + j] * inv) << (8 * j);
    }
    return make_uint2(lo, hi);
}

#endif
