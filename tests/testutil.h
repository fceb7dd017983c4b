/* Tiny test harness: CHECK macros that count failures, random numbers, file helpers. */
#ifndef GLM4V_TESTUTIL_H
#define GLM4V_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern int test_failures;
extern int test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Prints "N passed, M failed" and returns the process exit code. */
int test_finish(const char *suite);

/* Deterministic xorshift generator; one per test so tests do not share state. */
typedef struct test_rng {
    uint64_t s;
} test_rng;
void test_rng_seed(test_rng *r, uint64_t seed);
uint64_t test_rng_next(test_rng *r);
double test_rng_uniform(test_rng *r); /* [0, 1) */
double test_rng_normal(test_rng *r);
int test_rng_int(test_rng *r, int lo, int hi); /* [lo, hi] */

/* Directory of the golden checkpoints ($GLM4V_TESTDATA or ../shared/testdata). */
const char *test_testdata_dir(void);
/* Reads a whole file; returns NULL on failure. *len receives the size. */
unsigned char *test_read_file(const char *path, size_t *len);
int test_write_file(const char *path, const void *data, size_t len);
/* A fresh temporary directory under $TMPDIR (removed by test_rmtree). */
char *test_mkdtemp(void);
void test_rmtree(const char *dir);

#endif
