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
#include <stdio.h>
#include <stdlib.h>

#include "coordinator/serve/run_once.h"
#include "tests/testutil.h"
#include "tests/worker/golden_util.h"

static const char *const CASES[] = {"two_images", "turns", "late_image"};
#define N_GEN 12

/* The golden tensor <c>.<what> (golden_tensor). */
static void *golden(glm_safetensors *g, const char *c, const char *what, glm_dtype want,
                    int64_t *numel, int64_t *dim0)
{
    char name[128];
    snprintf(name, sizeof(name), "%s.%s", c, what);
    return golden_tensor(g, name, want, numel, dim0);
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
    golden_case gc;
    bool ok = golden_case_load(g, c, &gc);
    int64_t n_pix = 0, n_images = 0;
    float *pixels = golden(g, c, "pixel_values", GLM_F32, &n_pix, &n_images);
    CHECK(ok && pixels && gc.n_greedy == N_GEN);
    const glm_model_config *cfg = glm_model_config_of(m);
    int vocab = cfg->padded_vocab_size, image_rows = glm_model_image_rows(m);
    /* chunks: everything at once; 5 rows (cuts inside images); ending exactly where the last
     * image starts (between two images' rows when there are two) */
    int chunks[3] = {256, 5, 0};
    chunks[2] =
        image_start_row(gc.ids, (int)gc.n_ids, cfg->boi_token_id, image_rows, (int)n_images - 1);
    CHECK_MSG(chunks[2] > 0, "%s: no image in the golden ids", c);
    for (int k = 0; ok && pixels && k < 3 && chunks[k] > 0; k++) {
        glm_error err = {0};
        int spliced = 0;
        glm_run_once_request req = {.ids = gc.ids,
                                    .n_ids = (int)gc.n_ids,
                                    .pixels = pixels,
                                    .n_images = (int)n_images,
                                    .max_new_tokens = N_GEN,
                                    .ignore_eos = true,
                                    .prefill_chunk = chunks[k]};
        glm_status st = glm_run_once_validate(m, &req, &spliced, &err);
        CHECK_MSG(st == GLM_OK, "%s: %s", c, err.msg);
        if (st) break;
        CHECK_MSG((int64_t)spliced * vocab == gc.n_logits, "%s: %d rows, golden has %lld", c,
                  spliced, (long long)(gc.n_logits / vocab));
        if ((int64_t)spliced * vocab != gc.n_logits) break;
        float *logits = malloc(sizeof(float) * (size_t)gc.n_logits);
        for (int64_t i = 0; logits && i < gc.n_logits; i++)
            logits[i] = NAN; /* a row never written fails the comparison */
        req.dump_logits = logits;
        glm_run_once_result res;
        st = logits ? glm_run_once(m, &req, &res, &err) : GLM_ERR_NOMEM;
        CHECK_MSG(st == GLM_OK, "%s chunk %d: %s", c, chunks[k], err.msg);
        if (!st) {
            double worst = golden_max_abs_diff(logits, gc.logits, gc.n_logits);
            printf("%s %s (%lld images) tp=%d chunk %d: max |logit - golden| = %.3g\n", model_dir,
                   c, (long long)n_images, tp, chunks[k], worst);
            CHECK_MSG(worst <= 1e-3, "%s chunk %d: logits differ from golden by %g", c, chunks[k],
                      worst);
            CHECK_MSG(res.n_ids == N_GEN && res.n_images == (int)n_images, "%s: %d ids, %d images",
                      c, res.n_ids, res.n_images);
            for (int i = 0; i < res.n_ids && i < N_GEN; i++)
                CHECK_MSG(res.ids[i] == gc.greedy[i], "%s chunk %d: greedy id %d is %d, golden %d",
                          c, chunks[k], i, res.ids[i], gc.greedy[i]);
            glm_run_once_result_free(&res);
        }
        free(logits);
    }
    /* one image fewer than the prompt's markers is refused, not read past */
    if (ok && pixels && n_images > 1) {
        glm_error err = {0};
        glm_run_once_request req = {.ids = gc.ids,
                                    .n_ids = (int)gc.n_ids,
                                    .pixels = pixels,
                                    .n_images = (int)n_images - 1,
                                    .max_new_tokens = 1};
        CHECK(glm_run_once_validate(m, &req, NULL, &err) == GLM_ERR_INVALID_ARG);
    }
    golden_case_free(&gc);
    free(pixels);
}

static void run_cases(glm_rank_context *ctx, const glm_rank_options *ro, glm_safetensors *g,
                      const char *model_dir)
{
    (void)ro;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++)
        run_case(ctx->model, g, CASES[i], model_dir, ctx->size);
}

int main(int argc, char **argv)
{
    const golden_test t = {.suite = "golden_multi",
                           .file = "golden-multi-image.safetensors",
                           .rows = 256,
                           .images_per_batch = 2, /* every case's images in one vision batch */
                           .run = run_cases};
    return golden_test_main(argc, argv, &t);
}
