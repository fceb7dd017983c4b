/* Row normalizations: RMSNorm, fused residual-add + RMSNorm, LayerNorm.
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

/* mode 0: rmsnorm; 1: add_rmsnorm (resid += delta first, written back); 2: layernorm. */
__global__ void norm_kernel(__nv_bfloat16 *y, __nv_bfloat16 *x, const __nv_bfloat16 *delta,
                            const __nv_bfloat16 *w, const __nv_bfloat16 *b, int64_t cols,
                            float eps, int mode, int vec8)
{
    int64_t row = blockIdx.x;
    __nv_bfloat16 *xr = x + row * cols;
    __nv_bfloat16 *yr = y + row * cols;
    const __nv_bfloat16 *dr = delta ? delta + row * cols : NULL;
    float sum = 0.f, sumsq = 0.f;
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float f[8];
            bf16x8_to_f32(((const bf16x8 *)xr)[c], f);
            if (dr) {
                float d[8];
                bf16x8_to_f32(((const bf16x8 *)dr)[c], d);
#pragma unroll
                for (int j = 0; j < 8; j++) f[j] += d[j];
                bf16x8 v = f32_to_bf16x8(f);
                ((bf16x8 *)xr)[c] = v;
                bf16x8_to_f32(v, f); /* statistics of the stored (rounded) residual */
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                sum += f[j];
                sumsq += f[j] * f[j];
            }
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = __bfloat162float(xr[c]);
            if (dr) {
                __nv_bfloat16 v = __float2bfloat16(f + __bfloat162float(dr[c]));
                xr[c] = v;
                f = __bfloat162float(v);
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
            float d = __bfloat162float(xr[c]) - mean;
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
            bf16x8_to_f32(((const bf16x8 *)xr)[c], f);
            bf16x8_to_f32(((const bf16x8 *)w)[c], fw);
            if (b) bf16x8_to_f32(((const bf16x8 *)b)[c], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = (f[j] - mean) * inv * fw[j] + fb[j];
            ((bf16x8 *)yr)[c] = f32_to_bf16x8(f);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float f = (__bfloat162float(xr[c]) - mean) * inv * __bfloat162float(w[c]);
            if (b) f += __bfloat162float(b[c]);
            yr[c] = __float2bfloat16(f);
        }
    }
}

static void launch_norm(glm_backend *be, glm_tensor y, glm_tensor x, const glm_tensor *delta,
                        glm_tensor w, const glm_tensor *b, float eps, int mode)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t rows = glm_tensor_rows(&x), cols = glm_tensor_cols(&x);
    CUDA_REQUIRE(be, x.dtype == GLM_BF16 && y.dtype == GLM_BF16 && w.dtype == GLM_BF16,
                 "norm: bf16 expected");
    CUDA_REQUIRE(be, glm_tensor_numel(&y) == rows * cols && glm_tensor_numel(&w) == cols,
                 "norm: x [%lld,%lld], y %lld elements, w %lld", (long long)rows, (long long)cols,
                 (long long)glm_tensor_numel(&y), (long long)glm_tensor_numel(&w));
    CUDA_REQUIRE(be, !delta || glm_tensor_numel(delta) == rows * cols, "add_rmsnorm: delta size");
    CUDA_REQUIRE(be, !b || glm_tensor_numel(b) == cols, "layernorm: bias size");
    if (rows == 0) return;
    int vec8 = cols % 8 == 0 && cuda_aligned16(x.data) && cuda_aligned16(y.data) &&
               cuda_aligned16(w.data) && (!b || cuda_aligned16(b->data)) &&
               (!delta || cuda_aligned16(delta->data));
    norm_kernel<<<(unsigned)rows, NORM_THREADS, 0, cb->stream>>>(
        (__nv_bfloat16 *)y.data, (__nv_bfloat16 *)x.data,
        delta ? (const __nv_bfloat16 *)delta->data : NULL, (const __nv_bfloat16 *)w.data,
        b ? (const __nv_bfloat16 *)b->data : NULL, cols, eps, mode, vec8);
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
