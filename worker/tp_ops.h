/* What the decoder (decoder.c) and the vision tower (vision.c) share: row views of their scratch
 * tensors, and the all-reduce that sums a row-parallel GEMM's partial outputs over the
 * tensor-parallel group. */
#ifndef GLM4V_TP_OPS_H
#define GLM4V_TP_OPS_H

#include "kernels/tensor.h"
#include "worker/comm.h"

/* The first n rows of a scratch tensor: the part in use this step. */
static inline glm_tensor glm_rows(const glm_tensor *t, int64_t n)
{
    return glm_tensor_row_view(t, 0, n);
}

/* t summed over comm's ranks in place (nothing to do on one rank); a failure's message starts
 * with who (e.g. "decoder all-reduce"). */
glm_status glm_tp_allreduce(glm_comm *comm, glm_tensor t, const char *who, glm_error *err);

#endif
