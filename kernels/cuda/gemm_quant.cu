/* linear with quantized weights (kernels/weight_format.h states what each format means):
 *
 *   decode and batched decode (fp8 M <= 8, int8 / int4 M <= mma_max_m): gemm_quant_mma.cuh's
 *     tensor-core kernel reads the packed codes once per 8-32 tokens (fp8 quantizes x inside it);
 *     the CUDA-core kernels of gemv_quant.cuh take the M <= 8 shapes it declines;
 *   prefill, fp8: the rows of x are quantized to E4M3 with per-row scales, cuBLASLt multiplies the
 *     E4M3 codes (fp32 accumulation), and one epilogue pass applies sx[m] * sw[n], the bias and
 *     the activation;
 *   prefill, int8 / int4: slabs of weight rows are dequantized to the storage type in scratch and
 *     cuBLASLt multiplies each slab (bias epilogue), so scratch stays one slab whatever the weight;
 *   anything cuBLASLt declines (tiny or unaligned shapes): a tiled fp32 kernel with the exact
 *     semantics.
 * Plus the quantize op (random weights for benchmarks) and the fp8 capability check.
 *
 * Scratch (activation codes, row scales, the slab) grows on first use and old buffers are kept
 * until the backend is destroyed, because a captured decode graph may still point at them; the
 * decoder runs every decode bucket's first step outside capture, so growth never happens inside
 * one. */
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_quant_mma.cuh"
#include "kernels/cuda/gemv_quant.cuh"

#include <stdlib.h>
#include <string.h>

#define QUANT_PLANS 64
#define QUANT_RETIRED 32
#define SLAB_BYTES ((size_t)64 << 20) /* dequantized weight rows per cuBLASLt call */

typedef struct quant_plan {
    int64_t m, n, k, ldd;
    int key; /* a type, out type, epilogue */
    cuda_lt_gemm lt;
    cublasLtMatmulAlgo_t algo;
    bool none; /* cuBLASLt has no algorithm: use the fallback */
} quant_plan;

typedef struct quant_buffer {
    void *ptr;
    size_t bytes;
} quant_buffer;

struct cuda_quant {
    quant_buffer act;   /* fp8 activation codes [M, K] */
    quant_buffer scale; /* fp8 activation row scales [M] */
    quant_buffer slab;  /* dequantized weight rows */
    quant_buffer accum; /* f32 unscaled fp8 sums when y is f16 (whose range they could exceed) */
    void *retired[QUANT_RETIRED];
    int n_retired;
    quant_plan plans[QUANT_PLANS];
    int n_plans;
    /* the tensor-core kernel (GLM4V_GEMVQ_MMA=0: the CUDA-core decode kernels and slabs, for
     * comparison), its warps side by side along rows at M <= 8 (GLM4V_GEMVQ_WR: 1, 2, 4 or 8;
     * 0 or unset: chosen per shape), its row tiles per warp above 16 rows (GLM4V_GEMMQ_RT, 1 by
     * default or 2), and the most rows it takes for int8 / int4 (GLM4V_GEMMQ_MAX_M; more go to
     * slabs + cuBLASLt); at M <= 8 the units each warp loads at once (GLM4V_GEMVQ_U: 2 by
     * default, or 4) and the blocks per multiprocessor the row-warp choice aims at
     * (GLM4V_GEMVQ_BPS, 4 by default), and the fewest rows of an fp8 weight that one token
     * reads through the CUDA-core kernel (GLM4V_GEMVQ_FP8_WIDE, 8192; 0: never); with one row
     * warp, a warp's whole run of units in one load batch where it fits (GLM4V_GEMVQ_ONE, on) */
    int mma;
    int64_t fp8_wide_rows;
    gqm_knobs knobs;
    int64_t mma_max_m;
};

static void destroy_plan(quant_plan *p)
{
    cuda_lt_gemm_destroy(&p->lt);
    memset(p, 0, sizeof(*p));
}

void cuda_quant_destroy(cuda_backend *cb)
{
    cuda_quant *q = cb->quant;
    if (!q) return;
    for (int i = 0; i < q->n_plans; i++)
        destroy_plan(&q->plans[i]);
    quant_buffer *bufs[] = {&q->act, &q->scale, &q->slab, &q->accum};
    for (quant_buffer *b : bufs)
        if (b->ptr) cudaFree(b->ptr);
    for (int i = 0; i < q->n_retired; i++)
        cudaFree(q->retired[i]);
    free(q);
    cb->quant = NULL;
}

static cuda_quant *quant_state(glm_backend *be)
{
    cuda_backend *cb = cuda_impl(be);
    if (!cb->quant) {
        cb->quant = (cuda_quant *)calloc(1, sizeof(cuda_quant));
        if (!cb->quant) {
            glm_backend_fail(be, GLM_ERR_NOMEM, "linear: out of host memory");
            return NULL;
        }
        const char *v = getenv("GLM4V_GEMVQ_MMA");
        cb->quant->mma = v && *v ? atoi(v) != 0 : 1;
        v = getenv("GLM4V_GEMVQ_WR");
        int wr = v && *v ? atoi(v) : 0;
        gqm_knobs *kn = &cb->quant->knobs;
        kn->wr = wr >= 8 ? 8 : wr >= 4 ? 4 : wr >= 2 ? 2 : wr;
        v = getenv("GLM4V_GEMMQ_RT");
        kn->rt = v && *v && atoi(v) >= 2 ? 2 : 1;
        v = getenv("GLM4V_GEMVQ_U");
        kn->u = v && *v && atoi(v) >= 4 ? 4 : 2;
        v = getenv("GLM4V_GEMVQ_BPS");
        kn->bps = v && *v && atoi(v) > 0 ? atoi(v) : 4;
        v = getenv("GLM4V_GEMVQ_ONE");
        kn->one = v && *v ? atoi(v) != 0 : 1;
        v = getenv("GLM4V_GEMVQ_FP8_WIDE");
        cb->quant->fp8_wide_rows = !v || !*v ? 8192 : atoll(v) > 0 ? atoll(v) : INT64_MAX;
        v = getenv("GLM4V_GEMMQ_MAX_M");
        cb->quant->mma_max_m = v && *v ? atoll(v) : GQM_DEFAULT_MAX_M;
    }
    return cb->quant;
}

/* b holds at least bytes afterwards (false: the backend has failed). */
static bool ensure(glm_backend *be, cuda_quant *q, quant_buffer *b, size_t bytes)
{
    if (b->bytes >= bytes) return true;
    if (b->ptr) {
        if (q->n_retired == QUANT_RETIRED) {
            glm_backend_fail(be, GLM_ERR_BACKEND, "linear: quantized scratch grew too often");
            return false;
        }
        q->retired[q->n_retired++] = b->ptr;
        b->ptr = NULL;
        b->bytes = 0;
    }
    /* powers of two: a few growths cover every shape, so few buffers are ever retired */
    size_t rounded = 256;
    while (rounded < bytes)
        rounded *= 2;
    bytes = rounded;
    cudaError_t e = cudaMalloc(&b->ptr, bytes);
    if (e != cudaSuccess) {
        b->ptr = NULL;
        glm_backend_fail(be, GLM_ERR_DEVICE_OOM, "linear: %.1f MiB of quantized scratch: %s",
                         (double)bytes / (1 << 20), cudaGetErrorString(e));
        return false;
    }
    b->bytes = bytes;
    return true;
}

/* ---- activation quantization (fp8) ----------------------------------------------------------- */

#define ACT_THREADS 256

__device__ __forceinline__ float block_max(float v, float *shared)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? shared[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    return v;
}

/* One block per row of x: sx = amax / 448 and codes = e4m3_satfinite(x * (448 / amax)), as
 * glm_fp8_quantize_activation_row (an all-zero row: scale 1, codes of x * 0). */
template <typename T>
__global__ void __launch_bounds__(ACT_THREADS)
    fp8_quantize_rows_kernel(uint8_t *codes, float *scales, const T *x, int64_t k)
{
    __shared__ float red[32];
    const T *row = x + (int64_t)blockIdx.x * k;
    float amax = 0.f;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
        amax = fmaxf(amax, fabsf(to_f32(row[i])));
    amax = block_max(amax, red);
    bool live = amax > 0.f;
    float inv = live ? GLM_FP8_MAX / amax : 0.f;
    uint8_t *out = codes + (int64_t)blockIdx.x * k;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
        out[i] = fp8_encode(to_f32(row[i]) * inv);
    if (threadIdx.x == 0) scales[blockIdx.x] = live ? amax / GLM_FP8_MAX : 1.f;
}

/* ---- the fp8 epilogue: y = act(acc * sx[m] * sw[n] + b[n]) ------------------------------------
 */

template <typename T, typename AccT, typename OutT>
__global__ void fp8_epilogue_kernel(OutT *y, const AccT *acc, const float *sx, const float *sw,
                                    const T *bias, int gelu, int64_t m, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * n) return;
    int64_t r = i / n, c = i % n;
    float v = load_f32(acc[i]) * (sx[r] * sw[c]);
    if (bias) v += to_f32(bias[c]);
    if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    y[i] = store_f32<OutT>(v);
}

/* ---- dequantization of a slab of weight rows (int8 / int4) to the storage type ----------------
 */

/* One thread per output element pair; the values are glm_dequantize_rows' (f32), then rounded to
 * the storage type for the tensor cores. */
template <typename T>
__global__ void dequant_slab_kernel(T *out, const uint8_t *codes, const float *scales,
                                    const uint8_t *zeros, int fmt, int group, int64_t rows,
                                    int64_t k)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * k) return;
    int64_t r = i / k, c = i % k;
    out[i] = from_f32<T>(weight_value(codes, scales, zeros, fmt, group, k, r, c));
}

/* ---- fallback: any shape, exact semantics ------------------------------------------------------
 */

/* 16x16 output tiles; x is the storage type, or (fp8) the activation codes with row scales. */
template <typename T, typename OutT>
__global__ void quant_fallback_kernel(OutT *y, const T *x, const uint8_t *xq, const float *sx,
                                      const uint8_t *codes, const float *scales,
                                      const uint8_t *zeros, int fmt, int group, const T *bias,
                                      int gelu, int64_t m, int64_t n, int64_t k)
{
    __shared__ float xs[16][17], ws[16][17];
    int64_t row = (int64_t)blockIdx.y * 16 + threadIdx.y;
    int64_t col = (int64_t)blockIdx.x * 16 + threadIdx.y;
    int64_t out_col = (int64_t)blockIdx.x * 16 + threadIdx.x;
    bool fp8 = fmt == GLM_WEIGHT_FP8;
    float acc = 0.f;
    for (int64_t k0 = 0; k0 < k; k0 += 16) {
        int64_t kk = k0 + threadIdx.x;
        float xv = 0.f, wv = 0.f;
        if (row < m && kk < k) xv = fp8 ? fp8_decode(xq[row * k + kk]) : to_f32(x[row * k + kk]);
        if (col < n && kk < k)
            wv = fp8 ? fp8_decode(codes[col * k + kk])
                     : weight_value(codes, scales, zeros, fmt, group, k, col, kk);
        xs[threadIdx.y][threadIdx.x] = xv;
        ws[threadIdx.y][threadIdx.x] = wv;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc += xs[threadIdx.y][i] * ws[threadIdx.x][i];
        __syncthreads();
    }
    if (row < m && out_col < n) {
        if (fp8) acc *= sx[row] * scales[out_col];
        if (bias) acc += to_f32(bias[out_col]);
        if (gelu) acc = 0.5f * acc * (1.f + erff(acc * 0.70710678118654752f));
        y[row * n + out_col] = store_f32<OutT>(acc);
    }
}

/* ---- cuBLASLt plans for the quantized paths ----------------------------------------------------
 */

/* D (n x m, ld ldd, column-major: the row-major y or a column block of it) = A^T B with A the
 * weight rows (k x n) and B = x^T (k x m), of types a_type / d_type. NULL when cuBLASLt has no
 * algorithm (the caller falls back) or the backend failed. */
static quant_plan *lt_plan(glm_backend *be, cuda_quant *q, cudaDataType_t a_type,
                           cudaDataType_t d_type, int epilogue, int64_t m, int64_t n, int64_t k,
                           int64_t ldd)
{
    cuda_backend *cb = cuda_impl(be);
    int key = (int)a_type | ((int)d_type << 8) | (epilogue << 16);
    for (int i = 0; i < q->n_plans; i++) {
        quant_plan *p = &q->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->ldd == ldd && p->key == key)
            return p->none ? NULL : p;
    }
    if (q->n_plans == QUANT_PLANS) {
        for (int i = 0; i < q->n_plans; i++)
            destroy_plan(&q->plans[i]);
        q->n_plans = 0;
    }
    quant_plan *p = &q->plans[q->n_plans];
    memset(p, 0, sizeof(*p));
    p->m = m, p->n = n, p->k = k, p->ldd = ldd, p->key = key;
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)epilogue;
    cudaDataType_t c_type = d_type;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int n_results = 0;
    bool ok =
        cuda_lt_gemm_create(&p->lt, a_type, c_type, m, n, k, ldd, epi) == CUBLAS_STATUS_SUCCESS &&
        cublasLtMatmulPreferenceCreate(&pref) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &cb->lt_workspace_bytes,
                                             sizeof(cb->lt_workspace_bytes)) == 0;
    if (!ok) {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        destroy_plan(p);
        glm_backend_fail(be, GLM_ERR_BACKEND, "linear: cuBLASLt descriptor setup failed");
        return NULL;
    }
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cb->lt, p->lt.op, p->lt.a, p->lt.b, p->lt.c, p->lt.c, pref,
                                                       1, &result, &n_results);
    cublasLtMatmulPreferenceDestroy(pref);
    q->n_plans++;
    if (st != CUBLAS_STATUS_SUCCESS || n_results == 0) {
        p->none = true;
        return NULL;
    }
    p->algo = result.algo;
    return p;
}

static bool lt_run(glm_backend *be, quant_plan *p, const void *a, const void *b, void *d,
                   const void *bias)
{
    cuda_backend *cb = cuda_impl(be);
    if (bias && cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof(bias)) != CUBLAS_STATUS_SUCCESS)
        return false;
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(cb->lt, p->lt.op, &alpha, a, p->lt.a, b, p->lt.b, &beta, d, p->lt.c, d, p->lt.c,
                          &p->algo, cb->lt_workspace, cb->lt_workspace_bytes,
                          cb->stream) == CUBLAS_STATUS_SUCCESS;
}

static bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

/* ---- the op ------------------------------------------------------------------------------------
 */

template <typename T, typename OutT>
static void run_fallback(glm_backend *be, glm_tensor y, glm_tensor x, const glm_weight &w,
                         const uint8_t *xq, const float *sx, const void *bias, int gelu)
{
    int64_t m = glm_tensor_rows(&x), n = w.rows, k = w.cols;
    dim3 grid(cuda_blocks(n, 16), cuda_blocks(m, 16)), block(16, 16);
    quant_fallback_kernel<T, OutT><<<grid, block, 0, cuda_impl(be)->stream>>>(
        (OutT *)y.data, (const T *)x.data, xq, sx, (const uint8_t *)w.data, w.scales, w.zeros,
        (int)w.format, w.group_size, (const T *)bias, gelu, m, n, k);
    CUDA_CHECK_LAUNCH(be);
}

/* fp8 through cuBLASLt; false when it has no algorithm for this shape. */
template <typename T, typename OutT>
static bool fp8_lt(glm_backend *be, cuda_quant *q, glm_tensor y, const glm_weight &w,
                   const uint8_t *xq, const float *sx, const void *bias, int gelu, int64_t m)
{
    int64_t n = w.rows, k = w.cols;
    bool f32_acc = y.dtype == GLM_F16; /* unscaled sums can pass f16's 65504 */
    cudaDataType_t d_type = y.dtype == GLM_F32 || f32_acc ? CUDA_R_32F : CUDA_R_16BF;
    if (k % 16 || !aligned16(w.data) || !aligned16(xq) || !aligned16(y.data)) return false;
    quant_plan *p = lt_plan(be, q, CUDA_R_8F_E4M3, d_type, CUBLASLT_EPILOGUE_DEFAULT, m, n, k, n);
    if (!p) return false;
    void *acc = y.data;
    if (f32_acc) {
        if (!ensure(be, q, &q->accum, (size_t)(m * n) * sizeof(float))) return true;
        acc = q->accum.ptr;
    }
    if (!lt_run(be, p, w.data, xq, acc, NULL)) {
        glm_backend_fail(be, GLM_ERR_BACKEND, "linear: cuBLASLt fp8 %lldx%lldx%lld failed",
                         (long long)m, (long long)n, (long long)k);
        return true;
    }
    unsigned blocks = cuda_blocks(m * n, 256);
    cudaStream_t s = cuda_impl(be)->stream;
    if (f32_acc || y.dtype == GLM_F32)
        fp8_epilogue_kernel<T, float, OutT><<<blocks, 256, 0, s>>>(
            (OutT *)y.data, (const float *)acc, sx, w.scales, (const T *)bias, gelu, m, n);
    else
        fp8_epilogue_kernel<T, __nv_bfloat16, OutT><<<blocks, 256, 0, s>>>(
            (OutT *)y.data, (const __nv_bfloat16 *)acc, sx, w.scales, (const T *)bias, gelu, m, n);
    if (cudaGetLastError() != cudaSuccess)
        glm_backend_fail(be, GLM_ERR_BACKEND, "linear: fp8 epilogue launch failed");
    return true;
}

/* int8 / int4 through dequantized slabs and cuBLASLt; false when it has no algorithm. */
template <typename T, typename OutT>
static bool weight_only_lt(glm_backend *be, cuda_quant *q, glm_tensor y, glm_tensor x,
                           const glm_weight &w, const void *bias, int gelu)
{
    int64_t m = glm_tensor_rows(&x), n = w.rows, k = w.cols;
    cudaDataType_t t = x.dtype == GLM_F16 ? CUDA_R_16F : CUDA_R_16BF;
    cudaDataType_t d_type = y.dtype == GLM_F32 ? CUDA_R_32F : t;
    size_t out_size = glm_dtype_size(y.dtype);
    if (k % 8 || n % 8 || !aligned16(x.data) || !aligned16(y.data) || (bias && !aligned16(bias)) ||
        (y.dtype == GLM_F32 && bias))
        return false;
    int64_t slab = (int64_t)(SLAB_BYTES / ((size_t)k * sizeof(T))) / 64 * 64;
    if (slab < 64) slab = 64;
    if (slab > n) slab = n;
    int epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    /* both slab shapes planned before any work, so a missing algorithm falls back whole */
    quant_plan *full = lt_plan(be, q, t, d_type, epi, m, slab, k, n), *tail = full;
    if (full && n % slab) tail = lt_plan(be, q, t, d_type, epi, m, n % slab, k, n);
    if (!full || !tail) return false;
    if (!ensure(be, q, &q->slab, (size_t)(slab * k) * sizeof(T))) return true;
    cudaStream_t s = cuda_impl(be)->stream;
    int64_t groups = glm_weight_groups(w.format, k, w.group_size);
    size_t row_bytes = glm_weight_row_bytes(w.format, GLM_F32, k);
    for (int64_t n0 = 0; n0 < n && be->status == GLM_OK; n0 += slab) {
        int64_t rows = n - n0 < slab ? n - n0 : slab;
        quant_plan *p = rows == slab ? full : tail;
        dequant_slab_kernel<T><<<cuda_blocks(rows * k, 256), 256, 0, s>>>(
            (T *)q->slab.ptr, (const uint8_t *)w.data + n0 * row_bytes, w.scales + n0 * groups,
            w.zeros ? w.zeros + n0 * groups : NULL, (int)w.format, w.group_size, rows, k);
        if (cudaGetLastError() != cudaSuccess) {
            glm_backend_fail(be, GLM_ERR_BACKEND, "linear: dequantize launch failed");
            return true;
        }
        const T *b = bias ? (const T *)bias + n0 : NULL;
        if (!lt_run(be, p, q->slab.ptr, x.data, (char *)y.data + n0 * out_size, b))
            glm_backend_fail(be, GLM_ERR_BACKEND, "linear: cuBLASLt %lldx%lldx%lld failed",
                             (long long)m, (long long)rows, (long long)k);
    }
    if (gelu && be->status == GLM_OK) cuda_gelu(be, y, y);
    return true;
}

/* fp8 products of more rows than this apply their scales inside the GEMM (above) */
#define FP8_SCALED_MIN_ROWS 256

template <typename T, typename OutT>
static void linear_quantized(glm_backend *be, glm_tensor y, glm_tensor x, const glm_weight &w,
                             const void *bias, int gelu)
{
    cuda_backend *cb = cuda_impl(be);
    cuda_quant *q = quant_state(be);
    if (!q) return;
    int64_t m = glm_tensor_rows(&x), k = w.cols;
    /* one token against a wide fp8 weight (gate/up, the output layer): the CUDA-core kernel
     * streams it faster (one warp a row, x quantized once by its own launch): 76-102 % of the
     * copy rate against 61-85 % for the tensor-core kernel, which wins below (PERF.md) */
    bool fp8_wide = w.format == GLM_WEIGHT_FP8 && m == 1 && w.rows >= q->fp8_wide_rows;
    if (q->mma && m <= q->mma_max_m && !fp8_wide && gqm_fits(w, x.data, m)) {
        cudaError_t e = gqm_run<T, OutT>(be, y, x, w, bias, gelu, m, q->knobs);
        if (e != cudaSuccess)
            glm_backend_fail(be, GLM_ERR_BACKEND,
                             "linear: quantized mma launch (%lld x %lld x %lld): %s", (long long)m,
                             (long long)w.rows, (long long)k, cudaGetErrorString(e));
        return;
    }
    const uint8_t *xq = NULL;
    const float *sx = NULL;
    if (w.format == GLM_WEIGHT_FP8) {
        if (!ensure(be, q, &q->act, (size_t)(m * k)) ||
            !ensure(be, q, &q->scale, (size_t)m * sizeof(float)))
            return;
        fp8_quantize_rows_kernel<T><<<(unsigned)m, ACT_THREADS, 0, cb->stream>>>(
            (uint8_t *)q->act.ptr, (float *)q->scale.ptr, (const T *)x.data, k);
        CUDA_CHECK_LAUNCH(be);
        xq = (const uint8_t *)q->act.ptr;
        sx = (const float *)q->scale.ptr;
        if (m > FP8_SCALED_MIN_ROWS && cuda_is_half(y.dtype)) {
            /* prefill: cuBLASLt applies both scales and the bias inside the GEMM
             * (gemm_fp8_epilogue.cu), where fp8_lt below writes unscaled sums and rescales
             * them in a pass over the output: at 2,048 rows 1.29 PFLOP/s against 0.85 (gate/up,
             * H200). At 16-64 rows cuBLASLt's scaled kernels are slower than the plain GEMM and
             * its pass (57 against 43-48 us for gate/up, 62 against 47-50 for down), so batched
             * decode keeps fp8_lt (PERF.md, fourth session of 2026-12-03) */
            glm_weight qx = {GLM_WEIGHT_FP8, GLM_F32, m, k, 0, (void *)xq, (float *)sx, NULL};
            glm_tensor bt = glm_tensor_2d(y.dtype, 1, w.rows, (void *)bias);
            cuda_linear_q8(be, y, qx, w, bias ? &bt : NULL, gelu ? GLM_ACT_GELU : GLM_ACT_NONE);
            return;
        }
    }
    if (m <= GEMV_QUANT_MAX_ROWS &&
        gemv_quant<T, OutT>(be, y, x, w, xq, sx, bias, gelu)) /* gemv_quant.cuh */
        return;
    if (be->status) return;
    bool done = w.format == GLM_WEIGHT_FP8 ? fp8_lt<T, OutT>(be, q, y, w, xq, sx, bias, gelu, m)
                                           : weight_only_lt<T, OutT>(be, q, y, x, w, bias, gelu);
    if (!done && be->status == GLM_OK) run_fallback<T, OutT>(be, y, x, w, xq, sx, bias, gelu);
}

void cuda_linear_quantized(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w,
                           const glm_tensor *bias, glm_activation act)
{
    int64_t m = glm_tensor_rows(&x), k = glm_tensor_cols(&x), n = w.rows;
    CUDA_REQUIRE(be,
                 (w.format == GLM_WEIGHT_FP8 || w.format == GLM_WEIGHT_INT8 ||
                  w.format == GLM_WEIGHT_INT4) &&
                     w.scales && (w.format != GLM_WEIGHT_INT4 || (w.zeros && w.group_size > 0)),
                 "linear: weight format %d without its scales", (int)w.format);
    CUDA_REQUIRE(be, (be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(w.format)) != 0,
                 "linear: this GPU cannot compute with %s weights",
                 glm_weight_format_name(w.format));
    CUDA_REQUIRE(be, cuda_is_half(x.dtype) && (y.dtype == x.dtype || y.dtype == GLM_F32),
                 "linear: x of the 16-bit storage type and y of it or f32 expected (x %s, y %s)",
                 glm_dtype_name(x.dtype), glm_dtype_name(y.dtype));
    CUDA_REQUIRE(be, w.cols == k && glm_tensor_rows(&y) == m && glm_tensor_cols(&y) == n,
                 "linear: x [%lld,%lld] w [%lld,%lld] y [%lld,%lld]", (long long)m, (long long)k,
                 (long long)n, (long long)w.cols, (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y));
    CUDA_REQUIRE(be, !bias || (bias->dtype == x.dtype && glm_tensor_numel(bias) == n),
                 "linear: bias must be %s [%lld]", glm_dtype_name(x.dtype), (long long)n);
    CUDA_REQUIRE(be, act == GLM_ACT_NONE || act == GLM_ACT_GELU, "linear: unknown activation");
    if (m == 0 || n == 0) return;
    const void *b = bias ? bias->data : NULL;
    int gelu = act == GLM_ACT_GELU;
    if (y.dtype == GLM_F32)
        GLM_DISPATCH_HALF(x.dtype, T, linear_quantized<T, float>(be, y, x, w, b, gelu));
    else
        GLM_DISPATCH_HALF(x.dtype, T, linear_quantized<T, T>(be, y, x, w, b, gelu));
}

/* ---- quantize op (random weights) --------------------------------------------------------------
 */

#define QUANT_THREADS 128

/* One block per row; int4 walks the row's groups, one group of up to 128 values at a time. The
 * arithmetic is glm_quantize_rows' (kernels/cpu/quant.c). */
template <typename T>
__global__ void __launch_bounds__(QUANT_THREADS)
    quantize_rows_kernel(uint8_t *codes, float *scales, uint8_t *zeros, const T *src, int fmt,
                         int group, int64_t k)
{
    __shared__ float red[32];
    const T *row = src + (int64_t)blockIdx.x * k;
    if (fmt != GLM_WEIGHT_INT4) {
        float amax = 0.f;
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
            amax = fmaxf(amax, fabsf(to_f32(row[i])));
        amax = block_max(amax, red);
        uint8_t *out = codes + (int64_t)blockIdx.x * k;
        float lim = fmt == GLM_WEIGHT_FP8 ? GLM_FP8_MAX : 127.f;
        float s = amax > 0.f ? amax / lim : 1.f, inv = amax > 0.f ? lim / amax : 1.f;
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
            float v = to_f32(row[i]);
            if (fmt == GLM_WEIGHT_FP8) {
                out[i] = fp8_encode(v * inv);
            } else {
                float qv = fminf(fmaxf(rintf(v / s), -127.f), 127.f);
                out[i] = (uint8_t)(int8_t)qv;
            }
        }
        if (threadIdx.x == 0) scales[blockIdx.x] = s;
        return;
    }
    int64_t groups = (k + group - 1) / group, row_bytes = (k + 1) / 2;
    uint8_t *out = codes + (int64_t)blockIdx.x * row_bytes;
    for (int64_t g = 0; g < groups; g++) {
        int64_t g0 = g * group, g1 = g0 + group < k ? g0 + group : k;
        float lo = 0.f, hi = 0.f;
        for (int64_t i = g0 + threadIdx.x; i < g1; i += blockDim.x) {
            float v = to_f32(row[i]);
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
        }
        hi = block_max(hi, red);
        lo = -block_max(-lo, red);
        float s = (hi - lo) / 15.f;
        if (!(s > 0.f)) s = 1.f;
        float z = fminf(fmaxf(rintf(-lo / s), 0.f), 15.f);
        /* pairs of values share a byte: one thread writes both nibbles */
        for (int64_t i = g0 + 2 * threadIdx.x; i < g1; i += 2 * blockDim.x) {
            float q0 = fminf(fmaxf(rintf(to_f32(row[i]) / s) + z, 0.f), 15.f);
            float q1 =
                i + 1 < g1 ? fminf(fmaxf(rintf(to_f32(row[i + 1]) / s) + z, 0.f), 15.f) : 0.f;
            out[i / 2] = (uint8_t)((int)q0 | ((int)q1 << 4));
        }
        if (threadIdx.x == 0) {
            scales[blockIdx.x * groups + g] = s;
            zeros[blockIdx.x * groups + g] = (uint8_t)z;
        }
        __syncthreads();
    }
}

void cuda_quantize(glm_backend *be, glm_weight w, int64_t row0, glm_tensor src)
{
    CUDA_REQUIRE(
        be,
        w.format != GLM_WEIGHT_DENSE && cuda_is_half(src.dtype) &&
            glm_tensor_cols(&src) == w.cols && row0 >= 0 && row0 + glm_tensor_rows(&src) <= w.rows,
        "quantize: %s rows [%lld, +%lld) of [%lld,%lld] from %s [%lld,%lld]",
        glm_weight_format_name(w.format), (long long)row0, (long long)glm_tensor_rows(&src),
        (long long)w.rows, (long long)w.cols, glm_dtype_name(src.dtype),
        (long long)glm_tensor_rows(&src), (long long)glm_tensor_cols(&src));
    CUDA_REQUIRE(be, w.format != GLM_WEIGHT_INT4 || w.group_size % 2 == 0,
                 "quantize: odd int4 group size %d", w.group_size);
    int64_t n = glm_tensor_rows(&src);
    if (n == 0) return;
    glm_weight v = glm_weight_row_view(&w, row0, n);
    GLM_DISPATCH_HALF(src.dtype, T,
                      quantize_rows_kernel<T>
                      <<<(unsigned)n, QUANT_THREADS, 0, cuda_impl(be)->stream>>>(
                          (uint8_t *)v.data, v.scales, v.zeros, (const T *)src.data, (int)w.format,
                          w.group_size, w.cols));
    CUDA_CHECK_LAUNCH(be);
}

glm_status cuda_check_weight_format(glm_backend *be, glm_weight_format f, glm_error *err)
{
    cuda_backend *cb = cuda_impl(be);
    if (be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f)) return GLM_OK;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, cb->device) != cudaSuccess)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "cuda device %d cannot compute with %s weights",
                        cb->device, glm_weight_format_name(f));
    if (f == GLM_WEIGHT_FP8)
        return glm_fail(err, GLM_ERR_UNSUPPORTED,
                        "fp8 (E4M3) weights need a GPU of compute capability 8.9 or newer (Ada, "
                        "Hopper); cuda device %d is %s, sm_%d%d: use --weights int8 or int4",
                        cb->device, prop.name, prop.major, prop.minor);
    return glm_fail(err, GLM_ERR_UNSUPPORTED, "cuda device %d (%s) cannot compute with %s weights",
                    cb->device, prop.name, glm_weight_format_name(f));
}
