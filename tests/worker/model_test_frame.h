/* What the whole-model tests under mpirun (test_golden, test_model_backend) share: the one-rank
 * fp32 CPU model they compare against, and the end of a run, where rank 0 releases the other
 * ranks (which serve its steps until then) and reports. */
#ifndef GLM4V_TESTS_MODEL_TEST_FRAME_H
#define GLM4V_TESTS_MODEL_TEST_FRAME_H

#include <stdbool.h>

#include "worker/rank_context.h"

/* Rank options of a test: this job's size as TP, one sequence of at most rows rows a step. */
void model_test_options(glm_rank_options *ro, const char *model_dir, const char *device, int rows);
/* Creates ctx from ro; false (the reason printed) when that failed on this rank. */
bool model_test_start(const glm_rank_options *ro, glm_rank_context *ctx);

typedef struct cpu_reference {
    glm_backend *be;
    glm_comm *comm;
    glm_model *model; /* NULL when it could not be built (the reason is printed) */
} cpu_reference;

/* A one-rank CPU model of ctx's checkpoint with options mo. */
glm_model *cpu_reference_create(glm_rank_context *ctx, const glm_model_options *mo,
                                cpu_reference *ref);
void cpu_reference_destroy(cpu_reference *ref);

/* One model's run of a prompt: the logits of every prompt position and 12 greedy ids. */
#define MODEL_TEST_GEN 12
typedef struct model_run {
    float *logits; /* [rows, vocab], malloc'd */
    int rows;
    int32_t ids[MODEL_TEST_GEN];
    int n_ids;
} model_run;

/* Runs ids (+ pixels) through m with prefill chunks of chunk rows, EOS ignored, the way
 * glm4v-run does: a one-sequence batch through the scheduler, the step driver and the device
 * sampler (coordinator/serve/run_once.c), every prompt row a logit row. */
glm_status model_test_generate(glm_model *m, const int32_t *ids, int n_ids, const float *pixels,
                               int chunk, model_run *out, glm_error *err);
/* The same with n_images images in pixels ([n_images, C, S, S], prompt order). */
glm_status model_test_generate_images(glm_model *m, const int32_t *ids, int n_ids,
                                      const float *pixels, int n_images, int chunk,
                                      model_run *out, glm_error *err);

/* Rank 0 (after its cases): shuts the other ranks' serving loops down and returns test_finish's
 * code for suite. Other ranks: serve rank 0's steps until then. Destroys ctx on every rank. */
int model_test_finish(glm_rank_context *ctx, const char *suite);

#endif
