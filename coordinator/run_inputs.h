/* glm4v-run's inputs and output: flags -> prompt ids and pixels; result -> text or JSON. */
#ifndef GLM4V_RUN_INPUTS_H
#define GLM4V_RUN_INPUTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/serve/run_once.h"
#include "worker/config.h"

typedef struct glm_run_args {
    const char *input_ids; /* "1,2,3" */
    const char *prompt;
    const char *system;
    const char *image;
    const char *pixels; /* FILE[:TENSOR] */
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
    float *pixels;   /* [1, C, S, S] or NULL */
    void *tokenizer; /* glm_tokenizer when the prompt was text (for decoding the answer) */
} glm_run_inputs;

/* Errors are input errors (exit code 2). */
glm_status glm_run_inputs_prepare(const glm_run_args *a, const glm_model_config *cfg,
                                  int image_rows, glm_run_inputs *in, glm_error *err);
void glm_run_inputs_free(glm_run_inputs *in);
void glm_run_print_result(const glm_run_args *a, const glm_run_inputs *in,
                          const glm_run_once_result *res, FILE *out);

#endif
