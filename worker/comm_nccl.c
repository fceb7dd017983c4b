/* NCCL communicator for GPU ranks: one ncclComm per tensor-parallel group, bootstrapped by an
 * MPI_Bcast of the ncclUniqueId from rank 0; every collective runs on the backend's stream.
 *
 * The communicator is non-blocking (config.blocking = 0), and each collective is followed by a
 * polling wait: an event recorded after the collective is queried together with
 * ncclCommGetAsyncError until it completes, an error appears, or the step watchdog's deadline
 * passes (glm_comm_timeout_ms; $GLM4V_NCCL_TIMEOUT_S, default 300 s, bounds the creation and a
 * communicator without options). A dead or stopped peer thus comes back as GLM_ERR_TIMEOUT or
 * GLM_ERR_COMM (after ncclCommAbort, naming the peers that did not answer, comm_watchdog.h)
 * instead of a hang. During CUDA graph capture the wait is skipped: the captured collective runs
 * at replay, after which the model calls sync. Host messages (the step plan) go over MPI with the
 * same deadline.
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
#include "worker/comm_watchdog.h"
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
    glm_p2p *p2p;        /* NULL: every all-reduce goes through NCCL */
    glm_error p2p_off;   /* why p2p is NULL */
    MPI_Comm host;       /* private duplicate for host messages (the step plan) */
    glm_watchdog *watch; /* deadline waits on host messages, questions to the peers */
} nccl_impl;

/* Without the watchdog's options, the host waits this much longer for a p2p all-reduce than the
 * kernel's own timeout (the creation timeout), so that the kernel fires first and names the peer.
 * With them, the host's deadline comes first and the watchdog names the peer. */
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

/* The deadline of the current operation in seconds: the watchdog's, or the creation timeout. */
static double deadline_s(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    int ms = glm_comm_timeout_ms(comm);
    return ms > 0 ? ms / 1e3 : nc->timeout_s;
}

/* Past the deadline: stop NCCL, ask the peers where they are, and fail the group. */
static glm_status fail_late(glm_comm *comm, const char *what)
{
    nccl_impl *nc = comm->impl;
    ncclCommAbort(nc->comm);
    nc->aborted = 1;
    char peers[384] = "";
    if (nc->watch)
        glm_watchdog_report(nc->watch, glm_watchdog_grace_ms((int)(deadline_s(comm) * 1e3)),
                            peers, sizeof(peers));
    return glm_comm_fail(comm, GLM_ERR_TIMEOUT,
                         "step watchdog: rank %d: nccl %s not done after %.0f ms; %s", comm->rank,
                         what, deadline_s(comm) * 1e3, peers);
}

/* Answers the peers' watchdog questions now and then while this rank waits on the GPU. */
static void answer_peers(glm_comm *comm, double *last_s)
{
    nccl_impl *nc = comm->impl;
    double t = now_s();
    if (nc->watch && t - *last_s > 1e-3) {
        glm_watchdog_answer(nc->watch);
        *last_s = t;
    }
}

/* Waits until the communicator's pending (non-blocking) call has been accepted. */
static glm_status wait_comm_ready(glm_comm *comm, const char *what)
{
    nccl_impl *nc = comm->impl;
    double start = now_s(), answered = start;
    for (;;) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(nc->comm, &state);
        if (r != ncclSuccess) state = r;
        if (state == ncclSuccess) return GLM_OK;
        if (state != ncclInProgress) {
            ncclCommAbort(nc->comm);
            nc->aborted = 1;
            return glm_comm_fail(comm, GLM_ERR_COMM, "nccl %s on rank %d: %s", what, comm->rank,
                                 ncclGetErrorString(state));
        }
        if (now_s() - start > deadline_s(comm)) return fail_late(comm, what);
        answer_peers(comm, &answered);
    }
}

/* Polls the event recorded after the queued work until it completes, NCCL reports an error, or
 * the deadline (plus extra_s) passes. */
static glm_status wait_event(glm_comm *comm, const char *what, double extra_s)
{
    nccl_impl *nc = comm->impl;
    CUDA_CHECK_COMM(comm, cudaEventRecord(nc->done, nc->stream));
    double start = now_s(), answered = start;
    for (;;) {
        cudaError_t q = cudaEventQuery(nc->done);
        if (q == cudaSuccess) return GLM_OK;
        if (q != cudaErrorNotReady)
            return glm_comm_fail(comm, GLM_ERR_COMM, "nccl %s: %s", what, cudaGetErrorString(q));
        ncclResult_t state = ncclSuccess;
        ncclCommGetAsyncError(nc->comm, &state);
        if (state != ncclSuccess && state != ncclInProgress) {
            ncclCommAbort(nc->comm);
            nc->aborted = 1;
            return glm_comm_fail(comm, GLM_ERR_COMM, "nccl %s on rank %d: %s", what, comm->rank,
                                 ncclGetErrorString(state));
        }
        if (now_s() - start > deadline_s(comm) + extra_s) return fail_late(comm, what);
        answer_peers(comm, &answered);
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
    return wait_event(comm, what, 0);
}

/* After a p2p all-reduce was queued: as wait_collective; a kernel that gave up on a peer (its
 * own timeout) fills the failure record read here. */
static glm_status wait_p2p(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK_COMM(comm, cudaStreamIsCapturing(nc->stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return GLM_OK;
    double extra_s = comm->opt.timeout_ms > 0 ? 0 : P2P_HOST_GRACE_S;
    glm_status st = wait_event(comm, "p2p all-reduce", extra_s);
    if (st == GLM_OK) st = glm_p2p_check(nc->p2p, &comm->err);
    if (st != GLM_OK && !nc->aborted) {
        /* the peers' state is unknown: NCCL would hang on them as well */
        ncclCommAbort(nc->comm);
        nc->aborted = 1;
    }
    if (st != GLM_OK) comm->failed = true;
    return st;
}

static glm_status check_usable(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    /* the message stays the first failure's: that is the one worth reporting */
    if (comm->failed) return comm->err.status != GLM_OK ? comm->err.status : GLM_ERR_COMM;
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
    glm_watchdog_enter(nc->watch, "allreduce");
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
    glm_watchdog_enter(nc->watch, "allgather");
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
    glm_watchdog_enter(nc->watch, "broadcast");
    NCCL_CHECK(comm, ncclBroadcast(data, data, count, t, root, nc->comm, nc->stream));
    return wait_collective(comm, "broadcast");
}

/* A barrier is an all-reduce of one float through a small device buffer. */
static glm_status nccl_barrier(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    glm_status st = check_usable(comm);
    if (st != GLM_OK) return st;
    glm_watchdog_enter(nc->watch, "barrier");
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

static glm_status nccl_broadcast_host(glm_comm *comm, void *bytes, size_t n, int root,
                                      const char *what)
{
    nccl_impl *nc = comm->impl;
    glm_status st = check_usable(comm);
    if (st != GLM_OK) return st;
    if (n > (size_t)1 << 30)
        return glm_fail(&comm->err, GLM_ERR_LIMIT, "host broadcast of %zu bytes is too large", n);
    glm_watchdog_enter(nc->watch, what);
    MPI_Request req;
    GLM_MPI_CHECK(&comm->err, MPI_Ibcast(bytes, (int)n, MPI_BYTE, root, nc->host, &req));
    int timeout_ms = (int)(deadline_s(comm) * 1e3);
    glm_error why = {0};
    glm_wait_result r = glm_watchdog_wait(nc->watch, &req, timeout_ms, &why);
    if (r == GLM_WAIT_DONE) return GLM_OK;
    if (r == GLM_WAIT_MPI_ERROR)
        return glm_comm_fail(comm, GLM_ERR_COMM, "mpi %s on rank %d failed (a peer died?): %s",
                             what, comm->rank, why.msg);
    ncclCommAbort(nc->comm);
    nc->aborted = 1;
    char peers[384];
    glm_watchdog_report(nc->watch, glm_watchdog_grace_ms(timeout_ms), peers, sizeof(peers));
    return glm_comm_fail(comm, GLM_ERR_TIMEOUT,
                         "step watchdog: rank %d: %s (%zu bytes) not done after %d ms; %s",
                         comm->rank, what, n, timeout_ms, peers);
}

/* After a graph replay: its collectives (and p2p kernels) are behind this event. */
static glm_status nccl_sync(glm_comm *comm, const char *what)
{
    nccl_impl *nc = comm->impl;
    glm_status st = check_usable(comm);
    if (st != GLM_OK) return st;
    glm_watchdog_enter(nc->watch, what);
    st = wait_event(comm, what, 0);
    if (st == GLM_OK && nc->p2p) st = glm_p2p_check(nc->p2p, &comm->err);
    if (st != GLM_OK && !nc->aborted) {
        ncclCommAbort(nc->comm);
        nc->aborted = 1;
        comm->failed = true;
    }
    return st;
}

static void nccl_abort(glm_comm *comm)
{
    nccl_impl *nc = comm->impl;
    if (nc && nc->comm && !nc->aborted) {
        ncclCommAbort(nc->comm);
        nc->aborted = 1;
    }
    comm->failed = true;
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
        glm_watchdog_destroy(nc->watch);
        /* a failed group may hold a pending request on it: freeing it could wait */
        if (nc->host != MPI_COMM_NULL && !comm->failed) MPI_Comm_free(&nc->host);
        free(nc);
    }
    free(comm);
}

static const glm_comm_ops nccl_ops = {
    .allreduce_sum = nccl_allreduce_sum,
    .allgather = nccl_allgather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .broadcast_host = nccl_broadcast_host,
    .sync = nccl_sync,
    .abort = nccl_abort,
    .destroy = nccl_destroy,
};

const glm_comm_entry glm_comm_nccl_entry = {
    .name = "nccl",
    .collective = GLM_COLLECTIVE_NCCL,
    .caps = {.multi_rank = true, .device_buffers = true, .graph_capturable = true},
    .create = glm_comm_nccl_create,
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
    comm->name = glm_comm_nccl_entry.name;
    comm->caps = glm_comm_nccl_entry.caps;
    comm->rank = rank;
    comm->size = size;
    comm->be = be;
    comm->impl = nc;
    nc->host = MPI_COMM_NULL;
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
        if (st == GLM_OK && MPI_Comm_dup(mc, &nc->host) != MPI_SUCCESS) {
            nc->host = MPI_COMM_NULL;
            st = glm_fail(err, GLM_ERR_COMM, "nccl communicator: MPI_Comm_dup failed");
        }
        if (st == GLM_OK) glm_watchdog_errors_return(nc->host);
        if (st == GLM_OK) st = glm_watchdog_create(nc->host, &nc->watch, err);
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
