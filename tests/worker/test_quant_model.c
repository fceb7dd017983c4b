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
 * (fp8 activation scales and int4 groups follow each rank's slice of a row-parallel input).
 *
 * The accuracy table on the wide checkpoint (docs/PERF.md, Issue 15) takes two more options;
 * either one replaces the comparisons above by one "vs-ref:" line per prompt and reference:
 *   --vs16 bf16|f16   a second reference besides fp32: the dense 16-bit model on the cpu-bf16
 *                     backend with that storage (the GPU's roundings: "against bf16").
 *   --ref-cache DIR   each reference's run of each prompt (logits, 12 greedy ids, vision
 *                     embeddings) is written to DIR and read back from there by later runs, so
 *                     one format after another does not rebuild the 7.4 GB fp32 wide model. A
 *                     file records a hash of the checkpoint path, the reference and the prompt;
 *                     a file for other inputs is recomputed (regenerating a checkpoint at the same
 *                     path needs an empty DIR).
 * The references are built one after the other (one model of real widths in memory besides the
 * quantized one). Each line gives logits rel L2, top-1 agreement over every prompt position,
 * vision embeddings rel L2 and how many of the 12 greedy ids equal the reference's before the
 * first difference; --bound and --top1 hold against both references. */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cli.h"
#include "common/dtype.h"
#include "tests/testutil.h"
#include "tests/worker/model_test_frame.h"
#include "worker/rank_context.h"
#include "worker/safetensors.h"

typedef struct args {
    const char *dir, *device, *weights, *vision_weights, *same_device, *vs16, *ref_cache;
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
 * of our own: text[OWN_TEXT], image[OWN_IMAGE] (*n_image used) and the image's pixels (malloc'd;
 * NULL when out of memory). */
#define OWN_TEXT 40
#define OWN_IMAGE 32
static float *own_prompts(const glm_model_config *c, int32_t *text, int32_t *image, int *n_image)
{
    int ni = 0;
    test_rng rng;
    test_rng_seed(&rng, 11);
    for (int i = 0; i < OWN_TEXT; i++)
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
    *n_image = ni;
    return pixels;
}

/* Those prompts against fp32 only. */
static void check_own_prompts(glm_rank_context *ctx, glm_model *fp32, glm_model *same,
                              const args *a)
{
    const glm_model_config *c = &ctx->cfg;
    int32_t text[OWN_TEXT], image[OWN_IMAGE];
    int ni = 0;
    float *pixels = own_prompts(c, text, image, &ni);
    check_prompt(ctx, fp32, same, a, "own-text", text, OWN_TEXT, NULL, NULL, NULL, 0);
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

/* ---- The accuracy table's mode (--vs16, --ref-cache): references one after the other. ---- */

typedef struct prompt {
    char name[16];
    int32_t *ids;
    int n_ids;
    float *pixels; /* NULL: a text prompt */
} prompt;

/* One model's run of a prompt with the vision embeddings it produced (n_embeds 0 for text). */
typedef struct outcome {
    model_run run;
    float *embeds;
    size_t n_embeds;
} outcome;

static void outcome_free(outcome *o)
{
    free(o->run.logits);
    free(o->embeds);
    *o = (outcome){0};
}

static glm_status run_outcome(glm_model *m, int hidden, const prompt *p, outcome *o, glm_error *err)
{
    *o = (outcome){0};
    glm_status st = model_test_generate(m, p->ids, p->n_ids, p->pixels, 512, &o->run, err);
    if (st || !p->pixels) return st;
    o->n_embeds = (size_t)glm_model_image_rows(m) * hidden;
    if (!(o->embeds = malloc(o->n_embeds * sizeof(float))))
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for embeddings");
    return glm_model_read_image_embeds(m, 0, o->embeds, err);
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)data)[i]) * 0x100000001b3ull;
    return h;
}

/* What a cache file must have been made from: the checkpoint path, the reference, the prompt. */
static uint64_t cache_key(const args *a, const char *ref, const prompt *p, size_t n_pix)
{
    uint64_t h = fnv(0xcbf29ce484222325ull, a->dir, strlen(a->dir) + 1);
    h = fnv(h, ref, strlen(ref) + 1);
    h = fnv(h, p->ids, sizeof(int32_t) * (size_t)p->n_ids);
    return p->pixels ? fnv(h, p->pixels, n_pix * sizeof(float)) : h;
}

/* The cache file: "GQREF01\n", key, rows, vocab, n_ids, ids[MODEL_TEST_GEN], n_embeds, then the
 * logits [rows, vocab] and the embeddings as float32. */
static const char cache_magic[8] = "GQREF01\n";

static bool cache_write(const char *path, uint64_t key, int vocab, const outcome *o)
{
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    int32_t head[3] = {o->run.rows, vocab, o->run.n_ids};
    uint64_t ne = o->n_embeds;
    size_t nl = (size_t)o->run.rows * vocab;
    bool ok = fwrite(cache_magic, 8, 1, f) == 1 && fwrite(&key, 8, 1, f) == 1 &&
              fwrite(head, sizeof(head), 1, f) == 1 &&
              fwrite(o->run.ids, sizeof(o->run.ids), 1, f) == 1 && fwrite(&ne, 8, 1, f) == 1 &&
              fwrite(o->run.logits, sizeof(float), nl, f) == nl &&
              (ne == 0 || fwrite(o->embeds, sizeof(float), ne, f) == ne);
    return fclose(f) == 0 && ok;
}

/* Reads path into o when it holds key's run (false otherwise: missing, other inputs, short). */
static bool cache_read(const char *path, uint64_t key, int vocab, outcome *o)
{
    *o = (outcome){0};
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[8];
    uint64_t k = 0, ne = 0;
    int32_t head[3];
    bool ok = fread(magic, 8, 1, f) == 1 && !memcmp(magic, cache_magic, 8) &&
              fread(&k, 8, 1, f) == 1 && k == key && fread(head, sizeof(head), 1, f) == 1 &&
              head[0] > 0 && head[1] == vocab && head[2] >= 0 && head[2] <= MODEL_TEST_GEN &&
              fread(o->run.ids, sizeof(o->run.ids), 1, f) == 1 && fread(&ne, 8, 1, f) == 1;
    size_t nl = ok ? (size_t)head[0] * vocab : 0;
    if (ok) {
        o->run.rows = head[0], o->run.n_ids = head[2], o->n_embeds = ne;
        o->run.logits = malloc(nl * sizeof(float));
        o->embeds = ne ? malloc(ne * sizeof(float)) : NULL;
        ok = o->run.logits && (ne == 0 || o->embeds) &&
             fread(o->run.logits, sizeof(float), nl, f) == nl &&
             (ne == 0 || fread(o->embeds, sizeof(float), ne, f) == ne);
    }
    fclose(f);
    if (!ok) outcome_free(o);
    return ok;
}

/* A dense one-rank reference: "fp32" on the f32 CPU backend, or "bf16" / "f16" on cpu-bf16 with
 * that storage (the CUDA backend's roundings). */
static glm_model *dense_reference_create(glm_rank_context *ctx, const glm_model_options *mo,
                                         const char *ref, cpu_reference *out)
{
    glm_error err = {0};
    glm_model_options dense = *mo;
    dense.weight_format = dense.vision_weight_format = GLM_WEIGHT_DENSE;
    *out = (cpu_reference){0};
    bool f32 = !strcmp(ref, "fp32");
    glm_status st = f32 ? glm_backend_cpu_create(0, &out->be, &err)
                        : glm_backend_cpu_bf16_create(0, &out->be, &err);
    if (!st && !f32)
        st = glm_backend_set_storage(out->be, !strcmp(ref, "f16") ? GLM_F16 : GLM_BF16, &err);
    if (st || glm_comm_local_create(out->be, &out->comm, &err) ||
        glm_model_create(&ctx->cfg, &dense, ctx->ck, out->be, out->comm, &out->model, &err))
        fprintf(stderr, "%s reference model: %s\n", ref, err.msg);
    return out->model;
}

/* The reference ref's run of p: from the cache when it holds it, else computed on *model (built
 * on first need) and, with a cache, written and read back (so the figures come from the file
 * every run). */
static bool reference_outcome(glm_rank_context *ctx, const glm_model_options *mo, const args *a,
                              const char *ref, const prompt *p, cpu_reference *model, outcome *o)
{
    const glm_model_config *c = &ctx->cfg;
    size_t n_pix = (size_t)c->vision.in_channels * c->vision.image_size * c->vision.image_size;
    uint64_t key = cache_key(a, ref, p, n_pix);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.%s.ref", a->ref_cache ? a->ref_cache : ".", ref, p->name);
    if (a->ref_cache && cache_read(path, key, c->padded_vocab_size, o)) {
        printf("reference %s %s: read from %s\n", ref, p->name, path);
        return true;
    }
    if (!model->model && !dense_reference_create(ctx, mo, ref, model)) return false;
    glm_error err = {0};
    if (run_outcome(model->model, c->hidden_size, p, o, &err)) {
        fprintf(stderr, "%s %s: %s\n", ref, p->name, err.msg);
        outcome_free(o);
        return false;
    }
    if (!a->ref_cache) return true;
    bool ok = cache_write(path, key, c->padded_vocab_size, o);
    outcome_free(o);
    ok = ok && cache_read(path, key, c->padded_vocab_size, o);
    CHECK_MSG(ok, "%s: the reference run did not write and read back", path);
    printf("reference %s %s: computed, written to %s\n", ref, p->name, path);
    return ok;
}

/* The quantized run q of p against the reference r: one "vs-ref:" line, the bounds. */
static void compare(const glm_rank_context *ctx, const args *a, const char *ref, const prompt *p,
                    const outcome *q, const outcome *r)
{
    int vocab = ctx->cfg.padded_vocab_size, agree = 0, same_ids = 0;
    CHECK_MSG(q->run.rows == r->run.rows && q->n_embeds == r->n_embeds,
              "%s: %d rows, %zu embeddings; %s %d, %zu", p->name, q->run.rows, q->n_embeds, ref,
              r->run.rows, r->n_embeds);
    if (q->run.rows != r->run.rows || q->n_embeds != r->n_embeds) return;
    double e = rel_l2(q->run.logits, r->run.logits, (size_t)q->run.rows * vocab);
    double ev = q->n_embeds ? rel_l2(q->embeds, r->embeds, q->n_embeds) : 0;
    for (int i = 0; i < q->run.rows; i++)
        agree += argmax(q->run.logits + (size_t)i * vocab, vocab, NULL) ==
                 argmax(r->run.logits + (size_t)i * vocab, vocab, NULL);
    while (same_ids < q->run.n_ids && same_ids < r->run.n_ids &&
           q->run.ids[same_ids] == r->run.ids[same_ids])
        same_ids++;
    char vision[32] = "-";
    if (q->n_embeds) snprintf(vision, sizeof(vision), "%.2e", ev);
    printf("vs-ref: model=%s weights=%s vision=%s device=%s case=%s ref=%s: logits rel L2 %.2e; "
           "top-1 agreement %d/%d; vision embeds rel L2 %s; greedy ids equal: first %d of %d\n",
           a->dir, a->weights, a->vision_weights ? a->vision_weights : a->weights, ctx->be->name,
           p->name, ref, e, agree, q->run.rows, vision, same_ids, r->run.n_ids);
    CHECK_MSG(e <= a->bound, "%s %s: logits rel L2 %g against %s (bound %g)", a->weights, p->name,
              e, ref, a->bound);
    CHECK_MSG(ev <= a->bound, "%s %s: vision rel L2 %g against %s (bound %g)", a->weights, p->name,
              ev, ref, a->bound);
    CHECK_MSG(agree >= a->top1 * q->run.rows, "%s %s: top-1 agreement %d/%d with %s under %.2f",
              a->weights, p->name, agree, q->run.rows, ref, a->top1);
}

/* The prompts: golden's cases (text, image, random) when g is not NULL, else our own two. */
static int table_prompts(const glm_model_config *c, glm_safetensors *g, prompt *ps)
{
    int n = 0;
    const char *cases[] = {"text", "image", "random"};
    for (int i = 0; g && i < 3; i++) {
        char key[96];
        int64_t n_ids = 0, n_pix = 0;
        snprintf(key, sizeof(key), "%s.input_ids", cases[i]);
        prompt *p = &ps[n];
        *p = (prompt){0};
        snprintf(p->name, sizeof(p->name), "%s", cases[i]);
        p->ids = golden(g, key, true, &n_ids);
        p->n_ids = (int)n_ids;
        if (i == 1) p->pixels = golden(g, "pixel_values", false, &n_pix);
        CHECK(p->ids && (i != 1 || p->pixels));
        n += p->ids && (i != 1 || p->pixels);
    }
    if (g) return n;
    ps[0] =
        (prompt){.name = "own-text", .ids = malloc(sizeof(int32_t) * OWN_TEXT), .n_ids = OWN_TEXT};
    ps[1] = (prompt){.name = "own-image", .ids = malloc(sizeof(int32_t) * OWN_IMAGE)};
    if (!ps[0].ids || !ps[1].ids) return 0;
    ps[1].pixels = own_prompts(c, ps[0].ids, ps[1].ids, &ps[1].n_ids);
    return ps[1].pixels && c->has_vision ? 2 : 1;
}

static void check_against_refs(glm_rank_context *ctx, const glm_model_options *mo, const args *a,
                               glm_safetensors *g)
{
    prompt ps[3] = {0};
    outcome q[3] = {0};
    int n = table_prompts(&ctx->cfg, g, ps);
    CHECK(n > 0);
    glm_error err = {0};
    bool ran = true;
    for (int i = 0; i < n && ran; i++) {
        ran = run_outcome(ctx->model, ctx->cfg.hidden_size, &ps[i], &q[i], &err) == GLM_OK;
        CHECK_MSG(ran, "%s %s: %s", a->weights, ps[i].name, err.msg);
    }
    /* the cache directory may be new (a build tree's); an existing one is fine */
    if (a->ref_cache && mkdir(a->ref_cache, 0755) != 0 && errno != EEXIST)
        CHECK_MSG(false, "--ref-cache %s: %s", a->ref_cache, strerror(errno));
    const char *refs[] = {"fp32", a->vs16};
    for (int k = 0; ran && k < (a->vs16 ? 2 : 1); k++) {
        cpu_reference model = {0};
        for (int i = 0; i < n; i++) {
            outcome r;
            bool ok = reference_outcome(ctx, mo, a, refs[k], &ps[i], &model, &r);
            CHECK_MSG(ok, "no %s reference for %s", refs[k], ps[i].name);
            if (ok) compare(ctx, a, refs[k], &ps[i], &q[i], &r);
            outcome_free(&r);
        }
        if (model.model || model.be) cpu_reference_destroy(&model);
    }
    for (int i = 0; i < 3; i++) {
        outcome_free(&q[i]);
        free(ps[i].ids);
        free(ps[i].pixels);
    }
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
        else if (!strcmp(f, "--vs16") && (!strcmp(v, "bf16") || !strcmp(v, "f16")))
            a->vs16 = v;
        else if (!strcmp(f, "--ref-cache"))
            a->ref_cache = v;
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
                        "[--same-device cpu|cpu-bf16] [--vs16 bf16|f16] [--ref-cache DIR]\n");
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
        cpu_reference fp32 = {0}, same = {0};
        bool table = a.vs16 || a.ref_cache; /* the table's mode: check_against_refs */
        if (table) check_against_refs(&ctx, &mo, &a, have_golden ? g : NULL);
        if (!table) CHECK(cpu_reference_create(&ctx, &dense, &fp32) != NULL);
        bool need_same =
            !table && (strcmp(a.device, "cpu") != 0 || ctx.size > 1) && a.same_bound > 0;
        if (need_same) CHECK(same_reference_create(&ctx, &mo, a.same_device, &same) != NULL);
        const char *cases[] = {"text", "image", "random"};
        bool ready = !table && fp32.model && (!need_same || same.model);
        for (int i = 0; have_golden && ready && i < 3; i++)
            check_case(&ctx, fp32.model, same.model, &a, g, cases[i]);
        if (!have_golden && ready) check_own_prompts(&ctx, fp32.model, same.model, &a);
        if (!table) cpu_reference_destroy(&fp32);
        if (need_same) cpu_reference_destroy(&same);
        glm_safetensors_close(g);
    }
    int code = model_test_finish(&ctx, "quant_model");
    MPI_Finalize();
    return code;
}
