/* Several images in one conversation against the float64 goldens (golden-multi-image.safetensors).
 *
 *   test_golden_multi MODEL_DIR                 (one rank)
 *   mpirun -np N test_golden_multi MODEL_DIR    (tensor parallel over N CPU ranks)
 *
 * Cases two_images (two in one message), turns (one in each of two user turns) and late_image
 * (a text turn, then an image): through glm4v-run's path (coordinator/serve/run_once.c), the
 * logits of every prompt position within 1e-3 of the golden ones and 12 greedy ids identical.
 * Each case runs with the whole prompt in one step and with prefill chunks that cut inside an
 * image and exactly between two images' rows, so a chunk boundary anywhere stays exact. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "coordinator/serve/run_once.h"
#include "tests/testutil.h"
#include "tests/worker/model_test_frame.h"
#include "worker/safetensors.h"

static const char *const CASES[] = {"two_images", "turns", "late_image"};
#define N_GEN 12

/* A golden tensor as float32 (or int32 for ids), *numel its size and dim0 its first dimension;
 * caller frees. */
static void *golden(glm_safetensors *g, const char *c, const char *what, glm_dtype want,
                    int64_t *numel, int64_t *dim0)
{
    char name[128];
    snprintf(name, sizeof(name), "%s.%s", c, what);
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
    if (want == GLM_I32)
        for (int64_t i = 0; i < n; i++)
            ((int32_t *)out)[i] = t->dtype == GLM_I64 ? (int32_t)((const int64_t *)t->data)[i]
                                                      : ((const int32_t *)t->data)[i];
    else
        glm_convert(out, GLM_F32, t->data, t->dtype, (size_t)n);
    return out;
}

/* The first prompt row of image k (0-based) in the spliced sequence, from the golden ids. */
static int image_start_row(const int32_t *ids, int n_ids, int boi, int image_rows, int k)
{
    int row = 0, seen = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] == boi) {
            if (seen++ == k) return row;
            row += image_rows;
            i += 2;
        } else {
            row++;
        }
    }
    return -1;
}

static void run_case(glm_model *m, glm_safetensors *g, const char *c, const char *model_dir, int tp)
{
    int64_t n_ids = 0, n_logits = 0, n_greedy = 0, n_pix = 0, n_images = 0;
    int32_t *ids = golden(g, c, "input_ids", GLM_I32, &n_ids, NULL);
    float *gold = golden(g, c, "logits", GLM_F32, &n_logits, NULL);
    int32_t *greedy = golden(g, c, "greedy_ids", GLM_I32, &n_greedy, NULL);
    float *pixels = golden(g, c, "pixel_values", GLM_F32, &n_pix, &n_images);
    CHECK(ids && gold && greedy && pixels && n_greedy == N_GEN);
    const glm_model_config *cfg = glm_model_config_of(m);
    int vocab = cfg->padded_vocab_size, image_rows = glm_model_image_rows(m);
    /* chunks: everything at once; 5 rows (cuts inside images); ending exactly where the last
     * image starts (between two images' rows when there are two) */
    int chunks[3] = {256, 5, 0};
    chunks[2] = image_start_row(ids, (int)n_ids, cfg->boi_token_id, image_rows, (int)n_images - 1);
    CHECK_MSG(chunks[2] > 0, "%s: no image in the golden ids", c);
    for (int k = 0; ids && gold && greedy && pixels && k < 3 && chunks[k] > 0; k++) {
        glm_error err = {0};
        int spliced = 0;
        glm_run_once_request req = {.ids = ids,
                                    .n_ids = (int)n_ids,
                                    .pixels = pixels,
                                    .n_images = (int)n_images,
                                    .max_new_tokens = N_GEN,
                                    .ignore_eos = true,
                                    .prefill_chunk = chunks[k]};
        glm_status st = glm_run_once_validate(m, &req, &spliced, &err);
        CHECK_MSG(st == GLM_OK, "%s: %s", c, err.msg);
        if (st) break;
        CHECK_MSG((int64_t)spliced * vocab == n_logits, "%s: %d rows, golden has %lld", c, spliced,
                  (long long)(n_logits / vocab));
        if ((int64_t)spliced * vocab != n_logits) break;
        float *logits = malloc(sizeof(float) * (size_t)n_logits);
        for (int64_t i = 0; logits && i < n_logits; i++)
            logits[i] = NAN; /* a row never written fails the comparison */
        req.dump_logits = logits;
        glm_run_once_result res;
        st = logits ? glm_run_once(m, &req, &res, &err) : GLM_ERR_NOMEM;
        CHECK_MSG(st == GLM_OK, "%s chunk %d: %s", c, chunks[k], err.msg);
        if (!st) {
            double worst = 0;
            for (int64_t i = 0; i < n_logits; i++) {
                double d = fabs((double)logits[i] - (double)gold[i]);
                if (!(d <= worst)) worst = d; /* NaN stays the worst */
            }
            printf("%s %s (%lld images) tp=%d chunk %d: max |logit - golden| = %.3g\n", model_dir,
                   c, (long long)n_images, tp, chunks[k], worst);
            CHECK_MSG(worst <= 1e-3, "%s chunk %d: logits differ from golden by %g", c, chunks[k],
                      worst);
            CHECK_MSG(res.n_ids == N_GEN && res.n_images == (int)n_images, "%s: %d ids, %d images",
                      c, res.n_ids, res.n_images);
            for (int i = 0; i < res.n_ids && i < N_GEN; i++)
                CHECK_MSG(res.ids[i] == greedy[i], "%s chunk %d: greedy id %d is %d, golden %d", c,
                          chunks[k], i, res.ids[i], greedy[i]);
            glm_run_once_result_free(&res);
        }
        free(logits);
    }
    /* one image fewer than the prompt's markers is refused, not read past */
    if (ids && pixels && n_images > 1) {
        glm_error err = {0};
        glm_run_once_request req = {.ids = ids,
                                    .n_ids = (int)n_ids,
                                    .pixels = pixels,
                                    .n_images = (int)n_images - 1,
                                    .max_new_tokens = 1};
        CHECK(glm_run_once_validate(m, &req, NULL, &err) == GLM_ERR_INVALID_ARG);
    }
    free(ids);
    free(gold);
    free(greedy);
    free(pixels);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    if (argc != 2) {
        fprintf(stderr, "usage: test_golden_multi MODEL_DIR\n");
        MPI_Finalize();
        return 2;
    }
    glm_rank_options ro;
    model_test_options(&ro, argv[1], "cpu", 256);
    ro.model.max_images = 2; /* every case's images in one vision batch */
    ro.model.image_pool_slots = 2;
    glm_rank_context ctx;
    if (!model_test_start(&ro, &ctx)) {
        MPI_Finalize();
        return 1;
    }
    if (ctx.rank == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/golden-multi-image.safetensors", argv[1]);
        glm_safetensors *g = NULL;
        glm_error err = {0};
        CHECK_MSG(glm_safetensors_open(path, &g, &err) == GLM_OK, "%s", err.msg);
        for (size_t i = 0; g && i < sizeof(CASES) / sizeof(CASES[0]); i++)
            run_case(ctx.model, g, CASES[i], argv[1], ctx.size);
        glm_safetensors_close(g);
    }
    int code = model_test_finish(&ctx, "golden_multi");
    MPI_Finalize();
    return code;
}
