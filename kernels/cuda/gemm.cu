/* linear: y[M,N] = act(x[M,K] W[N,K]^T + b) through cuBLASLt, 16-bit (bf16 or fp16) in, 16-bit
 * or f32 out (the output layer writes f32 logits), fp32 accumulate. Quantized weights go to
 * gemm_quant.cu.
 *
 * cuBLAS is column-major, so the row-major product is computed as its transpose:
 * y^T (N x M, ld N) = W (stored K x N col-major, used transposed) * x^T (K x M, ld K). The bias
 * is then a per-row vector of the column-major result, which is what CUBLASLT_EPILOGUE_BIAS adds.
 * cuBLASLt's GELU epilogue is the tanh approximation, and GLM-4V needs the exact erf form, so GELU
 * runs as a separate elementwise pass (cuda_gelu) after the bias epilogue.
 *
 * Plans (descriptors + the chosen algorithm) are cached per (M, N, K, epilogue, alignment, dtype),
 * so a decode step at a given batch size costs no heuristic query after the first. */
#include "kernels/cuda/common.cuh"

#include <string.h>

void cuda_gemm_destroy_plans(cuda_backend *cb)
{
    for (int i = 0; i < cb->n_plans; i++) {
        cuda_lt_gemm_destroy(&cb->plans[i].lt);
    }
    cb->n_plans = 0;
}

static int pointer_alignment(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 2 && (u % (uintptr_t)a) != 0)
        a >>= 1;
    return a;
}

#define GEMM_TUNE_CANDIDATES 8 /* heuristic results timed per new shape */
/* Only shapes of at most this many rows are timed: the decode batches, which recur every step for
 * as long as the server runs. A prefill step's row count changes from step to step, and timing
 * eight candidates of a 2048-row product (~30 ms) would cost more than it saves. */
#define GEMM_TUNE_MAX_ROWS 256

/* The operands of the call a plan is first made for: its candidates are timed on them. */
typedef struct gemm_operands {
    const void *x, *w, *bias;
    void *y;
} gemm_operands;

/* One warm-up, then GEMM_TUNE_REPS runs between two events on the backend stream. Returns
 * the milliseconds, or -1 when the algorithm fails on this shape. */
#define GEMM_TUNE_REPS 5
static float time_algo(cuda_backend *cb, const cuda_gemm_plan *p, const cublasLtMatmulAlgo_t *algo,
                       const gemm_operands *o, cudaEvent_t e0, cudaEvent_t e1)
{
    const float alpha = 1.f, beta = 0.f;
    for (int r = 0; r <= GEMM_TUNE_REPS; r++) {
        if (r == 1 && cudaEventRecord(e0, cb->stream) != cudaSuccess) return -1.f;
        if (cublasLtMatmul(cb->lt, p->lt.op, &alpha, o->w, p->lt.a, o->x, p->lt.b, &beta, o->y, p->lt.c, o->y,
                           p->lt.c, algo, cb->lt_workspace, cb->lt_workspace_bytes,
                           cb->stream) != CUBLAS_STATUS_SUCCESS)
            return -1.f;
    }
    float ms = -1.f;
    if (cudaEventRecord(e1, cb->stream) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
        cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
        return -1.f;
    return ms;
}

/* The fastest of the heuristic's candidates on the actual operands (the heuristic's own first
 * pick streams the weights of the decode-batch shapes at only 62-81% of the DRAM bandwidth,
 * docs/PERF.md), for shapes of up to GEMM_TUNE_MAX_ROWS rows. Not while the stream is being
 * captured: timing needs the GPU to run, so the decoder runs every decode bucket's first step
 * outside capture. Results are unchanged up to the summation order of the algorithm chosen. */
static int pick_fastest(cuda_backend *cb, const cuda_gemm_plan *p,
                        const cublasLtMatmulHeuristicResult_t *cand, int n, const gemm_operands *o)
{
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (n < 2 || !cb->gemm_tune || p->m > GEMM_TUNE_MAX_ROWS ||
        cudaStreamIsCapturing(cb->stream, &cap) != cudaSuccess ||
        cap != cudaStreamCaptureStatusNone)
        return 0;
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess) {
        if (e0) cudaEventDestroy(e0);
        cudaGetLastError();
        return 0;
    }
    if (o->bias)
        cublasLtMatmulDescSetAttribute(p->lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &o->bias,
                                       sizeof(o->bias));
    int best = 0;
    float best_ms = -1.f;
    for (int i = 0; i < n; i++) {
        float ms = time_algo(cb, p, &cand[i].algo, o, e0, e1);
        if (ms >= 0.f && (best_ms < 0.f || ms < best_ms)) best = i, best_ms = ms;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError(); /* a candidate's failure is not the caller's */
    return best;
}

/* Builds (or finds) the plan for one shape. Returns NULL when cuBLASLt has no algorithm for it,
 * which sends the call to the fallback kernel. */
static cuda_gemm_plan *gemm_plan(glm_backend *be, glm_dtype dt, glm_dtype out, int64_t m, int64_t n,
                                 int64_t k, int epilogue, int align, const gemm_operands *ops,
                                 bool *failed)
{
    cuda_backend *cb = cuda_impl(be);
    int key_epi = epilogue | (align << 8) | ((int)dt << 20) | ((int)out << 24);
    *failed = false;
    for (int i = 0; i < cb->n_plans; i++) {
        cuda_gemm_plan *p = &cb->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->epilogue == key_epi) return p;
    }
    if (cb->n_plans == GLM_CUDA_GEMM_CACHE) cuda_gemm_destroy_plans(cb); /* rare: start over */

    cuda_gemm_plan plan;
    memset(&plan, 0, sizeof(plan));
    plan.m = m;
    plan.n = n;
    plan.k = k;
    plan.epilogue = key_epi;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t results[GEMM_TUNE_CANDIDATES];
    int n_results = 0;
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)epilogue;
    uint32_t align_bytes = (uint32_t)align;
    cudaDataType_t type = dt == GLM_F16 ? CUDA_R_16F : CUDA_R_16BF;
    cudaDataType_t out_type = out == GLM_F32 ? CUDA_R_32F : type;
    cublasStatus_t st;
#define LT(call)                                                                                   \
    do {                                                                                           \
        st = (call);                                                                               \
        if (st != CUBLAS_STATUS_SUCCESS) {                                                         \
            glm_backend_fail(be, GLM_ERR_BACKEND, "%s %s:%d: cublas status %d", #call, __FILE__,   \
                             __LINE__, (int)st);                                                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
    LT(cuda_lt_gemm_create(&plan.lt, type, out_type, m, n, k, n, epi));
    if (out_type != type && epi == CUBLASLT_EPILOGUE_BIAS) /* the bias stays 16-bit */
        LT(cublasLtMatmulDescSetAttribute(plan.lt.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type,
                                          sizeof(type)));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                            &cb->lt_workspace_bytes,
                                            sizeof(cb->lt_workspace_bytes)));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                            &align_bytes, sizeof(align_bytes)));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                            &align_bytes, sizeof(align_bytes)));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                            &align_bytes, sizeof(align_bytes)));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                            &align_bytes, sizeof(align_bytes)));
    st = cublasLtMatmulAlgoGetHeuristic(cb->lt, plan.lt.op, plan.lt.a, plan.lt.b, plan.lt.c, plan.lt.c, pref,
                                        GEMM_TUNE_CANDIDATES, results, &n_results);
    cublasLtMatmulPreferenceDestroy(pref);
    pref = NULL;
    if (st != CUBLAS_STATUS_SUCCESS || n_results == 0) goto no_algo;
    plan.algo = results[pick_fastest(cb, &plan, results, n_results, ops)].algo;
    cb->plans[cb->n_plans] = plan;
    return &cb->plans[cb->n_plans++];
#undef LT
fail:
    *failed = true;
no_algo:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    cuda_lt_gemm_destroy(&plan.lt);
    return NULL;
}

/* Fallback for shapes cuBLASLt declines (odd alignments in tiny test models): a 16x16 tiled
 * fp32 product. Grid (N/16, M/16), block 16x16; each block reads 16-wide K tiles of x and W. */
template <typename T, typename OutT>
__global__ void linear_fallback_kernel(OutT *y, const T *x, const T *w, const T *bias, int64_t m,
                                       int64_t n, int64_t k)
{
    __shared__ float xs[16][17], ws[16][17];
    int64_t row = (int64_t)blockIdx.y * 16 + threadIdx.y;
    int64_t col = (int64_t)blockIdx.x * 16 + threadIdx.y;
    int64_t out_col = (int64_t)blockIdx.x * 16 + threadIdx.x;
    float acc = 0.f;
    for (int64_t k0 = 0; k0 < k; k0 += 16) {
        int64_t kk = k0 + threadIdx.x;
        xs[threadIdx.y][threadIdx.x] = (row < m && kk < k) ? to_f32(x[row * k + kk]) : 0.f;
        ws[threadIdx.y][threadIdx.x] = (col < n && kk < k) ? to_f32(w[col * k + kk]) : 0.f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 16; i++)
            acc += xs[threadIdx.y][i] * ws[threadIdx.x][i];
        __syncthreads();
    }
    if (row < m && out_col < n) {
        if (bias) acc += to_f32(bias[out_col]);
        y[row * n + out_col] = store_f32<OutT>(acc);
    }
}

void cuda_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight weight,
                 const glm_tensor *bias, glm_activation act)
{
    if (weight.format != GLM_WEIGHT_DENSE) {
        cuda_linear_quantized(be, y, x, weight, bias, act);
        return;
    }
    cuda_backend *cb = cuda_impl(be);
    glm_tensor w = glm_weight_tensor(&weight);
    int64_t m = glm_tensor_rows(&x), k = glm_tensor_cols(&x), n = glm_tensor_rows(&w);
    CUDA_REQUIRE(be,
                 cuda_is_half(w.dtype) && x.dtype == w.dtype &&
                     (y.dtype == w.dtype || y.dtype == GLM_F32),
                 "linear: x, w of one 16-bit dtype and y of it or f32 expected (x %s, w %s, y %s)",
                 glm_dtype_name(x.dtype), glm_dtype_name(w.dtype), glm_dtype_name(y.dtype));
    CUDA_REQUIRE(be,
                 glm_tensor_cols(&w) == k && glm_tensor_rows(&y) == m && glm_tensor_cols(&y) == n,
                 "linear: x [%lld,%lld] w [%lld,%lld] y [%lld,%lld]", (long long)m, (long long)k,
                 (long long)n, (long long)glm_tensor_cols(&w), (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y));
    CUDA_REQUIRE(be, !bias || (bias->dtype == w.dtype && glm_tensor_numel(bias) == n),
                 "linear: bias must be %s [%lld]", glm_dtype_name(w.dtype), (long long)n);
    if (m == 0) return;
    const void *bias_ptr = bias ? bias->data : NULL;
    if (cuda_gemv(be, y, x, w, bias_ptr)) { /* decode-sized: see gemv.cu */
        if (act == GLM_ACT_GELU) cuda_gelu(be, y, y);
        return;
    }
    int align = pointer_alignment(x.data);
    int a2 = pointer_alignment(w.data), a3 = pointer_alignment(y.data);
    if (a2 < align) align = a2;
    if (a3 < align) align = a3;
    if (bias_ptr && pointer_alignment(bias_ptr) < align) align = pointer_alignment(bias_ptr);
    int epilogue = bias_ptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    bool failed = false;
    gemm_operands ops = {x.data, w.data, bias_ptr, y.data};
    cuda_gemm_plan *plan = gemm_plan(be, w.dtype, y.dtype, m, n, k, epilogue, align, &ops, &failed);
    if (failed) return;
    if (plan) {
        if (bias_ptr)
            CUBLAS_CHECK(be,
                         cublasLtMatmulDescSetAttribute(plan->lt.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &bias_ptr, sizeof(bias_ptr)));
        const float alpha = 1.f, beta = 0.f;
        CUBLAS_CHECK(be, cublasLtMatmul(cb->lt, plan->lt.op, &alpha, w.data, plan->lt.a, x.data, plan->lt.b,
                                        &beta, y.data, plan->lt.c, y.data, plan->lt.c, &plan->algo,
                                        cb->lt_workspace, cb->lt_workspace_bytes, cb->stream));
    } else {
        dim3 grid(cuda_blocks(n, 16), cuda_blocks(m, 16)), block(16, 16);
        if (y.dtype == GLM_F32)
            GLM_DISPATCH_HALF(w.dtype, T,
                              linear_fallback_kernel<T, float><<<grid, block, 0, cb->stream>>>(
                                  (float *)y.data, (const T *)x.data, (const T *)w.data,
                                  (const T *)bias_ptr, m, n, k));
        else
            GLM_DISPATCH_HALF(w.dtype, T,
                              linear_fallback_kernel<T, T><<<grid, block, 0, cb->stream>>>(
                                  (T *)y.data, (const T *)x.data, (const T *)w.data,
                                  (const T *)bias_ptr, m, n, k));
        CUDA_CHECK_LAUNCH(be);
    }
    if (act == GLM_ACT_GELU) cuda_gelu(be, y, y);
}
