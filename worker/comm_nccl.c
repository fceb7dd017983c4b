/* NCCL communicator for GPU ranks: one ncclComm per tensor-parallel group, bootstrapped by an
 * MPI_Bcast of the ncclUniqueId from rank 0; every collective runs on the backend's stream.
 *
 * The communicator is non-blocking (config.blocking = 0), and each collective is followed by a
 * polling wait: an event recorded after the collective is queried together with
 * ncclCommGetAsyncError until it completes, an error appears, or the timeout passes
 * ($GLM4V_NCCL_TIMEOUT_S, default 300 s). A dead peer thus comes back as GLM_ERR_COMM (after
 * ncclCommAbort) instead of a hang. During CUDA graph capture the wait is skipped: the captured
 * collective runs at replay, and the caller's next synchronizing download observes it.
 *
 * Small bf16/f16/f32 all-reduces go through the peer-to-peer path of comm_p2p.c instead of NCCL when
 * every rank agreed at creation that it can (one node, peer access between all GPUs): in a CUDA
 * graph on 2 H200s over NVLink a one-shot kernel over CUDA IPC memory took 3.9 us for 8 KiB and
 * 5.9 us for 512 KiB where ncclAllReduce took 6.3 and 9.7 (tests/worker/test_comm.c). Which path
 * a message takes depends only on its count and dtype, so all ranks always take the same one.
 *
 * ncclCommFinalize waits until no CUDA graph holds a collective of the communicator any more:
 * destroy (or recapture) such graphs before the communicator, or the teardown waits out the
 * timeout. */
#include "worker/comm.h"
#include "worker/comm_p2p.h"
#include "worker/mpi_check.h"

#include <mpi.h>
#include <nccl.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct nccl_impl {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t done;
    double timeout_s;
    int aborted;
    glm_p2p *p2p;      /* NULL: every all-reduce goes through NCCL */
    glm_error p2p_off; /* why p2p is NULL */
} nccl_impl;

/* How long the host waits for a p2p all-reduce beyond the kernel's own timeout, which should
 * fire first and name the peer. */
#define P2P_HOST_GRACE_S 30.0

#define NCCL_CHECK(comm_, call)                                                                    \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess && r_ != ncclInProgress)                                             \
            return glm_fail(&(comm_)->err, GLM_ERR_COMM, "%s %s:%d: %s", #call, __FILE__,          \
                            __LINE__, ncclGetErrorString(r_));                                     \
    } while (0)

#define CUDA_CHECK_COMM(comm_, call)                                                               \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return glm_fail(&(comm_)->err, GLM_ERR_COMM, "%s %s:%d: %s", #call, __FILE__,          \
                            __LINE__, cudaGetErrorString(e_));                                     \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static glm_status nccl_type(glm_comm *comm, glm_dtype dtype, ncclDataType_t *out)
{
    switch (dtype) {
    case GLM_F32: *out = ncclFloat32; return GLM_OK;
    case GLM_BF16: *out = ncclBfloat16; return GLM_OK;
    case GLM_F16: *out = ncclFloat16; return GLM_OK;
    case GLM_I32: *out = ncclInt32; return GLM_OK;
    case GLM_I64: *out = ncclInt64; return GLM_OK;
    }
    return glm_fail(&comm->err, GLM_ERR_UNSUPPORTED, "nccl: dtype %d", (int)dtype);
}

/* Waits until the communicator's pending (non-blocking) call has been accepted. */
static glm_status wait_comm_ready(glm_comm *comm, const char *what)
{
    nccl_impl *nc = comm->impl;
    double start = now_s();
    for (;;) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(nc->comm, &state);
        if (r != ncclSuccess) state = r;
        if (state == ncclSuccess) return GLM_OK;
        if (state != ncclInProgress) {
            ncclCommAbort(nc->comm);
            nc->aborted = 1;
            return glm_fail(&comm->err, GLM_ERR_COMM, "nccl %s on rank %d: %s", what, comm->rank,
                            ncclGetErrorString(state));
        }
        if (now_s() - start > nc->timeout_s) {
            ncclCommAbort(nc->comm);
            nc->aborted = 1;
            return glm_fail(&comm->err, GLM_ERR_COMM, "nccl %s on rank %d: no progress in %.0f s "
                            "(a peer died?)", what, comm->rank, nc->timeout_s);
        }
    }
}

/* After a collective was queued: poll its completion so a dead peer becomes an error. */
static glm_status wait_collective(glm_comm *comm, const char *what)
{
    nccl_impl *nc = comm->impl;
    glm_status st = wait_comm_ready(comm, what);
    if (st != GLM_OK) return st;
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK_COMM(comm, cudaStreamIsCapturing(nc->stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return GLM_OK;
    CUDA_CHECK_COMM(comm, cudaEventRecord(nc->done, nc->stream));
    double start = now_s();
    for (;;) {
        cudaError_t q = cudaEventQuery(nc->done);
        if (q == cudaSuccess) return GLM_OK;
        if (q != cudaErrorNotReady)
            return glm_fail(&comm->err, GLM_ERR_COMM, "nccl %s: %s", what, cudaGetErrorString(q));
        ncclResult_t state = ncclSuccess;
        ncclCommGetAsyncError(nc->comm, &state);
        if ((state != ncclSuccess && state != ncclInProgress) ||
            now_s() - start > nc->timeout_s) {
            ncclCommAbort(nc->comm);
            nc->aborted = 1;
            if (state != ncclSuccess && state != ncclInProgress)
                return glm_fail(&comm->err, GLM_ERR_COMM, "nccl %s on rank %d: %s", what,
                                comm->rank, ncclGetErrorString(state));
            return glm_fail(&comm->err, GLM_ERR_COMM,
                            "nccl %s on rank %d: not done after %.0f s (a peer died?)", what,
                            comm->rank, nc->timeout_s);
        }
    }
}

/* After a p2p all-reduce was queued: as wait_collective, but a dead peer is noticed by the kernel
 * itself (it gives up after the timeout and fills the failure record read here). */
static glm_status wait_p2p(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK_COMM(comm, cudaStreamIsCapturing(nc->stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return GLM_OK;
    CUDA_CHECK_COMM(comm, cudaEventRecord(nc->done, nc->stream));
    double start = now_s();
    glm_status st = GLM_OK;
    for (;;) {
        cudaError_t q = cudaEventQuery(nc->done);
        if (q == cudaSuccess) {
            st = glm_p2p_check(nc->p2p, &comm->err);
            break;
        }
        if (q != cudaErrorNotReady)
            return glm_fail(&comm->err, GLM_ERR_COMM, "p2p all-reduce: %s", cudaGetErrorString(q));
        if (now_s() - start > nc->timeout_s + P2P_HOST_GRACE_S) {
            st = glm_fail(&comm->err, GLM_ERR_COMM,
                          "p2p all-reduce on rank %d: not done after %.0f s (a peer died?)",
                          comm->rank, nc->timeout_s + P2P_HOST_GRACE_S);
            break;
        }
    }
    if (st != GLM_OK) {
        /* the peers' state is unknown: NCCL would hang on them as well */
        ncclCommAbort(nc->comm);
        nc->aborted = 1;
    }
    return st;
}

static glm_status check_usable(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    if (nc->aborted)
        return glm_fail(&comm->err, GLM_ERR_COMM, "nccl communicator was aborted after an error");
    return GLM_OK;
}

static glm_status nccl_allreduce_sum(glm_comm *comm, void *data, size_t count, glm_dtype dtype)
{
    nccl_impl *nc = comm->impl;
    ncclDataType_t t = ncclFloat32;
    glm_status st = check_usable(comm);
    if (st == GLM_OK) st = nccl_type(comm, dtype, &t);
    if (st != GLM_OK) return st;
    if (glm_p2p_takes(nc->p2p, count, dtype)) {
        st = glm_p2p_allreduce(nc->p2p, data, count, dtype, nc->stream, &comm->err);
        return st != GLM_OK ? st : wait_p2p(comm);
    }
    NCCL_CHECK(comm, ncclAllReduce(data, data, count, t, ncclSum, nc->comm, nc->stream));
    return wait_collective(comm, "allreduce");
}

static glm_status nccl_allgather(glm_comm *comm, void *dst, const void *src, size_t count,
                                 glm_dtype dtype)
{
    nccl_impl *nc = comm->impl;
    ncclDataType_t t = ncclFloat32;
    glm_status st = check_usable(comm);
    if (st == GLM_OK) st = nccl_type(comm, dtype, &t);
    if (st != GLM_OK) return st;
    NCCL_CHECK(comm, ncclAllGather(src, dst, count, t, nc->comm, nc->stream));
    return wait_collective(comm, "allgather");
}

static glm_status nccl_broadcast(glm_comm *comm, void *data, size_t count, glm_dtype dtype,
                                 int root)
{
    nccl_impl *nc = comm->impl;
    ncclDataType_t t = ncclFloat32;
    glm_status st = check_usable(comm);
    if (st == GLM_OK) st = nccl_type(comm, dtype, &t);
    if (st != GLM_OK) return st;
    NCCL_CHECK(comm, ncclBroadcast(data, data, count, t, root, nc->comm, nc->stream));
    return wait_collective(comm, "broadcast");
}

/* A barrier is an all-reduce of one float through a small device buffer. */
static glm_status nccl_barrier(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    glm_status st = check_usable(comm);
    if (st != GLM_OK) return st;
    float *one = NULL;
    CUDA_CHECK_COMM(comm, cudaMallocAsync((void **)&one, sizeof(float), nc->stream));
    ncclResult_t r = ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, nc->comm, nc->stream);
    if (r != ncclSuccess && r != ncclInProgress) {
        cudaFreeAsync(one, nc->stream);
        return glm_fail(&comm->err, GLM_ERR_COMM, "nccl barrier: %s", ncclGetErrorString(r));
    }
    st = wait_collective(comm, "barrier");
    cudaFreeAsync(one, nc->stream);
    return st;
}

static void nccl_destroy(glm_comm *comm)
{
    if (!comm) return;
    nccl_impl *nc = comm->impl;
    if (nc) {
        glm_p2p_destroy(nc->p2p, !nc->aborted);
        if (nc->comm) {
            if (nc->aborted) {
                /* already aborted: nothing more to release */
            } else {
                ncclCommFinalize(nc->comm);
                wait_comm_ready(comm, "finalize");
                if (!nc->aborted) ncclCommDestroy(nc->comm);
            }
        }
        if (nc->done) cudaEventDestroy(nc->done);
        free(nc);
    }
    free(comm);
}

static const glm_comm_ops nccl_ops = {
    .allreduce_sum = nccl_allreduce_sum,
    .allgather = nccl_allgather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .destroy = nccl_destroy,
};

/* Creates the NCCL side of the communicator; on failure *out stays NULL. */
static glm_status open_nccl(glm_backend *be, int rank, int size, ncclUniqueId id, glm_comm **out,
                            glm_error *err)
{
    glm_comm *comm = calloc(1, sizeof(*comm));
    nccl_impl *nc = calloc(1, sizeof(*nc));
    if (!comm || !nc) {
        free(comm);
        free(nc);
        return glm_fail(err, GLM_ERR_NOMEM, "nccl communicator: out of memory");
    }
    comm->ops = &nccl_ops;
    comm->name = "nccl";
    comm->rank = rank;
    comm->size = size;
    comm->be = be;
    comm->impl = nc;
    nc->stream = (cudaStream_t)be->ops->native_stream(be);
    const char *t = getenv("GLM4V_NCCL_TIMEOUT_S");
    nc->timeout_s = t && atof(t) > 0 ? atof(t) : 300.0;

    cudaError_t ce = cudaEventCreateWithFlags(&nc->done, cudaEventDisableTiming);
    if (ce != cudaSuccess) {
        nccl_destroy(comm);
        return glm_fail(err, GLM_ERR_COMM, "nccl: cudaEventCreate: %s", cudaGetErrorString(ce));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&nc->comm, size, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
        nc->comm = NULL;
        nccl_destroy(comm);
        return glm_fail(err, GLM_ERR_COMM, "ncclCommInitRankConfig rank %d of %d: %s", rank, size,
                        ncclGetErrorString(r));
    }
    glm_status st = wait_comm_ready(comm, "init");
    if (st != GLM_OK) {
        if (err) *err = comm->err;
        nccl_destroy(comm);
        return st;
    }
    *out = comm;
    return GLM_OK;
}

glm_status glm_comm_nccl_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                                glm_error *err)
{
    *out = NULL;
    if (!be || !mpi_comm || !be->ops->native_stream || !be->ops->native_stream(be))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "nccl communicator needs a CUDA backend");
    MPI_Comm mc = *(const MPI_Comm *)mpi_comm;
    int rank = 0, size = 1;
    GLM_MPI_CHECK(err, MPI_Comm_rank(mc, &rank));
    GLM_MPI_CHECK(err, MPI_Comm_size(mc, &size));

    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    ncclResult_t r = ncclSuccess;
    if (rank == 0) r = ncclGetUniqueId(&id);
    /* every rank joins the broadcast even if rank 0 failed, then all see the failure */
    int ok = r == ncclSuccess;
    GLM_MPI_CHECK(err, MPI_Bcast(&ok, 1, MPI_INT, 0, mc));
    GLM_MPI_CHECK(err, MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, mc));
    if (!ok)
        return glm_fail(err, GLM_ERR_COMM, "ncclGetUniqueId on rank 0 failed");

    glm_comm *comm = NULL;
    glm_status st = open_nccl(be, rank, size, id, &comm, err);
    /* the p2p setup is collective: enter it only if NCCL came up on every rank, so that no rank
     * waits there for one that already gave up */
    int mine = st == GLM_OK, all = 0;
    if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, mc) != MPI_SUCCESS && st == GLM_OK)
        st = glm_fail(err, GLM_ERR_COMM, "nccl bootstrap: MPI_Allreduce failed");
    if (st == GLM_OK && !all) st = glm_fail(err, GLM_ERR_COMM, "nccl init failed on another rank");
    if (st == GLM_OK) {
        nccl_impl *nc = comm->impl;
        st = glm_p2p_create(&mc, nc->timeout_s, &nc->p2p, &nc->p2p_off, err);
    }
    if (st != GLM_OK) {
        nccl_destroy(comm);
        return st;
    }
    *out = comm;
    return GLM_OK;
}

size_t glm_comm_nccl_p2p_max_bytes(const glm_comm *comm, const char **why_off)
{
    if (!comm || comm->ops != &nccl_ops) {
        if (why_off) *why_off = "not an NCCL communicator";
        return 0;
    }
    const nccl_impl *nc = comm->impl;
    if (why_off) *why_off = nc->p2p ? "" : nc->p2p_off.msg;
    return glm_p2p_max_bytes(nc->p2p);
}
