/* The whole model with quantized weights (--weights fp8|int8|int4) and its accuracy.
 *
 *   test_quant_model MODEL_DIR --weights F [--device cpu|cpu-bf16|cuda] [--vision-weights F]
 *                    [--bound X] [--top1 Y] [--same-bound Z]
 *   mpirun -np N test_quant_model ...   (tensor parallel)
 *
 * For each case of golden.safetensors (text, image, random; a checkpoint without one, such as the
 * random "wide" checkpoint: a text and an image prompt of our own), rank 0 runs the quantized model
 * and a one-rank CPU model of the same checkpoint with dense f32 weights, and prints one
 * "accuracy:" line: logits rel L2 against fp32 and against the float64 golden logits, top-1
 * agreement with fp32 over every prompt position, the greedy ids equal to golden's, and the vision
 * embeddings' rel L2. The quantization error is the format's; the bounds (--bound on rel L2 against
 * fp32, --top1 on the agreement) are measured per format and checkpoint and stated in
 * tests/worker/quant_tests.cmake. When the quantized model is not the one-rank CPU model itself
 * (another device, or tensor parallel), rank 0 also runs a one-rank CPU model with the same
 * quantized weights, and the two must agree as a 16-bit engine agrees with the CPU (rel L2 <=
 * --same-bound, default 1e-2; greedy ids equal, teacher-forced, where the CPU's top-1/top-2 margin
 * exceeds 0.05): the GPU (or the sharded model) checked on the same quantized weights.
 * --same-device cpu-bf16 makes that one-rank model the CPU with the GPU's 16-bit rounding (fp8).
 * --same-bound 0 skips that comparison: a sharded fp8 or int4 model is not the same computation
 * (fp8 activation scales and int4 groups follow each rank's slice of a row-parallel input). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/dtype.h"
#include "tests/testutil.h"
#include "tests/worker/model_test_frame.h"
#include "worker/rank_context.h"
#include "worker/safetensors.h"

typedef struct args {
    const char *dir, *device, *weights, *vision_weights, *same_device;
    double bound, top1, same_bound;
} args;

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

static int argmax(const float *row, int n, float *margin)
{
    int b = 0, s = -1;
    for (int i = 1; i < n; i++) {
        if (row[i] > row[b])
            s = b, b = i;
        else if (s < 0 || row[i] > row[s])
            s = i;
    }
    if (margin) *margin = s >= 0 ? row[b] - row[s] : INFINITY;
    return b;
}

/* A golden tensor as float32 (int64 ids as int32 when want_ids); caller frees. */
static void *golden(glm_safetensors *g, const char *name, bool want_ids, int64_t *numel)
{
    const glm_st_tensor *t = glm_safetensors_find(g, name);
    if (!t) return NULL;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    *numel = n;
    void *out = malloc((size_t)(n > 0 ? n : 1) * 4);
    if (want_ids)
        for (int64_t i = 0; i < n; i++)
            ((int32_t *)out)[i] = (int32_t)((const int64_t *)t->data)[i];
    else
        glm_convert(out, GLM_F32, t->data, t->dtype, (size_t)n);
    return out;
}

static double embeds_rel_l2(glm_model *a, glm_model *b, int hidden, glm_error *err)
{
    size_t n = (size_t)glm_model_image_rows(a) * hidden;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    double e = NAN;
    if (x && y && glm_model_read_image_embeds(a, 0, x, err) == GLM_OK &&
        glm_model_read_image_embeds(b, 0, y, err) == GLM_OK)
        e = rel_l2(x, y, n);
    free(x);
    free(y);
    return e;
}

/* The quantized model against the CPU model of the same quantized weights, teacher-forced on
 * the CPU's continuation as test_model_backend does. */
static void check_same_weights(glm_rank_context *ctx, glm_model *same, const args *a,
                               const char *name, const int32_t *ids, int n_ids, const float *pixels,
                               const model_run *q)
{
    glm_error err = {0};
    int vocab = ctx->cfg.padded_vocab_size;
    model_run ref = {0}, ref_tf = {0}, q_tf = {0};
    CHECK_MSG(model_test_generate(same, ids, n_ids, pixels, 512, &ref, &err) == GLM_OK,
              "cpu %s: %s", name, err.msg);
    if (!ref.logits || ref.rows != q->rows) goto out;
    double e = rel_l2(q->logits, ref.logits, (size_t)ref.rows * vocab);
    double ev = pixels ? embeds_rel_l2(ctx->model, same, ctx->cfg.hidden_size, &err) : 0;
    printf("same-weights: %s tp=%d %s %s: logits rel L2 vs the one-rank %s model %.2e, vision "
           "%.2e\n",
           a->weights, ctx->size, ctx->be->name, name, a->same_device, e, ev);
    CHECK_MSG(e <= a->same_bound, "%s: rel L2 %g against the cpu on the same weights", name, e);
    CHECK_MSG(ev <= a->same_bound, "%s: vision rel L2 %g against the cpu", name, ev);
    int n_all = n_ids + ref.n_ids - 1, checked = 0;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)n_all);
    memcpy(all, ids, sizeof(int32_t) * (size_t)n_ids);
    memcpy(all + n_ids, ref.ids, sizeof(int32_t) * (size_t)(ref.n_ids - 1));
    CHECK(model_test_generate(same, all, n_all, pixels, 512, &ref_tf, &err) == GLM_OK);
    CHECK(model_test_generate(ctx->model, all, n_all, pixels, 512, &q_tf, &err) == GLM_OK);
    for (int k = 0; k < ref.n_ids && ref_tf.logits && q_tf.logits; k++) {
        int row = ref_tf.rows - ref.n_ids + k;
        float margin;
        int b_ref = argmax(ref_tf.logits + (size_t)row * vocab, vocab, &margin);
        int b_q = argmax(q_tf.logits + (size_t)row * vocab, vocab, NULL);
        if (margin <= 0.05f) continue;
        checked++;
        CHECK_MSG(b_ref == b_q, "%s: greedy id %d: cpu %d, %s %d (margin %.3f)", name, k, b_ref,
                  ctx->be->name, b_q, margin);
    }
    printf("same-weights: %s %s: %d greedy ids checked teacher-forced\n", a->weights, name,
           checked);
    free(all);
out:
    free(ref.logits);
    free(ref_tf.logits);
    free(q_tf.logits);
}

/* One prompt: the quantized model against fp32 (and against the golden logits and greedy ids
 * when gold is not NULL). */
static void check_prompt(glm_rank_context *ctx, glm_model *fp32, glm_model *same, const args *a,
                         const char *name, const int32_t *ids, int n_ids, const float *pixels,
                         const float *gold, const int32_t *greedy, int n_greedy)
{
    glm_error err = {0};
    model_run q = {0}, ref = {0};
    CHECK_MSG(model_test_generate(ctx->model, ids, n_ids, pixels, 512, &q, &err) == GLM_OK,
              "%s %s: %s", a->weights, name, err.msg);
    CHECK_MSG(model_test_generate(fp32, ids, n_ids, pixels, 512, &ref, &err) == GLM_OK,
              "fp32 %s: %s", name, err.msg);
    int vocab = ctx->cfg.padded_vocab_size;
    if (!q.logits || !ref.logits || ref.rows != q.rows) goto out;
    size_t n = (size_t)q.rows * vocab;
    double e32 = rel_l2(q.logits, ref.logits, n), egold = gold ? rel_l2(q.logits, gold, n) : NAN;
    int agree = 0, same_ids = 0;
    for (int r = 0; r < q.rows; r++)
        agree += argmax(q.logits + (size_t)r * vocab, vocab, NULL) ==
                 argmax(ref.logits + (size_t)r * vocab, vocab, NULL);
    while (greedy && same_ids < q.n_ids && same_ids < n_greedy &&
           q.ids[same_ids] == greedy[same_ids])
        same_ids++;
    double ev = pixels ? embeds_rel_l2(ctx->model, fp32, ctx->cfg.hidden_size, &err) : 0;
    printf("accuracy: model=%s weights=%s vision=%s device=%s tp=%d case=%s: logits rel L2 vs "
           "fp32 %.2e, vs golden %.2e; top-1 agreement with fp32 %d/%d; greedy ids equal to "
           "golden's: first %d of %d; vision embeds rel L2 vs fp32 %.2e\n",
           a->dir, a->weights, a->vision_weights ? a->vision_weights : a->weights, ctx->be->name,
           ctx->size, name, e32, egold, agree, q.rows, same_ids, n_greedy, ev);
    CHECK_MSG(e32 <= a->bound, "%s %s: logits rel L2 %g against fp32 (bound %g)", a->weights, name,
              e32, a->bound);
    CHECK_MSG(ev <= a->bound, "%s %s: vision rel L2 %g against fp32 (bound %g)", a->weights, name,
              ev, a->bound);
    CHECK_MSG(agree >= a->top1 * q.rows, "%s %s: top-1 agreement %d/%d under %.2f", a->weights,
              name, agree, q.rows, a->top1);
    if (same) check_same_weights(ctx, same, a, name, ids, n_ids, pixels, &q);
out:
    free(q.logits);
    free(ref.logits);
}

static void check_case(glm_rank_context *ctx, glm_model *fp32, glm_model *same, const args *a,
                       glm_safetensors *g, const char *name)
{
    char key[96];
    int64_t n_ids = 0, n_gold = 0, n_greedy = 0, n_pix = 0;
    snprintf(key, sizeof(key), "%s.input_ids", name);
    int32_t *ids = golden(g, key, true, &n_ids);
    snprintf(key, sizeof(key), "%s.logits", name);
    float *gold = golden(g, key, false, &n_gold);
    snprintf(key, sizeof(key), "%s.greedy_ids", name);
    int32_t *greedy = golden(g, key, true, &n_greedy);
    float *pixels = strcmp(name, "image") == 0 ? golden(g, "pixel_values", false, &n_pix) : NULL;
    CHECK(ids && gold && greedy);
    if (ids && gold && greedy)
        check_prompt(ctx, fp32, same, a, name, ids, (int)n_ids, pixels, gold, greedy,
                     (int)n_greedy);
    free(ids);
    free(gold);
    free(greedy);
    free(pixels);
}

/* A checkpoint without golden files (the random "wide" one): a text prompt and an image prompt
 * of our own, against fp32 only. */
static void check_own_prompts(glm_rank_context *ctx, glm_model *fp32, glm_model *same,
                              const args *a)
{
    const glm_model_config *c = &ctx->cfg;
    int32_t text[40], image[32];
    int ni = 0;
    test_rng rng;
    test_rng_seed(&rng, 11);
    for (int i = 0; i < 40; i++)
        text[i] = test_rng_int(&rng, 0, 100000 % c->padded_vocab_size);
    for (int i = 0; i < 4; i++)
        image[ni++] = test_rng_int(&rng, 0, 1000);
    image[ni++] = c->boi_token_id, image[ni++] = c->pad_token_id, image[ni++] = c->eoi_token_id;
    for (int i = 0; i < 25; i++)
        image[ni++] = test_rng_int(&rng, 0, 1000);
    size_t n_pix = (size_t)c->vision.in_channels * c->vision.image_size * c->vision.image_size;
    float *pixels = malloc(n_pix * sizeof(float));
    for (size_t i = 0; pixels && i < n_pix; i++)
        pixels[i] = (float)(test_rng_uniform(&rng) * 4 - 2);
    check_prompt(ctx, fp32, same, a, "own-text", text, 40, NULL, NULL, NULL, 0);
    if (pixels && c->has_vision)
        check_prompt(ctx, fp32, same, a, "own-image", image, ni, pixels, NULL, NULL, 0);
    free(pixels);
}

/* A one-rank model of ctx's checkpoint with options mo on the CPU backend named device (cpu, or
 * cpu-bf16: the CPU rounding where the GPU stores 16 bits, which fp8 needs to be compared with a
 * GPU at all: its activation codes are a step function of the activations, so the f32 CPU's and
 * the GPU's bf16 activations land on different codes). */
static glm_model *same_reference_create(glm_rank_context *ctx, const glm_model_options *mo,
                                        const char *device, cpu_reference *ref)
{
    glm_error err = {0};
    *ref = (cpu_reference){0};
    bool emu = strcmp(device, "cpu-bf16") == 0;
    glm_status st = emu ? glm_backend_cpu_bf16_create(0, &ref->be, &err)
                        : glm_backend_cpu_create(0, &ref->be, &err);
    if (!st && emu && ctx->be->act_dtype != GLM_F32)
        st = glm_backend_set_storage(ref->be, ctx->be->act_dtype, &err);
    if (st || glm_comm_local_create(ref->be, &ref->comm, &err) ||
        glm_model_create(&ctx->cfg, mo, ctx->ck, ref->be, ref->comm, &ref->model, &err))
        fprintf(stderr, "%s reference model: %s\n", device, err.msg);
    return ref->model;
}

static bool parse(int argc, char **argv, args *a)
{
    *a = (args){
        .device = "cpu", .same_device = "cpu", .bound = 0.1, .top1 = 0.9, .same_bound = 1e-2};
    if (argc < 2 || argc % 2 != 0) return false;
    a->dir = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--device"))
            a->device = v;
        else if (!strcmp(f, "--weights"))
            a->weights = v;
        else if (!strcmp(f, "--vision-weights"))
            a->vision_weights = v;
        else if (!strcmp(f, "--bound"))
            a->bound = atof(v);
        else if (!strcmp(f, "--top1"))
            a->top1 = atof(v);
        else if (!strcmp(f, "--same-bound"))
            a->same_bound = atof(v);
        else if (!strcmp(f, "--same-device"))
            a->same_device = v;
        else
            return false;
    }
    return a->weights != NULL;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    args a;
    glm_rank_options ro;
    if (parse(argc, argv, &a)) {
        model_test_options(&ro, a.dir, a.device, 512);
        ro.model.kv_blocks = 2048;
    }
    if (!parse(argc, argv, &a) ||
        !glm_cli_weights("test_quant_model", a.weights, a.vision_weights, &ro.dtype,
                         &ro.model.weight_format, &ro.model.vision_weight_format)) {
        fprintf(stderr, "usage: test_quant_model MODEL_DIR --weights F [--device D] "
                        "[--vision-weights F] [--bound X] [--top1 Y] [--same-bound Z] "
                        "[--same-device cpu|cpu-bf16]\n");
        MPI_Finalize();
        return 2;
    }
    glm_rank_context ctx;
    if (!model_test_start(&ro, &ctx)) {
        MPI_Finalize();
        return 1;
    }
    if (ctx.rank == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/golden.safetensors", a.dir);
        glm_safetensors *g = NULL;
        glm_error err = {0};
        bool have_golden = glm_safetensors_open(path, &g, &err) == GLM_OK;
        glm_model_options mo = ro.model;
        mo.kv_blocks = glm_model_max_blocks_per_seq(ctx.model) + 1;
        glm_model_options dense = mo;
        dense.weight_format = dense.vision_weight_format = GLM_WEIGHT_DENSE;
        cpu_reference fp32, same = {0};
        CHECK(cpu_reference_create(&ctx, &dense, &fp32) != NULL);
        bool need_same = (strcmp(a.device, "cpu") != 0 || ctx.size > 1) && a.same_bound > 0;
        if (need_same) CHECK(same_reference_create(&ctx, &mo, a.same_device, &same) != NULL);
        const char *cases[] = {"text", "image", "random"};
        bool ready = fp32.model && (!need_same || same.model);
        for (int i = 0; have_golden && ready && i < 3; i++)
            check_case(&ctx, fp32.model, same.model, &a, g, cases[i]);
        if (!have_golden && ready) check_own_prompts(&ctx, fp32.model, same.model, &a);
        cpu_reference_destroy(&fp32);
        if (need_same) cpu_reference_destroy(&same);
        glm_safetensors_close(g);
    }
    int code = model_test_finish(&ctx, "quant_model");
    MPI_Finalize();
    return code;
}
