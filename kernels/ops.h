/* The op interface: everything the GLM-4V forward pass asks of a compute backend.
 *
 * Model code (worker/) calls only the glm_op_* wrappers below; each backend (kernels/cpu/,
 * kernels/cuda/) fills one glm_backend_ops table. Tensors point into backend memory (device
 * memory for CUDA), so model code never dereferences tensor data.
 *
 * Errors are sticky, as with CUDA's own launch errors: compute ops return nothing, and the first
 * failure (a bad shape, a failed launch) is recorded in the backend and turns every later op into
 * a no-op until glm_backend_take_error() is called. Model code checks once per forward pass. This
 * keeps the forward pass readable top to bottom and matches asynchronous GPU execution, where a
 * fault surfaces later than the launch that caused it.
 *
 * Conventions for all compute ops:
 *  - Tensors are contiguous row-major. "[M, K]" means M rows of K.
 *  - Float tensors are of the backend's act_dtype (activations) or weight_dtype (weights);
 *    index tensors are GLM_I32. The two residual streams (decoder and vision tower) are of
 *    resid_dtype: the ops that read or write them (embedding, copy_rows, rmsnorm, add_rmsnorm,
 *    add_layernorm, vision_embed) take either float dtype there.
 *  - Accumulation is in float32 on every backend.
 *  - Linear weights are [out, in] as in the Hugging Face checkpoint: y = x W^T + b.
 *  - Outputs may not alias inputs unless the op says so.
 */
#ifndef GLM4V_OPS_H
#define GLM4V_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/tensor.h"
#include "kernels/weight_format.h"

typedef enum glm_activation {
    GLM_ACT_NONE = 0,
    GLM_ACT_GELU, /* exact erf form: 0.5 x (1 + erf(x / sqrt 2)) */
} glm_activation;

/* Describes one varlen batch for decoder attention over the paged KV cache.
 *
 * Sequence s contributes query rows q_start[s] .. q_start[s+1]-1 of the step. Those queries are
 * the LAST q_len = q_start[s+1]-q_start[s] positions of its ctx_len[s] cached keys (their K/V were
 * stored by glm_op_kv_store earlier in the same step), so query i of sequence s attends keys
 * 0 .. ctx_len[s] - q_len + i (causal). A prefill chunk has q_len > 1; a decode step has q_len 1.
 * Key j of sequence s lives in cache slot block_table[s * max_blocks_per_seq + j / block_size] *
 * block_size + j % block_size. */
typedef struct glm_attn_batch {
    int n_seqs;
    int n_tokens;           /* q_start[n_seqs] */
    int block_size;         /* tokens per KV block */
    int max_blocks_per_seq; /* row stride of block_table */
    int max_q_len;          /* upper bounds known on the host, for launch sizing; a captured */
    int max_ctx_len;        /* graph passes capacities here so replays stay valid */
    /* backend memory, GLM_I32 */
    const int32_t *q_start;     /* [n_seqs + 1] */
    const int32_t *ctx_len;     /* [n_seqs] */
    const int32_t *block_table; /* [n_seqs * max_blocks_per_seq] */
    /* the same q_start and ctx_len on the host, for backends that plan work on the CPU */
    const int32_t *q_start_host;
    const int32_t *ctx_len_host;
} glm_attn_batch;

/* Per-row capacity of the logprobs output of sample: row r starts at r *
 * GLM_SAMPLE_LOGPROBS_STRIDE and holds [chosen logprob, id0, lp0, id1, lp1, ...]; pairs past the
 * row's n_logprobs hold (-1, -inf); ids are stored as float (exact below 2^24). Logprobs are the
 * log-softmax of the raw, unscaled logits. */
#define GLM_SAMPLE_MAX_LOGPROBS 20
#define GLM_SAMPLE_LOGPROBS_STRIDE (1 + 2 * GLM_SAMPLE_MAX_LOGPROBS)

/* Sampling parameters of one row of logits (see glm_op_sample). */
typedef struct glm_sample_params {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1: off */
    uint64_t seed;     /* per request; the op hashes (seed, step) into the draw, so callers that
                          batch rows of different requests pass each row's own token index by
                          folding it into seed and step 0 (see kernels/sample_rng.h) */
    int n_logprobs;    /* top-n logprobs to return, 0: none */
} glm_sample_params;

/* ---- capabilities: what callers ask instead of a backend's name (backend_registry.h) ---- */

/* The communicators (worker/comm.h) a backend pairs with: bits of glm_backend_caps.collectives. */
enum {
    GLM_COLLECTIVE_LOCAL = 1u << 0, /* one rank, no transport */
    GLM_COLLECTIVE_MPI = 1u << 1,   /* host buffers over MPI */
    GLM_COLLECTIVE_NCCL = 1u << 2,  /* device buffers on the backend's stream */
};

/* Bit 0 of glm_backend_caps.weight_formats: 16-bit float weights in the storage type. The other
 * bits are the quantized formats of kernels/weight_format.h. */
#define GLM_WEIGHT_FORMATS_16BIT (1u << 0)

typedef struct glm_backend_caps {
    bool graphs;             /* graph_begin / end / replay record and replay op sequences */
    bool device_sampler;     /* the sample op: logits need not leave backend memory */
    uint32_t storage_types;  /* (1u << dtype) for each 16-bit type set_storage accepts; 0: the
                                backend stores f32 only */
    uint32_t weight_formats; /* the linear weight formats it computes with */
    uint32_t collectives;    /* GLM_COLLECTIVE_* bits */
} glm_backend_caps;

typedef struct glm_backend glm_backend;

typedef struct glm_backend_ops {
    /* ---- memory ---- */
    glm_status (*alloc)(glm_backend *be, size_t bytes, void **out);
    void (*free)(glm_backend *be, void *ptr);
    /* Host -> backend. The host buffer may be reused as soon as the call returns. */
    void (*upload)(glm_backend *be, void *dst, const void *src_host, size_t bytes);
    /* Backend -> host; waits for all queued work first. */
    void (*download)(glm_backend *be, void *dst_host, const void *src, size_t bytes);
    void (*copy)(glm_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(glm_backend *be, void *dst, size_t bytes);
    void (*synchronize)(glm_backend *be);
    /* Free bytes of backend memory (for sizing the KV cache); SIZE_MAX when unbounded. */
    size_t (*free_memory)(glm_backend *be);
    /* The backend's stream (cudaStream_t) for communicators; NULL on the CPU. */
    void *(*native_stream)(glm_backend *be);
    void (*destroy)(glm_backend *be);

    /* ---- dense math ---- */
    /* y[M,N] = act(x[M,K] w[N,K]^T + bias[N]); bias may be NULL. w is in any format of
     * caps.weight_formats, with the semantics of kernels/weight_format.h. y is of the activation
     * dtype, or f32 (the output layer's logits: accumulated and written in f32). */
    void (*linear)(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w,
                   const glm_tensor *bias, glm_activation act);
    /* Quantizes the dense rows src [n, w.cols] (the weight dtype or f32, backend memory) into
     * rows [row0, row0 + n) of the quantized weight w, as glm_quantize_rows does on the host
     * (random weights for benchmarks; the loader quantizes on the host). Optional. */
    void (*quantize)(glm_backend *be, glm_weight w, int64_t row0, glm_tensor src);
    /* Why this backend cannot compute with format f (GLM_ERR_UNSUPPORTED and a message naming
     * the device, e.g. fp8 on a GPU older than sm_89); GLM_OK when it can. Optional: without it,
     * caps.weight_formats alone decides. */
    glm_status (*check_weight_format)(glm_backend *be, glm_weight_format f, glm_error *err);
    /* y = a + b, elementwise, same shapes; y may alias a or b. */
    void (*add)(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b);
    /* x *= s in place. */
    void (*scale)(glm_backend *be, glm_tensor x, float s);
    /* y = gelu(x), exact erf form; y may alias x. */
    void (*gelu)(glm_backend *be, glm_tensor y, glm_tensor x);
    /* x is [M, 2F] = [a | b]; y[M, F] = silu(a) * b. */
    void (*silu_mul)(glm_backend *be, glm_tensor y, glm_tensor x);

    /* ---- normalization (row-wise over the last dim, float32 statistics) ---- */
    /* y = w * x / sqrt(mean(x^2) + eps); y may alias x. */
    void (*rmsnorm)(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps);
    /* Fused residual: resid += delta; y = rmsnorm(resid). */
    void (*add_rmsnorm)(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                        glm_tensor w, float eps);
    /* Post-branch LayerNorm residual (vision tower): resid += layernorm(delta) * w + b; y = resid
     * in y's dtype (the next GEMM's input). y may alias delta. */
    void (*add_layernorm)(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                          glm_tensor w, glm_tensor b, float eps);
    /* y = (x - mean) / sqrt(var + eps) * w + b; y may alias x. */
    void (*layernorm)(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                      float eps);

    /* ---- fp8 activations: the fp8 tower's fused path (optional: NULL on a backend without it;
     * the model then lets linear quantize its input) ----
     * A quantized activation matrix q is a glm_weight of format GLM_WEIGHT_FP8: q.data [rows,
     * cols] E4M3 codes and q.scales [rows], each row quantized as glm_fp8_quantize_activation_row
     * does (kernels/weight_format.h: scale amax / 448, codes e4m3_satfinite(v * 448 / amax); an
     * all-zero row has scale 1), from the values as stored in the source's dtype. So linear_q8 on
     * such a q gives what linear gives on the unquantized rows. */
    /* add_layernorm, and q = y's rows quantized (y as stored). */
    void (*add_layernorm_q8)(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                             glm_tensor w, glm_tensor b, float eps, glm_weight q);
    /* q = the rows of gelu(x) (exact erf form, rounded to x's dtype) quantized. */
    void (*gelu_q8)(glm_backend *be, glm_weight q, glm_tensor x);
    /* q = the rows of x quantized. */
    void (*quantize_act)(glm_backend *be, glm_weight q, glm_tensor x);
    /* y[M,N] = act(dequant(q)[M,K] dequant(w)[N,K]^T + bias[N]) for an fp8 weight w: linear's
     * fp8 product on rows already quantized. y of the activation dtype. */
    void (*linear_q8)(glm_backend *be, glm_tensor y, glm_weight q, glm_weight w,
                      const glm_tensor *bias, glm_activation act);

    /* ---- embedding and row movement ---- */
    /* y[T, H] = table[ids[t] - vocab_start] for ids inside [vocab_start, vocab_start + rows of
     * table), zero rows otherwise (other ranks' vocab shards, and image slots marked with -1). */
    void (*embedding)(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                      int64_t vocab_start);
    /* dst rows [dst_row, dst_row + n) = src rows [src_row, src_row + n); same row width; the
     * values are converted when the float dtypes differ. */
    void (*copy_rows)(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                      int64_t src_row, int64_t n_rows);
    /* y[n, C] = x[idx[n], C]. */
    void (*gather_rows)(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx);

    /* ---- decoder attention ---- */
    /* GLM rotary in place on the q and k heads of a fused qkv row [T, (nq + 2 nkv) * head_dim]
     * laid out [q heads | k heads | v heads]: within each head the first rope_dim dims rotate as
     * interleaved pairs (d[2i], d[2i+1]) by angle pos[t] * theta^(-2i / rope_dim). */
    void (*rope)(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
                 int n_kv_heads, int head_dim, int rope_dim, float theta);
    /* Store the k and v heads of each qkv row t into cache slot slots[t] of k_cache / v_cache,
     * each [n_slots, n_kv_heads * head_dim]. */
    void (*kv_store)(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                     glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim);
    /* rope then kv_store, as one pass over the rows (optional: NULL runs the two ops; use
     * glm_op_rope_kv_store). Results equal those of the two ops. */
    void (*rope_kv_store)(glm_backend *be, glm_tensor qkv, glm_tensor positions, glm_tensor k_cache,
                          glm_tensor v_cache, glm_tensor slots, int n_q_heads, int n_kv_heads,
                          int head_dim, int rope_dim, float theta);
    /* out[T, nq * head_dim]: causal attention of the q heads of qkv over the paged cache as
     * described by batch; query head n reads kv head n / (nq / nkv). */
    void (*attention_paged)(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                            glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                            int n_kv_heads, int head_dim, float scale);

    /* ---- vision ---- */
    /* Bidirectional attention within each of n_seqs sequences of seq_len rows of
     * qkv [n_seqs * seq_len, 3 * n_heads * head_dim] laid out [q heads | k heads | v heads];
     * out [n_seqs * seq_len, n_heads * head_dim]. */
    void (*attention_full)(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs, int seq_len,
                           int n_heads, int head_dim, float scale);
    /* im2col for the patch conv: pixels [n, C, S, S] -> y [n * g * g, C * p * p] with g = S / p,
     * patches row-major over the grid, columns ordered (c, ky, kx) like the conv weight. */
    void (*patchify)(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch);
    /* im2col for the 2x2 stride-2 conv over token rows: x [n * g * g, C] (grid row-major) ->
     * y [n * (g/2) * (g/2), C * 4], columns ordered (c, ky, kx). */
    void (*im2col_2x2)(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid);
    /* y [n, 1 + P, C]: y[i, 0] = cls + pos[0], y[i, 1 + j] = patches[i * P + j] + pos[1 + j]. */
    void (*vision_embed)(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                         glm_tensor pos, int n_images);

    /* ---- weight initialisation ---- */
    /* Fills t with mean + std * N(0,1) from a counter-based generator keyed by seed, so a full-size
     * model can be made on the device in seconds without a checkpoint (benchmarks). std == 0 gives
     * a constant. */
    void (*fill_normal)(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std);

    /* ---- sampling (optional: NULL means the caller samples on the host) ---- */
    /* For each row r of logits [R, V]: ids[r] (GLM_I32, host memory) drawn per params[r]; when
     * logprobs is non-NULL it receives, per row, the chosen token's logprob followed by
     * params[r].n_logprobs (id, logprob) pairs, host memory. A row with no finite maximum (all
     * NaN, or a +inf: an activation overflowed) gets id -1 and draws nothing; the caller fails
     * that row's sequence, the other rows are unaffected. */
    void (*sample)(glm_backend *be, int32_t *ids_host, float *logprobs_host, glm_tensor logits,
                   const glm_sample_params *params, int n_rows, uint64_t step);

    /* ---- storage (optional: NULL on backends that only store f32) ---- */
    /* Chooses the 16-bit type weights, activations and the KV cache are stored in (GLM_BF16 or
     * GLM_F16); call before anything is allocated. Use glm_backend_set_storage. */
    glm_status (*set_storage)(glm_backend *be, glm_dtype storage, glm_error *err);

    /* ---- graphs (optional: NULL on backends that have none) ---- */
    /* Capture the ops issued between begin and end under key; replay runs them again with the
     * same pointers. Returns false (and captures nothing) when unsupported. */
    bool (*graph_begin)(glm_backend *be, int key);
    void (*graph_end)(glm_backend *be, int key);
    bool (*graph_replay)(glm_backend *be, int key);
    /* Destroys the graph captured under key (no-op when there is none). Models drop theirs when
     * they are destroyed: a live graph holding NCCL collectives makes ncclCommFinalize wait. */
    void (*graph_drop)(glm_backend *be, int key);
} glm_backend_ops;

struct glm_backend {
    const glm_backend_ops *ops;
    const char *name;       /* its registry name: "cpu", "cpu-bf16", "cuda" (logs only) */
    glm_backend_caps caps;  /* the registry entry's, less what is off at run time */
    glm_dtype weight_dtype; /* weights are converted to this when loaded */
    glm_dtype act_dtype;    /* activations and the KV cache */
    glm_dtype resid_dtype;  /* the residual streams: F32 everywhere, so that rounding does not
                               accumulate over the layers (a bf16 stream costs accuracy) */
    bool host_memory;       /* backend memory is plain host memory (loader may write into it) */
    glm_status status;      /* sticky: first failure of a compute op */
    glm_error err;
    void *impl;
};

/* Backend constructors. device_index selects the GPU (the MPI local rank). */
glm_status glm_backend_cpu_create(int n_threads, glm_backend **out, glm_error *err);
glm_status glm_backend_cuda_create(int device_index, glm_backend **out, glm_error *err);
/* The CPU backend rounding to bf16 what the CUDA backend stores in bf16 (kernels/cpu/
 * bf16_emulation.c): the CUDA path's numerics without a GPU. */
glm_status glm_backend_cpu_bf16_create(int n_threads, glm_backend **out, glm_error *err);
glm_status glm_backend_create(const char *name, int device_index, glm_backend **out,
                              glm_error *err);
void glm_backend_destroy(glm_backend *be);
/* --dtype: the storage type of a 16-bit backend (cuda; cpu-bf16 emulates the rounding). fp16
 * keeps 3 more significand bits than bf16 (8x smaller rounding error) at the same tensor-core
 * rate, but holds only |v| <= 65504: the loader refuses weights outside that range, and the
 * sampler gives a row whose logits are not finite id -1 (the server fails that job alone).
 * GLM_ERR_UNSUPPORTED on an f32 backend. */
glm_status glm_backend_set_storage(glm_backend *be, glm_dtype storage, glm_error *err);
/* --dtype's words, NULL-terminated: "bf16", "f16". */
extern const char *const glm_storage_names[];
/* "bf16" / "f16" -> GLM_BF16 / GLM_F16; false for anything else. */
bool glm_storage_parse(const char *name, glm_dtype *out);

/* Records the first op failure; later ops see be->status != GLM_OK and do nothing. */
void glm_backend_fail(glm_backend *be, glm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Returns the sticky status (copying its message into err) and clears it. */
glm_status glm_backend_take_error(glm_backend *be, glm_error *err);

/* ---- wrappers the model calls: skip work once the backend has failed ----
 * Note: this covers download too, so a caller must check the status (glm_backend_take_error)
 * before trusting host data a download was meant to fill. */
#define GLM_OP(be, name, ...)                                                                      \
    do {                                                                                           \
        if ((be)->status == GLM_OK) (be)->ops->name((be), __VA_ARGS__);                            \
    } while (0)

#define glm_op_linear(be, ...) GLM_OP(be, linear, __VA_ARGS__)
#define glm_op_quantize(be, ...) GLM_OP(be, quantize, __VA_ARGS__)
#define glm_op_add(be, ...) GLM_OP(be, add, __VA_ARGS__)
#define glm_op_scale(be, ...) GLM_OP(be, scale, __VA_ARGS__)
#define glm_op_gelu(be, ...) GLM_OP(be, gelu, __VA_ARGS__)
#define glm_op_silu_mul(be, ...) GLM_OP(be, silu_mul, __VA_ARGS__)
#define glm_op_rmsnorm(be, ...) GLM_OP(be, rmsnorm, __VA_ARGS__)
#define glm_op_add_rmsnorm(be, ...) GLM_OP(be, add_rmsnorm, __VA_ARGS__)
#define glm_op_add_layernorm(be, ...) GLM_OP(be, add_layernorm, __VA_ARGS__)
#define glm_op_layernorm(be, ...) GLM_OP(be, layernorm, __VA_ARGS__)
#define glm_op_add_layernorm_q8(be, ...) GLM_OP(be, add_layernorm_q8, __VA_ARGS__)
#define glm_op_gelu_q8(be, ...) GLM_OP(be, gelu_q8, __VA_ARGS__)
#define glm_op_quantize_act(be, ...) GLM_OP(be, quantize_act, __VA_ARGS__)
#define glm_op_linear_q8(be, ...) GLM_OP(be, linear_q8, __VA_ARGS__)
#define glm_op_embedding(be, ...) GLM_OP(be, embedding, __VA_ARGS__)
#define glm_op_copy_rows(be, ...) GLM_OP(be, copy_rows, __VA_ARGS__)
#define glm_op_gather_rows(be, ...) GLM_OP(be, gather_rows, __VA_ARGS__)
#define glm_op_rope(be, ...) GLM_OP(be, rope, __VA_ARGS__)
#define glm_op_kv_store(be, ...) GLM_OP(be, kv_store, __VA_ARGS__)
/* The fused op where the backend has it, else rope and kv_store. */
void glm_op_rope_kv_store(glm_backend *be, glm_tensor qkv, glm_tensor positions, glm_tensor k_cache,
                          glm_tensor v_cache, glm_tensor slots, int n_q_heads, int n_kv_heads,
                          int head_dim, int rope_dim, float theta);
#define glm_op_attention_paged(be, ...) GLM_OP(be, attention_paged, __VA_ARGS__)
#define glm_op_attention_full(be, ...) GLM_OP(be, attention_full, __VA_ARGS__)
#define glm_op_patchify(be, ...) GLM_OP(be, patchify, __VA_ARGS__)
#define glm_op_im2col_2x2(be, ...) GLM_OP(be, im2col_2x2, __VA_ARGS__)
#define glm_op_vision_embed(be, ...) GLM_OP(be, vision_embed, __VA_ARGS__)
#define glm_op_sample(be, ...) GLM_OP(be, sample, __VA_ARGS__)
#define glm_op_fill_normal(be, ...) GLM_OP(be, fill_normal, __VA_ARGS__)
#define glm_op_upload(be, ...) GLM_OP(be, upload, __VA_ARGS__)
#define glm_op_download(be, ...) GLM_OP(be, download, __VA_ARGS__)
#define glm_op_copy(be, ...) GLM_OP(be, copy, __VA_ARGS__)
#define glm_op_zero(be, ...) GLM_OP(be, zero, __VA_ARGS__)

#endif
