/* The MPI communicator for CPU ranks: collectives on host buffers of the CPU backend.
 * Float buffers are reduced in float32 (the CPU backend's activation type). */
#include "worker/comm.h"

#include <mpi.h>
#include <stdlib.h>

#include "worker/mpi_check.h"

typedef struct mpi_impl {
    MPI_Comm comm;
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

static MPI_Comm comm_of(glm_comm *c)
{
    return ((mpi_impl *)c->impl)->comm;
}

static glm_status check_host(glm_comm *c, glm_dtype dtype)
{
    if (!c->be->host_memory && c->be->ops->native_stream(c->be) != NULL)
        return glm_fail(&c->err, GLM_ERR_UNSUPPORTED,
                        "the MPI communicator needs host buffers; use NCCL with %s", c->be->name);
    if (mpi_type(dtype) == MPI_DATATYPE_NULL)
        return glm_fail(&c->err, GLM_ERR_UNSUPPORTED, "MPI communicator: no %s reduction",
                        glm_dtype_name(dtype));
    return GLM_OK;
}

static glm_status mpi_allreduce(glm_comm *c, void *data, size_t count, glm_dtype dtype)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    /* MPI counts are int: large buffers go in pieces */
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < count; off += piece) {
        size_t n = count - off < piece ? count - off : piece;
        char *p = (char *)data + off * glm_dtype_size(dtype);
        GLM_MPI_CHECK(&c->err,
                      MPI_Allreduce(MPI_IN_PLACE, p, (int)n, mpi_type(dtype), MPI_SUM, comm_of(c)));
    }
    return GLM_OK;
}

static glm_status mpi_allgather(glm_comm *c, void *dst, const void *src, size_t count,
                                glm_dtype dtype)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    if (count > (size_t)1 << 30)
        return glm_fail(&c->err, GLM_ERR_LIMIT, "all-gather of %zu elements is too large", count);
    GLM_MPI_CHECK(&c->err, MPI_Allgather(src, (int)count, mpi_type(dtype), dst, (int)count,
                                         mpi_type(dtype), comm_of(c)));
    return GLM_OK;
}

static glm_status mpi_broadcast(glm_comm *c, void *data, size_t count, glm_dtype dtype, int root)
{
    glm_status st = check_host(c, dtype);
    if (st) return st;
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < count; off += piece) {
        size_t n = count - off < piece ? count - off : piece;
        char *p = (char *)data + off * glm_dtype_size(dtype);
        GLM_MPI_CHECK(&c->err, MPI_Bcast(p, (int)n, mpi_type(dtype), root, comm_of(c)));
    }
    return GLM_OK;
}

static glm_status mpi_barrier(glm_comm *c)
{
    GLM_MPI_CHECK(&c->err, MPI_Barrier(comm_of(c)));
    return GLM_OK;
}

static void mpi_destroy(glm_comm *c)
{
    mpi_impl *impl = c->impl;
    if (impl && impl->comm != MPI_COMM_NULL) MPI_Comm_free(&impl->comm);
    free(impl);
    free(c);
}

static const glm_comm_ops mpi_ops = {
    .allreduce_sum = mpi_allreduce,
    .allgather = mpi_allgather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .destroy = mpi_destroy,
};

glm_status glm_comm_mpi_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                               glm_error *err)
{
    glm_comm *c = calloc(1, sizeof(*c));
    mpi_impl *impl = calloc(1, sizeof(*impl));
    if (!c || !impl) {
        free(c);
        free(impl);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    }
    /* a private duplicate, so our collectives never match another library's messages */
    if (MPI_Comm_dup(*(const MPI_Comm *)mpi_comm, &impl->comm) != MPI_SUCCESS) {
        free(c);
        free(impl);
        return glm_fail(err, GLM_ERR_COMM, "MPI_Comm_dup failed");
    }
    MPI_Comm_rank(impl->comm, &c->rank);
    MPI_Comm_size(impl->comm, &c->size);
    c->ops = &mpi_ops;
    c->name = "mpi";
    c->be = be;
    c->impl = impl;
    *out = c;
    return GLM_OK;
}
