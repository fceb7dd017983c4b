/* One prompt through the model, greedy, on the server's path: a one-sequence batch through the
 * scheduler and the step driver (step_driver.h), exactly as glm4v-serve runs each of its jobs.
 * glm4v-run and the whole-model tests (tests/worker/test_golden.c, test_model_backend.c) use it,
 * so the goldens check the path users run. */
#ifndef GLM4V_RUN_ONCE_H
#define GLM4V_RUN_ONCE_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/serve/scheduler.h"
#include "worker/model.h"

typedef struct glm_run_once_request {
    const int32_t *ids; /* the prompt ids (an image as <boi> <|endoftext|> <eoi>) */
    int n_ids;
    const float *pixels; /* [n_images, C, S, S] of its images in prompt order, NULL for text */
    int n_images;        /* images in pixels (0 with pixels set means 1) */
    int max_new_tokens;  /* 0: the prompt only (its logits) */
    bool ignore_eos;
    int prefill_chunk;  /* prompt rows per step (<= the model's max_step_tokens) */
    float *dump_logits; /* optional [spliced length, vocab]: the logits of every prompt row */
} glm_run_once_request;

typedef struct glm_run_once_result {
    int32_t *ids; /* generated ids (malloc'd), the eos id included when it stopped there */
    int n_ids;
    glm_seq_finish finish; /* GLM_SEQ_FINISHED_STOP or GLM_SEQ_FINISHED_LENGTH */
    int spliced_length;    /* rows the prompt takes in the KV cache */
    int n_images;
    double vision_ms, prefill_ms, decode_ms;
} glm_run_once_result;

/* Checks the request against the model without running anything: ids inside the vocabulary,
 * well-formed image markers, pixels present iff there are images (at most GLM_SEQ_MAX_IMAGES and
 * the model's images per vision batch; the caller's pixels must hold one per marker), the spliced
 * prompt plus max_new_tokens within seq_length and within the KV cache. GLM_ERR_INVALID_ARG,
 * GLM_ERR_UNSUPPORTED or GLM_ERR_LIMIT with a message; *spliced_length may be NULL. */
glm_status glm_run_once_validate(const glm_model *m, const glm_run_once_request *req,
                                 int *spliced_length, glm_error *err);

/* Rank 0 (the other ranks serve its plans in glm_worker_serve). */
glm_status glm_run_once(glm_model *m, const glm_run_once_request *req, glm_run_once_result *res,
                        glm_error *err);
void glm_run_once_result_free(glm_run_once_result *res);

#endif
