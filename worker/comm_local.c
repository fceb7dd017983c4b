/* The one-rank communicator: every collective is the identity. */
#include "worker/comm.h"

#include <stdlib.h>

static glm_status local_allreduce(glm_comm *c, void *data, size_t count, glm_dtype dtype)
{
    (void)c, (void)data, (void)count, (void)dtype;
    return GLM_OK;
}

static glm_status local_allgather(glm_comm *c, void *dst, const void *src, size_t count,
                                  glm_dtype dtype)
{
    if (dst != src) c->be->ops->copy(c->be, dst, src, count * glm_dtype_size(dtype));
    return GLM_OK;
}

static glm_status local_broadcast(glm_comm *c, void *data, size_t count, glm_dtype dtype, int root)
{
    (void)c, (void)data, (void)count, (void)dtype, (void)root;
    return GLM_OK;
}

static glm_status local_barrier(glm_comm *c)
{
    (void)c;
    return GLM_OK;
}

static glm_status local_broadcast_host(glm_comm *c, void *bytes, size_t n, int root,
                                       const char *what)
{
    (void)c, (void)bytes, (void)n, (void)root, (void)what;
    return GLM_OK;
}

static void local_destroy(glm_comm *c)
{
    free(c);
}

static const glm_comm_ops local_ops = {
    .allreduce_sum = local_allreduce,
    .allgather = local_allgather,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .broadcast_host = local_broadcast_host,
    .sync = NULL,  /* nothing is ever in flight */
    .abort = NULL, /* no transport */
    .destroy = local_destroy,
};

static glm_status create_local(glm_backend *be, const void *mpi_comm, glm_comm **out,
                               glm_error *err)
{
    (void)mpi_comm;
    return glm_comm_local_create(be, out, err);
}

const glm_comm_entry glm_comm_local_entry = {
    .name = "local",
    .collective = GLM_COLLECTIVE_LOCAL,
    /* its collectives are no ops (an all-gather is one copy on the backend), so a graph may
     * hold them */
    .caps = {.multi_rank = false, .device_buffers = true, .graph_capturable = true},
    .create = create_local,
};

glm_status glm_comm_local_create(glm_backend *be, glm_comm **out, glm_error *err)
{
    glm_comm *c = calloc(1, sizeof(*c));
    if (!c) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    c->ops = &local_ops;
    c->name = glm_comm_local_entry.name;
    c->caps = glm_comm_local_entry.caps;
    c->rank = 0;
    c->size = 1;
    c->be = be;
    *out = c;
    return GLM_OK;
}
