/* The GPU-only parts of the communicator test (see test_comm.c): an all-reduce captured in a CUDA
 * graph and replayed with new inputs, the timing table (p2p against NCCL), and a peer that never
 * comes to an all-reduce (the p2p kernel's timeout must become an error, not a hang). */
#include "tests/worker/test_comm.h"

#include "tests/testutil.h"
#include "worker/comm_p2p.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

void describe_p2p(const comm_test *t)
{
    const char *why = NULL;
    size_t max_bytes = glm_comm_nccl_p2p_max_bytes(t->comm, &why);
    if (t->rank != 0) return;
    if (max_bytes)
        printf("comm %s, TP %d: p2p all-reduce for messages up to %zu bytes\n", t->comm->name,
               t->size, max_bytes);
    else
        printf("comm %s, TP %d: p2p all-reduce off: %s\n", t->comm->name, t->size, why);
}

/* Uploads input number salt into dev[count]. */
static void upload_input(comm_test *t, void *dev, void *host, glm_dtype dtype, size_t count,
                         unsigned salt)
{
    for (size_t i = 0; i < count; i++)
        host_set(host, dtype, i, input_value(i, t->rank, salt));
    glm_op_upload(t->be, dev, host, count * glm_dtype_size(dtype));
}

/* One bf16 and one f32 all-reduce captured once and replayed 100 times with new inputs: the
 * p2p kernel reads its epoch from device memory, so every replay must pair up with the peers'. */
void test_graph_replay(comm_test *t)
{
    enum { REPLAYS = 100, KEY = 9001 };
    const size_t n_a = 4096, n_b = 3 * 4096 + 5;
    void *a = alloc_or_null(t, n_a * 2), *b = alloc_or_null(t, n_b * 4);
    void *host = malloc(n_b * 4);
    glm_backend *be = t->be;
    bool ok = a && b && host && be->ops->graph_begin;
    CHECK_MSG(ok, "rank %d: graph test setup", t->rank);
    if (ok) {
        upload_input(t, a, host, GLM_BF16, n_a, 0);
        upload_input(t, b, host, GLM_F32, n_b, 0);
        be->ops->synchronize(be);
        ok = be->ops->graph_begin(be, KEY);
        CHECK_MSG(ok, "rank %d: graph_begin", t->rank);
    }
    if (ok) {
        glm_status s1 = t->comm->ops->allreduce_sum(t->comm, a, n_a, GLM_BF16);
        glm_status s2 = t->comm->ops->allreduce_sum(t->comm, b, n_b, GLM_F32);
        be->ops->graph_end(be, KEY);
        ok = s1 == GLM_OK && s2 == GLM_OK && be->status == GLM_OK;
        CHECK_MSG(ok, "rank %d: capture: %s / %s", t->rank, t->comm->err.msg, be->err.msg);
    }
    size_t wrong_replays = 0;
    for (int r = 0; ok && r < REPLAYS; r++) {
        const unsigned salt = 3000u + (unsigned)r;
        upload_input(t, a, host, GLM_BF16, n_a, salt);
        upload_input(t, b, host, GLM_F32, n_b, salt + 1);
        if (!be->ops->graph_replay(be, KEY)) {
            CHECK_MSG(0, "rank %d: replay %d: %s", t->rank, r, be->err.msg);
            break;
        }
        glm_op_download(be, host, a, n_a * 2);
        size_t wrong = count_wrong(t, host, GLM_BF16, n_a, salt, "graph replay");
        glm_op_download(be, host, b, n_b * 4);
        wrong += count_wrong(t, host, GLM_F32, n_b, salt + 1, "graph replay");
        if (wrong) wrong_replays++;
    }
    CHECK_MSG(wrong_replays == 0, "rank %d: %zu of %d graph replays wrong", t->rank, wrong_replays,
              REPLAYS);
    be->ops->graph_drop(be, KEY); /* before the communicator: ncclCommFinalize waits for it */
    glm_error err = {0};
    CHECK_MSG(glm_backend_take_error(be, &err) == GLM_OK, "%s", err.msg);
    if (a) be->ops->free(be, a);
    if (b) be->ops->free(be, b);
    free(host);
}

static int compare_doubles(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Median microseconds per all-reduce of count zeros (zeros stay zeros, however often summed):
 * a graph of CALLS back-to-back all-reduces, as a decode step issues them, replayed REPLAYS
 * times; -1 when it could not be measured. */
static double median_us(comm_test *t, glm_comm *comm, glm_dtype dtype, size_t count, int key)
{
    enum { CALLS = 100, WARMUP = 3, REPLAYS = 25 };
    glm_backend *be = t->be;
    cudaStream_t stream = (cudaStream_t)be->ops->native_stream(be);
    void *buf = alloc_or_null(t, count * glm_dtype_size(dtype));
    cudaEvent_t start = NULL, stop = NULL;
    double us[REPLAYS], median = -1;
    bool ok =
        buf && cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess;
    if (ok) {
        glm_op_zero(be, buf, count * glm_dtype_size(dtype));
        ok = be->ops->graph_begin(be, key);
    }
    if (ok) {
        for (int i = 0; i < CALLS; i++)
            ok = comm->ops->allreduce_sum(comm, buf, count, dtype) == 0 && ok;
        be->ops->graph_end(be, key);
        ok = ok && be->status == GLM_OK;
    }
    for (int r = 0; ok && r < WARMUP + REPLAYS; r++) {
        MPI_Barrier(MPI_COMM_WORLD); /* the ranks start together: no skew in the first call */
        float ms = 0;
        ok = cudaEventRecord(start, stream) == cudaSuccess && be->ops->graph_replay(be, key) &&
             cudaEventRecord(stop, stream) == cudaSuccess &&
             cudaEventSynchronize(stop) == cudaSuccess &&
             cudaEventElapsedTime(&ms, start, stop) == cudaSuccess;
        if (r >= WARMUP) us[r - WARMUP] = 1e3 * ms / CALLS;
    }
    if (ok) {
        qsort(us, REPLAYS, sizeof(us[0]), compare_doubles);
        median = us[REPLAYS / 2];
    }
    CHECK_MSG(ok, "rank %d: timing %s x %zu: %s %s", t->rank, glm_dtype_name(dtype), count,
              comm->err.msg, be->err.msg);
    be->ops->graph_drop(be, key);
    glm_error err = {0};
    glm_backend_take_error(be, &err);
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    if (buf) be->ops->free(be, buf);
    return median;
}

/* Creates an NCCL communicator with an environment variable set for its creation only (every
 * rank does the same, so they agree). */
static glm_comm *comm_with_env(comm_test *t, const char *name, const char *value)
{
    glm_comm *comm = NULL;
    glm_error err = {0};
    const char *old = getenv(name);
    char *saved = old ? strdup(old) : NULL;
    setenv(name, value, 1);
    MPI_Comm world = MPI_COMM_WORLD;
    glm_status st = glm_comm_nccl_create(t->be, &world, &comm, &err);
    if (saved) {
        setenv(name, saved, 1);
        free(saved);
    } else {
        unsetenv(name);
    }
    CHECK_MSG(st == GLM_OK, "rank %d: nccl comm with %s=%s: %s", t->rank, name, value, err.msg);
    return st == GLM_OK ? comm : NULL;
}

void print_timing_table(comm_test *t)
{
    static const struct {
        const char *name;
        glm_dtype dtype;
        size_t count;
    } cases[] = {
        {"4096 bf16", GLM_BF16, 4096},
        {"4096 f32", GLM_F32, 4096},
        {"64x4096 bf16", GLM_BF16, 64 * 4096},
    };
    glm_comm *nccl = comm_with_env(t, "GLM4V_P2P_ALLREDUCE", "0");
    const bool p2p = glm_comm_nccl_p2p_max_bytes(t->comm, NULL) > 0;
    if (t->rank == 0)
        printf("all-reduce, TP %d, us per call (median of 25 replays of a graph of 100 calls):\n"
               "  %-14s %8s %8s %8s\n",
               t->size, "message", "bytes", "p2p", "nccl");
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        double p2p_us =
            p2p ? median_us(t, t->comm, cases[c].dtype, cases[c].count, 9100 + (int)c) : -1;
        double nccl_us =
            nccl ? median_us(t, nccl, cases[c].dtype, cases[c].count, 9200 + (int)c) : -1;
        if (t->rank == 0)
            printf("  %-14s %8zu %8.2f %8.2f\n", cases[c].name,
                   cases[c].count * glm_dtype_size(cases[c].dtype), p2p_us, nccl_us);
    }
    if (t->rank == 0 && !p2p) printf("  (p2p column -1: the p2p path is off)\n");
    glm_comm_destroy(nccl);
}

/* Rank 0 enters an all-reduce that no other rank enters: with a 2 s timeout its kernel must give
 * up and the call must fail with the peer named, on a communicator of its own. */
void test_dead_peer(comm_test *t)
{
    if (glm_comm_nccl_p2p_max_bytes(t->comm, NULL) == 0) return;
    glm_comm *comm = comm_with_env(t, "GLM4V_NCCL_TIMEOUT_S", "2");
    /* a message the p2p path takes, whatever $GLM4V_P2P_MAX_BYTES says */
    size_t count = glm_comm_nccl_p2p_max_bytes(t->comm, NULL) / 2;
    count = count < 4096 ? count : 4096;
    void *buf = alloc_or_null(t, count * 2);
    if (comm && buf && t->rank == 0) {
        glm_op_zero(t->be, buf, count * 2);
        glm_status st = comm->ops->allreduce_sum(comm, buf, count, GLM_BF16);
        CHECK_MSG(st == GLM_ERR_COMM && strstr(comm->err.msg, "gave no data"),
                  "dead peer: status %s, message '%s'", glm_status_name(st), comm->err.msg);
        printf("dead peer reported as: %s\n", comm->err.msg);
        st = comm->ops->allreduce_sum(comm, buf, count, GLM_BF16);
        CHECK_MSG(st == GLM_ERR_COMM, "after a dead peer: %s", glm_status_name(st));
    }
    if (buf) t->be->ops->free(t->be, buf);
    glm_comm_destroy(comm);
}
