/* The peer-to-peer all-reduce for small messages inside one node (kernels/cuda/allreduce_p2p.cu),
 * used by the NCCL communicator (worker/comm_nccl.c) in place of ncclAllReduce where NCCL's fixed
 * cost dominates: setup over MPI and CUDA IPC, launch, failure check, teardown.
 *
 * Eligibility is decided by all ranks together, so that either every rank uses the p2p path or
 * none does: all ranks on one node, 2 to 8 of them, one GPU each, every pair with peer access,
 * and $GLM4V_P2P_ALLREDUCE not "0". Messages up to $GLM4V_P2P_MAX_BYTES (default 512 KiB, the
 * smallest value over the ranks) of bf16, f16 or f32 take this path. */
#ifndef GLM4V_COMM_P2P_H
#define GLM4V_COMM_P2P_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "kernels/tensor.h"
#include "worker/comm.h"

typedef struct glm_p2p glm_p2p;

#define GLM_P2P_DEFAULT_MAX_BYTES ((size_t)512 << 10)

/* Collective over the MPI communicator mpi_comm (an MPI_Comm passed by pointer; every rank of it
 * calls this). On success *out is the set-up state, or NULL when the group is not eligible or the
 * setup failed on some rank: then why_off holds the reason and the status is still GLM_OK, since
 * the caller simply keeps using NCCL. Only a failing MPI call is an error. A block waits
 * timeout_s for a peer before the all-reduce fails. */
glm_status glm_p2p_create(const void *mpi_comm, double timeout_s, glm_p2p **out, glm_error *why_off,
                          glm_error *err);

/* Whether data[count] of dtype goes through the p2p path. Depends only on arguments every rank
 * passes alike (count, dtype), never on a pointer, so all ranks take the same path. */
bool glm_p2p_takes(const glm_p2p *p2p, size_t count, glm_dtype dtype);

/* The largest message in bytes the p2p path takes. */
size_t glm_p2p_max_bytes(const glm_p2p *p2p);

/* Queues the all-reduce of data[count] (device memory) on stream (a cudaStream_t). Fails at once
 * if an earlier kernel reported a dead peer (e.g. during a graph replay nobody waited on). */
glm_status glm_p2p_allreduce(glm_p2p *p2p, void *data, size_t count, glm_dtype dtype, void *stream,
                             glm_error *err);

/* Once the stream has passed the all-reduce: GLM_ERR_COMM if a kernel gave up on a peer. */
glm_status glm_p2p_check(glm_p2p *p2p, glm_error *err);

/* Collective: waits at most the timeout for the peers to unmap this rank's memory before freeing
 * it. peers_ok false (after a communication failure) skips that wait and leaks the memory, as
 * freeing it under a peer's mapping is undefined. */
void glm_p2p_destroy(glm_p2p *p2p, bool peers_ok);

/* For tests and logs: the largest message (bytes) the NCCL communicator comm sends through the
 * p2p path, 0 when it does not use it; *why_off (may be NULL) then says why. Implemented in
 * comm_nccl.c. */
size_t glm_comm_nccl_p2p_max_bytes(const glm_comm *comm, const char **why_off);

#endif
