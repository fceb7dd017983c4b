/* Fused attention through cuDNN 9's backend graph API: the engine behind PyTorch's
 * SDPBackend.CUDNN_ATTENTION, called from C. Built only when CMake finds cuDNN (GLM4V_HAVE_CUDNN);
 * the CUDA backend falls back to its own kernels (attention_flash.cu) when it is absent, when the
 * library refuses a shape, or when GLM4V_ATTENTION=fa2 says so.
 *
 * Each distinct shape gets one execution plan, built on its first call (the heuristics' first
 * engine that finalizes) and cached in the handle; later calls only fill a variant pack. */
#ifndef GLM4V_CUDA_ATTENTION_CUDNN_H
#define GLM4V_CUDA_ATTENTION_CUDNN_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h"
#include "kernels/ops.h"

typedef struct cuda_cudnn cuda_cudnn;

/* Opens a cuDNN handle on stream (a cudaStream_t). GLM_ERR_UNSUPPORTED when the library is older
 * than 9.0 or the device has no fused attention engine (before sm_80); GLM_ERR_BACKEND when the
 * handle cannot be made. */
glm_status cuda_cudnn_create(void *stream, int cc_major, cuda_cudnn **out, glm_error *err);
void cuda_cudnn_destroy(cuda_cudnn *c);
/* "cudnn 9.14.0" (the library loaded at run time), for the backend's start line. */
const char *cuda_cudnn_describe(const cuda_cudnn *c);

/* Bidirectional attention of attention_full (ops.h) through cuDNN. Returns false, having done
 * nothing, when cuDNN has no plan for the shape (the caller runs its own kernel); true when it
 * ran or when it recorded a failure in be. */
bool cuda_cudnn_attention_full(glm_backend *be, cuda_cudnn *c, glm_tensor out, glm_tensor qkv,
                               int n_seqs, int seq_len, int n_heads, int head_dim, float scale);

/* Causal attention of ONE sequence whose keys are exactly its own query rows (a prefill with
 * no cached prefix): q, k and v heads read from the fused qkv rows [q_len, (nq + 2 nkv) * d],
 * query head n uses kv head n / (nq / nkv); out [q_len, nq * d]. Same return rule as above. */
bool cuda_cudnn_attention_causal(glm_backend *be, cuda_cudnn *c, void *out, const void *qkv,
                                 glm_dtype dtype, int q_len, int n_q_heads, int n_kv_heads,
                                 int head_dim, float scale);

#ifdef __cplusplus
}
#endif

#endif
