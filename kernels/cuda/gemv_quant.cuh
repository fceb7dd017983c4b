/* Decode-sized products with quantized weights (gemm_quant.cu includes this): y[M, N] for M <= 8
 * rows, reading each weight row's packed codes once in 16-byte streaming loads.
 *
 * Layout, as gemv.cu: one warp per output column n; lane l takes 16-byte chunks l, l + 32, ... of
 * the row's codes (16 fp8 / int8 codes, or 32 int4 codes), GQ_UNROLL loads in flight, and the
 * matching k of every x row (x is small and stays in L1/L2); the warp reduces at the end. The
 * codes become floats without conversion instructions where they are integers: a code q ORed into
 * the significand of 2^23 is the float 2^23 + q, so one subtraction gives q - zero exactly. Sums
 * follow weight_format.h: fp8 sums e4m3(x codes) * e4m3(w codes) and scales by sx[m] * sw[n];
 * int8 sums x * q and scales by s[n]; int4 sums x * (q - z) per 32 codes and scales each by its
 * group's s (group sizes are multiples of 32, so a chunk never straddles two groups). */
#ifndef GLM4V_CUDA_GEMV_QUANT_CUH
#define GLM4V_CUDA_GEMV_QUANT_CUH

#include <cuda_fp8.h>

#include "kernels/cuda/common.cuh"

#define GEMV_QUANT_MAX_ROWS 8
#define GQ_WARPS 8
#define GQ_UNROLL 4

__device__ __forceinline__ uint8_t fp8_encode(float v)
{
    return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

__device__ __forceinline__ float fp8_decode(uint8_t c)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3);
    return __half2float(__half(h));
}

__device__ __forceinline__ float load_f32(float v)
{
    return v;
}
__device__ __forceinline__ float load_f32(__nv_bfloat16 v)
{
    return to_f32(v);
}

/* The stored value of weight [r, c] of an int8 / int4 / fp8 weight of k columns
 * (glm_dequantize_rows). */
__device__ __forceinline__ float weight_value(const uint8_t *codes, const float *scales,
                                              const uint8_t *zeros, int fmt, int group, int64_t k,
                                              int64_t r, int64_t c)
{
    if (fmt == GLM_WEIGHT_INT4) {
        int64_t groups = (k + group - 1) / group, g = r * groups + c / group;
        int q = (codes[r * ((k + 1) / 2) + c / 2] >> (4 * (c & 1))) & 0xf;
        return (float)(q - (int)zeros[g]) * scales[g];
    }
    if (fmt == GLM_WEIGHT_INT8) return (float)(int8_t)codes[r * k + c] * scales[r];
    return fp8_decode(codes[r * k + c]) * scales[r];
}

/* 2^23 + q for the low bits q of a word: the float whose value minus 2^23 is q */
__device__ __forceinline__ float magic(uint32_t q)
{
    return __uint_as_float(0x4B000000u | q);
}

/* acc[m] += this chunk's part of row m's sum; kbase: the chunk's first k */
template <typename T, int FMT, int M>
__device__ __forceinline__ void gq_chunk(float *acc, const uint4 &wv, const T *x, const uint8_t *xq,
                                         int64_t k, int64_t kbase, const float *gscale,
                                         const uint8_t *gzero, int group, int64_t groups)
{
    const uint32_t w4[4] = {wv.x, wv.y, wv.z, wv.w};
    if (FMT == GLM_WEIGHT_FP8) {
        float wf[16];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
                (__nv_fp8x2_storage_t)(w4[i / 2] >> (16 * (i & 1))), __NV_E4M3);
            float2 f = __half22float2(__half2(h));
            wf[2 * i] = f.x;
            wf[2 * i + 1] = f.y;
        }
#pragma unroll
        for (int m = 0; m < M; m++) {
            uint4 xv = *(const uint4 *)(xq + (size_t)m * k + kbase);
            const uint32_t x4[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
            for (int i = 0; i < 8; i++) {
                __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
                    (__nv_fp8x2_storage_t)(x4[i / 2] >> (16 * (i & 1))), __NV_E4M3);
                float2 f = __half22float2(__half2(h));
                acc[m] = fmaf(wf[2 * i], f.x, acc[m]);
                acc[m] = fmaf(wf[2 * i + 1], f.y, acc[m]);
            }
        }
    } else if (FMT == GLM_WEIGHT_INT8) {
        float wf[16];
#pragma unroll
        for (int i = 0; i < 16; i++) /* (q + 128) via the sign flip, then minus 2^23 + 128 */
            wf[i] = magic(((w4[i / 4] ^ 0x80808080u) >> (8 * (i & 3))) & 0xffu) - 8388736.f;
#pragma unroll
        for (int m = 0; m < M; m++) {
            const half8<T> *xr = (const half8<T> *)(x + (size_t)m * k + kbase);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float xf[8];
                half8_to_f32(xr[h], xf);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[m] = fmaf(wf[8 * h + j], xf[j], acc[m]);
            }
        }
    } else {
        int64_t g = kbase / group;
        float zf = 8388608.f + (float)gzero[g], s = gscale[g];
        float wf[32];
#pragma unroll
        for (int i = 0; i < 32; i++)
            wf[i] = magic((w4[i / 8] >> (4 * (i & 7))) & 0xfu) - zf;
#pragma unroll
        for (int m = 0; m < M; m++) {
            const half8<T> *xr = (const half8<T> *)(x + (size_t)m * k + kbase);
            float part = 0.f;
#pragma unroll
            for (int h = 0; h < 4; h++) {
                float xf[8];
                half8_to_f32(xr[h], xf);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    part = fmaf(wf[8 * h + j], xf[j], part);
            }
            acc[m] = fmaf(part, s, acc[m]);
        }
    }
}

template <typename T, typename OutT, int FMT, int M>
__global__ void __launch_bounds__(GQ_WARPS * 32)
    gemv_quant_kernel(OutT *y, const T *x, const uint8_t *xq, const float *sx, const uint8_t *codes,
                      const float *scales, const uint8_t *zeros, int group, const T *bias, int gelu,
                      int64_t n, int64_t k)
{
    int lane = threadIdx.x % 32;
    int64_t col = (int64_t)blockIdx.x * GQ_WARPS + threadIdx.x / 32;
    if (col >= n) return; /* whole warps leave together */
    int64_t row_bytes = FMT == GLM_WEIGHT_INT4 ? k / 2 : k, chunks = row_bytes / 16;
    int per_chunk = FMT == GLM_WEIGHT_INT4 ? 32 : 16;
    int64_t groups = FMT == GLM_WEIGHT_INT4 ? (k + group - 1) / group : 1;
    const uint4 *wr = (const uint4 *)(codes + col * row_bytes);
    const float *gscale = scales + col * groups;
    const uint8_t *gzero = zeros ? zeros + col * groups : NULL;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        acc[m] = 0.f;
    int64_t c = lane;
    for (; c + 32 * (GQ_UNROLL - 1) < chunks; c += 32 * GQ_UNROLL) {
        uint4 wv[GQ_UNROLL];
#pragma unroll
        for (int u = 0; u < GQ_UNROLL; u++)
            wv[u] = __ldcs(wr + c + 32 * u); /* read once */
#pragma unroll
        for (int u = 0; u < GQ_UNROLL; u++)
            gq_chunk<T, FMT, M>(acc, wv[u], x, xq, k, (c + 32 * u) * per_chunk, gscale, gzero,
                                group, groups);
    }
    for (; c < chunks; c += 32)
        gq_chunk<T, FMT, M>(acc, __ldcs(wr + c), x, xq, k, c * per_chunk, gscale, gzero, group,
                            groups);
#pragma unroll
    for (int m = 0; m < M; m++)
        acc[m] = warp_sum(acc[m]);
    if (lane == 0) {
        float b = bias ? to_f32(bias[col]) : 0.f;
#pragma unroll
        for (int m = 0; m < M; m++) {
            float v = acc[m];
            if (FMT == GLM_WEIGHT_FP8) v *= sx[m] * scales[col];
            if (FMT == GLM_WEIGHT_INT8) v *= scales[col];
            v += b;
            if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
            y[(size_t)m * n + col] = store_f32<OutT>(v);
        }
    }
}

template <typename T, typename OutT, int FMT>
static void launch_gemv_quant(cudaStream_t s, dim3 grid, dim3 block, int m, OutT *y, const T *x,
                              const uint8_t *xq, const float *sx, const glm_weight &w,
                              const T *bias, int gelu)
{
    const uint8_t *codes = (const uint8_t *)w.data;
#define GQ_CASE(M)                                                                                 \
    case M:                                                                                        \
        gemv_quant_kernel<T, OutT, FMT, M><<<grid, block, 0, s>>>(                                 \
            y, x, xq, sx, codes, w.scales, w.zeros, w.group_size, bias, gelu, w.rows, w.cols);     \
        break;
    switch (m) {
        GQ_CASE(1)
        GQ_CASE(2)
        GQ_CASE(3)
        GQ_CASE(4)
        GQ_CASE(5)
        GQ_CASE(6)
        GQ_CASE(7)
    default:
        gemv_quant_kernel<T, OutT, FMT, 8><<<grid, block, 0, s>>>(
            y, x, xq, sx, codes, w.scales, w.zeros, w.group_size, bias, gelu, w.rows, w.cols);
    }
#undef GQ_CASE
}

/* Runs the product when it suits these kernels (m <= 8, k a whole number of 16-byte chunks per
 * row, 16-byte aligned codes and x or x codes); false leaves it to the caller. These are the
 * CUDA-core kernels that gemm_quant_mma.cuh replaced by default: they stay for the shapes it
 * declines (int4 groups that are not multiples of 128) and as the reference it is timed against
 * (GLM4V_GEMVQ_MMA=0). */
template <typename T, typename OutT>
static bool gemv_quant(glm_backend *be, glm_tensor y, glm_tensor x, const glm_weight &w,
                       const uint8_t *xq, const float *sx, const void *bias, int gelu)
{
    int64_t m = glm_tensor_rows(&x), k = w.cols;
    bool int4 = w.format == GLM_WEIGHT_INT4;
    if (m < 1 || m > GEMV_QUANT_MAX_ROWS || k % (int4 ? 32 : 16) != 0 ||
        (int4 && w.group_size % 32 != 0) || ((uintptr_t)w.data & 15) || ((uintptr_t)x.data & 15) ||
        (xq && ((uintptr_t)xq & 15)))
        return false;
    dim3 grid(cuda_blocks(w.rows, GQ_WARPS)), block(GQ_WARPS * 32);
    cudaStream_t s = cuda_impl(be)->stream;
    OutT *yd = (OutT *)y.data;
    const T *xd = (const T *)x.data, *bd = (const T *)bias;
    if (w.format == GLM_WEIGHT_FP8)
        launch_gemv_quant<T, OutT, GLM_WEIGHT_FP8>(s, grid, block, (int)m, yd, xd, xq, sx, w, bd,
                                                   gelu);
    else if (w.format == GLM_WEIGHT_INT8)
        launch_gemv_quant<T, OutT, GLM_WEIGHT_INT8>(s, grid, block, (int)m, yd, xd, xq, sx, w, bd,
                                                    gelu);
    else
        launch_gemv_quant<T, OutT, GLM_WEIGHT_INT4>(s, grid, block, (int)m, yd, xd, xq, sx, w, bd,
                                                    gelu);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        glm_backend_fail(be, GLM_ERR_BACKEND, "gemv_quant launch (%lld x %lld x %lld): %s",
                         (long long)m, (long long)w.rows, (long long)k, cudaGetErrorString(e));
    return true;
}

#endif
