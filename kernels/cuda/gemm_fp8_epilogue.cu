/* linear_q8 (ops.h "fp8 activations"): y = act(dequant(q) dequant(w)^T + b) for E4M3 rows q that
 * were quantized by the kernel that produced them (norm.cu, elementwise.cu) and an fp8 weight w.
 *
 * Both scales go into the GEMM itself: cuBLASLt's outer-vector scaling
 * (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F) multiplies element (i, j) of the product by
 * a_scale[i] * b_scale[j], here the weight's per-output-channel scale and the row's per-token
 * scale, and the bias epilogue adds b, so the output is written once, in the storage type. The
 * path through gemm_quant.cu instead writes unscaled sums and rescales them in a second pass,
 * after a pass of its own that quantizes x: two extra passes over each GEMM's output or input.
 *
 * Layout as in gemm.cu: the row-major y [m, n] is the column-major n x m product
 * W (k x n, used transposed) * q^T (k x m). Plans are cached per (m, n, k, dtype, bias, form).
 * Where cuBLASLt has no outer-vector-scaled algorithm for a shape, the plain E4M3 GEMM writes the
 * unscaled sums (into y itself for bf16, whose range holds them; f32 scratch for f16) and one
 * pass applies the scales, bias and activation (printed once per shape: it costs that pass);
 * where it has neither (odd sizes of the tiny test models, alignment), a tiled f32 kernel
 * computes the same function. */
#include "kernels/cuda/common.cuh"

#include <cuda_fp8.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define Q8_PLANS 32

enum { Q8_SCALED, Q8_PLAIN }; /* the GEMM applies the scales and bias / writes bare sums */

typedef struct q8_plan {
    int64_t m, n, k;
    int dtype, bias, form;
    cudaDataType_t d_type; /* Q8_PLAIN: the sums' type */
    bool none; /* cuBLASLt has no algorithm: the fallback kernel runs this shape */
    cuda_lt_gemm lt;
    cublasLtMatmulAlgo_t algo;
} q8_plan;

struct cuda_q8 {
    q8_plan plans[Q8_PLANS];
    int n_plans;
    /* GLM4V_LINEAR_Q8=plain at first use: skip the scaled form (the tests' way to run the plain
     * GEMM + scaling pass on a GPU whose cuBLASLt has the scaled one) */
    bool plain_only;
};

static void destroy_plan(q8_plan *p)
{
    cuda_lt_gemm_destroy(&p->lt);
    memset(p, 0, sizeof(*p));
}

void cuda_q8_destroy(cuda_backend *cb)
{
    if (!cb->q8) return;
    for (int i = 0; i < cb->q8->n_plans; i++)
        destroy_plan(&cb->q8->plans[i]);
    free(cb->q8);
    cb->q8 = NULL;
}

/* The plan for this shape and form; NULL when the backend failed (out of host memory, descriptor
 * setup). Q8_SCALED is queried with the scale and bias pointers of the call already set: the
 * heuristic may check them (the shape then runs with other pointers of the same alignment). */
static q8_plan *get_plan(glm_backend *be, int form, int64_t m, int64_t n, int64_t k, glm_dtype dt,
                         const float *sa, const float *sb, const void *bias)
{
    cuda_backend *cb = cuda_impl(be);
    if (!cb->q8) {
        cb->q8 = (struct cuda_q8 *)calloc(1, sizeof(*cb->q8));
        if (!cb->q8) {
            glm_backend_fail(be, GLM_ERR_NOMEM, "linear_q8: out of host memory");
            return NULL;
        }
        const char *want = getenv("GLM4V_LINEAR_Q8");
        cb->q8->plain_only = want && strcmp(want, "plain") == 0;
    }
    struct cuda_q8 *q = cb->q8;
    int has_bias = form == Q8_SCALED && bias != NULL;
    for (int i = 0; i < q->n_plans; i++) {
        q8_plan *p = &q->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->dtype == (int)dt && p->bias == has_bias &&
            p->form == form)
            return p;
    }
    if (q->n_plans == Q8_PLANS) { /* a tower has four shapes per image count: start over */
        for (int i = 0; i < q->n_plans; i++)
            destroy_plan(&q->plans[i]);
        q->n_plans = 0;
    }
    q8_plan *p = &q->plans[q->n_plans++];
    memset(p, 0, sizeof(*p));
    p->m = m, p->n = n, p->k = k, p->dtype = (int)dt, p->bias = has_bias, p->form = form;
    cudaDataType_t out = dt == GLM_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    /* bare sums: bf16 holds their range (y's own buffer); f16 may not (f32 scratch) */
    p->d_type = form == Q8_SCALED || dt == GLM_BF16 ? out : CUDA_R_32F;
    cublasLtEpilogue_t epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    cublasLtMatmulPreference_t pref = NULL;
    bool ok =
        cuda_lt_gemm_create(&p->lt, CUDA_R_8F_E4M3, p->d_type, m, n, k, n, epi) == 0 &&
        (!has_bias || (cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                      &out, sizeof(out)) == 0 &&
                       cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof(bias)) == 0)) &&
        cublasLtMatmulPreferenceCreate(&pref) == 0 &&
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &cb->lt_workspace_bytes,
                                             sizeof(cb->lt_workspace_bytes)) == 0;
    if (!ok) {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        destroy_plan(p);
        q->n_plans--;
        glm_backend_fail(be, GLM_ERR_BACKEND, "linear_q8: cuBLASLt descriptor setup failed");
        return NULL;
    }
    /* a cuBLASLt without outer-vector scaling refuses the mode here: no algorithm */
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (form == Q8_SCALED) {
        st = cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                            sizeof(mode));
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                                sizeof(mode));
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa,
                                                sizeof(sa));
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb,
                                                sizeof(sb));
    }
    cublasLtMatmulHeuristicResult_t result[4];
    int n_results = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(cb->lt, p->lt.op, p->lt.a, p->lt.b, p->lt.c, p->lt.c, pref, 4, result,
                                            &n_results);
    cublasLtMatmulPreferenceDestroy(pref);
    if (form == Q8_SCALED && q->plain_only) st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st != CUBLAS_STATUS_SUCCESS || n_results == 0) {
        p->none = true;
        if (form == Q8_SCALED && !q->plain_only)
            fprintf(stderr,
                    "glm4v cuda: linear_q8 %lldx%lldx%lld: no outer-vector-scaled fp8 GEMM in "
                    "this cuBLASLt (status %d, %d algorithms); a scaling pass follows the GEMM\n",
                    (long long)m, (long long)n, (long long)k, (int)st, n_results);
    } else {
        p->algo = result[0].algo;
    }
    return p;
}

__device__ __forceinline__ float q8_f32(float v)
{
    return v;
}
template <typename T> __device__ __forceinline__ float q8_f32(T v)
{
    return to_f32(v);
}

/* Q8_PLAIN's pass: y = act(sum * sx[row] * sw[col] + b[col]); sum may be y itself (bf16). */
template <typename T, typename AccT>
__global__ void q8_scale_kernel(T *y, const AccT *sum, const float *sx, const float *sw,
                                const T *bias, int gelu, int64_t m, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < m * n; i += stride) {
        int64_t r = i / n, c = i - r * n;
        float v = q8_f32(sum[i]) * (sx[r] * sw[c]);
        if (bias) v += to_f32(bias[c]);
        if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
        y[i] = from_f32<T>(v);
    }
}

/* The tiled fallback: 16 x 16 outputs per block of 16 x 16 threads, k in tiles of 16, f32 sums of
 * the decoded E4M3 values, then the scales, bias and activation. */
template <typename T>
__global__ void linear_q8_fallback_kernel(T *y, const uint8_t *xq, const float *sx,
                                          const uint8_t *wq, const float *sw, const T *bias,
                                          int gelu, int64_t m, int64_t n, int64_t k)
{
    __shared__ float xs[16][17], ws[16][17];
    int64_t row = (int64_t)blockIdx.y * 16 + threadIdx.y;
    int64_t wrow = (int64_t)blockIdx.x * 16 + threadIdx.y;
    int64_t col = (int64_t)blockIdx.x * 16 + threadIdx.x;
    float acc = 0.f;
    for (int64_t k0 = 0; k0 < k; k0 += 16) {
        int64_t kk = k0 + threadIdx.x;
        xs[threadIdx.y][threadIdx.x] =
            row < m && kk < k ? __half2float(__half(__nv_cvt_fp8_to_halfraw(
                                    (__nv_fp8_storage_t)xq[row * k + kk], __NV_E4M3)))
                              : 0.f;
        ws[threadIdx.y][threadIdx.x] =
            wrow < n && kk < k ? __half2float(__half(__nv_cvt_fp8_to_halfraw(
                                     (__nv_fp8_storage_t)wq[wrow * k + kk], __NV_E4M3)))
                               : 0.f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc += xs[threadIdx.y][i] * ws[threadIdx.x][i];
        __syncthreads();
    }
    if (row < m && col < n) {
        float v = acc * (sx[row] * sw[col]);
        if (bias) v += to_f32(bias[col]);
        if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
        y[row * n + col] = from_f32<T>(v);
    }
}

void cuda_linear_q8(glm_backend *be, glm_tensor y, glm_weight q, glm_weight w,
                    const glm_tensor *bias, glm_activation act)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t m = q.rows, n = w.rows, k = w.cols;
    CUDA_REQUIRE(be, w.format == GLM_WEIGHT_FP8 && w.data && w.scales,
                 "linear_q8: w must be an fp8 weight with scales (format %d)", (int)w.format);
    CUDA_REQUIRE(be, q.format == GLM_WEIGHT_FP8 && q.data && q.scales && q.cols == k,
                 "linear_q8: q must be fp8 codes [m, %lld] with scales, got [%lld, %lld]",
                 (long long)k, (long long)q.rows, (long long)q.cols);
    CUDA_REQUIRE(be,
                 cuda_is_half(y.dtype) && glm_tensor_rows(&y) == m && glm_tensor_cols(&y) == n,
                 "linear_q8: y must be 16-bit [%lld, %lld], got %s [%lld, %lld]", (long long)m,
                 (long long)n, glm_dtype_name(y.dtype), (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y));
    CUDA_REQUIRE(be, !bias || (bias->dtype == y.dtype && glm_tensor_numel(bias) == n),
                 "linear_q8: bias must be %s [%lld]", glm_dtype_name(y.dtype), (long long)n);
    CUDA_REQUIRE(be, act == GLM_ACT_NONE || act == GLM_ACT_GELU, "linear_q8: unknown activation");
    CUDA_REQUIRE(be, (be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_FP8)) != 0,
                 "linear_q8: this GPU cannot compute with fp8 weights");
    if (m == 0 || n == 0) return;
    const void *b = bias ? bias->data : NULL;
    const float alpha = 1.f, beta = 0.f;
    /* E4M3 operands want 16-byte rows and pointers; the bias and output 16-byte pointers */
    bool lt_ok = k % 16 == 0 && n % 8 == 0 && cuda_aligned16(q.data) && cuda_aligned16(w.data) &&
                 cuda_aligned16(y.data) && (!b || cuda_aligned16(b));
    q8_plan *p = lt_ok ? get_plan(be, Q8_SCALED, m, n, k, y.dtype, w.scales, q.scales, b) : NULL;
    if (be->status != GLM_OK) return;
    if (p && !p->none) {
        const float *sa = w.scales, *sb = q.scales;
        CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                        &sa, sizeof(sa)));
        CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                        &sb, sizeof(sb)));
        if (b)
            CUBLAS_CHECK(be, cublasLtMatmulDescSetAttribute(
                                 p->lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof(b)));
        cublasStatus_t st = cublasLtMatmul(cb->lt, p->lt.op, &alpha, w.data, p->lt.a, q.data, p->lt.b,
                                           &beta, y.data, p->lt.c, y.data, p->lt.c, &p->algo,
                                           cb->lt_workspace, cb->lt_workspace_bytes, cb->stream);
        if (st == CUBLAS_STATUS_SUCCESS) {
            if (act == GLM_ACT_GELU) cuda_gelu(be, y, y);
            return;
        }
        /* an algorithm the heuristic offered that will not run: this shape takes the plain
         * route from now on (y is rewritten whole below) */
        p->none = true;
        fprintf(stderr,
                "glm4v cuda: linear_q8 %lldx%lldx%lld: the outer-vector-scaled fp8 GEMM failed "
                "(status %d); a scaling pass follows the GEMM\n",
                (long long)m, (long long)n, (long long)k, (int)st);
    }
    q8_plan *plain = lt_ok ? get_plan(be, Q8_PLAIN, m, n, k, y.dtype, NULL, NULL, NULL) : NULL;
    if (be->status != GLM_OK) return;
    if (plain && !plain->none) {
        void *sum = y.data;
        if (plain->d_type == CUDA_R_32F) {
            sum = cuda_scratch(be, (size_t)(m * n) * sizeof(float));
            if (!sum) return;
        }
        CUBLAS_CHECK(be, cublasLtMatmul(cb->lt, plain->lt.op, &alpha, w.data, plain->lt.a, q.data,
                                        plain->lt.b, &beta, sum, plain->lt.c, sum, plain->lt.c,
                                        &plain->algo, cb->lt_workspace, cb->lt_workspace_bytes,
                                        cb->stream));
        unsigned blocks = (unsigned)(cb->n_sms * 8);
        int gelu = act == GLM_ACT_GELU;
        GLM_DISPATCH_HALF(y.dtype, T, {
            if (plain->d_type == CUDA_R_32F)
                q8_scale_kernel<T, float><<<blocks, 256, 0, cb->stream>>>(
                    (T *)y.data, (const float *)sum, q.scales, w.scales, (const T *)b, gelu, m, n);
            else
                q8_scale_kernel<T, T><<<blocks, 256, 0, cb->stream>>>(
                    (T *)y.data, (const T *)sum, q.scales, w.scales, (const T *)b, gelu, m, n);
        });
        CUDA_CHECK_LAUNCH(be);
        return;
    }
    dim3 grid(cuda_blocks(n, 16), cuda_blocks(m, 16)), block(16, 16);
    GLM_DISPATCH_HALF(y.dtype, T,
                      linear_q8_fallback_kernel<T><<<grid, block, 0, cb->stream>>>(
                          (T *)y.data, (const uint8_t *)q.data, q.scales, (const uint8_t *)w.data,
                          w.scales, (const T *)b, act == GLM_ACT_GELU, m, n, k));
    CUDA_CHECK_LAUNCH(be);
}
