/* What the benchmarks under tests/bench share: a monotonic clock in milliseconds and the median
 * they report of repeated runs. */
#ifndef GLM4V_TESTS_BENCH_UTIL_H
#define GLM4V_TESTS_BENCH_UTIL_H

/* CLOCK_MONOTONIC in milliseconds: differences of two calls are elapsed wall time. */
double bench_now_ms(void);
/* The median of v[0..n) (n >= 1), the mean of the middle two for even n; sorts v. */
double bench_median(double *v, int n);

#endif
