#include "worker/tp_ops.h"

glm_status glm_tp_allreduce(glm_comm *comm, glm_tensor t, const char *who, glm_error *err)
{
    if (comm->size == 1) return GLM_OK;
    glm_status st = comm->ops->allreduce_sum(comm, t.data, (size_t)glm_tensor_numel(&t), t.dtype);
    if (st) return glm_fail(err, st, "%s: %s", who, comm->err.msg);
    return GLM_OK;
}
