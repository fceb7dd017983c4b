/* rmsnorm, add_rmsnorm, layernorm and add_layernorm against double references; aliasing y = x
 * (y = delta for add_layernorm); shape errors. */
#include <math.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static const int64_t sizes[] = {1, 3, 17, 33, 100, 1000};
#define N_SIZES ((int)(sizeof(sizes) / sizeof(sizes[0])))

static void rms_ref(double *y, const float *x, const float *w, int64_t rows, int64_t h, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < h; i++)
            ss += (double)x[r * h + i] * x[r * h + i];
        double inv = 1.0 / sqrt(ss / (double)h + eps);
        for (int64_t i = 0; i < h; i++)
            y[r * h + i] = (double)w[i] * x[r * h + i] * inv;
    }
}

static void check_case(glm_backend *be, test_rng *rng, int64_t rows, int64_t h)
{
    size_t n = (size_t)(rows * h);
    char what[96];
    /* a per-row offset makes layernorm's mean matter */
    float *x = kt_random(rng, n, 3.0), *w = kt_random(rng, (size_t)h, 1.0);
    float *b = kt_random(rng, (size_t)h, 1.0), *y = kt_poisoned(n);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < h; i++)
            x[r * h + i] += (float)(10.0 * (r % 3));
    double *ref = kt_doubles(n);
    float eps = 1.5625e-07f;

    rms_ref(ref, x, w, rows, h, eps);
    glm_tensor yt = glm_tensor_2d(GLM_F32, rows, h, y), xt = glm_tensor_2d(GLM_F32, rows, h, x);
    glm_tensor wt = glm_tensor_1d(GLM_F32, h, w), bt = glm_tensor_1d(GLM_F32, h, b);
    glm_op_rmsnorm(be, yt, xt, wt, eps);
    snprintf(what, sizeof(what), "rmsnorm [%lld, %lld]", (long long)rows, (long long)h);
    kt_close(what, y, ref, n, 1e-6, 1e-7);

    /* add_rmsnorm: resid += delta exactly as a float add, then rmsnorm of the sum */
    float *resid = kt_random(rng, n, 1.0), *delta = kt_random(rng, n, 1.0);
    float *sum = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        sum[i] = resid[i] + delta[i];
    rms_ref(ref, sum, w, rows, h, eps);
    kt_poison(y, n);
    glm_op_add_rmsnorm(be, yt, glm_tensor_2d(GLM_F32, rows, h, resid),
                       glm_tensor_2d(GLM_F32, rows, h, delta), wt, eps);
    kt_equal("add_rmsnorm residual", resid, sum, n);
    kt_close("add_rmsnorm", y, ref, n, 1e-6, 1e-7);

    /* layernorm, then in place */
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < h; i++)
            mean += x[r * h + i];
        mean /= (double)h;
        for (int64_t i = 0; i < h; i++)
            var += (x[r * h + i] - mean) * (x[r * h + i] - mean);
        var /= (double)h;
        for (int64_t i = 0; i < h; i++)
            ref[r * h + i] = (x[r * h + i] - mean) / sqrt(var + 1e-6) * w[i] + b[i];
    }
    kt_poison(y, n);
    glm_op_layernorm(be, yt, xt, wt, bt, 1e-6f);
    snprintf(what, sizeof(what), "layernorm [%lld, %lld]", (long long)rows, (long long)h);
    /* h = 1 normalizes to 0 / sqrt(eps): exact in both, so no special case */
    kt_close(what, y, ref, n, 2e-6, 2e-6);

    /* add_layernorm with y aliasing delta (as the vision tower calls it): resid += LN(delta) and
     * delta ends holding the new resid; x is delta here, ref holds LN(x) */
    float *lresid = kt_random(rng, n, 1.0), *ldelta = malloc(n * sizeof(float));
    memcpy(ldelta, x, n * sizeof(float));
    double *lref = kt_doubles(n);
    for (size_t i = 0; i < n; i++)
        lref[i] = (double)lresid[i] + ref[i];
    glm_tensor lr = glm_tensor_2d(GLM_F32, rows, h, lresid), ld = glm_tensor_2d(GLM_F32, rows, h, ldelta);
    glm_op_add_layernorm(be, ld, lr, ld, wt, bt, 1e-6f);
    snprintf(what, sizeof(what), "add_layernorm [%lld, %lld]", (long long)rows, (long long)h);
    kt_close(what, lresid, lref, n, 2e-6, 2e-6);
    kt_equal("add_layernorm copy of the residual", ldelta, lresid, n);
    free(lresid), free(ldelta), free(lref);

    glm_op_rmsnorm(be, xt, xt, wt, eps);
    kt_expect_ok(be, what);
    glm_op_layernorm(be, yt, yt, wt, bt, 1e-6f); /* in place, checked for running only */
    kt_expect_ok(be, "layernorm in place");
    free(x), free(w), free(b), free(y), free(ref), free(resid), free(delta), free(sum);
}

static void check_inplace(glm_backend *be, test_rng *rng)
{
    int64_t rows = 5, h = 33;
    float *x = kt_random(rng, (size_t)(rows * h), 1.0), *w = kt_random(rng, (size_t)h, 1.0);
    double *ref = kt_doubles((size_t)(rows * h));
    rms_ref(ref, x, w, rows, h, 1e-5);
    glm_tensor xt = glm_tensor_2d(GLM_F32, rows, h, x);
    glm_op_rmsnorm(be, xt, xt, glm_tensor_1d(GLM_F32, h, w), 1e-5f);
    kt_close("rmsnorm in place", x, ref, (size_t)(rows * h), 1e-6, 1e-7);
    free(x), free(w), free(ref);
}

static void check_errors(glm_backend *be)
{
    float buf[64] = {0};
    glm_op_rmsnorm(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                   glm_tensor_1d(GLM_F32, 3, buf), 1e-5f);
    kt_expect_error(be, GLM_ERR_SHAPE, "rmsnorm weight length");
    glm_op_add_rmsnorm(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                       glm_tensor_2d(GLM_F32, 3, 4, buf), glm_tensor_1d(GLM_F32, 4, buf), 1e-5f);
    kt_expect_error(be, GLM_ERR_SHAPE, "add_rmsnorm delta rows");
    glm_op_layernorm(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                     glm_tensor_1d(GLM_F32, 4, buf), glm_tensor_1d(GLM_F32, 5, buf), 1e-5f);
    kt_expect_error(be, GLM_ERR_SHAPE, "layernorm bias length");
    glm_op_layernorm(be, glm_tensor_2d(GLM_F32, 3, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                     glm_tensor_1d(GLM_F32, 4, buf), glm_tensor_1d(GLM_F32, 4, buf), 1e-5f);
    kt_expect_error(be, GLM_ERR_SHAPE, "layernorm y rows");
    glm_op_add_layernorm(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                         glm_tensor_2d(GLM_F32, 2, 3, buf), glm_tensor_1d(GLM_F32, 4, buf),
                         glm_tensor_1d(GLM_F32, 4, buf), 1e-5f);
    kt_expect_error(be, GLM_ERR_SHAPE, "add_layernorm delta width");
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 99);
    glm_backend *be = kt_backend(0);
    for (int i = 0; i < 24; i++)
        check_case(be, &rng, sizes[test_rng_int(&rng, 0, N_SIZES - 2)],
                   sizes[test_rng_int(&rng, 0, N_SIZES - 1)]);
    check_case(be, &rng, 64, 4096);
    check_inplace(be, &rng);
    check_errors(be);
    glm_backend_destroy(be);
    return test_finish("test_kernels_norm");
}
