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

static void local_destroy(glm_comm *c)
{
    free(c);
}

static const glm_comm_ops local_ops = {
    .allreduce_sum = local_allreduce,
    .allgather = local_allgather,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .destroy = local_destroy,
};

glm_status glm_comm_local_create(glm_backend *be, glm_comm **out, glm_error *err)
{
    glm_comm *c = calloc(1, sizeof(*c));
    if (!c) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    c->ops = &local_ops;
    c->name = "local";
    c->rank = 0;
    c->size = 1;
    c->be = be;
    *out = c;
    return GLM_OK;
}

void glm_comm_destroy(glm_comm *c)
{
    if (c) c->ops->destroy(c);
}
