/* linear: y = act(x w^T + b) against a double-precision reference, odd shapes, decode (M = 1),
 * bias and GELU, shape errors, and a 512^3 throughput figure. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "tests/kernels/kernel_test.h"

static double gelu_ref(double x)
{
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static void check_linear(glm_backend *be, test_rng *rng, int64_t M, int64_t N, int64_t K,
                         bool with_bias, glm_activation act)
{
    float *x = kt_random(rng, (size_t)(M * K), 1.0);
    float *w = kt_random(rng, (size_t)(N * K), 0.5);
    float *b = kt_random(rng, (size_t)N, 1.0);
    float *y = kt_poisoned((size_t)(M * N));
    double *ref = kt_doubles((size_t)(M * N)), *tol = kt_doubles((size_t)(M * N));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = with_bias ? b[n] : 0.0, mag = with_bias ? fabs(b[n]) : 0.0;
            for (int64_t k = 0; k < K; k++) {
                s += (double)x[m * K + k] * w[n * K + k];
                mag += fabs((double)x[m * K + k] * w[n * K + k]);
            }
            /* float32 accumulation: error grows with the magnitude of the terms, not the sum */
            double t = 2e-6 * mag + 1e-6 * (1.0 + sqrt((double)K)) * 1e-3;
            if (act == GLM_ACT_GELU) {
                s = gelu_ref(s);
                t = 1.2 * t + 1e-6 * (1.0 + fabs(s));
            }
            ref[m * N + n] = s;
            tol[m * N + n] = t;
        }
    glm_tensor bt = glm_tensor_1d(GLM_F32, N, b);
    glm_op_linear(be, glm_tensor_2d(GLM_F32, M, N, y), glm_tensor_2d(GLM_F32, M, K, x),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, N, K, w)), with_bias ? &bt : NULL, act);
    kt_expect_ok(be, "linear");
    char what[128];
    snprintf(what, sizeof(what), "linear M=%lld N=%lld K=%lld bias=%d act=%d", (long long)M,
             (long long)N, (long long)K, with_bias, (int)act);
    kt_close_tol(what, y, ref, tol, (size_t)(M * N));
    free(x), free(w), free(b), free(y), free(ref), free(tol);
}

static void check_errors(glm_backend *be)
{
    float buf[64] = {0};
    float y[16];
    kt_poison(y, 16);
    /* K mismatch between x and w */
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 4, y), glm_tensor_2d(GLM_F32, 2, 3, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), NULL, GLM_ACT_NONE);
    CHECK(isnan(y[0]));
    /* sticky: a valid op after the failure is skipped */
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 4, y), glm_tensor_2d(GLM_F32, 2, 4, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), NULL, GLM_ACT_NONE);
    CHECK(isnan(y[0]));
    kt_expect_error(be, GLM_ERR_SHAPE, "linear K mismatch");
    /* after take_error the same op runs */
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 4, y), glm_tensor_2d(GLM_F32, 2, 4, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), NULL, GLM_ACT_NONE);
    CHECK(y[0] == 0.0f);
    kt_expect_ok(be, "linear after take_error");
    /* y of the wrong shape */
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 3, y), glm_tensor_2d(GLM_F32, 2, 4, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), NULL, GLM_ACT_NONE);
    kt_expect_error(be, GLM_ERR_SHAPE, "linear y shape");
    /* wrong dtype */
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 4, y), glm_tensor_2d(GLM_BF16, 2, 4, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), NULL, GLM_ACT_NONE);
    kt_expect_error(be, GLM_ERR_SHAPE, "linear x dtype");
    /* bias of the wrong length */
    glm_tensor bias = glm_tensor_1d(GLM_F32, 3, buf);
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 2, 4, y), glm_tensor_2d(GLM_F32, 2, 4, buf),
                  glm_weight_dense(glm_tensor_2d(GLM_F32, 4, 4, buf)), &bias, GLM_ACT_NONE);
    kt_expect_error(be, GLM_ERR_SHAPE, "linear bias length");
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints GFLOP/s of a square product; informative, not a pass/fail criterion. */
static void bench(test_rng *rng, int n_threads, int64_t M, int64_t N, int64_t K)
{
    glm_backend *be = kt_backend(n_threads);
    float *x = kt_random(rng, (size_t)(M * K), 1.0), *w = kt_random(rng, (size_t)(N * K), 1.0);
    float *y = kt_poisoned((size_t)(M * N));
    glm_tensor yt = glm_tensor_2d(GLM_F32, M, N, y), xt = glm_tensor_2d(GLM_F32, M, K, x),
               wt = glm_tensor_2d(GLM_F32, N, K, w);
    glm_op_linear(be, yt, xt, glm_weight_dense(wt), NULL, GLM_ACT_NONE); /* warm up */
    int reps = 0;
    double t0 = seconds(), t = 0;
    while ((t = seconds() - t0) < 0.2 || reps < 2) {
        glm_op_linear(be, yt, xt, glm_weight_dense(wt), NULL, GLM_ACT_NONE);
        reps++;
    }
    printf("linear %lldx%lldx%lld, %d thread(s): %.2f GFLOP/s\n", (long long)M, (long long)N,
           (long long)K, n_threads, 2.0 * M * N * K * reps / t * 1e-9);
    kt_expect_ok(be, "bench");
    free(x), free(w), free(y);
    glm_backend_destroy(be);
}

int main(int argc, char **argv)
{
    test_rng rng;
    test_rng_seed(&rng, 1234);
    glm_backend *be = kt_backend(0);
    const int64_t sizes[] = {1, 2, 3, 4, 5, 8, 17, 33, 64, 100};
    int n_sizes = (int)(sizeof(sizes) / sizeof(sizes[0]));
    for (int i = 0; i < 40; i++) {
        int64_t M = sizes[test_rng_int(&rng, 0, n_sizes - 1)];
        int64_t N = sizes[test_rng_int(&rng, 0, n_sizes - 1)];
        int64_t K = sizes[test_rng_int(&rng, 0, n_sizes - 1)];
        check_linear(be, &rng, M, N, K, i % 2, i % 3 == 0 ? GLM_ACT_GELU : GLM_ACT_NONE);
    }
    /* beyond one block in every dim, K past one KC chunk with a ragged tail */
    check_linear(be, &rng, 70, 131, 1043, true, GLM_ACT_NONE);
    check_linear(be, &rng, 1, 517, 1100, false, GLM_ACT_NONE); /* decode */
    check_linear(be, &rng, 3, 96, 96, true, GLM_ACT_GELU);
    check_linear(be, &rng, 33, 65, 8, false, GLM_ACT_NONE);
    /* one thread must give the same numbers as many: blocks own their outputs */
    glm_backend *be1 = kt_backend(1);
    check_linear(be1, &rng, 37, 70, 300, true, GLM_ACT_GELU);
    glm_backend_destroy(be1);
    check_errors(be);
    glm_backend_destroy(be);

    bool do_bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    bench(&rng, 1, 512, 512, 512);
    if (do_bench) {
        bench(&rng, 0, 512, 512, 512);
        bench(&rng, 1, 1, 4096, 4096);
        bench(&rng, 0, 128, 4096, 4096);
    }
    return test_finish("test_kernels_gemm");
}
