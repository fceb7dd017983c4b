/* The fp8 activations of ops.h on the CPU backend: quantize_act, gelu_q8 and add_layernorm_q8
 * write the codes and scales glm_fp8_quantize_activation_row gives for the values they quantize
 * (bitwise), and linear_q8 on those rows gives what linear with the same fp8 weight gives on the
 * unquantized rows. Shape errors are reported, not run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

/* A codes [rows, cols] + scales [rows] buffer in host memory, poisoned. */
static glm_weight new_q8(int64_t rows, int64_t cols)
{
    glm_weight q = {GLM_WEIGHT_FP8, GLM_F32, rows, cols, 0, malloc((size_t)(rows * cols) + 1),
                    malloc(sizeof(float) * (size_t)rows), NULL};
    memset(q.data, 0x7f, (size_t)(rows * cols)); /* E4M3 NaN: unwritten codes fail */
    for (int64_t r = 0; r < rows; r++)
        q.scales[r] = NAN;
    return q;
}

static void free_q8(glm_weight *q)
{
    free(q->data);
    free(q->scales);
}

/* q's rows decode (e4m3 of each code) to exactly glm_fp8_quantize_activation_row's xq of v, with
 * its scale. */
static void expect_rows(const char *what, const glm_weight *q, const float *v)
{
    int64_t rows = q->rows, k = q->cols;
    float *xq = malloc(sizeof(float) * (size_t)k), *got = malloc(sizeof(float) * (size_t)k);
    const uint8_t *codes = q->data;
    bool same = true;
    for (int64_t r = 0; r < rows && same; r++) {
        float s = glm_fp8_quantize_activation_row(v + r * k, k, xq);
        for (int64_t i = 0; i < k; i++)
            got[i] = glm_e4m3_to_f32(codes[r * k + i]);
        same = s == q->scales[r] && memcmp(got, xq, sizeof(float) * (size_t)k) == 0;
        CHECK_MSG(same, "%s: row %lld differs from glm_fp8_quantize_activation_row (scale %g vs %g)",
                  what, (long long)r, (double)q->scales[r], (double)s);
    }
    free(xq);
    free(got);
}

static void check_case(glm_backend *be, test_rng *rng, int64_t rows, int64_t h)
{
    size_t n = (size_t)(rows * h);
    float *x = kt_random(rng, n, 2.0);
    for (int64_t i = 0; i < h; i++) /* an all-zero row: scale 1, zero codes */
        x[i] = 0.0f;
    glm_tensor xt = glm_tensor_2d(GLM_F32, rows, h, x);

    glm_weight q = new_q8(rows, h);
    glm_op_quantize_act(be, q, xt);
    kt_expect_ok(be, "quantize_act");
    expect_rows("quantize_act", &q, x);
    CHECK(q.scales[0] == 1.0f);

    float *g = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        g[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752440f)); /* the CPU's form */
    glm_op_gelu_q8(be, q, xt);
    kt_expect_ok(be, "gelu_q8");
    expect_rows("gelu_q8", &q, g);

    /* add_layernorm_q8 = add_layernorm (bitwise), then y's rows quantized; y = delta aliasing */
    float *resid = kt_random(rng, n, 1.0), *resid2 = malloc(sizeof(float) * n);
    float *delta = kt_random(rng, n, 1.0), *delta2 = malloc(sizeof(float) * n);
    float *w = kt_random(rng, (size_t)h, 1.0), *b = kt_random(rng, (size_t)h, 1.0);
    memcpy(resid2, resid, sizeof(float) * n);
    memcpy(delta2, delta, sizeof(float) * n);
    glm_tensor wt = glm_tensor_1d(GLM_F32, h, w), bt = glm_tensor_1d(GLM_F32, h, b);
    glm_op_add_layernorm(be, glm_tensor_2d(GLM_F32, rows, h, delta2),
                         glm_tensor_2d(GLM_F32, rows, h, resid2),
                         glm_tensor_2d(GLM_F32, rows, h, delta2), wt, bt, 1e-5f);
    glm_op_add_layernorm_q8(be, glm_tensor_2d(GLM_F32, rows, h, delta),
                            glm_tensor_2d(GLM_F32, rows, h, resid),
                            glm_tensor_2d(GLM_F32, rows, h, delta), wt, bt, 1e-5f, q);
    kt_expect_ok(be, "add_layernorm_q8");
    kt_equal("add_layernorm_q8 residual", resid, resid2, n);
    kt_equal("add_layernorm_q8 y", delta, delta2, n);
    expect_rows("add_layernorm_q8", &q, delta);

    /* linear_q8 on the quantized rows of x = linear with the fp8 weight on x itself */
    int64_t N = 19;
    float *wf = kt_random(rng, (size_t)(N * h), 0.3), *bias = kt_random(rng, (size_t)N, 1.0);
    glm_weight wq = new_q8(N, h);
    CHECK(glm_quantize_rows(GLM_WEIGHT_FP8, 0, wf, N, h, wq.data, wq.scales, NULL, NULL, NULL) ==
          GLM_OK);
    glm_op_quantize_act(be, q, xt);
    glm_tensor bt2 = glm_tensor_1d(GLM_F32, N, bias);
    for (int act = 0; act < 2; act++) {
        glm_activation a = act ? GLM_ACT_GELU : GLM_ACT_NONE;
        float *y1 = kt_poisoned((size_t)(rows * N)), *y2 = kt_poisoned((size_t)(rows * N));
        glm_op_linear(be, glm_tensor_2d(GLM_F32, rows, N, y1), xt, wq, &bt2, a);
        glm_op_linear_q8(be, glm_tensor_2d(GLM_F32, rows, N, y2), q, wq, &bt2, a);
        kt_expect_ok(be, "linear_q8");
        double *ref = kt_doubles((size_t)(rows * N));
        for (size_t i = 0; i < (size_t)(rows * N); i++)
            ref[i] = y1[i];
        kt_close(act ? "linear_q8 +gelu vs linear" : "linear_q8 vs linear", y2, ref,
                 (size_t)(rows * N), 1e-5, 1e-6);
        free(y1), free(y2), free(ref);
    }

    /* shape errors: q of the wrong row count, a dense weight */
    glm_weight small = new_q8(rows + 1, h);
    glm_op_quantize_act(be, small, xt);
    kt_expect_error(be, GLM_ERR_SHAPE, "quantize_act with q of other rows");
    glm_weight dense = glm_weight_dense(glm_tensor_2d(GLM_F32, N, h, wf));
    float *y = kt_poisoned((size_t)(rows * N));
    glm_op_linear_q8(be, glm_tensor_2d(GLM_F32, rows, N, y), q, dense, NULL, GLM_ACT_NONE);
    kt_expect_error(be, GLM_ERR_SHAPE, "linear_q8 with a dense weight");

    free_q8(&q), free_q8(&wq), free_q8(&small);
    free(x), free(g), free(resid), free(resid2), free(delta), free(delta2), free(w), free(b);
    free(wf), free(bias), free(y);
}

int main(void)
{
    glm_backend *be = kt_backend(0);
    test_rng rng;
    test_rng_seed(&rng, 14);
    const int64_t shapes[][2] = {{2, 16}, {3, 37}, {17, 100}, {5, 1792}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        check_case(be, &rng, shapes[i][0], shapes[i][1]);
    glm_backend_destroy(be);
    return test_finish("test_kernels_act_fp8");
}
