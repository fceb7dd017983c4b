/* Row-wise normalization: RMSNorm (decoder), fused residual add + RMSNorm, LayerNorm (vision),
 * fused residual add of a LayerNorm'd branch (vision).
 *
 * Statistics are summed in double (cheap next to the GEMMs around them and it removes the
 * summation order as a source of difference between backends); the normalized value is formed in
 * float32 in the same order as the PyTorch reference: y = w * (x * rsqrt(ms + eps)); LayerNorm
 * centres and scales in double before the float32 affine step. Every row is
 * read completely before its output is written, so y may alias x. */
#include <math.h>

#include "kernels/cpu/cpu_internal.h"

#define NORM_PARALLEL_MIN 16384

static void rmsnorm_row(float *y, const float *x, const float *w, int64_t h, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < h; i++)
        ss += (double)x[i] * (double)x[i];
    float ms = (float)(ss / (double)h);
    float r = 1.0f / sqrtf(ms + eps);
    for (int64_t i = 0; i < h; i++)
        y[i] = w[i] * (x[i] * r);
}

static bool check_norm(glm_backend *be, const char *op, const glm_tensor *y, const glm_tensor *x,
                       const glm_tensor *w)
{
    if (!cpu_expect_dtype(be, op, "x", x, GLM_F32)) return false;
    int64_t rows = glm_tensor_rows(x), h = glm_tensor_cols(x);
    return cpu_expect_matrix(be, op, "y", y, GLM_F32, rows, h) &&
           cpu_expect_matrix(be, op, "w", w, GLM_F32, 1, h);
}

void cpu_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps)
{
    if (!check_norm(be, "rmsnorm", &y, &x, &w)) return;
    int64_t rows = glm_tensor_rows(&x), h = glm_tensor_cols(&x);
    float *yd = y.data;
    const float *xd = x.data, *wd = w.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * h > NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        rmsnorm_row(yd + r * h, xd + r * h, wd, h, eps);
}

void cpu_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                     glm_tensor w, float eps)
{
    const char *op = "add_rmsnorm";
    if (!check_norm(be, op, &y, &resid, &w)) return;
    int64_t rows = glm_tensor_rows(&resid), h = glm_tensor_cols(&resid);
    if (!cpu_expect_matrix(be, op, "delta", &delta, GLM_F32, rows, h)) return;
    float *yd = y.data, *rd = resid.data;
    const float *dd = delta.data, *wd = w.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * h > NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *rr = rd + r * h;
        const float *dr = dd + r * h;
        for (int64_t i = 0; i < h; i++)
            rr[i] += dr[i];
        rmsnorm_row(yd + r * h, rr, wd, h, eps);
    }
}

/* y may alias x: each element is read before its own output is written, after the statistics. */
static void layernorm_row(float *y, const float *x, const float *w, const float *b, int64_t h,
                          float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < h; i++)
        sum += x[i];
    double mean = h ? sum / (double)h : 0.0;
    double var = 0.0; /* two passes: biased variance without cancellation */
    for (int64_t i = 0; i < h; i++)
        var += ((double)x[i] - mean) * ((double)x[i] - mean);
    var = h ? var / (double)h : 0.0;
    double rstd = 1.0 / sqrt(var + (double)eps);
    /* centre in double: x - mean cancels badly in float when the row has a large offset */
    for (int64_t i = 0; i < h; i++)
        y[i] = (float)(((double)x[i] - mean) * rstd) * w[i] + b[i];
}

void cpu_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                   float eps)
{
    if (!check_norm(be, "layernorm", &y, &x, &w)) return;
    int64_t rows = glm_tensor_rows(&x), h = glm_tensor_cols(&x);
    if (!cpu_expect_matrix(be, "layernorm", "b", &b, GLM_F32, 1, h)) return;
    float *yd = y.data;
    const float *xd = x.data, *wd = w.data, *bd = b.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * h > NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        layernorm_row(yd + r * h, xd + r * h, wd, bd, h, eps);
}

void cpu_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                       glm_tensor w, glm_tensor b, float eps)
{
    const char *op = "add_layernorm";
    if (!check_norm(be, op, &y, &resid, &w)) return;
    int64_t rows = glm_tensor_rows(&resid), h = glm_tensor_cols(&resid);
    if (!cpu_expect_matrix(be, op, "delta", &delta, GLM_F32, rows, h) ||
        !cpu_expect_matrix(be, op, "b", &b, GLM_F32, 1, h))
        return;
    float *yd = y.data, *rd = resid.data;
    const float *dd = delta.data, *wd = w.data, *bd = b.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * h > NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *yr = yd + r * h, *rr = rd + r * h;
        layernorm_row(yr, dd + r * h, wd, bd, h, eps); /* y is scratch for LN(delta) first */
        for (int64_t i = 0; i < h; i++) {
            rr[i] += yr[i];
            yr[i] = rr[i];
        }
    }
}

void cpu_add_layernorm_q8(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                          glm_tensor w, glm_tensor b, float eps, glm_weight q)
{
    int64_t rows = glm_tensor_rows(&resid), h = glm_tensor_cols(&resid);
    if (!cpu_expect_act_fp8(be, "add_layernorm_q8", &q, rows, h)) return;
    cpu_add_layernorm(be, y, resid, delta, w, b, eps);
    if (be->status != GLM_OK) return;
    const float *yd = y.data;
    uint8_t *codes = q.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * h > NORM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        q.scales[r] = cpu_fp8_quantize_codes(yd + r * h, h, codes + r * h);
}
