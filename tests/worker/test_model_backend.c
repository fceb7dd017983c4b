/* The whole model on a 16-bit backend against the CPU backend (fp32), in one process.
 *
 *   test_model_backend MODEL_DIR [--device cuda|cpu-bf16] [--dtype bf16|f16] [--logits-bound X]
 *   (defaults: cuda, bf16, 1e-2)
 *   mpirun -np N test_model_backend MODEL_DIR ...   (tensor parallel over N ranks: NCCL on GPUs)
 *
 * cuda is the real thing (scripts/gpu-model-test.sh); cpu-bf16 is the CPU backend with the CUDA
 * path's 16-bit rounding (kernels/cpu/bf16_emulation.c), which lets CI guard the numerics of the
 * design (residual streams, what is stored in 16 bits) without a GPU. --dtype picks the storage
 * type (bf16, or fp16 with 3 more significand bits). --logits-bound widens the logits bound for
 * one documented case: bf16 storage on the random wide checkpoint, whose rounding floor is
 * ~1.2e-2 on any bf16 engine (docs/PERF.md, the emulation's error budget); fp16 storage is held
 * to 1e-2 there. Rank 0 also builds a
 * one-rank CPU model from the same checkpoint and runs every case on both: logits of every prompt
 * position within relative L2 1e-2, vision embeddings within relative L2 1e-2, and greedy ids equal
 * over 12 tokens wherever the CPU's top-1/top-2 margin is above 0.05 (checked teacher-forced: both
 * models score the CPU's own continuation, so one early near-tie does not hide later errors). Cases
 * come from golden.safetensors when present (and golden-multi-image.safetensors: several images in
 * one conversation); otherwise (a random "wide" checkpoint) from a built-in
 * image prompt and random pixels. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "tests/testutil.h"
#include "tests/worker/model_test_frame.h"
#include "worker/rank_context.h"
#include "worker/safetensors.h"

static double rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void top2(const float *row, int n, int *best, float *margin)
{
    int b = 0, s = -1;
    for (int i = 1; i < n; i++) {
        if (row[i] > row[b])
            s = b, b = i;
        else if (s < 0 || row[i] > row[s])
            s = i;
    }
    *best = b;
    *margin = s >= 0 ? row[b] - row[s] : INFINITY;
}

/* The spacing of the storage type's numbers (significand_bits after the leading one: bf16 7,
 * fp16 10) at the row's largest |logit|: two logits closer than this can swap order just by being
 * stored, whatever the arithmetic before. */
static float storage_spacing(const float *row, int n, int significand_bits)
{
    float big = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(row[i]) > big) big = fabsf(row[i]);
    return big > 0 ? ldexpf(1.f, ilogbf(big) - significand_bits) : 0.f;
}

static double logits_bound = 1e-2;

static void check_case(glm_rank_context *ctx, glm_model *cpu, const char *name, const int32_t *ids,
                       int n_ids, const float *pixels, int n_images)
{
    glm_error err = {0};
    int vocab = ctx->cfg.padded_vocab_size;
    model_run ref = {0}, gpu = {0};
    CHECK_MSG(model_test_generate_images(cpu, ids, n_ids, pixels, n_images, 512, &ref, &err) ==
                  GLM_OK,
              "cpu %s: %s", name, err.msg);
    CHECK_MSG(model_test_generate_images(ctx->model, ids, n_ids, pixels, n_images, 512, &gpu,
                                         &err) == GLM_OK,
              "%s %s: %s", ctx->be->name, name, err.msg);
    if (!ref.logits || !gpu.logits || ref.rows != gpu.rows) goto out;
    double e = rel_l2(gpu.logits, ref.logits, (size_t)ref.rows * vocab);
    /* bf16 storage: the one-image case already sits at 0.93e-2 on the tiny checkpoints, and two
     * images add the rounding of twice the image rows (1.06e-2 .. 1.27e-2 measured; fp16 storage
     * shows the same 1.3x ratio 8x lower, 1.7e-3, and the fp32 CPU path matches the float64
     * goldens to 2e-5), so several images get the bf16 floor's bound that the wide checkpoint
     * has; fp16 storage is held to the one-image bound */
    double bound = logits_bound;
    if (n_images > 1 && ctx->be->act_dtype != GLM_F16 && bound < 1.5e-2) bound = 1.5e-2;
    printf("%s tp=%d: prompt logits rel L2 %.2e over %d positions (bound %.2g)\n", name, ctx->size,
           e, ref.rows, bound);
    CHECK_MSG(e < bound, "%s: logits rel L2 %g (bound %g)", name, e, bound);

    if (pixels) {
        int rows = glm_model_image_rows(cpu);
        size_t n = (size_t)rows * ctx->cfg.hidden_size;
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        CHECK(glm_model_read_image_embeds(cpu, 0, a, &err) == GLM_OK);
        CHECK(glm_model_read_image_embeds(ctx->model, 0, b, &err) == GLM_OK);
        double ev = rel_l2(b, a, n);
        printf("%s tp=%d: vision embeds rel L2 %.2e\n", name, ctx->size, ev);
        CHECK_MSG(ev < 1e-2, "%s: vision embeds rel L2 %g", name, ev);
        free(a);
        free(b);
    }

    /* teacher-forced: both models score prompt + the CPU's continuation */
    int n_all = n_ids + ref.n_ids - 1;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)n_all);
    memcpy(all, ids, sizeof(int32_t) * (size_t)n_ids);
    memcpy(all + n_ids, ref.ids, sizeof(int32_t) * (size_t)(ref.n_ids - 1));
    model_run ref_tf = {0}, gpu_tf = {0};
    CHECK(model_test_generate_images(cpu, all, n_all, pixels, n_images, 512, &ref_tf, &err) ==
          GLM_OK);
    CHECK(model_test_generate_images(ctx->model, all, n_all, pixels, n_images, 512, &gpu_tf,
                                     &err) == GLM_OK);
    /* the rule: ids equal wherever the CPU margin is > 0.05. The emulation also skips
     * margins under the storage spacing of the row's logits (logits are stored in 16 bits, so
     * such a pair may swap on any such engine); on the GPU the rule applies unchanged. */
    bool emulated = strcmp(ctx->be->name, "cuda") != 0;
    int bits = ctx->be->act_dtype == GLM_F16 ? 10 : 7;
    int checked = 0, skipped = 0, skipped_bf16 = 0;
    for (int k = 0; k < ref.n_ids && ref_tf.logits && gpu_tf.logits; k++) {
        int row = ref_tf.rows - ref.n_ids + k; /* position predicting generated id k */
        int b_ref, b_gpu;
        float margin, m2;
        top2(ref_tf.logits + (size_t)row * vocab, vocab, &b_ref, &margin);
        top2(gpu_tf.logits + (size_t)row * vocab, vocab, &b_gpu, &m2);
        if (margin <= 0.05f) {
            skipped++;
            continue;
        }
        if (emulated &&
            margin <= storage_spacing(ref_tf.logits + (size_t)row * vocab, vocab, bits)) {
            skipped_bf16++;
            continue;
        }
        checked++;
        CHECK_MSG(b_ref == b_gpu, "%s: greedy id %d differs (cpu %d, %s %d, cpu margin %.3f)", name,
                  k, b_ref, ctx->be->name, b_gpu, margin);
    }
    int same = 0;
    while (same < ref.n_ids && same < gpu.n_ids && ref.ids[same] == gpu.ids[same])
        same++;
    printf("%s tp=%d: greedy ids checked %d (skipped %d near-ties, %d within storage spacing); "
           "free-running: first %d of %d identical\n",
           name, ctx->size, checked, skipped, skipped_bf16, same, ref.n_ids);
    free(all);
    free(ref_tf.logits);
    free(gpu_tf.logits);
out:
    free(ref.logits);
    free(gpu.logits);
}

static int32_t *golden_ids(glm_safetensors *g, const char *key, int *n)
{
    const glm_st_tensor *t = glm_safetensors_find(g, key);
    if (!t) return NULL;
    *n = (int)t->shape[0];
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)*n);
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)((const int64_t *)t->data)[i];
    return ids;
}

/* Several images in one conversation (golden-multi-image.safetensors, issue 22): the same bounds
 * as one image. */
static void run_multi_image_cases(glm_rank_context *ctx, glm_model *cpu, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/golden-multi-image.safetensors", dir);
    glm_safetensors *g = NULL;
    glm_error err = {0};
    if (glm_safetensors_open(path, &g, &err) != GLM_OK) return; /* a checkpoint without them */
    const char *cases[] = {"two_images", "turns", "late_image"};
    for (int i = 0; i < 3; i++) {
        char key[64];
        int n = 0;
        snprintf(key, sizeof(key), "%s.input_ids", cases[i]);
        int32_t *ids = golden_ids(g, key, &n);
        snprintf(key, sizeof(key), "%s.pixel_values", cases[i]);
        const glm_st_tensor *pv = glm_safetensors_find(g, key);
        CHECK(ids && pv && pv->ndim == 4);
        if (ids && pv && pv->ndim == 4) {
            size_t n_pix = (size_t)(pv->shape[0] * pv->shape[1] * pv->shape[2] * pv->shape[3]);
            float *pixels = malloc(n_pix * sizeof(float));
            glm_convert(pixels, GLM_F32, pv->data, pv->dtype, n_pix);
            check_case(ctx, cpu, cases[i], ids, n, pixels, (int)pv->shape[0]);
            free(pixels);
        }
        free(ids);
    }
    glm_safetensors_close(g);
}

static void run_cases(glm_rank_context *ctx, glm_model *cpu, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/golden.safetensors", dir);
    glm_safetensors *g = NULL;
    glm_error err = {0};
    const glm_model_config *c = &ctx->cfg;
    size_t n_pix = (size_t)c->vision.in_channels * c->vision.image_size * c->vision.image_size;
    if (glm_safetensors_open(path, &g, &err) == GLM_OK) {
        const char *cases[] = {"text", "image", "random"};
        float *pixels = malloc(n_pix * sizeof(float));
        const glm_st_tensor *pv = glm_safetensors_find(g, "pixel_values");
        glm_convert(pixels, GLM_F32, pv->data, pv->dtype, n_pix);
        for (int i = 0; i < 3; i++) {
            char key[64];
            int n = 0;
            snprintf(key, sizeof(key), "%s.input_ids", cases[i]);
            int32_t *ids = golden_ids(g, key, &n);
            CHECK(ids != NULL);
            if (ids) check_case(ctx, cpu, cases[i], ids, n, i == 1 ? pixels : NULL, i == 1);
            free(ids);
        }
        free(pixels);
        glm_safetensors_close(g);
        run_multi_image_cases(ctx, cpu, dir);
        return;
    }
    /* a random checkpoint: one text prompt and one image prompt of our own */
    int32_t text[64], image[64];
    int nt = 0, ni = 0;
    test_rng rng;
    test_rng_seed(&rng, 11);
    for (int i = 0; i < 40; i++)
        text[nt++] = test_rng_int(&rng, 0, 100000 % c->padded_vocab_size);
    for (int i = 0; i < 4; i++)
        image[ni++] = test_rng_int(&rng, 0, 1000);
    image[ni++] = c->boi_token_id, image[ni++] = c->pad_token_id, image[ni++] = c->eoi_token_id;
    for (int i = 0; i < 25; i++)
        image[ni++] = test_rng_int(&rng, 0, 1000);
    float *pixels = malloc(n_pix * sizeof(float));
    for (size_t i = 0; i < n_pix; i++)
        pixels[i] = (float)(test_rng_uniform(&rng) * 4 - 2);
    check_case(ctx, cpu, "wide-text", text, nt, NULL, 0);
    check_case(ctx, cpu, "wide-image", image, ni, pixels, 1);
    free(pixels);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const char *device = "cuda", *dtype = NULL;
    bool usage = argc < 2 || argc % 2 != 0;
    for (int i = 2; !usage && i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--device") == 0)
            device = argv[i + 1];
        else if (strcmp(argv[i], "--dtype") == 0)
            dtype = argv[i + 1];
        else if (strcmp(argv[i], "--logits-bound") == 0)
            usage = (logits_bound = atof(argv[i + 1])) <= 0;
        else
            usage = true;
    }
    if (usage) {
        fprintf(stderr, "usage: test_model_backend MODEL_DIR [--device cuda|cpu-bf16] "
                        "[--dtype bf16|f16] [--logits-bound X]\n");
        MPI_Finalize();
        return 2;
    }
    glm_rank_options ro;
    model_test_options(&ro, argv[1], device, 512);
    ro.dtype = dtype;
    ro.model.kv_blocks = 2048; /* a few sequences' worth: the test needs no more */
    ro.model.max_images = 2;   /* the multi-image cases' images in one vision batch */
    ro.model.image_pool_slots = 2;
    glm_rank_context ctx;
    if (!model_test_start(&ro, &ctx)) {
        MPI_Finalize();
        return 1;
    }
    if (ctx.rank == 0) {
        glm_model_options mo = ro.model;
        mo.kv_blocks = glm_model_max_blocks_per_seq(ctx.model) + 1;
        cpu_reference ref;
        if (cpu_reference_create(&ctx, &mo, &ref)) {
            char line[512];
            glm_model_describe_memory(ctx.model, line, sizeof(line));
            printf("%s\n", line);
            run_cases(&ctx, ref.model, argv[1]);
        } else {
            CHECK(0);
        }
        cpu_reference_destroy(&ref);
    }
    int code = model_test_finish(&ctx, "model_backend");
    MPI_Finalize();
    return code;
}
