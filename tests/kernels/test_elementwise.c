/* add, scale, gelu (exact erf), silu_mul against double references; aliasing where allowed. */
#include <math.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static const int64_t sizes[] = {1, 3, 17, 33, 100, 257};
#define N_SIZES ((int)(sizeof(sizes) / sizeof(sizes[0])))

static void check_case(glm_backend *be, test_rng *rng, int64_t rows, int64_t cols)
{
    size_t n = (size_t)(rows * cols);
    char what[96];
    float *a = kt_random(rng, n, 2.0), *b = kt_random(rng, n, 2.0), *y = kt_poisoned(n);
    double *ref = kt_doubles(2 * n);

    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] + b[i];
    glm_op_add(be, glm_tensor_2d(GLM_F32, rows, cols, y), glm_tensor_2d(GLM_F32, rows, cols, a),
               glm_tensor_2d(GLM_F32, rows, cols, b));
    snprintf(what, sizeof(what), "add [%lld, %lld]", (long long)rows, (long long)cols);
    kt_close(what, y, ref, n, 6e-8, 0);
    /* y aliasing a */
    float *a2 = malloc(n * sizeof(float));
    memcpy(a2, a, n * sizeof(float));
    glm_tensor a2t = glm_tensor_2d(GLM_F32, rows, cols, a2);
    glm_op_add(be, a2t, a2t, glm_tensor_2d(GLM_F32, rows, cols, b));
    kt_close("add in place", a2, ref, n, 6e-8, 0);

    float s = (float)test_rng_normal(rng);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a2[i] * s;
    glm_op_scale(be, a2t, s);
    kt_close("scale", a2, ref, n, 6e-8, 0);

    kt_poison(y, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = 0.5 * a[i] * (1.0 + erf(a[i] / sqrt(2.0)));
    glm_op_gelu(be, glm_tensor_2d(GLM_F32, rows, cols, y), glm_tensor_2d(GLM_F32, rows, cols, a));
    snprintf(what, sizeof(what), "gelu [%lld, %lld]", (long long)rows, (long long)cols);
    kt_close(what, y, ref, n, 1e-6, 1e-7);
    glm_op_gelu(be, glm_tensor_2d(GLM_F32, rows, cols, a), glm_tensor_2d(GLM_F32, rows, cols, a));
    kt_close("gelu in place", a, ref, n, 1e-6, 1e-7);

    /* silu_mul: x = [a | b] of width 2 cols */
    float *x = kt_random(rng, 2 * n, 3.0);
    kt_poison(y, n);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++) {
            double av = x[r * 2 * cols + i], bv = x[r * 2 * cols + cols + i];
            ref[r * cols + i] = av / (1.0 + exp(-av)) * bv;
        }
    glm_op_silu_mul(be, glm_tensor_2d(GLM_F32, rows, cols, y),
                    glm_tensor_2d(GLM_F32, rows, 2 * cols, x));
    snprintf(what, sizeof(what), "silu_mul [%lld, %lld]", (long long)rows, (long long)cols);
    kt_close(what, y, ref, n, 1e-6, 1e-7);
    kt_expect_ok(be, what);
    free(a), free(b), free(a2), free(y), free(x), free(ref);
}

static void check_errors(glm_backend *be)
{
    float buf[32] = {0};
    glm_op_add(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
               glm_tensor_2d(GLM_F32, 4, 2, buf));
    kt_expect_error(be, GLM_ERR_SHAPE, "add transposed shape");
    glm_op_gelu(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 3, buf));
    kt_expect_error(be, GLM_ERR_SHAPE, "gelu shape");
    glm_op_silu_mul(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf));
    kt_expect_error(be, GLM_ERR_SHAPE, "silu_mul width");
    glm_op_scale(be, glm_tensor_2d(GLM_I32, 2, 4, buf), 2.0f);
    kt_expect_error(be, GLM_ERR_SHAPE, "scale dtype");
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 77);
    glm_backend *be = kt_backend(0);
    for (int i = 0; i < 24; i++)
        check_case(be, &rng, sizes[test_rng_int(&rng, 0, N_SIZES - 1)],
                   sizes[test_rng_int(&rng, 0, N_SIZES - 1)]);
    check_case(be, &rng, 300, 700); /* large enough to run threaded */
    check_errors(be);
    glm_backend_destroy(be);
    return test_finish("test_kernels_elementwise");
}
