/* GLM-4V model configuration, read from the checkpoint's config.json. Sizes are never
 * hard-coded elsewhere: the golden test checkpoints are small. */
#ifndef GLM4V_CONFIG_H
#define GLM4V_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "kernels/tensor.h"

#define GLM_MAX_EOS 8

typedef struct glm_vision_config {
    int hidden_size;       /* hv: 1792 */
    int num_heads;         /* 16 */
    int num_layers;        /* num_hidden_layers: 63 */
    int intermediate_size; /* 15360 */
    int image_size;        /* 1120 */
    int patch_size;        /* 14 */
    int in_channels;       /* 3 */
    int num_positions;     /* 6401 = (image_size / patch_size)^2 + 1 */
    float layer_norm_eps;  /* 1e-6 */
    float scaling_factor;  /* 8 */
} glm_vision_config;

typedef struct glm_model_config {
    int num_layers;            /* 40 */
    int hidden_size;           /* 4096 */
    int ffn_hidden_size;       /* 13696 */
    int kv_channels;           /* head dim, 128 */
    int num_attention_heads;   /* 32 */
    int multi_query_group_num; /* KV heads, 2 */
    int padded_vocab_size;     /* 151552 */
    int seq_length;            /* 8192 */
    float rope_ratio;          /* rotary base = 10000 * rope_ratio */
    float layernorm_epsilon;   /* RMSNorm eps */
    bool add_qkv_bias;
    bool add_bias_linear;
    int boi_token_id;
    int eoi_token_id;
    int pad_token_id;
    int eos_token_ids[GLM_MAX_EOS];
    int n_eos_token_ids;
    glm_dtype torch_dtype; /* dtype the checkpoint declares */
    bool has_vision;
    glm_vision_config vision;
} glm_model_config;

/* Parses config.json text; source names the file in error messages. Checks every size is
 * positive and consistent (heads divide, image divisible by patch, positions match the grid). */
glm_status glm_config_parse(const char *json, size_t len, const char *source, glm_model_config *cfg,
                            glm_error *err);
/* Reads DIR/config.json. */
glm_status glm_config_load(const char *model_dir, glm_model_config *cfg, glm_error *err);

bool glm_config_is_eos(const glm_model_config *cfg, int token_id);
/* Vision grid side (image_size / patch_size) and image tokens after the 2x2 conv. */
int glm_config_vision_grid(const glm_model_config *cfg);
int glm_config_image_tokens(const glm_model_config *cfg); /* (grid/2)^2, 1600 for 1120 px */

#endif
