/* The model object's layout, shared by model.c (lifetime), vision.c and decoder.c (forward). */
#ifndef GLM4V_MODEL_INTERNAL_H
#define GLM4V_MODEL_INTERNAL_H

#include "worker/model.h"
#include "worker/weights.h"

/* Decoder activations for up to max_step_tokens rows, plus the step's index arrays. */
typedef struct decoder_scratch {
    glm_tensor resid;       /* [T, h] residual stream (resid_dtype) */
    glm_tensor hnorm;       /* [T, h] normalized input of the next GEMM */
    glm_tensor qkv;         /* [T, (q + 2 kv) * head_dim] */
    glm_tensor attn;        /* [T, q * head_dim] */
    glm_tensor delta;       /* [T, h] row-parallel GEMM output, all-reduced */
    glm_tensor gate_up;     /* [T, 2 * ffn] */
    glm_tensor act;         /* [T, ffn] */
    glm_tensor logit_in;    /* [max_logit_rows, h] */
    glm_tensor logits;      /* [max_logit_rows, vocab shard] */
    glm_tensor logits_all;  /* [tp * max_logit_rows, vocab shard] gathered */
    glm_tensor logits_full; /* [max_logit_rows, vocab] rank-major columns reassembled */
    glm_tensor reorder;     /* I32 [tp * max_logit_rows]: row order for the reassembly */
    /* I32 index arrays of the current step */
    glm_tensor ids, positions, slots, logit_rows;
    glm_tensor q_start, ctx_len, block_table;
} decoder_scratch;

typedef struct vision_scratch {
    glm_tensor pixels;    /* [n, C, S, S] */
    glm_tensor patches;   /* [n * g * g, C * p * p] */
    glm_tensor patch_out; /* [n * g * g, hv] */
    glm_tensor x;         /* [n * (1 + g * g), hv] residual stream (resid_dtype) */
    glm_tensor qkv;       /* [rows, 3 * heads * head_dim] (this rank's heads) */
    glm_tensor attn;      /* [rows, heads * head_dim] */
    glm_tensor delta;     /* [rows, hv]: a branch's output, then x in the activation dtype */
    glm_tensor mlp;       /* [rows, mlp shard] */
    glm_tensor tokens;    /* [n * g * g, hv] without cls */
    glm_tensor cols;      /* [n * (g/2)^2, 4 * hv] */
    glm_tensor conv;      /* [n * (g/2)^2, conv_out shard] */
    glm_tensor proj;      /* [n * (g/2)^2, h] */
    glm_tensor gate_up;   /* [n * (g/2)^2, 2 * proj_ffn shard] */
    glm_tensor act;       /* [n * (g/2)^2, proj_ffn shard] */
    /* fp8 tower only (--vision-weights fp8; else no memory): the quantized GEMM inputs as E4M3
     * codes [rows, cols] (bytes, in an f32 carve) with one f32 scale per row (vision.c) */
    glm_tensor xq, xq_scales; /* x's rows: the qkv and fc1 input */
    glm_tensor q8, q8_scales; /* the attention output's rows, then gelu(fc1)'s */
} vision_scratch;

struct glm_model {
    glm_model_config cfg;
    glm_model_options opt;
    glm_shard_plan plan;
    glm_backend *be;
    glm_comm *comm;
    glm_weights w;
    glm_kv_cache kv;
    int max_blocks_per_seq;
    int image_rows;        /* 2 + (g/2)^2 */
    glm_tensor image_pool; /* [image_pool_slots * image_rows, h] */
    void *pool_memory;
    void *scratch_memory;
    size_t scratch_bytes;
    decoder_scratch ds;
    vision_scratch vs;
    void *graphs; /* decoder.c's CUDA-graph state, created on first use */
    /* host staging for the step's I32 arrays */
    int32_t *host_reorder;
};

glm_status glm_vision_forward(glm_model *m, int n_images, const int32_t *slots, glm_error *err);
void glm_decoder_graphs_free(glm_model *m);
/* One decoder step; *logits receives the step's logit rows [n_logit_rows, vocab] in backend
 * memory (valid until the next step; empty when the plan asks for none), and rank 0 copies them
 * to logits_host as float32 when it is not NULL. */
glm_status glm_decoder_forward(glm_model *m, const glm_step_plan *plan, float *logits_host,
                               glm_tensor *logits, glm_error *err);

#endif
