/* Row normalizations: RMSNorm, fused residual-add + RMSNorm, LayerNorm, fused residual-add of a
 * LayerNorm'd branch. The residual stream (x of rmsnorm, resid of the fused ops) may be f32.
 *
 * One block of 256 threads per row; the row is read once into registers-worth of fp32 in shared
 * memory-free passes (each thread keeps its strided elements' sums), statistics are reduced
 * across the block, then the row is re-read (it is in L1/L2) and written once. */
#include "kernels/cuda/common.cuh"

#define NORM_THREADS 256

/* Sum of v across the block; every thread gets the result. */
__device__ float block_sum(float v)
{
    __shared__ float partial[NORM_THREADS / 32];
    __shared__ float total;
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < NORM_THREADS / 32 ? partial[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    float r = total;
    __syncthreads(); /* partial/total reused by the next call */
    return r;
}

/* Loads and stores of 8 (vectorized) or 1 element(s) of a row in either float dtype: the residual
 * streams are f32, everything else bf16. */
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, int64_t c, float *f)
{
    bf16x8_to_f32(((const bf16x8 *)p)[c], f);
}
__device__ __forceinline__ void load8(const float *p, int64_t c, float *f)
{
    float4 a = ((const float4 *)p)[2 * c], b = ((const float4 *)p)[2 * c + 1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, int64_t c, const float *f)
{
    ((bf16x8 *)p)[c] = f32_to_bf16x8(f);
}
__device__ __forceinline__ void store8(float *p, int64_t c, const float *f)
{
    ((float4 *)p)[2 * c] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[2 * c + 1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ float load1(const __nv_bfloat16 *p, int64_t i)
{
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load1(const float *p, int64_t i)
{
    return p[i];
}
__device__ __forceinline__ void store1(__nv_bfloat16 *p, int64_t i, float v)
{
    p[i] = __float2bfloat16(v);
}
__device__ __forceinline__ void store1(float *p, int64_t i, float v)
{
    p[i] = v;
}

/* mode 0: rmsnorm; 1: add_rmsnorm (resid += delta first, written back); 2: layernorm.
 * R is the dtype of x (the residual stream for modes 0 and 1). */
template <typename R>
__global__ void norm_kernel(__nv_bfloat16 *y, R *x, const __nv_bfloat16 *delta,
                            const __nv_bfloat16 *w, const __nv_bfloat16 *b, int64_t cols,
                            float eps, int mode, int vec8)
{
    int64_t row = blockIdx.x;
    R *xr = x + row * cols;
    __nv_bfloat16 *yr = y + row * cols;
    const __nv_bfloat16 *dr = delta ? delta + row * cols : NULL;
    float sum = 0.f, sumsq = 0.f;
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float f[8];
            load8(xr, c, f);
            if (dr) {
                float d[8];
                load8(dr, c, d);
#pragma unroll
                for (int j = 0; j < 8; j++) f[j] += d[j];
                store8(xr, c, f);
                load8(xr, c, f); /* statistics of the stored (for bf16: rounded) residual */
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                sum += f[j];
                sumsq += f[j] * f[j];
            }
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = load1(xr, c);
            if (dr) {
                store1(xr, c, f + load1(dr, c));
                f = load1(xr, c);
            }
            sum += f;
            sumsq += f * f;
        }
    }
    float mean = 0.f, inv;
    if (mode == 2) {
        mean = block_sum(sum) / (float)cols;
        /* second pass for the variance: exact even when |mean| >> std */
        float var = 0.f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float d = load1(xr, c) - mean;
            var += d * d;
        }
        inv = rsqrtf(block_sum(var) / (float)cols + eps);
    } else {
        __syncthreads(); /* add_rmsnorm: the residual writes above are re-read below */
        inv = rsqrtf(block_sum(sumsq) / (float)cols + eps);
    }
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float f[8], fw[8], fb[8] = {0};
            load8(xr, c, f);
            load8(w, c, fw);
            if (b) load8(b, c, fb);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = (f[j] - mean) * inv * fw[j] + fb[j];
            store8(yr, c, f);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = (load1(xr, c) - mean) * inv * load1(w, c);
            if (b) f += load1(b, c);
            store1(yr, c, f);
        }
    }
}

/* resid += layernorm(delta) * w + b; y = resid in bf16. y may alias delta: every thread reads
 * the delta elements it later overwrites itself, and the statistics passes end in barriers. */
template <typename R>
__global__ void add_layernorm_kernel(__nv_bfloat16 *y, R *resid, const __nv_bfloat16 *delta,
                                     const __nv_bfloat16 *w, const __nv_bfloat16 *b, int64_t cols,
                                     float eps, int vec8)
{
    int64_t row = blockIdx.x;
    R *rr = resid + row * cols;
    const __nv_bfloat16 *dr = delta + row * cols;
    __nv_bfloat16 *yr = y + row * cols;
    float sum = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += load1(dr, c);
    float mean = block_sum(sum) / (float)cols, var = 0.f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = load1(dr, c) - mean;
        var += d * d;
    }
    float inv = rsqrtf(block_sum(var) / (float)cols + eps);
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float d[8], r[8], fw[8], fb[8];
            load8(dr, c, d);
            load8(rr, c, r);
            load8(w, c, fw);
            load8(b, c, fb);
#pragma unroll
            for (int j = 0; j < 8; j++) r[j] += (d[j] - mean) * inv * fw[j] + fb[j];
            store8(rr, c, r);
            load8(rr, c, r); /* y is the stored residual (for a bf16 stream: the rounded one) */
            store8(yr, c, r);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = load1(rr, c) + (load1(dr, c) - mean) * inv * load1(w, c) + load1(b, c);
            store1(rr, c, v);
            store1(yr, c, load1(rr, c));
        }
    }
}

static void launch_norm(glm_backend *be, glm_tensor y, glm_tensor x, const glm_tensor *delta,
                        glm_tensor w, const glm_tensor *b, float eps, int mode)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t rows = glm_tensor_rows(&x), cols = glm_tensor_cols(&x);
    CUDA_REQUIRE(be, (x.dtype == GLM_BF16 || x.dtype == GLM_F32) && y.dtype == GLM_BF16 &&
                         w.dtype == GLM_BF16 && (!delta || delta->dtype == GLM_BF16) &&
                         (!b || b->dtype == GLM_BF16),
                 "norm: bf16 expected (x/resid: bf16 or f32), got x %s y %s",
                 glm_dtype_name(x.dtype), glm_dtype_name(y.dtype));
    CUDA_REQUIRE(be, glm_tensor_numel(&y) == rows * cols && glm_tensor_numel(&w) == cols,
                 "norm: x [%lld,%lld], y %lld elements, w %lld", (long long)rows, (long long)cols,
                 (long long)glm_tensor_numel(&y), (long long)glm_tensor_numel(&w));
    CUDA_REQUIRE(be, !delta || glm_tensor_numel(delta) == rows * cols, "norm: delta size");
    CUDA_REQUIRE(be, !b || glm_tensor_numel(b) == cols, "norm: bias size");
    if (rows == 0) return;
    int vec8 = cols % 8 == 0 && cuda_aligned16(x.data) && cuda_aligned16(y.data) &&
               cuda_aligned16(w.data) && (!b || cuda_aligned16(b->data)) &&
               (!delta || cuda_aligned16(delta->data));
    __nv_bfloat16 *yd = (__nv_bfloat16 *)y.data;
    const __nv_bfloat16 *dd = delta ? (const __nv_bfloat16 *)delta->data : NULL;
    const __nv_bfloat16 *wd = (const __nv_bfloat16 *)w.data;
    const __nv_bfloat16 *bd = b ? (const __nv_bfloat16 *)b->data : NULL;
    if (mode == 3 && x.dtype == GLM_F32)
        add_layernorm_kernel<float><<<(unsigned)rows, NORM_THREADS, 0, cb->stream>>>(
            yd, (float *)x.data, dd, wd, bd, cols, eps, vec8);
    else if (mode == 3)
        add_layernorm_kernel<__nv_bfloat16><<<(unsigned)rows, NORM_THREADS, 0, cb->stream>>>(
            yd, (__nv_bfloat16 *)x.data, dd, wd, bd, cols, eps, vec8);
    else if (x.dtype == GLM_F32)
        norm_kernel<float><<<(unsigned)rows, NORM_THREADS, 0, cb->stream>>>(
            yd, (float *)x.data, dd, wd, bd, cols, eps, mode, vec8);
    else
        norm_kernel<__nv_bfloat16><<<(unsigned)rows, NORM_THREADS, 0, cb->stream>>>(
            yd, (__nv_bfloat16 *)x.data, dd, wd, bd, cols, eps, mode, vec8);
    CUDA_CHECK_LAUNCH(be);
}

void cuda_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps)
{
    launch_norm(be, y, x, NULL, w, NULL, eps, 0);
}

void cuda_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                      glm_tensor w, float eps)
{
    launch_norm(be, y, resid, &delta, w, NULL, eps, 1);
}

void cuda_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                    float eps)
{
    launch_norm(be, y, x, NULL, w, &b, eps, 2);
}

void cuda_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                        glm_tensor w, glm_tensor b, float eps)
{
    launch_norm(be, y, resid, &delta, w, &b, eps, 3);
}
