#include "tests/kernels/kernel_test.h"

#include <math.h>
#include <string.h>

glm_backend *kt_backend(int n_threads)
{
    glm_backend *be = NULL;
    glm_error err = {0};
    glm_status st = glm_backend_cpu_create(n_threads, &be, &err);
    CHECK_MSG(st == GLM_OK && be, "cpu backend: %s", err.msg);
    if (!be) exit(test_finish("kernel test setup"));
    return be;
}

void kt_poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

float *kt_poisoned(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) exit(2);
    kt_poison(p, n);
    return p;
}

float *kt_random(test_rng *rng, size_t n, double scale)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) exit(2);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(scale * test_rng_normal(rng));
    return p;
}

double *kt_doubles(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) exit(2);
    return p;
}

static bool report(const char *what, bool ok, size_t i, double got, double ref, double tol)
{
    CHECK_MSG(ok, "%s: [%zu] got %.9g, expected %.9g (tol %.3g)", what, i, got, ref, tol);
    return ok;
}

bool kt_close(const char *what, const float *got, const double *ref, size_t n, double rtol,
              double atol)
{
    for (size_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs(ref[i]);
        if (!(fabs((double)got[i] - ref[i]) <= tol))
            return report(what, false, i, got[i], ref[i], tol);
    }
    return report(what, true, 0, 0, 0, 0);
}

bool kt_close_tol(const char *what, const float *got, const double *ref, const double *tol,
                  size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - ref[i]) <= tol[i]))
            return report(what, false, i, got[i], ref[i], tol[i]);
    return report(what, true, 0, 0, 0, 0);
}

bool kt_equal(const char *what, const float *got, const float *ref, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0)
            return report(what, false, i, got[i], ref[i], 0);
    return report(what, true, 0, 0, 0, 0);
}

void kt_expect_error(glm_backend *be, glm_status status, const char *what)
{
    CHECK_MSG(be->status == status, "%s: status %s, expected %s", what, glm_status_name(be->status),
              glm_status_name(status));
    glm_error err = {0};
    glm_status taken = glm_backend_take_error(be, &err);
    CHECK_MSG(taken == status, "%s: take_error gave %s", what, glm_status_name(taken));
    CHECK_MSG(status == GLM_OK || strlen(err.msg) > 0, "%s: empty error message", what);
    CHECK_MSG(be->status == GLM_OK, "%s: take_error did not clear the status", what);
}

void kt_expect_ok(glm_backend *be, const char *what)
{
    CHECK_MSG(be->status == GLM_OK, "%s: unexpected failure: %s", what, be->err.msg);
    glm_backend_take_error(be, NULL);
}
