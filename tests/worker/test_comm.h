/* Shared pieces of the communicator test (test_comm.c; test_comm_cuda.c adds the GPU-only parts:
 * graph replay, timing, a dead peer). */
#ifndef GLM4V_TEST_COMM_H
#define GLM4V_TEST_COMM_H

#include <stdbool.h>
#include <stddef.h>

#include "worker/comm.h"

typedef struct comm_test {
    glm_backend *be;
    glm_comm *comm;
    int rank;
    int size;
    bool cuda;
} comm_test;

/* Element i of rank's input number salt: a multiple of 1/8 in [-2, 2], so that sums over up to 8
 * ranks (at most 16 in size, 7 significant bits) are exact in bf16 and f32 in any order. */
double input_value(size_t i, int rank, unsigned salt);
void host_set(void *buf, glm_dtype dtype, size_t i, double v);
/* Counts the elements of host[0, count) that differ from the sum over the ranks of input number
 * salt; reports the first on stderr. */
size_t count_wrong(const comm_test *t, const void *host, glm_dtype dtype, size_t count,
                   unsigned salt, const char *what);
/* Collective: every rank's bytes hash the same. */
bool same_on_all_ranks(const void *p, size_t n);
void *alloc_or_null(comm_test *t, size_t bytes);

#ifdef GLM4V_HAVE_CUDA
void describe_p2p(const comm_test *t);
void test_graph_replay(comm_test *t);
void print_timing_table(comm_test *t);
void test_dead_peer(comm_test *t);
#endif

#endif
