/* NCCL communicator for GPU ranks: one ncclComm per tensor-parallel group, bootstrapped by an
 * MPI_Bcast of the ncclUniqueId from rank 0; every collective runs on the backend's stream.
 *
 * The communicator is non-blocking (config.blocking = 0), and each collective is followed by a
 * polling wait: an event recorded after the collective is queried together with
 * ncclCommGetAsyncError until it completes, an error appears, or the timeout passes
 * ($GLM4V_NCCL_TIMEOUT_S, default 300 s). A dead peer thus comes back as GLM_ERR_COMM (after
 * ncclCommAbort) instead of a hang. During CUDA graph capture the wait is skipped: the captured
 * collective runs at replay, and the caller's next synchronizing download observes it. */
#include "worker/comm.h"

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
} nccl_impl;

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

glm_status glm_comm_nccl_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                                glm_error *err)
{
    *out = NULL;
    if (!be || !mpi_comm || !be->ops->native_stream || !be->ops->native_stream(be))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "nccl communicator needs a CUDA backend");
    MPI_Comm mc = *(const MPI_Comm *)mpi_comm;
    int rank = 0, size = 1;
    if (MPI_Comm_rank(mc, &rank) != MPI_SUCCESS || MPI_Comm_size(mc, &size) != MPI_SUCCESS)
        return glm_fail(err, GLM_ERR_COMM, "nccl bootstrap: MPI_Comm_rank/size failed");

    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    ncclResult_t r = ncclSuccess;
    if (rank == 0) r = ncclGetUniqueId(&id);
    /* every rank joins the broadcast even if rank 0 failed, then all see the failure */
    int ok = r == ncclSuccess;
    if (MPI_Bcast(&ok, 1, MPI_INT, 0, mc) != MPI_SUCCESS ||
        MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, mc) != MPI_SUCCESS)
        return glm_fail(err, GLM_ERR_COMM, "nccl bootstrap: MPI_Bcast of the unique id failed");
    if (!ok)
        return glm_fail(err, GLM_ERR_COMM, "ncclGetUniqueId on rank 0 failed");

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
    r = ncclCommInitRankConfig(&nc->comm, size, id, rank, &config);
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
