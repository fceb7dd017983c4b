/* Checks every op of the CUDA backend against a double-precision reference computed here, on
 * random 16-bit inputs (never zeros) with NaN-poisoned outputs, once with bf16 and once with fp16
 * storage; sampling is checked against the CPU backend, whose RNG the GPU must reproduce. Options:
 *   --small        only small shapes (for compute-sanitizer --tool memcheck)
 *   --dtype T      bf16 or f16 only (default: both)
 *   --bench        also time linear, vision attention and decode attention (CUDA events; in the
 *                  first storage type tested)
 *   --bench-attention  only time attention on the model's shapes, fa2 kernels beside cuDNN, one
 *                  machine-readable line per figure (scripts/bench-gpu.sh's table), no tests
 * The main backend runs the fa2 attention kernels (GLM4V_ATTENTION=fa2); the attention shapes of
 * the model (head dims 64-128, odd lengths, 1-16 images, causal prefill with no cached prefix)
 * run again on a backend made with GLM4V_ATTENTION=cudnn, which must exist and serve them all
 * when the build found cuDNN (GLM4V_TEST_EXPECT_CUDNN). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "common/dtype.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

#ifndef GLM_SAMPLE_LOGPROBS_STRIDE /* ops.h names it; kept here while the interface settles */
#define GLM_SAMPLE_MAX_LOGPROBS 20
#define GLM_SAMPLE_LOGPROBS_STRIDE (1 + 2 * GLM_SAMPLE_MAX_LOGPROBS)
#endif

static glm_backend *be;
static test_rng rng;
static int small_only;
static glm_dtype half = GLM_BF16; /* the storage type under test */

/* ---- helpers ---- */

static uint16_t half_bits(float f)
{
    return half == GLM_F16 ? glm_f32_to_f16(f) : glm_f32_to_bf16(f);
}

static float half_value(uint16_t h)
{
    return half == GLM_F16 ? glm_f16_to_f32(h) : glm_bf16_to_f32(h);
}

static float *rand_host(size_t n, double scale)
{
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        double v = test_rng_normal(&rng) * scale;
        if (v == 0.0) v = 1e-3;
        h[i] = half_value(half_bits((float)v)); /* both sides see 16-bit values */
    }
    return h;
}

static void *dev_half(const float *h, size_t n)
{
    uint16_t *b = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) b[i] = half_bits(h[i]);
    void *d = NULL;
    be->ops->alloc(be, n * 2 + 16, &d);
    be->ops->upload(be, d, b, n * 2);
    free(b);
    return d;
}

static void *dev_i32(const int32_t *h, size_t n)
{
    void *d = NULL;
    be->ops->alloc(be, n * 4 + 16, &d);
    be->ops->upload(be, d, h, n * 4);
    return d;
}

/* A 16-bit output buffer filled with NaN (0x7fc0 is a NaN in bf16 and in fp16), so unwritten
 * elements fail the check. */
static void *dev_poisoned(size_t n)
{
    uint16_t *b = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) b[i] = 0x7fc0;
    void *d = NULL;
    be->ops->alloc(be, n * 2 + 16, &d);
    be->ops->upload(be, d, b, n * 2);
    free(b);
    return d;
}

static float *down_half(const void *d, size_t n)
{
    uint16_t *b = malloc(n * 2 + 2);
    float *f = malloc(n * sizeof(float) + 4);
    be->ops->download(be, b, d, n * 2);
    for (size_t i = 0; i < n; i++) f[i] = half_value(b[i]);
    free(b);
    return f;
}

static double rel_l2(const float *out, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(out[i])) return INFINITY;
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The check of every op: no backend error, and `out` (downloaded, freed here) within tol of ref. */
static void expect_close_host(const char *what, float *out, const double *ref, size_t n,
                              double tol)
{
    glm_error err;
    glm_status st = glm_backend_take_error(be, &err);
    CHECK_MSG(st == GLM_OK, "%s: backend error %s", what, err.msg);
    double e = rel_l2(out, ref, n);
    CHECK_MSG(e < tol, "%s: relative L2 error %.3g (tol %.1g)", what, e, tol);
    printf("  %-48s rel_l2 %.2e\n", what, e);
    free(out);
}

/* A 16-bit output on the device against ref. */
static void expect_close(const char *what, const void *d_out, const double *ref, size_t n,
                         double tol)
{
    expect_close_host(what, down_half(d_out, n), ref, n, tol);
}

static glm_tensor t2(void *d, int64_t r, int64_t c)
{
    return glm_tensor_2d(half, r, c, d);
}

static double gelu_ref(double x)
{
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}

static double bf(double x) /* rounding of an intermediate stored in 16 bits */
{
    return half_value(half_bits((float)x));
}

/* ---- dense ---- */

static void test_linear(int m, int n, int k, int with_bias, int gelu)
{
    float *x = rand_host((size_t)m * k, 1), *w = rand_host((size_t)n * k, 0.05),
          *b = rand_host((size_t)n, 0.5);
    void *dx = dev_half(x, (size_t)m * k), *dw = dev_half(w, (size_t)n * k), *db = dev_half(b, n);
    void *dy = dev_poisoned((size_t)m * n);
    glm_tensor bias = glm_tensor_1d(half, n, db);
    glm_op_linear(be, t2(dy, m, n), t2(dx, m, k), glm_weight_dense(t2(dw, n, k)),
                  with_bias ? &bias : NULL, gelu ? GLM_ACT_GELU : GLM_ACT_NONE);
    double *ref = malloc(sizeof(double) * m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = with_bias ? b[j] : 0;
            for (int q = 0; q < k; q++) acc += (double)x[(size_t)i * k + q] * w[(size_t)j * k + q];
            ref[(size_t)i * n + j] = gelu ? gelu_ref(acc) : acc;
        }
    char name[96];
    snprintf(name, sizeof(name), "linear %dx%dx%d%s%s", m, n, k, with_bias ? " +bias" : "",
             gelu ? " +gelu" : "");
    expect_close(name, dy, ref, (size_t)m * n, 1e-2);
    be->ops->free(be, dx), be->ops->free(be, dw), be->ops->free(be, db), be->ops->free(be, dy);
    free(x), free(w), free(b), free(ref);
}

static void test_elementwise(int64_t n)
{
    float *a = rand_host(n, 1), *b = rand_host(n, 1);
    void *da = dev_half(a, n), *db = dev_half(b, n), *dy = dev_poisoned(n);
    double *ref = malloc(sizeof(double) * n);
    char name[64];
    glm_op_add(be, t2(dy, 1, n), t2(da, 1, n), t2(db, 1, n));
    for (int64_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    snprintf(name, sizeof(name), "add n=%lld", (long long)n);
    expect_close(name, dy, ref, n, 1e-2);
    glm_op_gelu(be, t2(dy, 1, n), t2(da, 1, n));
    for (int64_t i = 0; i < n; i++) ref[i] = gelu_ref(a[i]);
    snprintf(name, sizeof(name), "gelu n=%lld", (long long)n);
    expect_close(name, dy, ref, n, 1e-2);
    glm_op_scale(be, t2(da, 1, n), 0.37f);
    for (int64_t i = 0; i < n; i++) ref[i] = a[i] * 0.37;
    snprintf(name, sizeof(name), "scale n=%lld", (long long)n);
    expect_close(name, da, ref, n, 1e-2);
    be->ops->free(be, da), be->ops->free(be, db), be->ops->free(be, dy);
    free(a), free(b), free(ref);
}

static void test_silu_mul(int m, int f)
{
    float *x = rand_host((size_t)m * 2 * f, 1);
    void *dx = dev_half(x, (size_t)m * 2 * f), *dy = dev_poisoned((size_t)m * f);
    glm_op_silu_mul(be, t2(dy, m, f), t2(dx, m, 2 * f));
    double *ref = malloc(sizeof(double) * m * f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < f; j++) {
            double a = x[(size_t)i * 2 * f + j], b = x[(size_t)i * 2 * f + f + j];
            ref[(size_t)i * f + j] = a / (1 + exp(-a)) * b;
        }
    char name[64];
    snprintf(name, sizeof(name), "silu_mul %dx%d", m, f);
    expect_close(name, dy, ref, (size_t)m * f, 1e-2);
    be->ops->free(be, dx), be->ops->free(be, dy);
    free(x), free(ref);
}

static void layernorm_ref(double *out, const float *x, const float *w, const float *b, int rows,
                          int cols, double eps)
{
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int c = 0; c < cols; c++) mean += x[r * cols + c];
        mean /= cols;
        for (int c = 0; c < cols; c++) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
        double inv = 1 / sqrt(var / cols + eps);
        for (int c = 0; c < cols; c++)
            out[r * cols + c] = (x[r * cols + c] - mean) * inv * w[c] + b[c];
    }
}

static void test_norms(int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    float *x = rand_host(n, 2), *d = rand_host(n, 1), *w = rand_host(cols, 1),
          *b = rand_host(cols, 1);
    for (size_t i = 0; i < n; i++) x[i] = (float)bf(x[i] + 0.5); /* a mean for layernorm */
    void *dx = dev_half(x, n), *dd = dev_half(d, n), *dw = dev_half(w, cols), *db = dev_half(b, cols);
    void *dy = dev_poisoned(n);
    double *ref = malloc(sizeof(double) * n), *resid = malloc(sizeof(double) * n);
    char name[64];
    glm_tensor wt = glm_tensor_1d(half, cols, dw), bt = glm_tensor_1d(half, cols, db);
    float eps = 1e-5f;

    glm_op_rmsnorm(be, t2(dy, rows, cols), t2(dx, rows, cols), wt, eps);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += (double)x[r * cols + c] * x[r * cols + c];
        double inv = 1 / sqrt(ss / cols + eps);
        for (int c = 0; c < cols; c++) ref[r * cols + c] = w[c] * x[r * cols + c] * inv;
    }
    snprintf(name, sizeof(name), "rmsnorm %dx%d", rows, cols);
    expect_close(name, dy, ref, n, 1e-2);

    glm_op_layernorm(be, t2(dy, rows, cols), t2(dx, rows, cols), wt, bt, eps);
    layernorm_ref(ref, x, w, b, rows, cols, eps);
    snprintf(name, sizeof(name), "layernorm %dx%d", rows, cols);
    expect_close(name, dy, ref, n, 1e-2);

    glm_op_add_rmsnorm(be, t2(dy, rows, cols), t2(dx, rows, cols), t2(dd, rows, cols), wt, eps);
    for (size_t i = 0; i < n; i++) resid[i] = bf((double)x[i] + d[i]);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += resid[r * cols + c] * resid[r * cols + c];
        double inv = 1 / sqrt(ss / cols + eps);
        for (int c = 0; c < cols; c++) ref[r * cols + c] = w[c] * resid[r * cols + c] * inv;
    }
    snprintf(name, sizeof(name), "add_rmsnorm %dx%d (normed)", rows, cols);
    expect_close(name, dy, ref, n, 1e-2);
    snprintf(name, sizeof(name), "add_rmsnorm %dx%d (residual)", rows, cols);
    expect_close(name, dx, resid, n, 1e-2);
    be->ops->free(be, dx), be->ops->free(be, dd), be->ops->free(be, dw), be->ops->free(be, db);
    be->ops->free(be, dy);
    free(x), free(d), free(w), free(b), free(ref), free(resid);
}

/* The f32 residual stream: rmsnorm / add_rmsnorm / add_layernorm reading and writing an f32
 * resid, add_layernorm with y aliasing delta (bf16 and f32 streams), the converting embedding,
 * copy_rows and vision_embed. */
static void *dev_f32(const float *h, size_t n)
{
    void *d = NULL;
    be->ops->alloc(be, n * 4 + 16, &d);
    be->ops->upload(be, d, h, n * 4);
    return d;
}

static void expect_close_f32(const char *what, const void *d_out, const double *ref, size_t n,
                             double tol)
{
    float *out = malloc(n * sizeof(float) + 4);
    be->ops->download(be, out, d_out, n * 4);
    expect_close_host(what, out, ref, n, tol);
}

static void test_resid_f32(int rows, int cols) /* rows >= 3 */
{
    size_t n = (size_t)rows * cols;
    float *x = malloc(n * sizeof(float)), *d = rand_host(n, 1), *w = rand_host(cols, 1),
          *b = rand_host(cols, 1);
    for (size_t i = 0; i < n; i++) x[i] = (float)(test_rng_normal(&rng) * 3); /* not bf16 values */
    void *dx = dev_f32(x, n), *dd = dev_half(d, n), *dw = dev_half(w, cols), *db = dev_half(b, cols);
    void *dy = dev_poisoned(n);
    double *ref = malloc(sizeof(double) * n), *resid = malloc(sizeof(double) * n);
    glm_tensor wt = glm_tensor_1d(half, cols, dw), bt = glm_tensor_1d(half, cols, db);
    glm_tensor xt = glm_tensor_2d(GLM_F32, rows, cols, dx);
    char name[80];
    float eps = 1e-5f;

    glm_op_rmsnorm(be, t2(dy, rows, cols), xt, wt, eps);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += (double)x[r * cols + c] * x[r * cols + c];
        for (int c = 0; c < cols; c++)
            ref[r * cols + c] = w[c] * x[r * cols + c] / sqrt(ss / cols + eps);
    }
    snprintf(name, sizeof(name), "rmsnorm f32 stream %dx%d", rows, cols);
    expect_close(name, dy, ref, n, 1e-2);

    glm_op_add_rmsnorm(be, t2(dy, rows, cols), xt, t2(dd, rows, cols), wt, eps);
    for (size_t i = 0; i < n; i++) resid[i] = (double)x[i] + d[i];
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += resid[r * cols + c] * resid[r * cols + c];
        for (int c = 0; c < cols; c++)
            ref[r * cols + c] = w[c] * resid[r * cols + c] / sqrt(ss / cols + eps);
    }
    snprintf(name, sizeof(name), "add_rmsnorm f32 stream %dx%d (normed)", rows, cols);
    expect_close(name, dy, ref, n, 1e-2);
    snprintf(name, sizeof(name), "add_rmsnorm f32 stream %dx%d (residual)", rows, cols);
    expect_close_f32(name, dx, resid, n, 1e-6); /* no bf16 rounding of the stream */

    /* add_layernorm, y = delta (as the vision tower calls it), on the updated f32 stream */
    for (size_t i = 0; i < n; i++) x[i] = (float)resid[i];
    layernorm_ref(ref, d, w, b, rows, cols, eps);
    for (size_t i = 0; i < n; i++) resid[i] += ref[i];
    glm_op_add_layernorm(be, t2(dd, rows, cols), xt, t2(dd, rows, cols), wt, bt, eps);
    snprintf(name, sizeof(name), "add_layernorm f32 stream %dx%d (residual)", rows, cols);
    expect_close_f32(name, dx, resid, n, 1e-5);
    snprintf(name, sizeof(name), "add_layernorm f32 stream %dx%d (y = delta)", rows, cols);
    expect_close(name, dd, resid, n, 1e-2);

    /* the same on a bf16 stream */
    float *xb = rand_host(n, 2);
    void *dxb = dev_half(xb, n), *dd2 = dev_half(d, n);
    layernorm_ref(ref, d, w, b, rows, cols, eps);
    for (size_t i = 0; i < n; i++) resid[i] = xb[i] + ref[i];
    glm_op_add_layernorm(be, t2(dd2, rows, cols), t2(dxb, rows, cols), t2(dd2, rows, cols), wt,
                         bt, eps);
    snprintf(name, sizeof(name), "add_layernorm bf16 stream %dx%d", rows, cols);
    expect_close(name, dxb, resid, n, 1e-2);
    expect_close("add_layernorm bf16 stream (y = delta)", dd2, resid, n, 1e-2);

    /* converting row moves: bf16 -> f32 (copy_rows, embedding) and f32 -> bf16 (copy_rows);
     * exact, so the references are the device's own inputs */
    float *yb = down_half(dd2, n), *xs = malloc(n * sizeof(float));
    be->ops->download(be, xs, dx, n * 4);
    glm_op_copy_rows(be, xt, 1, t2(dd2, rows, cols), 0, rows - 1);
    for (size_t i = 0; i < n; i++) ref[i] = i < (size_t)cols ? xs[i] : yb[i - cols];
    expect_close_f32("copy_rows bf16 -> f32", dx, ref, n, 1e-12);
    void *dz = dev_poisoned(n);
    glm_op_copy_rows(be, t2(dz, rows, cols), 0, xt, 0, rows);
    for (size_t i = 0; i < n; i++) ref[i] = bf(ref[i]);
    expect_close("copy_rows f32 -> bf16", dz, ref, n, 1e-12);
    int32_t ids[3] = {rows - 1, -1, 0};
    void *di = dev_i32(ids, 3);
    glm_op_embedding(be, glm_tensor_2d(GLM_F32, 3, cols, dx), t2(dd2, rows, cols),
                     glm_tensor_1d(GLM_I32, 3, di), 0);
    for (int c = 0; c < cols; c++) {
        ref[c] = yb[(size_t)(rows - 1) * cols + c];
        ref[cols + c] = 0;
        ref[2 * cols + c] = yb[c];
    }
    expect_close_f32("embedding into f32", dx, ref, (size_t)3 * cols, 1e-12);

    /* vision_embed into f32: rows - 1 patches of one image plus the cls row */
    glm_op_vision_embed(be, glm_tensor_3d(GLM_F32, 1, rows, cols, dx), t2(dd2, rows - 1, cols),
                        glm_tensor_1d(half, cols, dw), t2(dd, rows, cols), 1);
    float *pos = down_half(dd, n);
    for (int j = 0; j < rows; j++)
        for (int c = 0; c < cols; c++)
            ref[(size_t)j * cols + c] =
                (double)(float)((j == 0 ? w[c] : yb[(size_t)(j - 1) * cols + c]) +
                                pos[(size_t)j * cols + c]);
    expect_close_f32("vision_embed into f32", dx, ref, n, 1e-7);
    free(yb), free(xs);

    be->ops->free(be, dx), be->ops->free(be, dd), be->ops->free(be, dw), be->ops->free(be, db);
    be->ops->free(be, dy), be->ops->free(be, dxb), be->ops->free(be, dd2), be->ops->free(be, dz);
    be->ops->free(be, di);
    free(x), free(d), free(w), free(b), free(ref), free(resid), free(xb), free(pos);
}

/* ---- fp8 activations (ops.h): the fused tower path's quantizing producers and linear_q8 ---- */

/* Codes and scales of one row of (16-bit) values, as glm_fp8_quantize_activation_row makes them. */
static float q8_row_ref(const float *v, int cols, uint8_t *codes)
{
    float amax = 0.f;
    for (int c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(v[c]));
    float inv = amax > 0.f ? GLM_FP8_MAX / amax : 0.f;
    for (int c = 0; c < cols; c++) codes[c] = glm_f32_to_e4m3(v[c] * inv);
    return amax > 0.f ? amax / GLM_FP8_MAX : 1.f;
}

/* A [rows, cols] codes + scales buffer on the device, codes poisoned with 0x7f (an E4M3 NaN). */
static glm_weight dev_q8(int rows, int cols)
{
    glm_weight q = {GLM_WEIGHT_FP8, GLM_F32, rows, cols, 0, NULL, NULL, NULL};
    uint8_t *poison = malloc((size_t)rows * cols + 1);
    memset(poison, 0x7f, (size_t)rows * cols + 1);
    be->ops->alloc(be, (size_t)rows * cols + 16, &q.data);
    be->ops->upload(be, q.data, poison, (size_t)rows * cols);
    be->ops->alloc(be, (size_t)rows * sizeof(float) + 16, (void **)&q.scales);
    be->ops->zero(be, q.scales, (size_t)rows * sizeof(float));
    free(poison);
    return q;
}

static void free_q8(glm_weight *q)
{
    be->ops->free(be, q->data);
    be->ops->free(be, q->scales);
}

/* The device's codes and scales against the quantization of the rows `v` (the values the op had
 * to quantize, as the host computed them): every scale within scale_tol and at most `max_off` of
 * the codes one step off (the 16-bit rounding of GELU on the two sides may differ by one unit,
 * the row's amax too), none further. */
static void expect_q8(const char *what, glm_weight q, const float *v, int rows, int cols,
                      double max_off, double scale_tol)
{
    glm_error err;
    glm_status st = glm_backend_take_error(be, &err);
    CHECK_MSG(st == GLM_OK, "%s: backend error %s", what, err.msg);
    size_t n = (size_t)rows * cols;
    uint8_t *got = malloc(n + 1), *ref = malloc(n + 1);
    float *sg = malloc((size_t)rows * sizeof(float));
    be->ops->download(be, got, q.data, n);
    be->ops->download(be, sg, q.scales, (size_t)rows * sizeof(float));
    size_t off = 0, far = 0;
    double worst_scale = 0;
    for (int r = 0; r < rows; r++) {
        float sr = q8_row_ref(v + (size_t)r * cols, cols, ref + (size_t)r * cols);
        double e = fabs((double)sg[r] - sr) / sr;
        if (e > worst_scale) worst_scale = e;
    }
    for (size_t i = 0; i < n; i++) {
        if (got[i] == ref[i]) continue;
        float a = glm_e4m3_to_f32(got[i]), b = glm_e4m3_to_f32(ref[i]);
        /* one step of E4M3 is 1/8 of the value's binade at most */
        if (!isnan(a) && fabsf(a - b) <= fmaxf(fabsf(b), 1e-2f) * 0.13f)
            off++;
        else
            far++;
    }
    CHECK_MSG(worst_scale <= scale_tol, "%s: scale off by %.3g (relative)", what, worst_scale);
    CHECK_MSG(far == 0 && off <= max_off * n, "%s: %zu codes one step off, %zu further (of %zu)",
              what, off, far, n);
    printf("  %-48s scales %.1e, codes off %zu / %zu\n", what, worst_scale, off, n);
    free(got), free(ref), free(sg);
}

static void test_act_q8(int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    float *x = rand_host(n, 2);
    x[0] = 0.f; /* exact zeros inside a row are fine; an all-zero row too (scale 1) */
    for (int c = 0; c < cols && rows > 1; c++) x[(size_t)cols + c] = 0.f;
    void *dx = dev_half(x, n);
    char name[96];

    glm_weight q = dev_q8(rows, cols);
    glm_op_quantize_act(be, q, t2(dx, rows, cols));
    snprintf(name, sizeof(name), "quantize_act %dx%d", rows, cols);
    expect_q8(name, q, x, rows, cols, 0, 1e-7);

    /* gelu_q8 quantizes gelu(x) as stored (rounded to 16 bits) */
    float *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = (float)bf(gelu_ref(x[i]));
    glm_op_gelu_q8(be, q, t2(dx, rows, cols));
    snprintf(name, sizeof(name), "gelu_q8 %dx%d", rows, cols);
    expect_q8(name, q, g, rows, cols, 0.01, 1e-2);
    free_q8(&q);
    be->ops->free(be, dx);
    free(x), free(g);
}

/* add_layernorm_q8 with y = delta and an f32 stream (as the tower calls it): y and the stream as
 * add_layernorm's, and the codes those of y as the device stored it. */
static void test_add_layernorm_q8(int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    float *x = malloc(n * sizeof(float)), *d = rand_host(n, 1), *w = rand_host(cols, 1),
          *b = rand_host(cols, 1);
    for (size_t i = 0; i < n; i++) x[i] = (float)(test_rng_normal(&rng) * 3);
    void *dx = dev_f32(x, n), *dd = dev_half(d, n), *dw = dev_half(w, cols), *db = dev_half(b, cols);
    double *ref = malloc(sizeof(double) * n), *resid = malloc(sizeof(double) * n);
    float eps = 1e-5f;
    glm_weight q = dev_q8(rows, cols);
    glm_op_add_layernorm_q8(be, t2(dd, rows, cols), glm_tensor_2d(GLM_F32, rows, cols, dx),
                            t2(dd, rows, cols), glm_tensor_1d(half, cols, dw),
                            glm_tensor_1d(half, cols, db), eps, q);
    layernorm_ref(ref, d, w, b, rows, cols, eps);
    for (size_t i = 0; i < n; i++) resid[i] = (double)x[i] + ref[i];
    char name[96];
    snprintf(name, sizeof(name), "add_layernorm_q8 %dx%d (residual)", rows, cols);
    expect_close_f32(name, dx, resid, n, 1e-5);
    float *y = down_half(dd, n);
    snprintf(name, sizeof(name), "add_layernorm_q8 %dx%d (y)", rows, cols);
    expect_close_host(name, down_half(dd, n), resid, n, 1e-2);
    snprintf(name, sizeof(name), "add_layernorm_q8 %dx%d (codes of y)", rows, cols);
    expect_q8(name, q, y, rows, cols, 0, 1e-7);
    free_q8(&q);
    be->ops->free(be, dx), be->ops->free(be, dd), be->ops->free(be, dw), be->ops->free(be, db);
    free(x), free(d), free(w), free(b), free(ref), free(resid), free(y);
}

static const char *q8_route = ""; /* names the route linear_q8's cases run on */

/* linear_q8 on random codes: sum of the decoded E4M3 products times both scales, plus bias. */
static void test_linear_q8(int m, int n, int k, int gelu)
{
    if (!(be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_FP8))) {
        printf("  linear_q8: skipped (no fp8 on this GPU)\n");
        return;
    }
    uint8_t *xq = malloc((size_t)m * k), *wq = malloc((size_t)n * k);
    float *sx = malloc(m * sizeof(float)), *sw = malloc(n * sizeof(float)), *b = rand_host(n, 0.5);
    for (size_t i = 0; i < (size_t)m * k; i++) xq[i] = glm_f32_to_e4m3((float)test_rng_normal(&rng) * 100);
    for (size_t i = 0; i < (size_t)n * k; i++) wq[i] = glm_f32_to_e4m3((float)test_rng_normal(&rng) * 100);
    for (int i = 0; i < m; i++) sx[i] = (float)(0.02 * (1.5 + test_rng_normal(&rng) * 0.2) / k);
    for (int i = 0; i < n; i++) sw[i] = (float)(0.01 * (1.5 + test_rng_normal(&rng) * 0.2));
    glm_weight q = dev_q8(m, k), w = dev_q8(n, k);
    be->ops->upload(be, q.data, xq, (size_t)m * k);
    be->ops->upload(be, q.scales, sx, m * sizeof(float));
    be->ops->upload(be, w.data, wq, (size_t)n * k);
    be->ops->upload(be, w.scales, sw, n * sizeof(float));
    void *db = dev_half(b, n), *dy = dev_poisoned((size_t)m * n);
    glm_tensor bias = glm_tensor_1d(half, n, db);
    glm_op_linear_q8(be, t2(dy, m, n), q, w, &bias, gelu ? GLM_ACT_GELU : GLM_ACT_NONE);
    double *ref = malloc(sizeof(double) * m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int c = 0; c < k; c++)
                acc += (double)glm_e4m3_to_f32(xq[(size_t)i * k + c]) *
                       glm_e4m3_to_f32(wq[(size_t)j * k + c]);
            acc = acc * sx[i] * sw[j] + b[j];
            ref[(size_t)i * n + j] = gelu ? gelu_ref(acc) : acc;
        }
    char name[96];
    snprintf(name, sizeof(name), "linear_q8 %dx%dx%d +bias%s%s", m, n, k, gelu ? " +gelu" : "",
             q8_route);
    expect_close(name, dy, ref, (size_t)m * n, 1e-2);
    free_q8(&q), free_q8(&w);
    be->ops->free(be, db), be->ops->free(be, dy);
    free(xq), free(wq), free(sx), free(sw), free(b), free(ref);
}

/* linear_q8's middle route (plain E4M3 GEMM + one scaling pass, taken where cuBLASLt has no
 * outer-vector-scaled algorithm) on a backend made with GLM4V_LINEAR_Q8=plain. */
static void linear_q8_plain_suite(void)
{
    glm_backend *plain = NULL, *main_be = be;
    glm_error err;
    setenv("GLM4V_LINEAR_Q8", "plain", 1);
    glm_status st = glm_backend_cuda_create(0, &plain, &err);
    CHECK_MSG(st == GLM_OK, "cuda backend: %s", err.msg);
    if (st != GLM_OK) {
        unsetenv("GLM4V_LINEAR_Q8");
        return;
    }
    be = plain;
    q8_route = " (plain GEMM + scaling pass)";
    test_linear_q8(37, 64, 128, 0); /* the plan is made here, with the variable set */
    test_linear_q8(5, 40, 32, 1);
    q8_route = "";
    unsetenv("GLM4V_LINEAR_Q8");
    be = main_be;
    glm_backend_destroy(plain);
}

/* ---- rows ---- */

static void test_rows(int vocab, int hidden, int n_ids, int vocab_start)
{
    float *table = rand_host((size_t)vocab * hidden, 1);
    int32_t *ids = malloc(sizeof(int32_t) * n_ids);
    for (int i = 0; i < n_ids; i++) {
        int kind = test_rng_int(&rng, 0, 5);
        ids[i] = kind == 0 ? -1 : kind == 1 ? vocab_start + vocab + test_rng_int(&rng, 0, 10)
                                            : vocab_start + test_rng_int(&rng, 0, vocab - 1);
    }
    void *dt = dev_half(table, (size_t)vocab * hidden), *di = dev_i32(ids, n_ids);
    void *dy = dev_poisoned((size_t)n_ids * hidden);
    double *ref = malloc(sizeof(double) * n_ids * hidden);
    glm_op_embedding(be, t2(dy, n_ids, hidden), t2(dt, vocab, hidden),
                     glm_tensor_1d(GLM_I32, n_ids, di), vocab_start);
    for (int i = 0; i < n_ids; i++)
        for (int c = 0; c < hidden; c++) {
            int64_t row = (int64_t)ids[i] - vocab_start;
            ref[(size_t)i * hidden + c] =
                ids[i] >= 0 && row >= 0 && row < vocab ? table[row * hidden + c] : 0.0;
        }
    char name[64];
    snprintf(name, sizeof(name), "embedding %d ids x %d (start %d)", n_ids, hidden, vocab_start);
    expect_close(name, dy, ref, (size_t)n_ids * hidden, 1e-6);

    for (int i = 0; i < n_ids; i++) ids[i] = test_rng_int(&rng, 0, vocab - 1);
    be->ops->upload(be, di, ids, sizeof(int32_t) * n_ids);
    glm_op_gather_rows(be, t2(dy, n_ids, hidden), t2(dt, vocab, hidden),
                       glm_tensor_1d(GLM_I32, n_ids, di));
    for (int i = 0; i < n_ids; i++)
        for (int c = 0; c < hidden; c++)
            ref[(size_t)i * hidden + c] = table[(size_t)ids[i] * hidden + c];
    snprintf(name, sizeof(name), "gather_rows %d x %d", n_ids, hidden);
    expect_close(name, dy, ref, (size_t)n_ids * hidden, 1e-6);

    int n = n_ids / 2;
    glm_op_copy_rows(be, t2(dy, n_ids, hidden), 1, t2(dt, vocab, hidden), 2, n);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < hidden; c++) ref[(size_t)(1 + i) * hidden + c] = table[(size_t)(2 + i) * hidden + c];
    snprintf(name, sizeof(name), "copy_rows %d x %d", n, hidden);
    expect_close(name, dy, ref, (size_t)n_ids * hidden, 1e-6);
    be->ops->free(be, dt), be->ops->free(be, di), be->ops->free(be, dy);
    free(table), free(ids), free(ref);
}

/* ---- rope and kv ---- */

static void test_rope_kv(int t, int nq, int nkv, int hd, int rope_dim)
{
    int width = (nq + 2 * nkv) * hd;
    float *qkv = rand_host((size_t)t * width, 1);
    int32_t *pos = malloc(sizeof(int32_t) * t), *slots = malloc(sizeof(int32_t) * t);
    for (int i = 0; i < t; i++) pos[i] = test_rng_int(&rng, 0, 8000);
    int n_slots = 2 * t + 3;
    for (int i = 0; i < t; i++) slots[i] = i % 5 == 4 ? -1 : 2 * i + 1; /* -1: padding */
    void *dq = dev_half(qkv, (size_t)t * width), *dp = dev_i32(pos, t), *ds = dev_i32(slots, t);
    double *ref = malloc(sizeof(double) * t * width);
    for (size_t i = 0; i < (size_t)t * width; i++) ref[i] = qkv[i];
    float theta = 10000.f;
    glm_op_rope(be, t2(dq, t, width), glm_tensor_1d(GLM_I32, t, dp), nq, nkv, hd, rope_dim, theta);
    for (int i = 0; i < t; i++)
        for (int h = 0; h < nq + nkv; h++)
            for (int p = 0; p < rope_dim / 2; p++) {
                double ang = pos[i] * pow(theta, -2.0 * p / rope_dim);
                double *d = ref + (size_t)i * width + h * hd + 2 * p;
                double a = d[0], b = d[1];
                d[0] = a * cos(ang) - b * sin(ang);
                d[1] = a * sin(ang) + b * cos(ang);
            }
    char name[80];
    snprintf(name, sizeof(name), "rope t=%d %d/%d heads hd %d rot %d", t, nq, nkv, hd, rope_dim);
    expect_close(name, dq, ref, (size_t)t * width, 1e-2);

    int kvw = nkv * hd;
    float *kv0 = rand_host((size_t)n_slots * kvw, 1);
    void *dk = dev_half(kv0, (size_t)n_slots * kvw), *dv = dev_half(kv0, (size_t)n_slots * kvw);
    float *rq = down_half(dq, (size_t)t * width);
    glm_op_kv_store(be, t2(dk, n_slots, kvw), t2(dv, n_slots, kvw), t2(dq, t, width),
                    glm_tensor_1d(GLM_I32, t, ds), nq, nkv, hd);
    double *rk = malloc(sizeof(double) * n_slots * kvw), *rv = malloc(sizeof(double) * n_slots * kvw);
    for (size_t i = 0; i < (size_t)n_slots * kvw; i++) rk[i] = rv[i] = kv0[i];
    for (int i = 0; i < t; i++)
        if (slots[i] >= 0)
            for (int c = 0; c < kvw; c++) {
                rk[(size_t)slots[i] * kvw + c] = rq[(size_t)i * width + nq * hd + c];
                rv[(size_t)slots[i] * kvw + c] = rq[(size_t)i * width + nq * hd + kvw + c];
            }
    expect_close("kv_store k", dk, rk, (size_t)n_slots * kvw, 1e-6);
    expect_close("kv_store v", dv, rv, (size_t)n_slots * kvw, 1e-6);

    /* the fused op on the same inputs gives what rope then kv_store gave (the same rotation code:
     * rel_l2 0 is expected; the bound catches a wrong head or a missed store) */
    void *fq = dev_half(qkv, (size_t)t * width);
    void *fk = dev_half(kv0, (size_t)n_slots * kvw), *fv = dev_half(kv0, (size_t)n_slots * kvw);
    be->ops->rope_kv_store(be, t2(fq, t, width), glm_tensor_1d(GLM_I32, t, dp),
                           t2(fk, n_slots, kvw), t2(fv, n_slots, kvw),
                           glm_tensor_1d(GLM_I32, t, ds), nq, nkv, hd, rope_dim, theta);
    float *uk = down_half(dk, (size_t)n_slots * kvw), *uv = down_half(dv, (size_t)n_slots * kvw);
    double *ud = malloc(sizeof(double) * (size_t)t * width);
    for (size_t i = 0; i < (size_t)t * width; i++) ud[i] = rq[i];
    expect_close("rope_kv_store qkv", fq, ud, (size_t)t * width, 1e-3);
    for (size_t i = 0; i < (size_t)n_slots * kvw; i++) rk[i] = uk[i], rv[i] = uv[i];
    expect_close("rope_kv_store k", fk, rk, (size_t)n_slots * kvw, 1e-3);
    expect_close("rope_kv_store v", fv, rv, (size_t)n_slots * kvw, 1e-3);
    be->ops->free(be, fq), be->ops->free(be, fk), be->ops->free(be, fv);
    free(uk), free(uv), free(ud);
    be->ops->free(be, dq), be->ops->free(be, dp), be->ops->free(be, ds);
    be->ops->free(be, dk), be->ops->free(be, dv);
    free(qkv), free(pos), free(slots), free(ref), free(kv0), free(rq), free(rk), free(rv);
}

/* ---- vision data movement ---- */

static void test_vision(int n_img, int ch, int size, int patch, int hidden)
{
    int g = size / patch, P = g * g, cols = ch * patch * patch;
    size_t npix = (size_t)n_img * ch * size * size;
    float *pix = rand_host(npix, 1);
    void *dpix;
    be->ops->alloc(be, npix * 4, &dpix);
    be->ops->upload(be, dpix, pix, npix * 4); /* f32 pixels */
    void *dy = dev_poisoned((size_t)n_img * P * cols);
    glm_op_patchify(be, t2(dy, (int64_t)n_img * P, cols),
                    glm_tensor_4d(GLM_F32, n_img, ch, size, size, dpix), patch);
    double *ref = malloc(sizeof(double) * n_img * P * cols);
    for (int i = 0; i < n_img; i++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++)
                for (int c = 0; c < ch; c++)
                    for (int ky = 0; ky < patch; ky++)
                        for (int kx = 0; kx < patch; kx++)
                            ref[((size_t)(i * P + gy * g + gx)) * cols + (c * patch + ky) * patch + kx] =
                                pix[(((size_t)i * ch + c) * size + gy * patch + ky) * size + gx * patch + kx];
    expect_close("patchify", dy, ref, (size_t)n_img * P * cols, 1e-2);
    free(ref);

    /* im2col_2x2 over a [n * g * g, hidden] token grid */
    float *x = rand_host((size_t)n_img * P * hidden, 1);
    void *dx = dev_half(x, (size_t)n_img * P * hidden);
    int h2 = g / 2;
    void *dz = dev_poisoned((size_t)n_img * h2 * h2 * hidden * 4);
    glm_op_im2col_2x2(be, t2(dz, (int64_t)n_img * h2 * h2, hidden * 4),
                      t2(dx, (int64_t)n_img * P, hidden), n_img, g);
    ref = malloc(sizeof(double) * n_img * h2 * h2 * hidden * 4);
    for (int i = 0; i < n_img; i++)
        for (int oy = 0; oy < h2; oy++)
            for (int ox = 0; ox < h2; ox++)
                for (int c = 0; c < hidden; c++)
                    for (int ky = 0; ky < 2; ky++)
                        for (int kx = 0; kx < 2; kx++)
                            ref[((size_t)(i * h2 * h2 + oy * h2 + ox)) * hidden * 4 + c * 4 + ky * 2 + kx] =
                                x[((size_t)i * P + (2 * oy + ky) * g + 2 * ox + kx) * hidden + c];
    expect_close("im2col_2x2", dz, ref, (size_t)n_img * h2 * h2 * hidden * 4, 1e-6);
    free(ref);

    float *cls = rand_host(hidden, 1), *posv = rand_host((size_t)(P + 1) * hidden, 1);
    void *dc = dev_half(cls, hidden), *dpos = dev_half(posv, (size_t)(P + 1) * hidden);
    void *de = dev_poisoned((size_t)n_img * (P + 1) * hidden);
    glm_op_vision_embed(be, glm_tensor_3d(half, n_img, P + 1, hidden, de),
                        t2(dx, (int64_t)n_img * P, hidden), glm_tensor_1d(half, hidden, dc),
                        t2(dpos, P + 1, hidden), n_img);
    ref = malloc(sizeof(double) * n_img * (P + 1) * hidden);
    for (int i = 0; i < n_img; i++)
        for (int j = 0; j <= P; j++)
            for (int c = 0; c < hidden; c++)
                ref[((size_t)i * (P + 1) + j) * hidden + c] =
                    (j == 0 ? cls[c] : x[((size_t)i * P + j - 1) * hidden + c]) + posv[(size_t)j * hidden + c];
    expect_close("vision_embed", de, ref, (size_t)n_img * (P + 1) * hidden, 1e-2);
    be->ops->free(be, dpix), be->ops->free(be, dy), be->ops->free(be, dx), be->ops->free(be, dz);
    be->ops->free(be, dc), be->ops->free(be, dpos), be->ops->free(be, de);
    free(pix), free(x), free(cls), free(posv), free(ref);
}

/* ---- attention ---- */

/* Reference softmax(q k^T * scale) v for one query row over n keys given by row pointers. */
static void attend_ref(double *out, const float *q, const float *const *k, const float *const *v,
                       int n, int hd, double scale)
{
    double *s = malloc(sizeof(double) * n), mx = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int c = 0; c < hd; c++) d += (double)q[c] * k[j][c];
        s[j] = d * scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
    for (int c = 0; c < hd; c++) out[c] = 0;
    for (int j = 0; j < n; j++)
        for (int c = 0; c < hd; c++) out[c] += s[j] / sum * v[j][c];
    free(s);
}

static void test_attention_full(int n_seqs, int seq, int heads, int hd, int row_step)
{
    int width = 3 * heads * hd, ow = heads * hd;
    size_t n = (size_t)n_seqs * seq;
    float *qkv = rand_host(n * width, 1);
    void *dq = dev_half(qkv, n * width), *dout = dev_poisoned(n * ow);
    double scale = 1 / sqrt((double)hd);
    glm_op_attention_full(be, t2(dout, n, ow), t2(dq, n, width), n_seqs, seq, heads, hd, (float)scale);
    float *out = down_half(dout, n * ow);
    const float **kp = malloc(sizeof(float *) * seq), **vp = malloc(sizeof(float *) * seq);
    double *ref = malloc(sizeof(double) * n * ow);
    float *got = malloc(sizeof(float) * n * ow);
    size_t m = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int h = 0; h < heads; h++) {
            for (int j = 0; j < seq; j++) {
                kp[j] = qkv + ((size_t)s * seq + j) * width + (heads + h) * hd;
                vp[j] = qkv + ((size_t)s * seq + j) * width + (2 * heads + h) * hd;
            }
            for (int i = 0; i < seq; i++) {
                if (i % row_step != 0 && i != seq - 1) continue;
                size_t row = (size_t)s * seq + i;
                attend_ref(ref + m, qkv + row * width + h * hd, kp, vp, seq, hd, scale);
                memcpy(got + m, out + row * ow + h * hd, sizeof(float) * hd);
                m += hd;
            }
        }
    /* every element must have been written, even rows the reference skips */
    int nan_count = 0;
    for (size_t i = 0; i < n * ow; i++) nan_count += isnan(out[i]);
    CHECK_MSG(nan_count == 0, "attention_full: %d unwritten outputs", nan_count);
    double e = rel_l2(got, ref, m);
    CHECK_MSG(e < 1e-2, "attention_full %dx%d h%d d%d: rel_l2 %.3g", n_seqs, seq, heads, hd, e);
    printf("  attention_full seqs %d len %d heads %d hd %-3d        rel_l2 %.2e\n", n_seqs, seq,
           heads, hd, e);
    be->ops->free(be, dq), be->ops->free(be, dout);
    free(qkv), free(out), free(kp), free(vp), free(ref), free(got);
}

/* When > 0, paged tests pass this max_ctx_len (a capacity, as under graph capture). */
static int paged_cap_ctx = 0;

/* Paged attention: seqs with (q_len, ctx_len); a random block table over a shared cache. */
static void test_attention_paged(int n_seqs, const int *q_len, const int *ctx, int nq, int nkv,
                                 int hd, int block_size)
{
    int width = (nq + 2 * nkv) * hd, kvw = nkv * hd, ow = nq * hd;
    int32_t *q_start = malloc(sizeof(int32_t) * (n_seqs + 1));
    int max_blocks = 0, max_q = 0, max_ctx = 0, total_blocks = 0;
    q_start[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        q_start[s + 1] = q_start[s] + q_len[s];
        int nb = (ctx[s] + block_size - 1) / block_size;
        if (nb > max_blocks) max_blocks = nb;
        if (q_len[s] > max_q) max_q = q_len[s];
        if (ctx[s] > max_ctx) max_ctx = ctx[s];
        total_blocks += nb;
    }
    int n_tokens = q_start[n_seqs];
    int n_slots = (total_blocks + 3) * block_size;
    int32_t *table = malloc(sizeof(int32_t) * n_seqs * max_blocks);
    /* a random permutation of blocks, so neighbouring keys live far apart */
    int n_cache_blocks = total_blocks + 3;
    int32_t *perm = malloc(sizeof(int32_t) * n_cache_blocks);
    for (int i = 0; i < n_cache_blocks; i++) perm[i] = i;
    for (int i = n_cache_blocks - 1; i > 0; i--) {
        int j = test_rng_int(&rng, 0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int next = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            table[s * max_blocks + b] = b * block_size < ctx[s] ? perm[next++] : -1;
    float *qkv = rand_host((size_t)n_tokens * width, 1);
    float *kc = rand_host((size_t)n_slots * kvw, 1), *vc = rand_host((size_t)n_slots * kvw, 1);
    /* the op's contract: the last q_len keys of each sequence are the k / v heads of its qkv rows
     * (kv_store ran on them), which a backend may read from qkv instead of the cache */
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < q_len[s]; i++) {
            int j = ctx[s] - q_len[s] + i;
            if (j < 0) continue; /* a graph's padding row (ctx 0): no key was stored */
            size_t slot = (size_t)table[s * max_blocks + j / block_size] * block_size + j % block_size;
            const float *row = qkv + (size_t)(q_start[s] + i) * width;
            memcpy(kc + slot * kvw, row + (size_t)nq * hd, sizeof(float) * kvw);
            memcpy(vc + slot * kvw, row + (size_t)(nq + nkv) * hd, sizeof(float) * kvw);
        }
    void *dq = dev_half(qkv, (size_t)n_tokens * width), *dk = dev_half(kc, (size_t)n_slots * kvw),
         *dv = dev_half(vc, (size_t)n_slots * kvw), *dout = dev_poisoned((size_t)n_tokens * ow);
    int32_t *ctx32 = malloc(sizeof(int32_t) * n_seqs);
    for (int s = 0; s < n_seqs; s++) ctx32[s] = ctx[s];
    void *dqs = dev_i32(q_start, n_seqs + 1), *dctx = dev_i32(ctx32, n_seqs),
         *dtab = dev_i32(table, (size_t)n_seqs * max_blocks);
    glm_attn_batch batch = {.n_seqs = n_seqs, .n_tokens = n_tokens, .block_size = block_size,
                            .max_blocks_per_seq = max_blocks, .max_q_len = max_q,
                            .max_ctx_len = paged_cap_ctx > max_ctx ? paged_cap_ctx : max_ctx,
                            .q_start = dqs, .ctx_len = dctx,
                            .block_table = dtab, .q_start_host = q_start, .ctx_len_host = ctx32};
    double scale = 1 / sqrt((double)hd);
    glm_op_attention_paged(be, t2(dout, n_tokens, ow), t2(dq, n_tokens, width),
                           t2(dk, n_slots, kvw), t2(dv, n_slots, kvw), &batch, nq, nkv, hd,
                           (float)scale);
    double *ref = malloc(sizeof(double) * n_tokens * ow);
    const float **kp = malloc(sizeof(float *) * max_ctx), **vp = malloc(sizeof(float *) * max_ctx);
    for (int s = 0; s < n_seqs; s++)
        for (int h = 0; h < nq; h++) {
            int kvh = h / (nq / nkv);
            for (int j = 0; j < ctx[s]; j++) {
                size_t slot = (size_t)table[s * max_blocks + j / block_size] * block_size + j % block_size;
                kp[j] = kc + slot * kvw + kvh * hd;
                vp[j] = vc + slot * kvw + kvh * hd;
            }
            for (int i = 0; i < q_len[s]; i++) {
                int t = q_start[s] + i;
                attend_ref(ref + (size_t)t * ow + h * hd, qkv + (size_t)t * width + h * hd, kp, vp,
                           ctx[s] - q_len[s] + i + 1, hd, scale);
            }
        }
    char name[96];
    snprintf(name, sizeof(name), "attention_paged %d seqs (q %d, ctx %d..) %d/%d hd %d%s", n_seqs,
             q_len[0], ctx[0], nq, nkv, hd, paged_cap_ctx ? " (capacity ctx)" : "");
    expect_close(name, dout, ref, (size_t)n_tokens * ow, 1e-2);
    be->ops->free(be, dq), be->ops->free(be, dk), be->ops->free(be, dv), be->ops->free(be, dout);
    be->ops->free(be, dqs), be->ops->free(be, dctx), be->ops->free(be, dtab);
    free(q_start), free(table), free(perm), free(qkv), free(kc), free(vc), free(ctx32), free(ref);
    free(kp), free(vp);
}

/* The attention shapes the fused engines are for: head dims 64, 112 and 128, odd lengths, 1 to 16
 * images per call, the real vision shapes (16 heads, 8 at TP 2), and causal prefill with no
 * cached prefix (q_len == ctx_len), alone and beside a sequence that has one. */
static void attention_model_shapes(void)
{
    test_attention_full(1, 37, 2, 112, 1);
    test_attention_full(3, 101, 2, 128, 1);
    test_attention_full(16, 37, 2, 112, 3);
    test_attention_full(5, 65, 4, 64, 1);
    int q1[] = {37, 101}, c1[] = {37, 101};
    test_attention_paged(2, q1, c1, 4, 2, 128, 16);
    int q2[] = {77}, c2[] = {77};
    test_attention_paged(1, q2, c2, 16, 1, 128, 16);
    int q3[] = {5, 20}, c3[] = {5, 30}; /* the second has a prefix: the kernels take the step */
    test_attention_paged(2, q3, c3, 4, 2, 128, 16);
    int q6[] = {45}, c6[] = {45}; /* causal with as many kv heads as query heads */
    test_attention_paged(1, q6, c6, 4, 4, 64, 16);
    if (small_only) return;
    test_attention_full(2, 6401, 16, 112, 401);
    test_attention_full(1, 6401, 8, 112, 401);
    test_attention_full(3, 1601, 16, 112, 211);
    int q4[] = {1632}, c4[] = {1632};
    test_attention_paged(1, q4, c4, 32, 2, 128, 16);
    int q5[] = {1701, 903}, c5[] = {1701, 903};
    test_attention_paged(2, q5, c5, 16, 1, 128, 16);
}

/* attention_model_shapes on a backend made with GLM4V_ATTENTION=cudnn (strict: a shape cuDNN
 * refuses is an error) and causal prefill through cuDNN from one row. */
static void attention_cudnn_suite(void)
{
    glm_backend *cudnn = NULL, *main_be = be;
    glm_error err;
    setenv("GLM4V_ATTENTION", "cudnn", 1);
    setenv("GLM4V_CUDNN_MIN_PREFILL", "1", 1);
    glm_status st = glm_backend_cuda_create(0, &cudnn, &err);
    setenv("GLM4V_ATTENTION", "fa2", 1);
    unsetenv("GLM4V_CUDNN_MIN_PREFILL");
    if (st != GLM_OK) {
#ifdef GLM4V_TEST_EXPECT_CUDNN
        CHECK_MSG(0, "the build has cuDNN but GLM4V_ATTENTION=cudnn failed: %s", err.msg);
#else
        printf("attention through cudnn: skipped (%s)\n", err.msg);
#endif
        return;
    }
    printf("attention through cudnn\n");
    be = cudnn;
    attention_model_shapes();
    CHECK_MSG(glm_backend_take_error(cudnn, &err) == GLM_OK, "cudnn attention: %s", err.msg);
    be = main_be;
    glm_backend_destroy(cudnn);
}

/* ---- sampling: the CPU backend is the reference ---- */

static void test_sample(int rows, int vocab)
{
    glm_backend *cpu = NULL;
    glm_error err;
    if (glm_backend_cpu_create(1, &cpu, &err) != GLM_OK || !cpu->ops->sample) {
        printf("  sample: no CPU backend to compare with (%s), skipped\n", err.msg);
        if (cpu) glm_backend_destroy(cpu);
        return;
    }
    float *logits = rand_host((size_t)rows * vocab, 3);
    void *dl = dev_half(logits, (size_t)rows * vocab);
    void *cl = NULL;
    cpu->ops->alloc(cpu, (size_t)rows * vocab * 4, &cl);
    cpu->ops->upload(cpu, cl, logits, (size_t)rows * vocab * 4);
    glm_sample_params *p = calloc(rows, sizeof(*p));
    for (int r = 0; r < rows; r++) {
        int kind = r % 5;
        p[r].temperature = kind == 0 ? 0.f : 0.6f + 0.3f * (r % 3);
        p[r].top_k = kind == 2 ? 40 : kind == 4 ? 5 : 0;
        p[r].top_p = kind == 3 ? 0.8f : kind == 4 ? 0.9f : 1.f;
        p[r].seed = 1234 + 77 * r;
        p[r].n_logprobs = r % 2 ? 5 : 0;
    }
    int32_t *gid = malloc(sizeof(int32_t) * rows), *cid = malloc(sizeof(int32_t) * rows);
    float *glp = malloc(sizeof(float) * rows * GLM_SAMPLE_LOGPROBS_STRIDE),
          *clp = malloc(sizeof(float) * rows * GLM_SAMPLE_LOGPROBS_STRIDE);
    int agree = 0, lp_bad = 0;
    for (uint64_t step = 0; step < 8; step++) {
        be->ops->sample(be, gid, glp, glm_tensor_2d(half, rows, vocab, dl), p, rows, step);
        cpu->ops->sample(cpu, cid, clp, glm_tensor_2d(GLM_F32, rows, vocab, cl), p, rows, step);
        CHECK_MSG(glm_backend_take_error(be, &err) == GLM_OK, "sample: %s", err.msg);
        for (int r = 0; r < rows; r++) {
            agree += gid[r] == cid[r];
            for (int i = 0; i < 1 + 2 * p[r].n_logprobs; i++)
                lp_bad += fabsf(glp[r * GLM_SAMPLE_LOGPROBS_STRIDE + i] - clp[r * GLM_SAMPLE_LOGPROBS_STRIDE + i]) > 1e-3f;
        }
    }
    /* equal logits and equal RNG: every draw should agree (a rare rounding tie aside) */
    CHECK_MSG(agree >= 8 * rows - 1, "sample: GPU and CPU agree on %d of %d draws", agree, 8 * rows);
    CHECK_MSG(lp_bad == 0, "sample: %d logprob values differ from the CPU", lp_bad);
    printf("  sample %d rows x %d: %d/%d draws equal to the CPU's, %d logprob mismatches\n", rows,
           vocab, agree, 8 * rows, lp_bad);
    /* an overflowed row (one logit +inf: what a 16-bit overflow leaves) draws nothing (id -1,
     * logprob NaN); the other rows are drawn as before */
    uint16_t inf_bits = half == GLM_F16 ? 0x7c00 : 0x7f80;
    be->ops->upload(be, (char *)dl + 2 * ((size_t)(rows - 1) * vocab + 3), &inf_bits, 2);
    p[rows - 1].n_logprobs = 2;
    be->ops->sample(be, gid, glp, glm_tensor_2d(half, rows, vocab, dl), p, rows, 7);
    cpu->ops->sample(cpu, cid, clp, glm_tensor_2d(GLM_F32, rows, vocab, cl), p, rows, 7);
    CHECK(glm_backend_take_error(be, &err) == GLM_OK);
    CHECK_MSG(gid[rows - 1] == -1 && isnan(glp[(size_t)(rows - 1) * GLM_SAMPLE_LOGPROBS_STRIDE]),
              "overflowed row: id %d", gid[rows - 1]);
    for (int r = 0; r + 1 < rows; r++) CHECK_MSG(gid[r] == cid[r], "row %d after an overflowed row", r);
    be->ops->free(be, dl);
    cpu->ops->free(cpu, cl);
    glm_backend_destroy(cpu);
    free(logits), free(p), free(gid), free(cid), free(glp), free(clp);
}

/* ---- graphs ---- */

static void test_graph(void)
{
    int n = 1000;
    float *a = rand_host(n, 1), *b = rand_host(n, 1);
    void *da = dev_half(a, n), *db = dev_half(b, n), *dy = dev_poisoned(n);
    CHECK(be->ops->graph_begin(be, 7));
    glm_op_add(be, t2(dy, 1, n), t2(da, 1, n), t2(db, 1, n));
    glm_op_scale(be, t2(dy, 1, n), 2.f);
    be->ops->graph_end(be, 7);
    float *a2 = rand_host(n, 1);
    uint16_t *h = malloc(2 * n);
    for (int i = 0; i < n; i++) h[i] = half_bits(a2[i]);
    be->ops->upload(be, da, h, 2 * n);
    CHECK(be->ops->graph_replay(be, 7));
    CHECK(!be->ops->graph_replay(be, 8));
    double *ref = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) ref[i] = 2.0 * bf((double)a2[i] + b[i]);
    expect_close("graph replay (add, scale)", dy, ref, n, 1e-2);
    be->ops->free(be, da), be->ops->free(be, db), be->ops->free(be, dy);
    free(a), free(b), free(a2), free(h), free(ref);
}

/* ---- errors are sticky and carry context ---- */

static void test_errors(void)
{
    glm_error err;
    if (!small_only) { /* --small runs under memcheck, which counts the failed cudaMalloc */
        void *p = NULL;
        glm_status st = be->ops->alloc(be, (size_t)1 << 50, &p);
        CHECK(st == GLM_ERR_DEVICE_OOM && p == NULL);
        CHECK(glm_backend_take_error(be, &err) == GLM_ERR_DEVICE_OOM);
        CHECK_MSG(strstr(err.msg, "requested") != NULL, "OOM message: %s", err.msg);
    }
    glm_op_add(be, t2(NULL, 1, 4), t2(NULL, 1, 4), t2(NULL, 1, 5));
    CHECK(glm_backend_take_error(be, &err) == GLM_ERR_SHAPE);
}

/* ---- timing ---- */

/* Median of reps timed runs of fn on backend b's stream (the events must be on the stream the
 * work goes to: backends do not synchronize with each other). */
static float time_ms_on(glm_backend *b, void (*fn)(void *), void *arg, int reps)
{
    cudaStream_t s = (cudaStream_t)b->ops->native_stream(b);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++) fn(arg);
    float best[64], ms;
    for (int i = 0; i < reps && i < 64; i++) {
        cudaEventRecord(e0, s);
        fn(arg);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&best[i], e0, e1);
    }
    /* median */
    for (int i = 0; i < reps; i++)
        for (int j = i + 1; j < reps; j++)
            if (best[j] < best[i]) ms = best[i], best[i] = best[j], best[j] = ms;
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return best[reps / 2];
}

static float time_ms(void (*fn)(void *), void *arg, int reps)
{
    return time_ms_on(be, fn, arg, reps);
}

typedef struct lin_args { glm_tensor y, x, w; glm_backend *be; } lin_args;
static void run_linear(void *a)
{
    lin_args *l = a;
    glm_op_linear(l->be ? l->be : be, l->y, l->x, glm_weight_dense(l->w), NULL,
                  GLM_ACT_NONE);
}
typedef struct att_args { glm_tensor out, qkv; int seqs, len, heads, hd; } att_args;
static void run_att(void *a)
{
    att_args *t = a;
    glm_op_attention_full(be, t->out, t->qkv, t->seqs, t->len, t->heads, t->hd, 0.0945f);
}
typedef struct pag_args { glm_tensor out, qkv, k, v; glm_attn_batch b; int nq, nkv, hd; } pag_args;
static void run_paged(void *a)
{
    pag_args *t = a;
    glm_op_attention_paged(be, t->out, t->qkv, t->k, t->v, &t->b, t->nq, t->nkv, t->hd, 0.088f);
}
typedef struct cp_args { void *d, *s; size_t n; } cp_args;
static void run_copy(void *a)
{
    cp_args *c = a;
    be->ops->copy(be, c->d, c->s, c->n);
}

static void *dev_random(size_t n)
{
    void *d = NULL;
    be->ops->alloc(be, n * 2, &d);
    be->ops->fill_normal(be, glm_tensor_1d(half, (int64_t)n, d), n, 0.f, 1.f);
    return d;
}

/* "bench attention_ms shape=S impl=I value=V unit=ms" and the same for TFLOP/s, per path (the
 * lines scripts/bench-gpu.sh puts beside baseline_torch.py's). */
static void bench_line(const char *shape, float fa2_ms, float cudnn_ms, double flop)
{
    const char *impl[2] = {"fa2", "cudnn"};
    float ms[2] = {fa2_ms, cudnn_ms};
    for (int i = 0; i < 2; i++) {
        if (ms[i] <= 0) continue; /* that path failed: no figure */
        printf("bench attention_ms shape=%s impl=%s value=%.4g unit=ms\n", shape, impl[i], ms[i]);
        printf("bench attention_tflops shape=%s impl=%s value=%.4g unit=TFLOP/s\n", shape, impl[i],
               flop / ms[i] / 1e9);
    }
}

/* Shapes the strict cuDNN backend refused in the bench: their time is that of a no-op. */
static int cudnn_failures;

/* True (and the error printed and cleared) when the timed runs on b failed. */
static bool bench_failed(glm_backend *b)
{
    glm_error err;
    if (glm_backend_take_error(b, &err) == GLM_OK) return false;
    printf("  (failed: %s)\n", err.msg);
    cudnn_failures++;
    return true;
}

/* The vision attention (a: 6401 rows, 16 heads of 112) at TP 1 and 2, and causal prefill of an
 * image prompt, on a GLM4V_ATTENTION=cudnn backend beside the fa2 kernels of the main one. The
 * plan-build time of each shape is printed once (GLM4V_ATTENTION_LOG). */
static void bench_attention_cudnn(const att_args *a)
{
    glm_backend *cudnn = NULL, *main_be = be;
    glm_error err;
    setenv("GLM4V_ATTENTION", "cudnn", 1);
    setenv("GLM4V_ATTENTION_LOG", "1", 1);
    setenv("GLM4V_CUDNN_MIN_PREFILL", "1", 1);
    glm_status st = glm_backend_cuda_create(0, &cudnn, &err);
    setenv("GLM4V_ATTENTION", "fa2", 1);
    unsetenv("GLM4V_CUDNN_MIN_PREFILL");
    if (st != GLM_OK) {
        printf("  attention through cudnn: none (%s)\n", err.msg);
        return;
    }
    int len = a->len, hd = a->hd;
    for (int heads = 16; heads >= 8; heads /= 2) {
        att_args t = *a;
        t.heads = heads;
        t.qkv = t2(a->qkv.data, len, 3 * heads * hd);
        t.out = t2(a->out.data, len, heads * hd);
        be->ops->synchronize(be);
        float fa2 = time_ms(run_att, &t, 10);
        be = cudnn;
        float dnn = time_ms(run_att, &t, 10);
        be = main_be;
        if (bench_failed(cudnn)) dnn = 0;
        double flop = 4.0 * len * len * heads * hd;
        printf("  attention_full %d x %d heads x %d: fa2 %.3f ms %.1f TFLOP/s | cudnn %.3f ms %.1f "
               "TFLOP/s\n",
               len, heads, hd, fa2, flop / fa2 / 1e9, dnn, dnn > 0 ? flop / dnn / 1e9 : 0.0);
        bench_line(heads == 16 ? "vision_tp1" : "vision_tp2", fa2, dnn, flop);
    }
    int lens[] = {1632, 4096};
    for (int li = 0; li < 2; li++) { /* causal prefill, 32q/2kv (TP 1), hd 128 */
        int n = lens[li], bs = 16, nq = 32, nkv = 2, mb = (n + bs - 1) / bs, slots = mb * bs;
        int32_t qs[2] = {0, n}, cl[1] = {n}, *tab = malloc(4 * mb);
        for (int i = 0; i < mb; i++) tab[i] = i;
        pag_args p = {t2(dev_random((size_t)n * nq * 128), n, nq * 128),
                      t2(dev_random((size_t)n * (nq + 2 * nkv) * 128), n, (nq + 2 * nkv) * 128),
                      t2(dev_random((size_t)slots * nkv * 128), slots, nkv * 128),
                      t2(dev_random((size_t)slots * nkv * 128), slots, nkv * 128),
                      {1, n, bs, mb, n, n, dev_i32(qs, 2), dev_i32(cl, 1), dev_i32(tab, mb), qs, cl},
                      nq, nkv, 128};
        be->ops->synchronize(be);
        float fa2 = time_ms(run_paged, &p, 20);
        be = cudnn;
        float dnn = time_ms(run_paged, &p, 20);
        be = main_be;
        if (bench_failed(cudnn)) dnn = 0;
        double flop = 2.0 * n * (double)n * nq * 128;
        printf("  prefill attention %d causal (32q/2kv, hd 128): fa2 %.4f ms %.1f TFLOP/s | cudnn "
               "%.4f ms %.1f TFLOP/s\n",
               n, fa2, flop / fa2 / 1e9, dnn, dnn > 0 ? flop / dnn / 1e9 : 0.0);
        char shape[32];
        snprintf(shape, sizeof(shape), "prefill_%d", n);
        bench_line(shape, fa2, dnn, flop);
        be->ops->free(be, p.out.data), be->ops->free(be, p.qkv.data);
        be->ops->free(be, p.k.data), be->ops->free(be, p.v.data);
        be->ops->free(be, (void *)p.b.q_start), be->ops->free(be, (void *)p.b.ctx_len);
        be->ops->free(be, (void *)p.b.block_table);
        free(tab);
    }
    CHECK_MSG(cudnn_failures == 0, "cudnn bench: %d shapes refused", cudnn_failures);
    unsetenv("GLM4V_ATTENTION_LOG");
    glm_backend_destroy(cudnn);
}

/* --bench-attention: bench_attention_cudnn alone, on fresh random buffers. */
static void bench_attention_only(void)
{
    int len = 6401, heads = 16, hd = 112;
    att_args a = {t2(dev_random((size_t)len * heads * hd), len, heads * hd),
                  t2(dev_random((size_t)len * 3 * heads * hd), len, 3 * heads * hd),
                  1,
                  len,
                  heads,
                  hd};
    bench_attention_cudnn(&a);
    be->ops->free(be, a.out.data), be->ops->free(be, a.qkv.data);
}

static void bench(void)
{
    printf("\nbenchmarks (median of 20, CUDA events)\n");
    cp_args c = {NULL, NULL, (size_t)1 << 30};
    be->ops->alloc(be, c.n, &c.d);
    c.s = dev_random(c.n / 2);
    float ms = time_ms(run_copy, &c, 20);
    printf("  device copy 1 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms, 2.0 * c.n / ms / 1e6);
    be->ops->free(be, c.d), be->ops->free(be, c.s);

    int shapes[][3] = {{8192, 4096, 4096}, {6401, 1792, 1792}, {6401, 15360, 1792},
                       {6401, 1792, 15360}, {1, 4608, 4096}, {8, 27392, 4096},
                       {64, 27392, 4096}, {256, 4096, 13696}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        int m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
        lin_args l = {t2(dev_random((size_t)m * n), m, n), t2(dev_random((size_t)m * k), m, k),
                      t2(dev_random((size_t)n * k), n, k), NULL};
        ms = time_ms(run_linear, &l, 20);
        double bytes = 2.0 * ((double)m * k + (double)n * k + (double)m * n);
        printf("  linear M %5d N %5d K %5d: %8.3f ms %7.1f TFLOP/s %7.0f GB/s\n", m, n, k, ms,
               2.0 * m * n * k / ms / 1e9, bytes / ms / 1e6);
        be->ops->free(be, l.y.data), be->ops->free(be, l.x.data), be->ops->free(be, l.w.data);
    }

    /* decode-sized layers (TP 1 and TP 2 shards): cuBLASLt alone, gemv.cu alone, and what the
     * default settings pick (backends on the same device made under those settings) */
    glm_backend *var[3] = {NULL, NULL, NULL};
    const char *var_env[3][2] = {{"0", "0"}, {"8", "0"}, {NULL, NULL}};
    const char *var_names[2] = {"GLM4V_GEMV_MAX_ROWS", "GLM4V_GEMV_MIN_WEIGHTS"};
    glm_error lt_err;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++)
            if (var_env[i][j])
                setenv(var_names[j], var_env[i][j], 1);
            else
                unsetenv(var_names[j]);
        if (glm_backend_cuda_create(0, &var[i], &lt_err) != GLM_OK) var[i] = NULL;
    }
    if (var[0] && var[1] && var[2]) {
        int dec[][3] = {{1, 4608, 4096},  {1, 4096, 4096},  {1, 27392, 4096}, {1, 4096, 13696},
                        {1, 151552, 4096}, {1, 2304, 4096},  {1, 4096, 2048},  {1, 13696, 4096},
                        {1, 4096, 6848},  {2, 27392, 4096}, {4, 27392, 4096}, {4, 4608, 4096},
                        {8, 27392, 4096}};
        printf("  decode linear, GB/s of weights + activations (-: that path failed)\n"
               "     M      N      K | cuBLASLt |   gemv.cu | default\n");
        for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
            int m = dec[i][0], n = dec[i][1], k = dec[i][2];
            lin_args l = {t2(dev_random((size_t)m * n), m, n), t2(dev_random((size_t)m * k), m, k),
                          t2(dev_random((size_t)n * k), n, k), NULL};
            double bytes = 2.0 * ((double)m * k + (double)n * k + (double)m * n);
            printf("  %4d %6d %6d", m, n, k);
            for (int v = 0; v < 3; v++) {
                l.be = var[v];
                float ms = time_ms_on(var[v], run_linear, &l, 20);
                /* a failed op is a no-op: its time means nothing */
                if (glm_backend_take_error(var[v], &lt_err))
                    printf(" | %8s", "-");
                else
                    printf(" | %8.0f", bytes / ms / 1e6);
            }
            printf("\n");
            be->ops->free(be, l.y.data), be->ops->free(be, l.x.data), be->ops->free(be, l.w.data);
        }
    }
    for (int i = 0; i < 3; i++) glm_backend_destroy(var[i]);

    int len = 6401, heads = 16, hd = 112;
    att_args a = {t2(dev_random((size_t)len * heads * hd), len, heads * hd),
                  t2(dev_random((size_t)len * 3 * heads * hd), len, 3 * heads * hd), 1, len, heads, hd};
    const char *variants[] = {"1", "2"};
    for (int vi = 0; vi < 2; vi++) {
        setenv("GLM4V_FA_MT", variants[vi], 1);
        ms = time_ms(run_att, &a, 10);
        printf("  attention_full 6401 x 16 heads x 112 (MT %s): %.3f ms, %.1f TFLOP/s\n", variants[vi],
               ms, 4.0 * len * len * heads * hd / ms / 1e9);
    }
    unsetenv("GLM4V_FA_MT");
    bench_attention_cudnn(&a);
    be->ops->free(be, a.out.data), be->ops->free(be, a.qkv.data);

    int ctxs[] = {1024, 4096, 8192}, batches[] = {1, 8, 32, 128};
    for (int ci = 0; ci < 3; ci++)
        for (int bi = 0; bi < 4; bi++) {
            int ctx = ctxs[ci], ns = batches[bi], bs = 16, nq = 32, nkv = 2;
            hd = 128;
            int mb = ctx / bs, slots = ns * mb * bs;
            int32_t *qs = malloc(4 * (ns + 1)), *cl = malloc(4 * ns), *tab = malloc(4 * ns * mb);
            for (int s = 0; s <= ns; s++) qs[s] = s;
            for (int s = 0; s < ns; s++) cl[s] = ctx;
            for (int i = 0; i < ns * mb; i++) tab[i] = (i * 7919) % (ns * mb);
            pag_args p = {t2(dev_random((size_t)ns * nq * hd), ns, nq * hd),
                          t2(dev_random((size_t)ns * (nq + 2 * nkv) * hd), ns, (nq + 2 * nkv) * hd),
                          t2(dev_random((size_t)slots * nkv * hd), slots, nkv * hd),
                          t2(dev_random((size_t)slots * nkv * hd), slots, nkv * hd),
                          {ns, ns, bs, mb, 1, ctx, dev_i32(qs, ns + 1), dev_i32(cl, ns),
                           dev_i32(tab, ns * mb), qs, cl}, nq, nkv, hd};
            ms = time_ms(run_paged, &p, 20);
            double bytes = 2.0 * 2 * (double)ns * ctx * nkv * hd;
            printf("  decode attention %3d seqs x ctx %4d (32q/2kv, hd 128): %.4f ms, %.0f GB/s\n", ns,
                   ctx, ms, bytes / ms / 1e6);
            if (ctx == 1024 && ns != 8) { /* graph mode: the grid sized for an 8192 capacity */
                p.b.max_ctx_len = 8192;
                ms = time_ms(run_paged, &p, 20);
                printf("  decode attention %3d seqs x ctx %4d, capacity 8192:  %.4f ms, %.0f GB/s\n", ns,
                       ctx, ms, bytes / ms / 1e6);
            }
            be->ops->free(be, p.out.data), be->ops->free(be, p.qkv.data);
            be->ops->free(be, p.k.data), be->ops->free(be, p.v.data);
            be->ops->free(be, (void *)p.b.q_start), be->ops->free(be, (void *)p.b.ctx_len);
            be->ops->free(be, (void *)p.b.block_table);
            free(qs), free(cl), free(tab);
        }
    { /* causal paged prefill of one image prompt: 1632 tokens, 32q/2kv, hd 128 */
        int n = 1632, bs = 16, nq = 32, nkv = 2, mb = (n + bs - 1) / bs, slots = mb * bs;
        int32_t qs[2] = {0, n}, cl[1] = {n}, *tab = malloc(4 * mb);
        for (int i = 0; i < mb; i++) tab[i] = i;
        pag_args p = {t2(dev_random((size_t)n * nq * 128), n, nq * 128),
                      t2(dev_random((size_t)n * (nq + 2 * nkv) * 128), n, (nq + 2 * nkv) * 128),
                      t2(dev_random((size_t)slots * nkv * 128), slots, nkv * 128),
                      t2(dev_random((size_t)slots * nkv * 128), slots, nkv * 128),
                      {1, n, bs, mb, n, n, dev_i32(qs, 2), dev_i32(cl, 1), dev_i32(tab, mb), qs, cl},
                      nq, nkv, 128};
        for (int vi = 0; vi < 2; vi++) {
            setenv("GLM4V_FA_MT", variants[vi], 1);
            ms = time_ms(run_paged, &p, 20);
            printf("  prefill attention 1632 causal (32q/2kv, hd 128, MT %s): %.4f ms, %.1f TFLOP/s\n",
                   variants[vi], ms, 2.0 * n * (double)n * nq * 128 / ms / 1e9);
        }
        unsetenv("GLM4V_FA_MT");
        be->ops->free(be, p.out.data), be->ops->free(be, p.qkv.data);
        be->ops->free(be, p.k.data), be->ops->free(be, p.v.data);
        be->ops->free(be, (void *)p.b.q_start), be->ops->free(be, (void *)p.b.ctx_len);
        be->ops->free(be, (void *)p.b.block_table);
        free(tab);
    }
    glm_error err;
    CHECK_MSG(glm_backend_take_error(be, &err) == GLM_OK, "bench: %s", err.msg);
}

/* Every op once in the storage type `half`. */
static void run_suite(void)
{
    test_rng_seed(&rng, 20240611);
    printf("== storage %s\n", glm_dtype_name(half));
    printf("dense\n");
    test_linear(1, 64, 32, 0, 0);
    test_linear(7, 96, 48, 1, 0);
    test_linear(33, 200, 72, 1, 1);
    test_linear(5, 24, 12, 1, 1); /* tiny test-model widths */
    /* decode sizes through gemv.cu (M <= its limit, K % 8 == 0); K = 44 is not: cuBLASLt */
    for (int m = 1; m <= 8; m++) test_linear(m, 77, 264, m % 2, 0);
    test_linear(2, 40, 44, 1, 0);
    test_linear(3, 64, 1032, 0, 1);
    test_linear(3, 24, 13696, 0, 0); /* several passes of loads per lane, as dense_4h_to_h */
    test_elementwise(1000);
    test_elementwise(1003);
    test_silu_mul(3, 64);
    test_silu_mul(5, 13);
    test_norms(3, 48);
    test_norms(2, 36);
    test_resid_f32(3, 48);
    test_resid_f32(4, 36);
    printf("fp8 activations\n");
    test_act_q8(3, 48);
    test_act_q8(2, 37); /* odd width: the one-element kernels */
    test_add_layernorm_q8(3, 48);
    test_add_layernorm_q8(2, 36);
    /* the register-held row kernels at each of their widths (chunks of 8 per lane / thread: 2,
     * 4, 8 and past 8: the block-per-row kernels), rows that leave a block's warps idle */
    test_act_q8(3, 2056);
    test_act_q8(2, 4104);
    test_act_q8(2, 16392);
    test_add_layernorm_q8(11, 264);
    test_add_layernorm_q8(5, 1000);
    test_add_layernorm_q8(3, 2040);
    test_add_layernorm_q8(2, 2056);
    test_resid_f32(11, 1000);
    test_linear_q8(37, 64, 128, 0); /* cuBLASLt with outer-vector scales */
    test_linear_q8(5, 40, 32, 1);
    test_linear_q8(5, 20, 36, 0); /* k % 16 != 0: the fallback kernel */
    linear_q8_plain_suite();
    test_rows(50, 32, 17, 0);
    test_rows(40, 12, 9, 100);
    printf("rope / kv\n");
    test_rope_kv(9, 4, 2, 16, 8);
    test_rope_kv(5, 4, 2, 24, 12);
    printf("vision\n");
    test_vision(2, 3, 28, 14, 16);
    printf("attention\n");
    test_attention_full(2, 37, 4, 8, 1);
    test_attention_full(1, 70, 4, 12, 1);
    test_attention_full(1, 65, 2, 16, 1);
    test_attention_full(1, 130, 2, 112, 3);
    {
        int q[] = {5, 1}, c[] = {5, 9};
        test_attention_paged(2, q, c, 4, 2, 16, 4);
        int q2[] = {37, 1, 1}, c2[] = {60, 33, 2};
        test_attention_paged(3, q2, c2, 4, 2, 24, 16);
        /* the pipelined kernels (head dim >= 64; decode for every q_len 1) */
        test_attention_full(1, 70, 2, 64, 1);
        test_attention_full(2, 131, 1, 112, 1);
        test_attention_paged(3, q2, c2, 4, 2, 64, 16);
        int q3[] = {1, 1, 1}, c3[] = {37, 1, 100};
        test_attention_paged(3, q3, c3, 16, 1, 64, 4);
        test_attention_paged(3, q3, c3, 8, 2, 128, 16);
        int q4[] = {1, 1, 1}, c4[] = {70, 0, 3}; /* ctx 0: a graph's padding row, output 0 */
        paged_cap_ctx = 1000;
        test_attention_paged(3, q4, c4, 16, 1, 64, 16);
        paged_cap_ctx = 0;
    }
    attention_model_shapes(); /* the fa2 kernels on them (the real sizes too, unless --small) */
    attention_cudnn_suite();
    printf("sample / graph / errors\n");
    test_sample(5, 300);
    test_graph();
    test_errors();
    if (!small_only) {
        printf("real shapes\n");
        test_linear(257, 1024, 512, 1, 0);
        test_linear(19, 4608, 4096, 1, 0);
        test_linear(1, 4608, 4096, 1, 0); /* decode qkv, dense_4h_to_h through gemv.cu */
        test_linear(4, 4096, 13696, 0, 0);
        test_linear(64, 1792, 1792, 1, 1);
        test_elementwise(1 << 20);
        test_silu_mul(7, 13696);
        test_norms(5, 4096);
        test_norms(3, 1792);
        test_resid_f32(5, 4096);
        test_resid_f32(4, 1792);
        test_act_q8(9, 15360);
        test_add_layernorm_q8(9, 1792);
        test_linear_q8(300, 1792, 1792, 0);
        test_rows(1000, 4096, 33, 500);
        test_rope_kv(33, 32, 2, 128, 64);
        test_vision(1, 3, 112, 14, 1792);
        test_attention_full(1, 6401, 1, 112, 97);
        test_attention_full(2, 257, 3, 128, 5);
        test_attention_full(1, 1601, 16, 112, 211);
        int q1[] = {200, 77}, c1[] = {300, 77};
        test_attention_paged(2, q1, c1, 32, 2, 128, 16);
        int q2[] = {1, 1, 1, 1}, c2[] = {1000, 4096, 8192, 3001};
        test_attention_paged(4, q2, c2, 32, 2, 128, 16);
        int q3[] = {1, 1}, c3[] = {2048, 7};
        test_attention_paged(2, q3, c3, 16, 1, 128, 16);
        int q4[] = {1, 3, 1}, c4[] = {5000, 70, 1};
        test_attention_paged(3, q4, c4, 8, 4, 64, 32);
        int q5[] = {1, 1, 1}, c5[] = {1000, 0, 17};
        paged_cap_ctx = 8192;
        test_attention_paged(3, q5, c5, 32, 2, 128, 16);
        paged_cap_ctx = 0;
        int q6[] = {1632}, c6[] = {1632};
        test_attention_paged(1, q6, c6, 32, 2, 128, 16);
        test_sample(16, 151552);
    }
}

int main(int argc, char **argv)
{
    int do_bench = 0;
    glm_dtype only = GLM_F32; /* GLM_F32: both storage types */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--small") == 0) small_only = 1;
        if (strcmp(argv[i], "--bench") == 0) do_bench = 1;
        if (strcmp(argv[i], "--bench-attention") == 0) do_bench = 2;
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc && !glm_storage_parse(argv[++i], &only)) {
            fprintf(stderr, "--dtype: bf16 or f16\n");
            return 2;
        }
    }
    glm_error err;
    /* every gemv.cu instantiation (M 1..8) and small shapes under test, unless the caller chose
     * limits */
    setenv("GLM4V_GEMV_MAX_ROWS", "8", 0);
    setenv("GLM4V_GEMV_MIN_WEIGHTS", "0", 0);
    setenv("GLM4V_ATTENTION", "fa2", 1); /* cuDNN has its own suite: attention_cudnn_suite */
    if (glm_backend_cuda_create(0, &be, &err) != GLM_OK) {
        fprintf(stderr, "no CUDA backend: %s\n", err.msg);
        return 1;
    }
    const glm_dtype types[2] = {GLM_BF16, GLM_F16};
    for (int t = 0; t < 2 && do_bench != 2; t++) {
        if (only != GLM_F32 && only != types[t]) continue;
        half = types[t];
        run_suite();
    }
    half = only != GLM_F32 ? only : GLM_BF16;
    if (do_bench == 1) bench();
    if (do_bench == 2) bench_attention_only();
    glm_backend_destroy(be);
    return test_finish("cuda ops");
}
