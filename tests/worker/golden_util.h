/* What the golden tests (test_golden, test_golden_multi) share: reading a golden tensor, the
 * worst difference against it, and the frame of the program (MPI, the model on every rank, the
 * golden file opened on rank 0, the cases, the report). */
#ifndef GLM4V_TESTS_GOLDEN_UTIL_H
#define GLM4V_TESTS_GOLDEN_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/dtype.h"
#include "worker/rank_context.h"
#include "worker/safetensors.h"

/* The golden tensor name converted to float32 (want GLM_F32) or int32 (GLM_I32, for ids stored
 * as int32 or int64); *numel its element count, *dim0 (may be NULL) its first dimension. NULL,
 * with the name printed, when it is missing. Caller frees. */
void *golden_tensor(glm_safetensors *g, const char *name, glm_dtype want, int64_t *numel,
                    int64_t *dim0);

/* One case of a golden file: <name>.input_ids, <name>.logits (every prompt position) and
 * <name>.greedy_ids. */
typedef struct golden_case {
    int32_t *ids;
    int64_t n_ids;
    float *logits;
    int64_t n_logits;
    int32_t *greedy;
    int64_t n_greedy;
} golden_case;
/* Loads the case's three tensors; false (the missing names printed) unless all are there.
 * golden_case_free it either way. */
bool golden_case_load(glm_safetensors *g, const char *name, golden_case *gc);
void golden_case_free(golden_case *gc);

/* The largest |a[i] - b[i]|, or NaN when any difference is NaN, so that it fails any bound. */
double golden_max_abs_diff(const float *a, const float *b, int64_t n);

typedef struct golden_test {
    const char *suite;    /* "golden": usage names test_<suite>, the report <suite> */
    const char *file;     /* in MODEL_DIR: "golden.safetensors" */
    int rows;             /* prompt rows per step of the model under test (model_test_options) */
    int images_per_batch; /* 0: the model's default; else its vision batch and image pool */
    /* Runs the cases on rank 0 against the open golden file; ro holds the model's options. */
    void (*run)(glm_rank_context *ctx, const glm_rank_options *ro, glm_safetensors *g,
                const char *model_dir);
} golden_test;

/* main() of a golden test: `test_<suite> MODEL_DIR`, one rank or under mpirun. Returns the exit
 * code: 0 when every CHECK passed, 1 on a failed check or start, 2 on a usage error. */
int golden_test_main(int argc, char **argv, const golden_test *t);

#endif
