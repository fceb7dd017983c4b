/* Elementwise ops: add, scale, exact-erf GELU, SwiGLU (silu(a) * b).
 *
 * Each thread handles 8 bf16 (one 16-byte load per operand) when the length and pointers allow,
 * else one element; math is fp32. Grid-stride loops keep the grid small for huge tensors. */
#include "kernels/cuda/common.cuh"
#include "kernels/sample_rng.h"

#define EW_THREADS 256

enum ew_op { EW_ADD, EW_SCALE, EW_GELU };

__device__ __forceinline__ float gelu_erf(float x)
{
    return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float ew_apply(int op, float a, float b, float s)
{
    switch (op) {
    case EW_ADD: return a + b;
    case EW_SCALE: return a * s;
    default: return gelu_erf(a);
    }
}

/* y[i] = op(a[i], b[i]); vec8 says the pointers are 16-byte aligned and n % 8 == 0. */
__global__ void elementwise_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *a,
                                   const __nv_bfloat16 *b, int64_t n, int op, float s, int vec8)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec8) {
        for (int64_t i = tid; i < n / 8; i += stride) {
            float fa[8], fb[8] = {0};
            bf16x8_to_f32(((const bf16x8 *)a)[i], fa);
            if (b) bf16x8_to_f32(((const bf16x8 *)b)[i], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) fa[j] = ew_apply(op, fa[j], fb[j], s);
            ((bf16x8 *)y)[i] = f32_to_bf16x8(fa);
        }
    } else {
        for (int64_t i = tid; i < n; i += stride) {
            float fa = __bfloat162float(a[i]), fb = b ? __bfloat162float(b[i]) : 0.f;
            y[i] = __float2bfloat16(ew_apply(op, fa, fb, s));
        }
    }
}

static void launch_elementwise(glm_backend *be, void *y, const void *a, const void *b, int64_t n,
                               int op, float s)
{
    cuda_backend *cb = cuda_impl(be);
    if (n == 0) return;
    int vec8 = n % 8 == 0 && cuda_aligned16(y) && cuda_aligned16(a) && (!b || cuda_aligned16(b));
    int64_t work = vec8 ? n / 8 : n;
    int64_t max_blocks = (int64_t)cb->n_sms * 16;
    int64_t blocks = (work + EW_THREADS - 1) / EW_THREADS;
    if (blocks > max_blocks) blocks = max_blocks;
    elementwise_kernel<<<(unsigned)blocks, EW_THREADS, 0, cb->stream>>>(
        (__nv_bfloat16 *)y, (const __nv_bfloat16 *)a, (const __nv_bfloat16 *)b, n, op, s, vec8);
    CUDA_CHECK_LAUNCH(be);
}

void cuda_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b)
{
    int64_t n = glm_tensor_numel(&y);
    CUDA_REQUIRE(be, y.dtype == GLM_BF16 && a.dtype == GLM_BF16 && b.dtype == GLM_BF16,
                 "add: bf16 expected");
    CUDA_REQUIRE(be, glm_tensor_numel(&a) == n && glm_tensor_numel(&b) == n,
                 "add: sizes differ (%lld, %lld, %lld)", (long long)n,
                 (long long)glm_tensor_numel(&a), (long long)glm_tensor_numel(&b));
    launch_elementwise(be, y.data, a.data, b.data, n, EW_ADD, 0.f);
}

void cuda_scale(glm_backend *be, glm_tensor x, float s)
{
    CUDA_REQUIRE(be, x.dtype == GLM_BF16, "scale: bf16 expected");
    launch_elementwise(be, x.data, x.data, NULL, glm_tensor_numel(&x), EW_SCALE, s);
}

void cuda_gelu(glm_backend *be, glm_tensor y, glm_tensor x)
{
    int64_t n = glm_tensor_numel(&y);
    CUDA_REQUIRE(be, y.dtype == GLM_BF16 && x.dtype == GLM_BF16, "gelu: bf16 expected");
    CUDA_REQUIRE(be, glm_tensor_numel(&x) == n, "gelu: sizes differ");
    launch_elementwise(be, y.data, x.data, NULL, n, EW_GELU, 0.f);
}

/* x [M, 2F] = [a | b] -> y [M, F] = silu(a) * b. Grid-stride over M * F / 8 (or M * F). */
__global__ void silu_mul_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, int64_t m, int64_t f,
                                int vec8)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec8) {
        int64_t fv = f / 8;
        for (int64_t i = tid; i < m * fv; i += stride) {
            int64_t r = i / fv, c = i % fv;
            float fa[8], fb[8];
            bf16x8_to_f32(((const bf16x8 *)(x + r * 2 * f))[c], fa);
            bf16x8_to_f32(((const bf16x8 *)(x + r * 2 * f + f))[c], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) fa[j] = fa[j] / (1.f + __expf(-fa[j])) * fb[j];
            ((bf16x8 *)(y + r * f))[c] = f32_to_bf16x8(fa);
        }
    } else {
        for (int64_t i = tid; i < m * f; i += stride) {
            int64_t r = i / f, c = i % f;
            float a = __bfloat162float(x[r * 2 * f + c]), b = __bfloat162float(x[r * 2 * f + f + c]);
            y[i] = __float2bfloat16(a / (1.f + __expf(-a)) * b);
        }
    }
}

void cuda_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t m = glm_tensor_rows(&x), f = glm_tensor_cols(&x) / 2;
    CUDA_REQUIRE(be, y.dtype == GLM_BF16 && x.dtype == GLM_BF16, "silu_mul: bf16 expected");
    CUDA_REQUIRE(be, glm_tensor_cols(&x) == 2 * f && glm_tensor_rows(&y) == m &&
                         glm_tensor_cols(&y) == f,
                 "silu_mul: x [%lld,%lld] y [%lld,%lld]", (long long)m,
                 (long long)glm_tensor_cols(&x), (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y));
    if (m * f == 0) return;
    int vec8 = f % 8 == 0 && cuda_aligned16(x.data) && cuda_aligned16(y.data);
    int64_t work = vec8 ? m * f / 8 : m * f;
    int64_t blocks = (work + EW_THREADS - 1) / EW_THREADS;
    if (blocks > (int64_t)cb->n_sms * 16) blocks = (int64_t)cb->n_sms * 16;
    silu_mul_kernel<<<(unsigned)blocks, EW_THREADS, 0, cb->stream>>>(
        (__nv_bfloat16 *)y.data, (const __nv_bfloat16 *)x.data, m, f, vec8);
    CUDA_CHECK_LAUNCH(be);
}

/* Counter-based normal numbers from kernels/sample_rng.h, the same function the CPU backend uses,
 * so a random-weight model has the same weights on either backend (up to bf16 rounding). */
__global__ void fill_normal_kernel(void *t, int is_f32, int64_t n, uint64_t seed, float mean,
                                   float std)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = std == 0.f ? mean : mean + std * glm_fill_normal_value(seed, (uint64_t)i);
        if (is_f32)
            ((float *)t)[i] = v;
        else
            ((__nv_bfloat16 *)t)[i] = __float2bfloat16(v);
    }
}

void cuda_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std)
{
    cuda_backend *cb = cuda_impl(be);
    CUDA_REQUIRE(be, t.dtype == GLM_BF16 || t.dtype == GLM_F32, "fill_normal: bf16 or f32 only");
    int64_t n = glm_tensor_numel(&t);
    if (n == 0) return;
    int64_t blocks = (n + EW_THREADS - 1) / EW_THREADS;
    if (blocks > (int64_t)cb->n_sms * 16) blocks = (int64_t)cb->n_sms * 16;
    fill_normal_kernel<<<(unsigned)blocks, EW_THREADS, 0, cb->stream>>>(
        t.data, t.dtype == GLM_F32, n, seed, mean, std);
    CUDA_CHECK_LAUNCH(be);
}
