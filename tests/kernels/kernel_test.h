/* Helpers shared by the kernel tests: a CPU backend, NaN-poisoned buffers, random fills, and a
 * tolerance check against a double-precision reference that reports the first mismatch. */
#ifndef GLM4V_KERNEL_TEST_H
#define GLM4V_KERNEL_TEST_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/ops.h"
#include "tests/testutil.h"

/* A CPU backend with n_threads (0: OpenMP default); fails the test run if creation fails. */
glm_backend *kt_backend(int n_threads);

/* n floats, every one NaN, so an output the op forgot to write is caught. */
float *kt_poisoned(size_t n);
void kt_poison(float *p, size_t n);
/* n floats of N(0, scale^2). */
float *kt_random(test_rng *rng, size_t n, double scale);
double *kt_doubles(size_t n);

/* One CHECK: |got[i] - ref[i]| <= atol + rtol * |ref[i]| for all i (NaN fails). what names the
 * case in the failure message. */
bool kt_close(const char *what, const float *got, const double *ref, size_t n, double rtol,
              double atol);
/* One CHECK: |got[i] - ref[i]| <= tol[i] for all i. */
bool kt_close_tol(const char *what, const float *got, const double *ref, const double *tol,
                  size_t n);
/* One CHECK: bitwise equal float arrays. */
bool kt_equal(const char *what, const float *got, const float *ref, size_t n);

/* CHECKs that the backend recorded status (and that take_error returns and clears it). */
void kt_expect_error(glm_backend *be, glm_status status, const char *what);
/* CHECKs that no op failed so far. */
void kt_expect_ok(glm_backend *be, const char *what);

#endif
