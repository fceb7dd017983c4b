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
    glm_weight qkv_w;         /* [(q + 2 kv) * head_dim, h], this rank's heads */
    glm_tensor qkv_b;         /* [(q + 2 kv) * head_dim] */
    glm_weight dense_w;       /* [h, q * head_dim], row-parallel */
    glm_tensor post_norm;     /* [h] */
    glm_weight h_to_4h_w;     /* [2 * ffn, h]: this rank's gate rows, then its up rows */
    glm_weight four_h_to_h_w; /* [h, ffn], row-parallel */
} glm_decoder_layer_weights;

typedef struct glm_vision_layer_weights {
    glm_tensor ln_in_w, ln_in_b;     /* [hv], applied after the attention all-reduce */
    glm_weight qkv_w;                /* [3 * heads * head_dim, hv] */
    glm_tensor qkv_b;                /* [3 * heads * head_dim] */
    glm_weight dense_w;              /* [hv, heads * head_dim] */
    glm_tensor dense_b;              /* [hv] (bias added by rank 0) */
    glm_weight fc1_w;                /* [mlp, hv] */
    glm_tensor fc1_b;                /* [mlp] */
    glm_weight fc2_w;                /* [hv, mlp] */
    glm_tensor fc2_b;                /* [hv] (bias added by rank 0) */
    glm_tensor ln_post_w, ln_post_b; /* [hv] */
} glm_vision_layer_weights;

typedef struct glm_weights {
    void *arena; /* one allocation in backend memory */
    size_t arena_bytes;
    /* decoder */
    glm_tensor embedding; /* [vocab shard, h] */
    glm_decoder_layer_weights *layers;
    glm_tensor final_norm; /* [h] */
    glm_weight output;     /* [vocab shard, h] */
    /* vision */
    glm_weight patch_w; /* [hv, C * p * p] */
    glm_tensor patch_b; /* [hv] */
    glm_tensor cls;     /* [1, hv] */
    glm_tensor pos;     /* [num_positions, hv] */
    glm_vision_layer_weights *vlayers;
    glm_weight conv_w;           /* [conv_out shard, hv * 4] */
    glm_tensor conv_b;           /* [conv_out shard] */
    glm_weight proj_w;           /* [h, conv_out shard] (linear_proj, row-parallel) */
    glm_tensor norm1_w, norm1_b; /* [h] */
    glm_weight gate_up_w;        /* [2 * proj_ffn shard, h]: gate rows then up rows */
    glm_weight down_w;           /* [h, proj_ffn shard] */
    glm_tensor boi, eoi;         /* [1, h] */
} glm_weights;

/* The format of every linear weight (glm_weight fields above) of the decoder (output layer
 * included) and of the vision tower (the 2x2 conv and the projector included; the patch conv
 * stays 16-bit). Norms, biases, the embedding table and boi/eoi stay in the backend's float type. */
typedef struct glm_weight_formats {
    glm_weight_format decoder;
    glm_weight_format vision;
} glm_weight_formats;

/* Loads this rank's shard from ck, checking every tensor's presence and full shape first.
 * Quantized formats are quantized here, tensor by tensor through a bounded host buffer (host
 * memory stays near STAGING_BYTES whatever the model's size). A value that is not finite in a
 * tensor to be quantized, or a format the backend cannot run: GLM_ERR_INVALID_ARG naming the
 * tensor or the device. */
glm_status glm_weights_load(glm_weights *w, const glm_model_config *cfg, const glm_shard_plan *plan,
                            const glm_checkpoint *ck, const glm_weight_formats *formats,
                            glm_backend *be, glm_error *err);
/* Same layout filled with seeded random values of the scale of real weights (benchmarks);
 * quantized formats are filled dense in chunks and quantized on the backend (its quantize op). */
glm_status glm_weights_random(glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, const glm_weight_formats *formats,
                              uint64_t seed, glm_backend *be, glm_error *err);
/* GLM_OK when be computes with f (caps.weight_formats); else GLM_ERR_INVALID_ARG and why. */
glm_status glm_weights_check_format(glm_backend *be, glm_weight_format f, glm_error *err);
void glm_weights_free(glm_weights *w, glm_backend *be);

#endif
