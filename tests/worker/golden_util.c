/* Shared parts of the golden tests (see golden_util.h). */
#include "tests/worker/golden_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/testutil.h"
#include "tests/worker/model_test_frame.h"

void *golden_tensor(glm_safetensors *g, const char *name, glm_dtype want, int64_t *numel,
                    int64_t *dim0)
{
    const glm_st_tensor *t = glm_safetensors_find(g, name);
    if (!t) {
        fprintf(stderr, "golden tensor %s missing\n", name);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    *numel = n;
    if (dim0) *dim0 = t->shape[0];
    void *out = malloc((size_t)(n > 0 ? n : 1) * 4);
    if (!out) return NULL;
    if (want == GLM_I32) {
        for (int64_t i = 0; i < n; i++)
            ((int32_t *)out)[i] = t->dtype == GLM_I64 ? (int32_t)((const int64_t *)t->data)[i]
                                                      : ((const int32_t *)t->data)[i];
    } else {
        glm_convert(out, GLM_F32, t->data, t->dtype, (size_t)n);
    }
    return out;
}

bool golden_case_load(glm_safetensors *g, const char *name, golden_case *gc)
{
    char key[160];
    *gc = (golden_case){0};
    snprintf(key, sizeof(key), "%s.input_ids", name);
    gc->ids = golden_tensor(g, key, GLM_I32, &gc->n_ids, NULL);
    snprintf(key, sizeof(key), "%s.logits", name);
    gc->logits = golden_tensor(g, key, GLM_F32, &gc->n_logits, NULL);
    snprintf(key, sizeof(key), "%s.greedy_ids", name);
    gc->greedy = golden_tensor(g, key, GLM_I32, &gc->n_greedy, NULL);
    return gc->ids && gc->logits && gc->greedy;
}

void golden_case_free(golden_case *gc)
{
    free(gc->ids);
    free(gc->logits);
    free(gc->greedy);
    *gc = (golden_case){0};
}

double golden_max_abs_diff(const float *a, const float *b, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return d; /* a row never written (NaN-filled) or a broken one */
        if (d > worst) worst = d;
    }
    return worst;
}

int golden_test_main(int argc, char **argv, const golden_test *t)
{
    MPI_Init(&argc, &argv);
    if (argc != 2) {
        fprintf(stderr, "usage: test_%s MODEL_DIR\n", t->suite);
        MPI_Finalize();
        return 2;
    }
    glm_rank_options ro;
    model_test_options(&ro, argv[1], "cpu", t->rows);
    if (t->images_per_batch > 0) {
        ro.model.max_images = t->images_per_batch;
        ro.model.image_pool_slots = t->images_per_batch;
    }
    glm_rank_context ctx;
    if (!model_test_start(&ro, &ctx)) {
        MPI_Finalize();
        return 1;
    }
    if (ctx.rank == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", argv[1], t->file);
        glm_safetensors *g = NULL;
        glm_error err = {0};
        CHECK_MSG(glm_safetensors_open(path, &g, &err) == GLM_OK, "%s", err.msg);
        if (g) t->run(&ctx, &ro, g, argv[1]);
        glm_safetensors_close(g);
    }
    int code = model_test_finish(&ctx, t->suite);
    MPI_Finalize();
    return code;
}
