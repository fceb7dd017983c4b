/* Golden test: the CPU forward pass against the outputs of the original GLM-4V implementation.
 *
 *   test_golden MODEL_DIR                      (one rank)
 *   mpirun -np N test_golden MODEL_DIR         (tensor parallel over N CPU ranks)
 *
 * For each case of golden.safetensors (text, image, random): logits of every prompt position
 * within 1e-3 of the golden ones, image.vision_embeds within 1e-4, and 12 greedy ids identical,
 * generated through the paged KV cache (the golden ids came from full recomputation, so this also
 * checks the cache). Under mpirun, rank 0 also builds a one-rank model in the same process (two
 * models side by side, no shared state) and requires the tensor-parallel logits to match it
 * within 1e-4 and the ids to be identical. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testutil.h"
#include "tests/worker/golden_util.h"
#include "tests/worker/model_test_frame.h"

static const char *const CASES[] = {"text", "image", "random"};

/* reference: a second model in this process (a one-rank model under mpirun; with one rank, a
 * model with 3-token KV blocks run in 5-row prefill chunks, so images and prompts straddle chunk
 * and block boundaries), run with prefill chunks of ref_chunk rows. */
static void check_case(glm_rank_context *ctx, glm_model *reference, int ref_chunk,
                       glm_safetensors *g, const char *name, const char *model_dir)
{
    golden_case gc;
    bool ok = golden_case_load(g, name, &gc);
    int64_t n_pix = 0;
    float *pixels =
        strcmp(name, "image") == 0 ? golden_tensor(g, "pixel_values", GLM_F32, &n_pix, NULL) : NULL;
    CHECK(ok);
    if (!ok) goto out;

    glm_error err = {0};
    model_run run = {0};
    glm_status st = model_test_generate(ctx->model, gc.ids, (int)gc.n_ids, pixels, 64, &run, &err);
    CHECK_MSG(st == GLM_OK, "%s %s: %s", model_dir, name, err.msg);
    if (st) goto out;
    int vocab = ctx->cfg.padded_vocab_size;
    CHECK_MSG((int64_t)run.rows * vocab == gc.n_logits, "%s: %d rows of logits, golden has %lld",
              name, run.rows, (long long)(gc.n_logits / vocab));
    if ((int64_t)run.rows * vocab == gc.n_logits) {
        double d = golden_max_abs_diff(run.logits, gc.logits, gc.n_logits);
        printf("%s %s tp=%d: max |logit - golden| = %.3g\n", model_dir, name, ctx->size, d);
        CHECK_MSG(d <= 1e-3, "%s: logits differ from golden by %g", name, d);
    }
    CHECK(run.n_ids == gc.n_greedy);
    for (int i = 0; i < run.n_ids && i < gc.n_greedy; i++)
        CHECK_MSG(run.ids[i] == gc.greedy[i], "%s: greedy id %d is %d, golden %d", name, i,
                  run.ids[i], gc.greedy[i]);

    if (pixels) {
        int64_t n_embeds = 0;
        float *gold_embeds = golden_tensor(g, "image.vision_embeds", GLM_F32, &n_embeds, NULL);
        int rows = glm_model_image_rows(ctx->model);
        float *embeds = malloc(sizeof(float) * (size_t)rows * ctx->cfg.hidden_size);
        CHECK(glm_model_read_image_embeds(ctx->model, 0, embeds, &err) == GLM_OK);
        CHECK(n_embeds == (int64_t)rows * ctx->cfg.hidden_size);
        if (gold_embeds && n_embeds == (int64_t)rows * ctx->cfg.hidden_size) {
            double d = golden_max_abs_diff(embeds, gold_embeds, n_embeds);
            printf("%s vision_embeds tp=%d: max |diff| = %.3g\n", model_dir, ctx->size, d);
            CHECK_MSG(d <= 1e-4, "vision embeds differ from golden by %g", d);
        }
        free(embeds);
        free(gold_embeds);
    }

    if (reference) { /* tensor-parallel against one rank, in this process */
        model_run ref = {0};
        st = model_test_generate(reference, gc.ids, (int)gc.n_ids, pixels, ref_chunk, &ref, &err);
        CHECK_MSG(st == GLM_OK, "reference %s: %s", name, err.msg);
        if (!st && ref.rows == run.rows) {
            double d = golden_max_abs_diff(run.logits, ref.logits, (int64_t)ref.rows * vocab);
            printf("%s %s: max |logit - logit of the reference (tp=1, chunk %d)| = %.3g\n",
                   model_dir, name, ref_chunk, d);
            CHECK_MSG(d <= 1e-4, "%s: logits differ from the reference by %g", name, d);
            CHECK(ref.n_ids == run.n_ids && memcmp(ref.ids, run.ids, sizeof(int32_t) * 12) == 0);
        }
        free(ref.logits);
    }
    free(run.logits);
out:
    golden_case_free(&gc);
    free(pixels);
}

/* Rank 0: the reference model, then every case. */
static void run_cases(glm_rank_context *ctx, const glm_rank_options *ro, glm_safetensors *g,
                      const char *model_dir)
{
    glm_model_options ref_opt = ro->model;
    int ref_chunk = 64;
    if (ctx->size == 1) ref_opt.kv_block_size = 3, ref_chunk = 5;
    cpu_reference ref;
    CHECK(cpu_reference_create(ctx, &ref_opt, &ref) != NULL);
    for (size_t i = 0; ref.model && i < sizeof(CASES) / sizeof(CASES[0]); i++)
        check_case(ctx, ref.model, ref_chunk, g, CASES[i], model_dir);
    cpu_reference_destroy(&ref);
}

int main(int argc, char **argv)
{
    const golden_test t = {
        .suite = "golden", .file = "golden.safetensors", .rows = 64, .run = run_cases};
    return golden_test_main(argc, argv, &t);
}
