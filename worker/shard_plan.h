/* The tensor-parallel sharding plan: the one place that decides which slice of every weight a
 * rank owns. Everything else (weight loading, scratch sizes, the KV cache) reads these numbers.
 *
 * Decoder (Megatron style): query_key_value column-parallel by heads, dense row-parallel,
 * dense_h_to_4h column-parallel with each rank's gate and up halves kept paired, dense_4h_to_h
 * row-parallel, embedding and output_layer vocab-parallel, norms replicated. With fewer ranks than
 * KV heads each rank owns whole KV heads; with more, each KV head is replicated on tp / n_kv ranks
 * and a rank keeps the KV head its query heads read.
 * Vision: query_key_value by heads, dense row-parallel, fc1 column / fc2 row, the 2x2 conv column-
 * parallel over output channels feeding linear_proj row-parallel, gate/up column and dense_4h_to_h
 * row-parallel; patch embedding, cls, positions, boi/eoi and every LayerNorm replicated. */
#ifndef GLM4V_SHARD_PLAN_H
#define GLM4V_SHARD_PLAN_H

#include <stdbool.h>

#include "common/status.h"
#include "worker/config.h"

typedef struct glm_shard_plan {
    int tp_rank;
    int tp_size;
    /* decoder */
    int q_heads;       /* query heads on this rank */
    int q_head_first;  /* global index of the first */
    int kv_heads;      /* KV heads on this rank */
    int kv_head_first; /* global index of the first */
    int ffn;           /* SwiGLU width on this rank */
    int ffn_first;
    int vocab; /* embedding / output rows on this rank */
    int vocab_first;
    /* vision */
    int v_heads;
    int v_head_first;
    int v_mlp; /* fc1 rows */
    int v_mlp_first;
    int conv_out; /* 2x2 conv output channels (decoder hidden) */
    int conv_out_first;
    int proj_ffn; /* GLU projector width */
    int proj_ffn_first;
} glm_shard_plan;

/* Fails with GLM_ERR_INVALID_ARG and a message naming the dimension that cannot be split. */
glm_status glm_shard_plan_make(const glm_model_config *cfg, int tp_rank, int tp_size,
                               glm_shard_plan *plan, glm_error *err);
/* One human-readable paragraph (printed at start by rank 0). */
void glm_shard_plan_describe(const glm_model_config *cfg, const glm_shard_plan *plan, char *buf,
                             size_t len);

#endif
