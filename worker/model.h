/* One GLM-4V model instance on one rank: its weight shard, KV cache, image-embedding pool and
 * scratch, all owned by the object (no globals: two models can live in one process).
 *
 * The data path: glm_model_encode_images runs the vision tower on new images into pool slots;
 * glm_model_step runs one decoder step described by a step plan (prompt chunks and decode tokens
 * of many sequences, image rows spliced from the pool) and returns logits on rank 0. */
#ifndef GLM4V_MODEL_H
#define GLM4V_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "worker/checkpoint.h"
#include "worker/comm.h"
#include "worker/config.h"
#include "worker/kv_cache.h"
#include "worker/shard_plan.h"
#include "worker/step_plan.h"

typedef struct glm_model_options {
    int max_step_tokens;       /* tokens per decoder step (prefill chunk + decode tokens) */
    int max_seqs;              /* sequences per step */
    int max_logit_rows;        /* rows of logits one step may return (0: max_seqs) */
    int max_images;            /* images per vision batch */
    int image_pool_slots;      /* image embeddings kept in backend memory (the vision cache) */
    int kv_block_size;         /* tokens per KV block (0: 16) */
    int kv_blocks;             /* explicit KV block count; 0: size from kv_memory_bytes */
    size_t kv_memory_bytes;    /* KV budget; 0: the backend's free memory minus a margin */
    size_t total_memory_bytes; /* whole-model budget (--gpu-memory): KV gets what weights,
                                  scratch and the image pool leave; 0: off */
    glm_weight_format weight_format;        /* the decoder's linear weights (--weights) */
    glm_weight_format vision_weight_format; /* the vision tower's (--vision-weights) */
    int use_random_weights;    /* fill weights from random_seed instead of the checkpoint */
    uint64_t random_seed;
} glm_model_options;

void glm_model_options_default(glm_model_options *opt);

typedef struct glm_model glm_model;

/* ck may be NULL when opt->use_random_weights is set. The model keeps be and comm (not owned). */
glm_status glm_model_create(const glm_model_config *cfg, const glm_model_options *opt,
                            const glm_checkpoint *ck, glm_backend *be, glm_comm *comm,
                            glm_model **out, glm_error *err);
void glm_model_destroy(glm_model *m);

const glm_model_config *glm_model_config_of(const glm_model *m);
const glm_shard_plan *glm_model_shard_plan(const glm_model *m);
int glm_model_kv_blocks(const glm_model *m);
int glm_model_kv_block_size(const glm_model *m);
int glm_model_max_blocks_per_seq(const glm_model *m);
/* Vectors one image occupies in the prompt after splicing: boi + patches + eoi (1602). */
int glm_model_image_rows(const glm_model *m);
/* Images one vision batch takes (options.max_images): a prompt's images are encoded together. */
int glm_model_max_images(const glm_model *m);
/* One line: weights / KV cache / scratch bytes on this rank. */
void glm_model_describe_memory(const glm_model *m, char *buf, size_t len);

/* Vision tower on n_images images (n <= max_images): pixels_host [n, C, S, S] float32 on rank 0
 * (ignored elsewhere; the model broadcasts them), results into pool slots slots[0..n). */
glm_status glm_model_encode_images(glm_model *m, const float *pixels_host, int n_images,
                                   const int32_t *slots, glm_error *err);
/* Copies pool slot's embeddings [image_rows, hidden] to host float32 (tests, debugging). */
glm_status glm_model_read_image_embeds(glm_model *m, int slot, float *out_host, glm_error *err);

/* What one decoder step hands back on rank 0, asked for by the caller: the logits of the plan's
 * logit rows on the host, and/or one token drawn per logit row by the backend's sampler (greedy,
 * temperature, top-k, top-p per row; only the ids and requested logprobs cross to the host).
 * The logits themselves live in the model's scratch and are gone at the next step: nothing of a
 * step is kept for a later call. Ranks other than 0 pass NULL. */
typedef struct glm_step_output {
    float *logits_host;              /* [n_logit_rows, padded_vocab_size] float32, or NULL */
    const glm_sample_params *sample; /* [n_logit_rows], or NULL: no draw */
    int32_t *ids_host;               /* [n_logit_rows] drawn ids; -1: the row had no finite logit */
    float *logprobs_host;            /* optional, GLM_SAMPLE_LOGPROBS_STRIDE floats per row */
    double vision_ms;                /* set by glm_step_execute: the step's vision tower, wall ms */
} glm_step_output;

/* One decoder step described by plan, its output as out asks (out may be NULL). */
glm_status glm_model_step(glm_model *m, const glm_step_plan *plan, glm_step_output *out,
                          glm_error *err);

#endif
