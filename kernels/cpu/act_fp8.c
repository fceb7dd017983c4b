/* fp8 activations on the CPU (ops.h "fp8 activations"): rows quantized to E4M3 codes with one
 * scale each, and the fp8 product on such rows. The arithmetic is kernels/weight_format.h's, the
 * one glm_fp8_quantize_activation_row and the fp8 linear use, so the fused tower path computes
 * what the unfused one does. */
#include <stdlib.h>

#include "kernels/cpu/cpu_internal.h"

float cpu_fp8_quantize_codes(const float *x, int64_t k, uint8_t *codes)
{
    float amax = glm_row_amax(x, k);
    if (!(amax > 0.0f)) {
        /* all zero (or NaN hidden from fmaxf): x * 0 keeps a NaN a NaN */
        for (int64_t i = 0; i < k; i++)
            codes[i] = glm_f32_to_e4m3(x[i] * 0.0f);
        return 1.0f;
    }
    float inv = GLM_FP8_MAX / amax;
    for (int64_t i = 0; i < k; i++)
        codes[i] = glm_f32_to_e4m3(x[i] * inv);
    return amax / GLM_FP8_MAX;
}

bool cpu_expect_act_fp8(glm_backend *be, const char *op, const glm_weight *q, int64_t rows,
                        int64_t cols)
{
    if (q->format != GLM_WEIGHT_FP8 || !q->data || !q->scales || q->rows != rows ||
        q->cols != cols) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "%s: q must be fp8 codes [%lld, %lld] with scales (format %d, [%lld, "
                         "%lld])",
                         op, (long long)rows, (long long)cols, (int)q->format, (long long)q->rows,
                         (long long)q->cols);
        return false;
    }
    return true;
}

void cpu_quantize_act(glm_backend *be, glm_weight q, glm_tensor x)
{
    if (!cpu_expect_dtype(be, "quantize_act", "x", &x, GLM_F32)) return;
    int64_t rows = glm_tensor_rows(&x), k = glm_tensor_cols(&x);
    if (!cpu_expect_act_fp8(be, "quantize_act", &q, rows, k)) return;
    const float *xd = x.data;
    uint8_t *codes = q.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * k > 65536)
    for (int64_t r = 0; r < rows; r++)
        q.scales[r] = cpu_fp8_quantize_codes(xd + r * k, k, codes + r * k);
}

/* y = act(sum_k e4m3(q) e4m3(w) * sx[m] * sw[n] + b[n]): f32 sums of the bare E4M3 values, then
 * the two scales, then the bias, as the CPU's fp8 linear does. */
void cpu_linear_q8(glm_backend *be, glm_tensor y, glm_weight q, glm_weight w,
                   const glm_tensor *bias, glm_activation act)
{
    const char *op = "linear_q8";
    int64_t M = q.rows, N = w.rows, K = w.cols;
    if (w.format != GLM_WEIGHT_FP8 || !w.scales) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: w must be an fp8 weight (format %d)", op,
                         (int)w.format);
        return;
    }
    if (!cpu_expect_act_fp8(be, op, &q, M, K) || !cpu_expect_matrix(be, op, "y", &y, GLM_F32, M, N))
        return;
    if (bias && !cpu_expect_matrix(be, op, "bias", bias, GLM_F32, 1, N)) return;
    if (act != GLM_ACT_NONE && act != GLM_ACT_GELU) {
        glm_backend_fail(be, GLM_ERR_INVALID_ARG, "%s: unknown activation %d", op, (int)act);
        return;
    }
    float *xq = malloc((size_t)(M * K) * sizeof(float));
    if (!xq) {
        glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory for the decoded rows", op);
        return;
    }
    const uint8_t *qc = q.data, *wc = w.data;
    for (int64_t i = 0; i < M * K; i++)
        xq[i] = glm_e4m3_to_f32(qc[i]);
    float *yd = y.data;
    const float *bd = bias ? bias->data : NULL;
    bool failed = false;
#pragma omp parallel num_threads(cpu_threads(be)) if ((double)M * N * K > 32768.0)
    {
        float *wrow = malloc((size_t)K * sizeof(float));
        if (!wrow) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            if (!wrow) continue;
            for (int64_t k = 0; k < K; k++)
                wrow[k] = glm_e4m3_to_f32(wc[n * K + k]);
            for (int64_t m = 0; m < M; m++) {
                float v = cpu_dot(xq + m * K, wrow, K) * (q.scales[m] * w.scales[n]);
                if (bd) v += bd[n];
                yd[m * N + n] = act == GLM_ACT_GELU ? cpu_gelu_scalar(v) : v;
            }
        }
        free(wrow);
    }
    free(xq);
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory for a weight row", op);
}
