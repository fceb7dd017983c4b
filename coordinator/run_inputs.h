/* glm4v-run's inputs and output: flags -> prompt ids and pixels; result -> text or JSON. */
#ifndef GLM4V_RUN_INPUTS_H
#define GLM4V_RUN_INPUTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/serve/run_once.h"
#include "worker/config.h"

/* Images one glm4v-run prompt may hold (the scheduler's GLM_SEQ_MAX_IMAGES). */
#define GLM_RUN_MAX_IMAGES GLM_SEQ_MAX_IMAGES

typedef struct glm_run_args {
    const char *input_ids; /* "1,2,3" */
    const char *prompt;
    const char *messages; /* JSON conversation (job_messages.h); images by {"image": K} */
    const char *system;
    /* --image / --pixels, repeatable, in prompt order (one kind per run) */
    const char *images[GLM_RUN_MAX_IMAGES];
    int n_images;
    const char *pixels[GLM_RUN_MAX_IMAGES]; /* FILE[:TENSOR], each [n, C, S, S] */
    int n_pixels;
    const char *dump_logits;
    const char *dump_pixels;
    const char *model_dir;
    int max_new_tokens;
    int prefill_chunk;
    bool ignore_eos;
    bool json;
} glm_run_args;

typedef struct glm_run_inputs {
    int32_t *ids;
    int n_ids;
    float *pixels;   /* [n_images, C, S, S] in prompt order, or NULL */
    int n_images;
    void *tokenizer; /* glm_tokenizer when the prompt was text (for decoding the answer) */
} glm_run_inputs;

/* Errors are input errors (exit code 2). */
glm_status glm_run_inputs_prepare(const glm_run_args *a, const glm_model_config *cfg,
                                  int image_rows, glm_run_inputs *in, glm_error *err);
void glm_run_inputs_free(glm_run_inputs *in);
/* Images the run's flags give (each --image one, each --pixels tensor its first dimension),
 * found without decoding anything, so every rank can size its model before rank 0 reads the
 * inputs. Errors are input errors. */
glm_status glm_run_count_images(const glm_run_args *a, int *n_images, glm_error *err);
void glm_run_print_result(const glm_run_args *a, const glm_run_inputs *in,
                          const glm_run_once_result *res, FILE *out);

#endif
