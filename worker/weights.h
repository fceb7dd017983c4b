/* A rank's weights: one arena in backend memory holding this rank's shard of every tensor,
 * sliced straight from the checkpoint's mapping (or filled with random values for benchmarks). */
#ifndef GLM4V_WEIGHTS_H
#define GLM4V_WEIGHTS_H

#include <stdint.h>

#include "kernels/ops.h"
#include "worker/checkpoint.h"
#include "worker/config.h"
#include "worker/shard_plan.h"

typedef struct glm_decoder_layer_weights {
    glm_tensor input_norm;    /* [h] */
    glm_tensor qkv_w;         /* [(q + 2 kv) * head_dim, h], this rank's heads */
    glm_tensor qkv_b;         /* [(q + 2 kv) * head_dim] */
    glm_tensor dense_w;       /* [h, q * head_dim], row-parallel */
    glm_tensor post_norm;     /* [h] */
    glm_tensor h_to_4h_w;     /* [2 * ffn, h]: this rank's gate rows, then its up rows */
    glm_tensor four_h_to_h_w; /* [h, ffn], row-parallel */
} glm_decoder_layer_weights;

typedef struct glm_vision_layer_weights {
    glm_tensor ln_in_w, ln_in_b;     /* [hv], applied after the attention all-reduce */
    glm_tensor qkv_w, qkv_b;         /* [3 * heads * head_dim, hv], [3 * heads * head_dim] */
    glm_tensor dense_w, dense_b;     /* [hv, heads * head_dim], [hv] (bias added by rank 0) */
    glm_tensor fc1_w, fc1_b;         /* [mlp, hv], [mlp] */
    glm_tensor fc2_w, fc2_b;         /* [hv, mlp], [hv] (bias added by rank 0) */
    glm_tensor ln_post_w, ln_post_b; /* [hv] */
} glm_vision_layer_weights;

typedef struct glm_weights {
    void *arena; /* one allocation in backend memory */
    size_t arena_bytes;
    /* decoder */
    glm_tensor embedding; /* [vocab shard, h] */
    glm_decoder_layer_weights *layers;
    glm_tensor final_norm; /* [h] */
    glm_tensor output;     /* [vocab shard, h] */
    /* vision */
    glm_tensor patch_w, patch_b; /* [hv, C * p * p], [hv] */
    glm_tensor cls;              /* [1, hv] */
    glm_tensor pos;              /* [num_positions, hv] */
    glm_vision_layer_weights *vlayers;
    glm_tensor conv_w, conv_b;   /* [conv_out shard, hv * 4], [conv_out shard] */
    glm_tensor proj_w;           /* [h, conv_out shard] (linear_proj, row-parallel) */
    glm_tensor norm1_w, norm1_b; /* [h] */
    glm_tensor gate_up_w;        /* [2 * proj_ffn shard, h]: gate rows then up rows */
    glm_tensor down_w;           /* [h, proj_ffn shard] */
    glm_tensor boi, eoi;         /* [1, h] */
} glm_weights;

/* Loads this rank's shard from ck, checking every tensor's presence and full shape first. */
glm_status glm_weights_load(glm_weights *w, const glm_model_config *cfg, const glm_shard_plan *plan,
                            const glm_checkpoint *ck, glm_backend *be, glm_error *err);
/* Same layout filled with seeded random values of the scale of real weights (benchmarks). */
glm_status glm_weights_random(glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, uint64_t seed, glm_backend *be,
                              glm_error *err);
void glm_weights_free(glm_weights *w, glm_backend *be);

#endif
