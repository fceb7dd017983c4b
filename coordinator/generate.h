/* Greedy generation of one request across the tensor-parallel group, driven from rank 0: the
 * prompt is prefilled in chunks through the paged KV cache, then decoded one token per step.
 * glm4v-run and the golden tests use it; the server's scheduler does the same for many
 * sequences at once. */
#ifndef GLM4V_GENERATE_H
#define GLM4V_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "worker/model.h"

typedef struct glm_generate_request {
    const int32_t *ids; /* the prompt ids (images as <boi> <|endoftext|> <eoi>) */
    int n_ids;
    const float *pixels; /* [n_images, C, S, S], or NULL for a text prompt */
    int max_new_tokens;
    bool ignore_eos;
    int prefill_chunk;  /* tokens per prefill step (<= the model's max_step_tokens) */
    float *dump_logits; /* optional [spliced length, vocab]: logits of every prompt position */
} glm_generate_request;

typedef enum glm_gen_finish {
    GLM_GEN_FINISH_LENGTH = 0,
    GLM_GEN_FINISH_STOP, /* an eos id was generated */
} glm_gen_finish;

typedef struct glm_generate_result {
    int32_t *ids; /* generated ids (malloc'd), the eos id included when it stopped */
    int n_ids;
    glm_gen_finish finish;
    int spliced_length; /* rows the prompt took in the KV cache */
    int n_images;
    double vision_ms, prefill_ms, decode_ms;
} glm_generate_result;

/* Checks the request against the model without running anything: ids inside the vocabulary,
 * well-formed image markers, pixels present iff there is an image, spliced prompt plus
 * max_new_tokens within seq_length. GLM_ERR_INVALID_ARG or GLM_ERR_LIMIT with a message. */
glm_status glm_generate_validate(const glm_model *m, const glm_generate_request *req,
                                 int *spliced_length, glm_error *err);

glm_status glm_generate(glm_model *m, const void *mpi_comm, const glm_generate_request *req,
                        glm_generate_result *res, glm_error *err);
void glm_generate_result_free(glm_generate_result *res);

#endif
