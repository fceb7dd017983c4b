/* The tensor-parallel communicators under mpirun:
 *   mpirun -np N test_comm --device cpu    the MPI communicator on CPU ranks (ctest, N = 2, 4)
 *   mpirun -np N test_comm --device cuda   NCCL and its p2p all-reduce on N GPUs of one node
 *                                          (scripts/gpu-model-test.sh), plus a timing table
 * All-reduce of bf16 and f32 at sizes around the p2p path's vector width and threshold, against a
 * sum computed here (inputs are multiples of 1/8, so every order of summation is exact), with
 * every rank's result bit-identical; 1000 back-to-back all-reduces of changing sizes (the p2p
 * path's buffer reuse); on CUDA an all-reduce captured in a graph and replayed with new inputs,
 * and a peer that never comes (the p2p kernel's timeout); all-gather and broadcast. */
#include "tests/worker/test_comm.h"

#include "common/dtype.h"
#include "tests/testutil.h"

#include <mpi.h>
#include <string.h>

#ifdef GLM4V_HAVE_CUDA
#include "worker/comm_p2p.h"
#endif

double input_value(size_t i, int rank, unsigned salt)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(rank + 1) * 40503u ^ salt * 2246822519u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return ((int)(h % 33) - 16) / 8.0;
}

static double expected_sum(size_t i, int size, unsigned salt)
{
    double s = 0;
    for (int r = 0; r < size; r++)
        s += input_value(i, r, salt);
    return s;
}

void host_set(void *buf, glm_dtype dtype, size_t i, double v)
{
    if (dtype == GLM_F32)
        ((float *)buf)[i] = (float)v;
    else
        ((uint16_t *)buf)[i] = glm_f32_to_bf16((float)v);
}

static double host_get(const void *buf, glm_dtype dtype, size_t i)
{
    return dtype == GLM_F32 ? ((const float *)buf)[i] : glm_bf16_to_f32(((const uint16_t *)buf)[i]);
}

static uint64_t fnv1a(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

bool same_on_all_ranks(const void *p, size_t n)
{
    uint64_t mine = fnv1a(p, n), lo = 0, hi = 0;
    MPI_Allreduce(&mine, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&mine, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

size_t count_wrong(const comm_test *t, const void *host, glm_dtype dtype, size_t count,
                   unsigned salt, const char *what)
{
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++) {
        double want = expected_sum(i, t->size, salt), got = host_get(host, dtype, i);
        if (got != want && wrong++ == 0)
            fprintf(stderr, "rank %d: %s %s x %zu: element %zu is %g, expected %g\n", t->rank, what,
                    glm_dtype_name(dtype), count, i, got, want);
    }
    return wrong;
}

void *alloc_or_null(comm_test *t, size_t bytes)
{
    void *p = NULL;
    if (t->be->ops->alloc(t->be, bytes, &p) != GLM_OK) return NULL;
    return p;
}

/* One all-reduce of count elements starting offset elements into a buffer with a sentinel element
 * on each side (they must survive: the p2p path's tail handling). */
static void check_allreduce(comm_test *t, glm_dtype dtype, size_t count, size_t offset,
                            unsigned salt)
{
    const size_t es = glm_dtype_size(dtype), n = count + offset + 1;
    const double sentinel = 99.0;
    unsigned char *host = malloc(n * es);
    void *dev = alloc_or_null(t, n * es);
    CHECK(host && dev);
    if (!host || !dev) goto done;
    for (size_t i = 0; i < offset; i++)
        host_set(host, dtype, i, sentinel);
    for (size_t i = 0; i < count; i++)
        host_set(host, dtype, offset + i, input_value(i, t->rank, salt));
    host_set(host, dtype, offset + count, sentinel);
    glm_op_upload(t->be, dev, host, n * es);
    glm_status st = t->comm->ops->allreduce_sum(t->comm, (char *)dev + offset * es, count, dtype);
    CHECK_MSG(st == GLM_OK, "rank %d: allreduce %s x %zu: %s", t->rank, glm_dtype_name(dtype),
              count, t->comm->err.msg);
    glm_op_download(t->be, host, dev, n * es);
    glm_error err = {0};
    CHECK_MSG(glm_backend_take_error(t->be, &err) == GLM_OK, "%s", err.msg);
    size_t wrong = count_wrong(t, host + offset * es, dtype, count, salt, "allreduce");
    CHECK_MSG(wrong == 0, "rank %d: %zu of %zu wrong (%s, offset %zu)", t->rank, wrong, count,
              glm_dtype_name(dtype), offset);
    bool guards = host_get(host, dtype, offset + count) == sentinel;
    for (size_t i = 0; i < offset; i++)
        guards = guards && host_get(host, dtype, i) == sentinel;
    CHECK_MSG(guards, "rank %d: allreduce %s x %zu wrote outside its buffer", t->rank,
              glm_dtype_name(dtype), count);
    CHECK_MSG(same_on_all_ranks(host + offset * es, count * es),
              "allreduce %s x %zu: ranks disagree", glm_dtype_name(dtype), count);
done:
    if (dev) t->be->ops->free(t->be, dev);
    free(host);
}

/* The element count just past the p2p path's limit (or past its default where there is none). */
static size_t count_above_threshold(const comm_test *t, glm_dtype dtype)
{
    size_t limit = (size_t)512 << 10;
#ifdef GLM4V_HAVE_CUDA
    if (t->cuda && glm_comm_nccl_p2p_max_bytes(t->comm, NULL) > 0)
        limit = glm_comm_nccl_p2p_max_bytes(t->comm, NULL);
#else
    (void)t;
#endif
    return limit / glm_dtype_size(dtype) + 3;
}

static void test_allreduce_sizes(comm_test *t)
{
    const glm_dtype dtypes[] = {GLM_F32, GLM_BF16};
    for (int d = 0; d < 2; d++) {
        glm_dtype dt = dtypes[d];
        if (dt == GLM_BF16 && !t->cuda) {
            /* the MPI communicator reduces float32 only (the CPU backend's activations) */
            void *dev = alloc_or_null(t, 16);
            glm_status st = t->comm->ops->allreduce_sum(t->comm, dev, 4, GLM_BF16);
            CHECK_MSG(st == GLM_ERR_UNSUPPORTED, "mpi bf16 allreduce: %s", glm_status_name(st));
            if (dev) t->be->ops->free(t->be, dev);
            continue;
        }
        const size_t counts[] = {1, 7, 4096, 4096 * 3 + 5, 64 * 4096, count_above_threshold(t, dt)};
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
            check_allreduce(t, dt, counts[c], 0, (unsigned)(10 * d + c));
        /* a buffer that is not 16-byte aligned takes the element-wise edges of the kernel */
        check_allreduce(t, dt, 4096 * 3 + 5, 1, 77);
        check_allreduce(t, dt, 9, 3, 78);
    }
}

/* 1000 all-reduces in a row with changing sizes and dtypes, each input copied on the device from a
 * pool of 5 (odd, so that input and buffer parity do not repeat together). */
static void test_back_to_back(comm_test *t)
{
    enum { POOL = 5, ITERS = 1000, MAX_COUNT = 3 * 4096 + 5 };
    const int n_dtypes = t->cuda ? 2 : 1;
    const glm_dtype dtypes[2] = {GLM_F32, GLM_BF16};
    void *pool[2][POOL] = {{NULL}};
    void *work = alloc_or_null(t, MAX_COUNT * 4);
    void *host = malloc(MAX_COUNT * 4);
    bool ok = work && host;
    for (int d = 0; d < n_dtypes && ok; d++) {
        for (int k = 0; k < POOL && ok; k++) {
            size_t bytes = MAX_COUNT * glm_dtype_size(dtypes[d]);
            ok = (pool[d][k] = alloc_or_null(t, bytes)) != NULL;
            for (size_t i = 0; ok && i < MAX_COUNT; i++)
                host_set(host, dtypes[d], i, input_value(i, t->rank, 1000u + (unsigned)k));
            if (ok) glm_op_upload(t->be, pool[d][k], host, bytes);
        }
    }
    CHECK(ok);
    size_t wrong_calls = 0;
    for (int it = 0; ok && it < ITERS; it++) {
        const size_t sizes[] = {4096, 7, 2 * 4096 + 3, MAX_COUNT, 1};
        const size_t count = sizes[it % 5];
        const int d = (it / 5) % n_dtypes, k = it % POOL;
        const glm_dtype dt = dtypes[d];
        glm_op_copy(t->be, work, pool[d][k], count * glm_dtype_size(dt));
        glm_status st = t->comm->ops->allreduce_sum(t->comm, work, count, dt);
        glm_op_download(t->be, host, work, count * glm_dtype_size(dt));
        if (st != GLM_OK || t->be->status != GLM_OK) {
            CHECK_MSG(0, "rank %d: back-to-back call %d: %s", t->rank, it, t->comm->err.msg);
            break;
        }
        if (count_wrong(t, host, dt, count, 1000u + (unsigned)k, "back-to-back")) wrong_calls++;
    }
    CHECK_MSG(wrong_calls == 0, "rank %d: %zu of %d back-to-back all-reduces wrong", t->rank,
              wrong_calls, ITERS);
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < POOL; k++)
            if (pool[d][k]) t->be->ops->free(t->be, pool[d][k]);
    if (work) t->be->ops->free(t->be, work);
    free(host);
}

/* dst = every rank's src in rank order; data = the root's. */
static void test_allgather_broadcast(comm_test *t)
{
    enum { N = 1000 };
    const int root = t->size - 1;
    float *host = malloc(sizeof(float) * N * (size_t)t->size);
    void *src = alloc_or_null(t, sizeof(float) * N);
    void *dst = alloc_or_null(t, sizeof(float) * N * (size_t)t->size);
    CHECK(host && src && dst);
    if (host && src && dst) {
        for (int i = 0; i < N; i++)
            host[i] = (float)(t->rank * 10000 + i);
        glm_op_upload(t->be, src, host, sizeof(float) * N);
        glm_status st = t->comm->ops->allgather(t->comm, dst, src, N, GLM_F32);
        CHECK_MSG(st == GLM_OK, "allgather: %s", t->comm->err.msg);
        glm_op_download(t->be, host, dst, sizeof(float) * N * (size_t)t->size);
        size_t wrong = 0;
        for (int r = 0; r < t->size; r++)
            for (int i = 0; i < N; i++)
                wrong += host[r * N + i] != (float)(r * 10000 + i);
        CHECK_MSG(wrong == 0, "rank %d: allgather: %zu wrong", t->rank, wrong);

        for (int i = 0; i < N; i++)
            host[i] = t->rank == root ? (float)(i * 3) : -1.0f;
        glm_op_upload(t->be, src, host, sizeof(float) * N);
        st = t->comm->ops->broadcast(t->comm, src, N, GLM_F32, root);
        CHECK_MSG(st == GLM_OK, "broadcast: %s", t->comm->err.msg);
        glm_op_download(t->be, host, src, sizeof(float) * N);
        wrong = 0;
        for (int i = 0; i < N; i++)
            wrong += host[i] != (float)(i * 3);
        CHECK_MSG(wrong == 0, "rank %d: broadcast: %zu wrong", t->rank, wrong);
        CHECK_MSG(t->comm->ops->barrier(t->comm) == GLM_OK, "barrier: %s", t->comm->err.msg);
    }
    if (src) t->be->ops->free(t->be, src);
    if (dst) t->be->ops->free(t->be, dst);
    free(host);
}

static glm_status create_comm(comm_test *t, glm_error *err)
{
    MPI_Comm world = MPI_COMM_WORLD;
#ifdef GLM4V_HAVE_CUDA
    if (t->cuda) return glm_comm_nccl_create(t->be, &world, &t->comm, err);
#endif
    return glm_comm_mpi_create(t->be, &world, &t->comm, err);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    comm_test t = {0};
    MPI_Comm_rank(MPI_COMM_WORLD, &t.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &t.size);
    const char *device = argc == 3 && strcmp(argv[1], "--device") == 0 ? argv[2] : NULL;
    if (!device || (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) || t.size < 2) {
        if (t.rank == 0) fprintf(stderr, "usage: mpirun -np N>=2 test_comm --device cpu|cuda\n");
        MPI_Finalize();
        return 2;
    }
    t.cuda = strcmp(device, "cuda") == 0;
    MPI_Comm node;
    int local_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, t.rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);

    glm_error err = {0};
    glm_status st = t.cuda ? glm_backend_create("cuda", local_rank, &t.be, &err)
                           : glm_backend_cpu_create(1, &t.be, &err);
    int mine = st, worst = 0;
    MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (st == GLM_OK && worst == GLM_OK) st = create_comm(&t, &err);
    if (st != GLM_OK || worst != GLM_OK) {
        fprintf(stderr, "rank %d: setup: %s\n", t.rank, st ? err.msg : "another rank failed");
        glm_comm_destroy(t.comm);
        glm_backend_destroy(t.be);
        MPI_Finalize();
        return 1;
    }
#ifdef GLM4V_HAVE_CUDA
    if (t.cuda) describe_p2p(&t);
#endif
    test_allreduce_sizes(&t);
    test_back_to_back(&t);
    test_allgather_broadcast(&t);
#ifdef GLM4V_HAVE_CUDA
    if (t.cuda) {
        test_graph_replay(&t);
        print_timing_table(&t);
        test_dead_peer(&t);
    }
#endif
    glm_comm_destroy(t.comm);
    glm_backend_destroy(t.be);

    int failures = test_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    char suite[32];
    snprintf(suite, sizeof(suite), "comm rank %d", t.rank);
    int code = test_finish(suite);
    MPI_Finalize();
    return code || total ? 1 : 0;
}
