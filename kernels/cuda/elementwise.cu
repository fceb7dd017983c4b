/* Elementwise ops: add, scale, exact-erf GELU, SwiGLU (silu(a) * b).
 *
 * Each thread handles 8 elements of the 16-bit storage type (one 16-byte load per operand) when
 * the length and pointers allow, else one element; math is fp32. Grid-stride loops keep the grid small for huge tensors. */
#include "kernels/cuda/act_fp8.cuh"
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
template <typename T>
__global__ void elementwise_kernel(T *y, const T *a, const T *b, int64_t n, int op, float s,
                                   int vec8)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec8) {
        for (int64_t i = tid; i < n / 8; i += stride) {
            float fa[8], fb[8] = {0};
            half8_to_f32(((const half8<T> *)a)[i], fa);
            if (b) half8_to_f32(((const half8<T> *)b)[i], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) fa[j] = ew_apply(op, fa[j], fb[j], s);
            ((half8<T> *)y)[i] = f32_to_half8<T>(fa);
        }
    } else {
        for (int64_t i = tid; i < n; i += stride) {
            float fa = to_f32(a[i]), fb = b ? to_f32(b[i]) : 0.f;
            y[i] = from_f32<T>(ew_apply(op, fa, fb, s));
        }
    }
}

static void launch_elementwise(glm_backend *be, glm_dtype dt, void *y, const void *a,
                               const void *b, int64_t n, int op, float s)
{
    cuda_backend *cb = cuda_impl(be);
    if (n == 0) return;
    int vec8 = n % 8 == 0 && cuda_aligned16(y) && cuda_aligned16(a) && (!b || cuda_aligned16(b));
    int64_t work = vec8 ? n / 8 : n;
    int64_t max_blocks = (int64_t)cb->n_sms * 16;
    int64_t blocks = (work + EW_THREADS - 1) / EW_THREADS;
    if (blocks > max_blocks) blocks = max_blocks;
    GLM_DISPATCH_HALF(dt, T,
                      elementwise_kernel<T><<<(unsigned)blocks, EW_THREADS, 0, cb->stream>>>(
                          (T *)y, (const T *)a, (const T *)b, n, op, s, vec8));
    CUDA_CHECK_LAUNCH(be);
}

void cuda_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b)
{
    int64_t n = glm_tensor_numel(&y);
    CUDA_REQUIRE(be, cuda_is_half(y.dtype) && a.dtype == y.dtype && b.dtype == y.dtype,
                 "add: one 16-bit dtype expected (y %s, a %s, b %s)", glm_dtype_name(y.dtype),
                 glm_dtype_name(a.dtype), glm_dtype_name(b.dtype));
    CUDA_REQUIRE(be, glm_tensor_numel(&a) == n && glm_tensor_numel(&b) == n,
                 "add: sizes differ (%lld, %lld, %lld)", (long long)n,
                 (long long)glm_tensor_numel(&a), (long long)glm_tensor_numel(&b));
    launch_elementwise(be, y.dtype, y.data, a.data, b.data, n, EW_ADD, 0.f);
}

void cuda_scale(glm_backend *be, glm_tensor x, float s)
{
    CUDA_REQUIRE(be, cuda_is_half(x.dtype), "scale: 16-bit dtype expected, got %s",
                 glm_dtype_name(x.dtype));
    launch_elementwise(be, x.dtype, x.data, x.data, NULL, glm_tensor_numel(&x), EW_SCALE, s);
}

void cuda_gelu(glm_backend *be, glm_tensor y, glm_tensor x)
{
    int64_t n = glm_tensor_numel(&y);
    CUDA_REQUIRE(be, cuda_is_half(y.dtype) && x.dtype == y.dtype,
                 "gelu: one 16-bit dtype expected (y %s, x %s)", glm_dtype_name(y.dtype),
                 glm_dtype_name(x.dtype));
    CUDA_REQUIRE(be, glm_tensor_numel(&x) == n, "gelu: sizes differ");
    launch_elementwise(be, y.dtype, y.data, x.data, NULL, n, EW_GELU, 0.f);
}

/* x [M, 2F] = [a | b] -> y [M, F] = silu(a) * b. Grid-stride over M * F / 8 (or M * F). */
template <typename T>
__global__ void silu_mul_kernel(T *y, const T *x, int64_t m, int64_t f, int vec8)
{
    pdl_wait(); /* started through cuda_launch */
    pdl_trigger();
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec8) {
        int64_t fv = f / 8;
        for (int64_t i = tid; i < m * fv; i += stride) {
            int64_t r = i / fv, c = i % fv;
            float fa[8], fb[8];
            half8_to_f32(((const half8<T> *)(x + r * 2 * f))[c], fa);
            half8_to_f32(((const half8<T> *)(x + r * 2 * f + f))[c], fb);
#pragma unroll
            for (int j = 0; j < 8; j++) fa[j] = fa[j] / (1.f + __expf(-fa[j])) * fb[j];
            ((half8<T> *)(y + r * f))[c] = f32_to_half8<T>(fa);
        }
    } else {
        for (int64_t i = tid; i < m * f; i += stride) {
            int64_t r = i / f, c = i % f;
            float a = to_f32(x[r * 2 * f + c]), b = to_f32(x[r * 2 * f + f + c]);
            y[i] = from_f32<T>(a / (1.f + __expf(-a)) * b);
        }
    }
}

void cuda_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t m = glm_tensor_rows(&x), f = glm_tensor_cols(&x) / 2;
    CUDA_REQUIRE(be, cuda_is_half(y.dtype) && x.dtype == y.dtype,
                 "silu_mul: one 16-bit dtype expected (y %s, x %s)", glm_dtype_name(y.dtype),
                 glm_dtype_name(x.dtype));
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
    cudaError_t e;
    GLM_DISPATCH_HALF(y.dtype, T,
                      e = cuda_launch(cb, (unsigned)blocks, EW_THREADS, 0, silu_mul_kernel<T>,
                                      (T *)y.data, (const T *)x.data, m, f, vec8));
    CUDA_CHECK(be, e);
}

/* Counter-based normal numbers from kernels/sample_rng.h, the same function the CPU backend uses,
 * so a random-weight model has the same weights on either backend (up to storage rounding). */
__global__ void fill_normal_kernel(void *t, glm_dtype dt, int64_t n, uint64_t seed, float mean,
                                   float std)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = std == 0.f ? mean : mean + std * glm_fill_normal_value(seed, (uint64_t)i);
        store_any(t, dt, i, v);
    }
}

void cuda_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std)
{
    cuda_backend *cb = cuda_impl(be);
    CUDA_REQUIRE(be, cuda_is_half(t.dtype) || t.dtype == GLM_F32,
                 "fill_normal: bf16, f16 or f32 only (got %s)", glm_dtype_name(t.dtype));
    int64_t n = glm_tensor_numel(&t);
    if (n == 0) return;
    int64_t blocks = (n + EW_THREADS - 1) / EW_THREADS;
    if (blocks > (int64_t)cb->n_sms * 16) blocks = (int64_t)cb->n_sms * 16;
    fill_normal_kernel<<<(unsigned)blocks, EW_THREADS, 0, cb->stream>>>(
        t.data, t.dtype, n, seed, mean, std);
    CUDA_CHECK_LAUNCH(be);
}

/* ---- fp8 activations: one block per row; the row's values (gelu(x) rounded to T, or x) are
 * made twice, once for the amax and once for the codes, so nothing but the codes is written
 * (the second read of the row is an L2 hit) ---- */

#define Q8_THREADS 256

template <typename T, bool GELU> __device__ __forceinline__ float q8_value(float x)
{
    return GELU ? to_f32(from_f32<T>(gelu_erf(x))) : x;
}

/* vec8: cols % 8 == 0, x 16-byte and codes 8-byte aligned. */
template <typename T, bool GELU>
__global__ void __launch_bounds__(Q8_THREADS)
    act_q8_kernel(uint8_t *codes, float *scales, const T *x, int64_t cols, int vec8)
{
    pdl_wait();
    pdl_trigger();
    int64_t row = blockIdx.x;
    const T *xr = x + row * cols;
    uint8_t *qr = codes + row * cols;
    float amax = 0.f;
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float v[8];
            half8_to_f32(((const half8<T> *)xr)[c], v);
#pragma unroll
            for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(q8_value<T, GELU>(v[j])));
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            amax = fmaxf(amax, fabsf(q8_value<T, GELU>(to_f32(xr[c]))));
    }
    amax = act_block_max(amax);
    float q = act_inv(amax);
    if (vec8) {
        for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
            float v[8];
            half8_to_f32(((const half8<T> *)xr)[c], v);
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = q8_value<T, GELU>(v[j]);
            ((uint2 *)qr)[c] = act_pack8(v, q);
        }
    } else {
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            qr[c] = act_e4m3(q8_value<T, GELU>(to_f32(xr[c])) * q);
    }
    if (threadIdx.x == 0) scales[row] = act_scale(amax);
}

/* act_q8_kernel for rows of at most 8 chunks of 8 a thread (the tower's fc1 output, 15360 wide,
 * at TP 1): each value is made once and kept in registers from the amax to the codes. With
 * GELU, the exact erf is this kernel's cost: the two-pass form above made it twice and ran at
 * ~1.2 TB/s on 6401 x 15360 (profile in PERF.md). Same values, same codes. */
template <typename T, bool GELU, int CH>
__global__ void __launch_bounds__(Q8_THREADS)
    act_q8_rows_kernel(uint8_t *codes, float *scales, const T *x, int64_t cols)
{
    pdl_wait();
    pdl_trigger();
    const int64_t row = blockIdx.x, n8 = cols / 8;
    const half8<T> *xr = (const half8<T> *)(x + row * cols);
    half8<T> raw[CH];
#pragma unroll
    for (int i = 0; i < CH; i++) { /* every load out before the first erf */
        const int64_t c = threadIdx.x + (int64_t)i * Q8_THREADS;
        if (c < n8) raw[i] = xr[c];
    }
    float v[CH][8];
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < CH; i++) {
        if (threadIdx.x + (int64_t)i * Q8_THREADS >= n8) continue;
        half8_to_f32(raw[i], v[i]);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            v[i][j] = q8_value<T, GELU>(v[i][j]);
            amax = fmaxf(amax, fabsf(v[i][j]));
        }
    }
    amax = act_block_max(amax);
    const float q = act_inv(amax);
    uint2 *qr = (uint2 *)(codes + row * cols);
#pragma unroll
    for (int i = 0; i < CH; i++) {
        const int64_t c = threadIdx.x + (int64_t)i * Q8_THREADS;
        if (c < n8) qr[c] = act_pack8(v[i], q);
    }
    if (threadIdx.x == 0) scales[row] = act_scale(amax);
}

template <typename T, bool GELU>
static cudaError_t launch_act_q8_as(const cuda_backend *cb, uint8_t *codes, float *scales,
                                    const T *x, int64_t rows, int64_t cols, int vec8)
{
    const int64_t per_thread = (cols / 8 + Q8_THREADS - 1) / Q8_THREADS;
    const unsigned grid = (unsigned)rows;
    if (!vec8 || per_thread > 8)
        return cuda_launch(cb, grid, Q8_THREADS, 0, act_q8_kernel<T, GELU>, codes, scales, x,
                           cols, vec8);
    if (per_thread <= 1)
        return cuda_launch(cb, grid, Q8_THREADS, 0, act_q8_rows_kernel<T, GELU, 1>, codes,
                           scales, x, cols);
    if (per_thread <= 2)
        return cuda_launch(cb, grid, Q8_THREADS, 0, act_q8_rows_kernel<T, GELU, 2>, codes,
                           scales, x, cols);
    if (per_thread <= 4)
        return cuda_launch(cb, grid, Q8_THREADS, 0, act_q8_rows_kernel<T, GELU, 4>, codes,
                           scales, x, cols);
    return cuda_launch(cb, grid, Q8_THREADS, 0, act_q8_rows_kernel<T, GELU, 8>, codes, scales, x,
                       cols);
}

static void launch_act_q8(glm_backend *be, const char *op, glm_weight q, glm_tensor x, bool gelu)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t rows = glm_tensor_rows(&x), cols = glm_tensor_cols(&x);
    CUDA_REQUIRE(be, cuda_is_half(x.dtype), "%s: x must be of a 16-bit dtype, got %s", op,
                 glm_dtype_name(x.dtype));
    CUDA_REQUIRE(be,
                 q.format == GLM_WEIGHT_FP8 && q.data && q.scales && q.rows == rows &&
                     q.cols == cols,
                 "%s: q must be fp8 codes [%lld, %lld] with scales", op, (long long)rows,
                 (long long)cols);
    if (rows == 0) return;
    int vec8 = cols % 8 == 0 && cuda_aligned16(x.data) && ((uintptr_t)q.data & 7) == 0;
    cudaError_t e = cudaSuccess;
    GLM_DISPATCH_HALF(x.dtype, T, {
        if (gelu)
            e = launch_act_q8_as<T, true>(cb, (uint8_t *)q.data, q.scales, (const T *)x.data, rows,
                                          cols, vec8);
        else
            e = launch_act_q8_as<T, false>(cb, (uint8_t *)q.data, q.scales, (const T *)x.data,
                                           rows, cols, vec8);
    });
    CUDA_CHECK(be, e);
}

void cuda_gelu_q8(glm_backend *be, glm_weight q, glm_tensor x)
{
    launch_act_q8(be, "gelu_q8", q, x, true);
}

void cuda_quantize_act(glm_backend *be, glm_weight q, glm_tensor x)
{
    launch_act_q8(be, "quantize_act", q, x, false);
}
