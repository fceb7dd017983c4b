/* One-shot peer-to-peer all-reduce over CUDA IPC memory (cuda/allreduce_p2p.cu): the kernel side
 * of the small-message path of the NCCL communicator (worker/comm_p2p.c sets the memory up). This
 * is the kernel's public face: plain C, no CUDA header, errors as glm_status; pointers are device
 * pointers and the stream a cudaStream_t passed as void *.
 *
 * Every rank owns one region in its own device memory, mapped into every peer's address space:
 *   [flags: GLM_P2P_BLOCKS x GLM_P2P_MAX_RANKS uint32, padded to GLM_P2P_FLAGS_BYTES]
 *   [data:  2 parities x size ranks x max_bytes]
 * Rank r writes its input into data[parity][r] of every region, raises flags[block][r] of every
 * peer, waits for every peer's flag in its own region, and sums data[parity][0..size-1] there. */
#ifndef GLM4V_ALLREDUCE_P2P_H
#define GLM4V_ALLREDUCE_P2P_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GLM_P2P_MAX_RANKS 8
#define GLM_P2P_BLOCKS 32 /* fixed: each block has its own flags and epoch counter */
#define GLM_P2P_FLAGS_BYTES 4096

/* Written by the kernel (host-mapped pinned memory) when a peer's flag did not come in time. */
typedef struct glm_p2p_failure {
    volatile uint32_t failed; /* 0 until a block gives up */
    volatile uint32_t peer;   /* the rank it waited for */
} glm_p2p_failure;

/* Everything the kernel needs, passed by value at launch (so a captured graph holds it). */
typedef struct glm_p2p_args {
    void *regions[GLM_P2P_MAX_RANKS]; /* every rank's region as mapped here (own one included) */
    uint32_t *epochs;                 /* [GLM_P2P_BLOCKS], this rank's device memory, not shared */
    glm_p2p_failure *failure;         /* device pointer of the host-mapped failure record */
    int rank;
    int size;
    size_t max_bytes;    /* per rank and parity; a multiple of 16 */
    uint64_t timeout_ns; /* how long a block waits for a peer's flag */
} glm_p2p_args;

/* Bytes of one rank's region. */
size_t glm_p2p_region_bytes(int size, size_t max_bytes);

/* data[count] (dtype: f32, bf16 or f16) summed over the ranks in place on stream, in
 * rank order in fp32, so every rank gets bit-identical results. count * element size must be at
 * most args->max_bytes; data needs no particular alignment. Every rank must make the same calls
 * in the same order (same count and dtype), as with any collective. */
glm_status glm_p2p_allreduce_launch(const glm_p2p_args *args, void *data, size_t count,
                                    glm_dtype dtype, void *stream, glm_error *err);

#ifdef __cplusplus
}
#endif

#endif
