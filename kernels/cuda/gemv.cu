/* Decode-sized linear layers: y[M, N] = x[M, K] W[N, K]^T (+ bias) for a few rows M.
 *
 * At decode, every linear layer is a pass over its weights with almost no math, so the speed is
 * the rate W is read at. cuBLASLt's kernels for M = 1 reach 58-83 % of the device's copy rate on
 * these shapes (docs/notes-cuda.md): their tiles are sized for large M. This kernel reads W once,
 * in fully coalesced 16-byte streaming loads, several in flight per lane. Which products it takes
 * (one row by default) follows the measurements in backend_cuda.cu. Layout of the work:
 *   one warp per output column n; lane l takes 16-byte chunks l, l + 32, ... of W's row n and of
 *   each x row (x is small and stays in L1/L2), accumulates M dot products in fp32, and the warp
 *   reduces them at the end. Requires K % 8 == 0 and 16-byte aligned x and W (the launcher
 *   checks; anything else goes to cuBLASLt). */
#include "kernels/cuda/common.cuh"

#define GEMV_WARPS 8  /* warps (output columns) per block */
#define GEMV_UNROLL 4 /* 16-byte W loads in flight per lane */

template <typename T, int M>
__device__ __forceinline__ void gemv_chunk(float *acc, const uint4 &wraw, const T *x, int64_t k,
                                           int64_t chunk)
{
    float wf[8];
    half8_to_f32(*(const half8<T> *)&wraw, wf);
#pragma unroll
    for (int m = 0; m < M; m++) {
        float xf[8];
        half8_to_f32(((const half8<T> *)(x + (size_t)m * k))[chunk], xf);
#pragma unroll
        for (int j = 0; j < 8; j++)
            acc[m] = fmaf(wf[j], xf[j], acc[m]);
    }
}

template <typename T, typename OutT, int M>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(OutT *y, const T *x, const T *w, const T *bias, int64_t n, int64_t k)
{
    int lane = threadIdx.x % 32;
    int64_t col = (int64_t)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
    if (col >= n) return; /* a whole warp leaves together: no shuffle below misses a lane */
    const uint4 *wr = (const uint4 *)(w + (size_t)col * k);
    int64_t chunks = k / 8;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        acc[m] = 0.f;
    /* the first loads of W are issued before waiting for the kernel ahead (cuda_launch): W is a
     * weight, so they overlap that kernel's tail; x is its output and is read only after */
    int64_t c = lane;
    bool early = c + 32 * (GEMV_UNROLL - 1) < chunks;
    uint4 first[GEMV_UNROLL];
    if (early) {
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
            first[u] = __ldcs(wr + c + 32 * u);
    }
    pdl_wait();
    pdl_trigger();
    if (early) {
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
            gemv_chunk<T, M>(acc, first[u], x, k, c + 32 * u);
        c += 32 * GEMV_UNROLL;
    }
    for (; c + 32 * (GEMV_UNROLL - 1) < chunks; c += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
            wv[u] = __ldcs(wr + c + 32 * u); /* read once */
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++)
            gemv_chunk<T, M>(acc, wv[u], x, k, c + 32 * u);
    }
    for (; c < chunks; c += 32)
        gemv_chunk<T, M>(acc, __ldcs(wr + c), x, k, c);
#pragma unroll
    for (int m = 0; m < M; m++)
        acc[m] = warp_sum(acc[m]);
    if (lane == 0) {
        float b = bias ? to_f32(bias[col]) : 0.f;
#pragma unroll
        for (int m = 0; m < M; m++)
            y[(size_t)m * n + col] = store_f32<OutT>(acc[m] + b);
    }
}

template <typename T, typename OutT>
static cudaError_t launch_gemv(const cuda_backend *cb, dim3 grid, dim3 block, int m,
                               const glm_tensor &y, const glm_tensor &x, const glm_tensor &w,
                               const void *bias)
{
    OutT *yd = (OutT *)y.data;
    const T *xd = (const T *)x.data, *wd = (const T *)w.data, *bd = (const T *)bias;
    int64_t n = glm_tensor_rows(&w), k = glm_tensor_cols(&x);
    switch (m) {
    case 1:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 1>, yd, xd, wd, bd, n, k);
    case 2:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 2>, yd, xd, wd, bd, n, k);
    case 3:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 3>, yd, xd, wd, bd, n, k);
    case 4:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 4>, yd, xd, wd, bd, n, k);
    case 5:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 5>, yd, xd, wd, bd, n, k);
    case 6:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 6>, yd, xd, wd, bd, n, k);
    case 7:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 7>, yd, xd, wd, bd, n, k);
    default:
        return cuda_launch(cb, grid, block, 0, gemv_kernel<T, OutT, 8>, yd, xd, wd, bd, n, k);
    }
}

/* Runs the product when this kernel suits it (M <= max_rows, a large W, K % 8 == 0, aligned);
 * false leaves it to the caller. */
bool cuda_gemv(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, const void *bias)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t m = glm_tensor_rows(&x), k = glm_tensor_cols(&x), n = glm_tensor_rows(&w);
    if (m < 1 || m > cb->gemv_max_rows || m > GLM_CUDA_GEMV_MAX_ROWS ||
        n * k < cb->gemv_min_weights || k % 8 != 0 || !cuda_aligned16(x.data) ||
        !cuda_aligned16(w.data))
        return false;
    dim3 grid((unsigned)((n + GEMV_WARPS - 1) / GEMV_WARPS)), block(GEMV_WARPS * 32);
    cudaError_t e;
    if (y.dtype == GLM_F32)
        GLM_DISPATCH_HALF(w.dtype, T,
                          e = launch_gemv<T, float>(cb, grid, block, (int)m, y, x, w, bias));
    else
        GLM_DISPATCH_HALF(w.dtype, T,
                          e = launch_gemv<T, T>(cb, grid, block, (int)m, y, x, w, bias));
    if (e != cudaSuccess)
        glm_backend_fail(be, GLM_ERR_BACKEND, "gemv launch (%lld x %lld x %lld): %s", (long long)m,
                         (long long)n, (long long)k, cudaGetErrorString(e));
    return true;
}
