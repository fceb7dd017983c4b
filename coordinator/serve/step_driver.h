/* The one way a step runs, for glm4v-serve and glm4v-run alike:
 *
 *   schedule (scheduler.c: a plan from the running and admitted sequences)
 *     -> execute the plan on every rank (worker/step_exec.c: broadcast, vision tower, decoder)
 *     -> draw one token per sequence on the backend's sampler (worker/model.c)
 *     -> commit (scheduler.c: append the tokens, finish sequences at eos or a limit)
 *
 * Sequences that asked for their prompt's logits (glm_sequence.prompt_logits) get them copied
 * on the way. The driver owns the step's buffers; the caller owns the model and the scheduler. */
#ifndef GLM4V_STEP_DRIVER_H
#define GLM4V_STEP_DRIVER_H

#include "coordinator/serve/scheduler.h"
#include "worker/model.h"

typedef struct glm_step_driver glm_step_driver;

/* What a step did, valid until the next step. */
typedef struct glm_step_report {
    int n_tokens, n_images;     /* the plan's size: both 0 when nothing could run */
    glm_sequence *const *seqs;  /* the step's sequences, in plan order */
    int n_seqs;
    const glm_logit_row *rows;  /* the step's logit rows */
    const int32_t *sampled;     /* [n_rows]: the drawn id of each row with draw set; -1: the row
                                   had no finite logit and its sequence failed */
    const float *logprobs;      /* [n_rows * GLM_SAMPLE_LOGPROBS_STRIDE] */
    int n_rows;
    double t_start_ms;          /* CLOCK_MONOTONIC when the plan was handed to the ranks */
    double step_ms, vision_ms;  /* the whole step, and its vision tower */
} glm_step_report;

/* Rows an image occupies in a prompt of this model (3 for a model without a vision tower: its
 * layout still has the boi / pad / eoi rows). */
int glm_step_driver_image_rows(const glm_model *m);

/* The scheduler settings the model fixes (KV blocks, image rows and pixels, context length, eos
 * ids); the caller adds its policy (batch, step budget, chunk, images per step, prefix cache). The
 * CLI and the server both start from it. */
glm_scheduler_config glm_step_driver_model_limits(const glm_model *m);

/* model: rank 0's model (the other ranks serve its plans in glm_worker_serve). */
glm_status glm_step_driver_create(glm_model *model, glm_scheduler *sched, glm_step_driver **out,
                                  glm_error *err);
void glm_step_driver_destroy(glm_step_driver *d);

/* One step: glm_step_driver_schedule, then, when the plan is not empty, glm_step_driver_run. */
glm_status glm_step_driver_step(glm_step_driver *d, glm_step_report *rep, glm_error *err);

/* The step in two halves, for a caller that acts between planning and running (the serve loop
 * stamps its requests and records the step for crash attribution): schedule fills rep's plan
 * part (sizes, sequences; the sequences' scheduled flag is set until run returns); run executes
 * it on every rank, draws, commits and fills the rest. On a failed run the scheduler's step is
 * undone (its sequences stay where they were) and the error returned: a failed collective leaves
 * the group unusable, so callers stop. */
glm_status glm_step_driver_schedule(glm_step_driver *d, glm_step_report *rep, glm_error *err);
glm_status glm_step_driver_run(glm_step_driver *d, glm_step_report *rep, glm_error *err);

#endif
