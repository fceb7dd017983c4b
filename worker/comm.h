/* The communicator a tensor-parallel group uses: all-reduce, all-gather, broadcast, barrier.
 *
 * Buffers are backend memory (host for the CPU backend, device for CUDA); the NCCL implementation
 * runs on the backend's stream, the MPI one on host buffers. Model code is the same for both.
 * Implementations: local (one rank, every call a no-op), MPI (CPU ranks), NCCL (GPU ranks,
 * bootstrapped by an MPI_Bcast of the ncclUniqueId). */
#ifndef GLM4V_COMM_H
#define GLM4V_COMM_H

#include <stddef.h>

#include "common/status.h"
#include "kernels/ops.h"

typedef struct glm_comm glm_comm;

typedef struct glm_comm_ops {
    /* data[count] (dtype) summed over the group, in place. */
    glm_status (*allreduce_sum)(glm_comm *comm, void *data, size_t count, glm_dtype dtype);
    /* dst[size * count] = concatenation of every rank's src[count], in rank order. */
    glm_status (*allgather)(glm_comm *comm, void *dst, const void *src, size_t count,
                            glm_dtype dtype);
    glm_status (*broadcast)(glm_comm *comm, void *data, size_t count, glm_dtype dtype, int root);
    glm_status (*barrier)(glm_comm *comm);
    void (*destroy)(glm_comm *comm);
} glm_comm_ops;

struct glm_comm {
    const glm_comm_ops *ops;
    const char *name; /* "local", "mpi", "nccl" */
    int rank;
    int size;
    glm_backend *be; /* whose memory and stream the buffers belong to */
    glm_error err;   /* message of the last failure */
    void *impl;
};

/* One rank, no communication. */
glm_status glm_comm_local_create(glm_backend *be, glm_comm **out, glm_error *err);
/* mpi_comm is an MPI_Comm passed as a pointer so this header needs no mpi.h. */
glm_status glm_comm_mpi_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                               glm_error *err);
glm_status glm_comm_nccl_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                                glm_error *err);
void glm_comm_destroy(glm_comm *comm);

#endif
