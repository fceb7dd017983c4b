/* The MPI communicator for CPU ranks: collectives on host buffers of the CPU backend.
 * Float buffers are reduced in float32 (the CPU backend's activation type).
 *
 * Every operation is a nonblocking MPI call polled to completion under the step watchdog's
 * deadline (comm_watchdog.h): past it, the operation fails with GLM_ERR_TIMEOUT naming itself and
 * the peers that did not answer, and the communicator is failed for good (the request stays
 * pending inside MPI; the rank is expected to end the replica with glm_rank_abort). */
#include "worker/comm.h"

#include <mpi.h>
#include <stdlib.h>

#include "worker/comm_watchdog.h"
#include "worker/mpi_check.h"

/* MPI counts are int: larger buffers go in pieces */
#define PIECE ((size_t)1 << 30)

typedef struct mpi_impl {
    MPI_Comm comm;
    glm_watchdog *watch;
} mpi_impl;

static MPI_Datatype mpi_type(glm_dtype dtype)
{
    switch (dtype) {
    case GLM_F32:
        return MPI_FLOAT;
    case GLM_I32:
        return MPI_INT32_T;
    case GLM_I64:
        return MPI_INT64_T;
    default:
        return MPI_DATATYPE_NULL;
    }
}

static mpi_impl *impl_of(glm_comm *c)
{
    return c->impl;
}

static glm_status check_usable(glm_comm *c)
{
    /* the message stays the first failure's: that is the one worth reporting */
    if (c->failed) return c->err.status != GLM_OK ? c->err.status : GLM_ERR_COMM;
    return GLM_OK;
}

static glm_status check_host(glm_comm *c, glm_dtype dtype)
{
    glm_status st = check_usable(c);
    if (st) return st;
    if (!c->be->host_memory)
        return glm_fail(&c->err, GLM_ERR_UNSUPPORTED,
                        "the MPI communicator needs host buffers; the %s backend has device memory",
                        c->be->name);
    if (mpi_type(dtype) == MPI_DATATYPE_NULL)
        return glm_fail(&c->err, GLM_ERR_UNSUPPORTED, "MPI communicator: no %s reduction",
                        glm_dtype_name(dtype));
    return GLM_OK;
}

/* Waits for the operation started as *req; what and detail name it in a timeout report. */
static glm_status finish(glm_comm *c, MPI_Request *req, const char *what, size_t count,
                         const char *unit)
{
    mpi_impl *impl = impl_of(c);
    int timeout_ms = glm_comm_timeout_ms(c);
    glm_error why = {0};
    glm_wait_result r = glm_watchdog_wait(impl->watch, req, timeout_ms, &why);
    if (r == GLM_WAIT_DONE) return GLM_OK;
    if (r == GLM_WAIT_MPI_ERROR)
        return glm_comm_fail(c, GLM_ERR_COMM,
                             "mpi %s of %zu %s on rank %d failed (a peer died?): %s", what, count,
                             unit, c->rank, why.msg);
    char peers[384];
    glm_watchdog_report(impl->watch, glm_watchdog_grace_ms(timeout_ms), peers, sizeof(peers));
    return glm_comm_fail(c, GLM_ERR_TIMEOUT,
                         "step watchdog: rank %d: mpi %s of %zu %s not done after %d ms; %s",
                         c->rank, what, count, unit, timeout_ms, peers);
}

static glm_status mpi_allreduce(glm_comm *c, void *data, size_t count, glm_dtype dtype)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    glm_watchdog_enter(impl_of(c)->watch, "allreduce");
    for (size_t off = 0; off < count; off += PIECE) {
        size_t n = count - off < PIECE ? count - off : PIECE;
        char *p = (char *)data + off * glm_dtype_size(dtype);
        MPI_Request req;
        GLM_MPI_CHECK(&c->err, MPI_Iallreduce(MPI_IN_PLACE, p, (int)n, mpi_type(dtype), MPI_SUM,
                                              impl_of(c)->comm, &req));
        if ((st = finish(c, &req, "allreduce", n, glm_dtype_name(dtype)))) return st;
    }
    return GLM_OK;
}

static glm_status mpi_allgather(glm_comm *c, void *dst, const void *src, size_t count,
                                glm_dtype dtype)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    if (count > PIECE)
        return glm_fail(&c->err, GLM_ERR_LIMIT, "all-gather of %zu elements is too large", count);
    glm_watchdog_enter(impl_of(c)->watch, "allgather");
    MPI_Request req;
    GLM_MPI_CHECK(&c->err, MPI_Iallgather(src, (int)count, mpi_type(dtype), dst, (int)count,
                                          mpi_type(dtype), impl_of(c)->comm, &req));
    return finish(c, &req, "allgather", count, glm_dtype_name(dtype));
}

static glm_status bcast_pieces(glm_comm *c, void *data, size_t count, MPI_Datatype type,
                               size_t elem_bytes, int root, const char *what, const char *unit)
{
    glm_watchdog_enter(impl_of(c)->watch, what);
    for (size_t off = 0; off < count; off += PIECE) {
        size_t n = count - off < PIECE ? count - off : PIECE;
        char *p = (char *)data + off * elem_bytes;
        MPI_Request req;
        GLM_MPI_CHECK(&c->err, MPI_Ibcast(p, (int)n, type, root, impl_of(c)->comm, &req));
        glm_status st = finish(c, &req, what, n, unit);
        if (st) return st;
    }
    return GLM_OK;
}

static glm_status mpi_broadcast(glm_comm *c, void *data, size_t count, glm_dtype dtype, int root)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    return bcast_pieces(c, data, count, mpi_type(dtype), glm_dtype_size(dtype), root, "broadcast",
                        glm_dtype_name(dtype));
}

static glm_status mpi_broadcast_host(glm_comm *c, void *bytes, size_t n, int root, const char *what)
{
    glm_status st = check_usable(c);
    if (st) return st;
    return bcast_pieces(c, bytes, n, MPI_BYTE, 1, root, what, "bytes");
}

static glm_status mpi_barrier(glm_comm *c)
{
    glm_status st = check_usable(c);
    if (st) return st;
    glm_watchdog_enter(impl_of(c)->watch, "barrier");
    MPI_Request req;
    GLM_MPI_CHECK(&c->err, MPI_Ibarrier(impl_of(c)->comm, &req));
    return finish(c, &req, "barrier", 0, "bytes");
}

static void mpi_destroy(glm_comm *c)
{
    mpi_impl *impl = c->impl;
    if (impl) {
        glm_watchdog_destroy(impl->watch);
        /* a failed group may hold a pending request on the communicator: freeing it would wait */
        if (impl->comm != MPI_COMM_NULL && !c->failed) MPI_Comm_free(&impl->comm);
    }
    free(impl);
    free(c);
}

static const glm_comm_ops mpi_ops = {
    .allreduce_sum = mpi_allreduce,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .broadcast_host = mpi_broadcast_host,
    .sync = NULL,  /* every operation completes before it returns */
    .abort = NULL, /* MPI_Abort (glm_rank_abort) ends the group */
    .destroy = mpi_destroy,
};

const glm_comm_entry glm_comm_mpi_entry = {
    .name = "mpi",
    .collective = GLM_COLLECTIVE_MPI,
    .caps = {.multi_rank = true, .device_buffers = false, .graph_capturable = false},
    .create = glm_comm_mpi_create,
};

glm_status glm_comm_mpi_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                               glm_error *err)
{
    *out = NULL;
    glm_comm *c = calloc(1, sizeof(*c));
    mpi_impl *impl = calloc(1, sizeof(*impl));
    if (!c || !impl) {
        free(c);
        free(impl);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    }
    impl->comm = MPI_COMM_NULL;
    c->impl = impl;
    /* a private duplicate, so our collectives never match another library's messages */
    if (MPI_Comm_dup(*(const MPI_Comm *)mpi_comm, &impl->comm) != MPI_SUCCESS) {
        impl->comm = MPI_COMM_NULL;
        mpi_destroy(c);
        return glm_fail(err, GLM_ERR_COMM, "MPI_Comm_dup failed");
    }
    glm_watchdog_errors_return(impl->comm); /* a lost peer is a status we report */
    glm_status st = glm_watchdog_create(impl->comm, &impl->watch, err);
    if (st) {
        mpi_destroy(c);
        return st;
    }
    MPI_Comm_rank(impl->comm, &c->rank);
    MPI_Comm_size(impl->comm, &c->size);
    c->ops = &mpi_ops;
    c->name = glm_comm_mpi_entry.name;
    c->caps = glm_comm_mpi_entry.caps;
    c->be = be;
    *out = c;
    return GLM_OK;
}
