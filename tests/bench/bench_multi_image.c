/* bench_multi_image: time to first token and images/s of prompts with several images against
 * one-image prompts, in one run, through glm4v-run's path (issue 22).
 *
 *   [mpirun -np N] bench_multi_image --model configs/glm-4v-9b --device cuda [--tp N]
 *       [--images 1,2,4] [--reps 5] [--warmup 2] [--prefill-chunk 2048] [--text-rows 30]
 *       [--dtype bf16|f16] [--threads N] [--quick]
 *
 * Weights are random (the checkpoint folder's config only). For each image count n, a prompt of
 * n images (each the 3-id placeholder, spliced to boi + patches + eoi) and --text-rows text ids
 * goes through coordinator/serve/run_once.c (scheduler, step driver, the vision tower on all n
 * images in one batch, prefill in chunks, the first token drawn on the device) with
 * max_new_tokens 1, so the wall time of the call is the time to first token. Every figure is the
 * median of --reps runs after --warmup runs, each with fresh random pixels (no vision cache:
 * run_once starts an empty one). Printed per n, as one machine-readable line:
 *   bench multi_image n=N rows=R ttft_ms=.. vision_ms=.. vision_ms_per_image=.. images_per_s=..
 *         prefill_ms=..
 * and at the end the ratios to n = 1 (the vision work per image must not grow with n). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "coordinator/serve/run_once.h"
#include "tests/bench/bench_util.h"
#include "worker/rank_context.h"
#include "worker/step_exec.h"

#define MAX_COUNTS 8

typedef struct args {
    const char *model, *device, *dtype;
    int tp, threads, reps, warmup, chunk, text_rows, quick;
    int counts[MAX_COUNTS], n_counts;
} args;

static int parse_counts(const char *s, args *a)
{
    a->n_counts = 0;
    for (const char *p = s; *p && a->n_counts < MAX_COUNTS;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > GLM_SEQ_MAX_IMAGES) return 0;
        a->counts[a->n_counts++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return a->n_counts > 0;
}

/* Returns 0, or 2 for a usage error. */
static int parse_args(int argc, char **argv, int rank, args *a)
{
    *a = (args){.device = "cpu", .tp = 1, .reps = 5, .warmup = 2, .chunk = 2048, .text_rows = 30};
    parse_counts("1,2,4", a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = 0;
        if (!strcmp(o, "--quick")) {
            a->quick = 1, a->reps = 1, a->warmup = 0;
            continue;
        }
        if (!v) goto bad;
        i++;
        if (!strcmp(o, "--model"))
            a->model = v;
        else if (!strcmp(o, "--device"))
            a->device = v;
        else if (!strcmp(o, "--dtype"))
            a->dtype = v;
        else if (!strcmp(o, "--images")) {
            if (!parse_counts(v, a)) goto bad;
        } else if (!strcmp(o, "--tp") && glm_cli_int("bench_multi_image", o, v, 1, 64, &n))
            a->tp = (int)n;
        else if (!strcmp(o, "--threads") && glm_cli_int("bench_multi_image", o, v, 1, 1024, &n))
            a->threads = (int)n;
        else if (!strcmp(o, "--reps") && glm_cli_int("bench_multi_image", o, v, 1, 1000, &n))
            a->reps = (int)n;
        else if (!strcmp(o, "--warmup") && glm_cli_int("bench_multi_image", o, v, 0, 1000, &n))
            a->warmup = (int)n;
        else if (!strcmp(o, "--prefill-chunk") &&
                 glm_cli_int("bench_multi_image", o, v, 16, 1 << 16, &n))
            a->chunk = (int)n;
        else if (!strcmp(o, "--text-rows") && glm_cli_int("bench_multi_image", o, v, 1, 4096, &n))
            a->text_rows = (int)n;
        else
            goto bad;
    }
    if (a->model) return 0;
bad:
    if (!rank)
        fprintf(stderr, "usage: [mpirun -np N] bench_multi_image --model DIR [--device cpu|cuda] "
                        "[--tp N] [--images 1,2,4] [--reps R] [--warmup W] [--prefill-chunk C] "
                        "[--text-rows T] [--dtype bf16|f16] [--threads N] [--quick]\n");
    return 2;
}

typedef struct figure {
    int n, rows;
    double ttft_ms, vision_ms, prefill_ms;
} figure;

/* Rank 0: every image count, warm-up runs then timed ones. */
static int drive(glm_rank_context *ctx, const args *a, figure *out)
{
    const glm_model_config *cfg = &ctx->cfg;
    size_t floats =
        (size_t)cfg->vision.in_channels * cfg->vision.image_size * cfg->vision.image_size;
    unsigned seed = 22;
    for (int c = 0; c < a->n_counts; c++) {
        int n = a->counts[c], n_ids = 3 * n + a->text_rows;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_ids);
        float *pixels = malloc(sizeof(float) * floats * (size_t)n);
        double *ttft = calloc((size_t)a->reps, sizeof(double));
        double *vision = calloc((size_t)a->reps, sizeof(double));
        double *prefill = calloc((size_t)a->reps, sizeof(double));
        if (!ids || !pixels || !ttft || !vision || !prefill) return 1;
        /* four text ids, the images one after the other (as in one user message), the rest text
         * (ordinary ids, below the special ones) */
        unsigned text_vocab = cfg->boi_token_id > 1020 ? 1000u : (unsigned)cfg->boi_token_id - 20;
        int t = 0;
        for (int i = 0; i < 4; i++)
            ids[t++] = (int32_t)(rand_r(&seed) % text_vocab);
        for (int k = 0; k < n; k++) {
            ids[t++] = cfg->boi_token_id;
            ids[t++] = cfg->pad_token_id;
            ids[t++] = cfg->eoi_token_id;
        }
        while (t < n_ids)
            ids[t++] = (int32_t)(rand_r(&seed) % text_vocab);
        for (int r = 0; r < a->warmup + a->reps; r++) {
            for (size_t i = 0; i < floats * (size_t)n; i++)
                pixels[i] = (float)(rand_r(&seed) % 4001) / 1000.0f - 2.0f;
            glm_run_once_request req = {.ids = ids,
                                        .n_ids = n_ids,
                                        .pixels = pixels,
                                        .n_images = n,
                                        .max_new_tokens = 1,
                                        .ignore_eos = true,
                                        .prefill_chunk = a->chunk};
            glm_run_once_result res;
            glm_error err = {0};
            double t0 = bench_now_ms();
            glm_status st = glm_run_once(ctx->model, &req, &res, &err);
            double ms = bench_now_ms() - t0;
            if (st) {
                fprintf(stderr, "bench_multi_image: %d images: %s\n", n, err.msg);
                return 1;
            }
            out[c].rows = res.spliced_length;
            if (r >= a->warmup) {
                ttft[r - a->warmup] = ms;
                vision[r - a->warmup] = res.vision_ms;
                prefill[r - a->warmup] = res.prefill_ms;
            }
            glm_run_once_result_free(&res);
        }
        out[c].n = n;
        out[c].ttft_ms = bench_median(ttft, a->reps);
        out[c].vision_ms = bench_median(vision, a->reps);
        out[c].prefill_ms = bench_median(prefill, a->reps);
        printf(
            "bench multi_image n=%d rows=%d ttft_ms=%.4g vision_ms=%.4g vision_ms_per_image=%.4g "
            "images_per_s=%.4g prefill_ms=%.4g reps=%d\n",
            n, out[c].rows, out[c].ttft_ms, out[c].vision_ms, out[c].vision_ms / n,
            out[c].vision_ms > 0 ? n * 1e3 / out[c].vision_ms : 0, out[c].prefill_ms, a->reps);
        fflush(stdout);
        free(ids), free(pixels), free(ttft), free(vision), free(prefill);
    }
    printf("\n| images | spliced rows | TTFT ms | vision ms | vision ms / image | images/s | "
           "prefill ms | TTFT vs 1 image | vision/image vs 1 image |\n"
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int c = 0; c < a->n_counts; c++) {
        const figure *f = &out[c], *one = &out[0];
        double per = f->vision_ms / f->n, per1 = one->vision_ms / one->n;
        printf("| %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2fx | %.2fx |\n", f->n, f->rows,
               f->ttft_ms, f->vision_ms, per, f->vision_ms > 0 ? f->n * 1e3 / f->vision_ms : 0,
               f->prefill_ms, f->ttft_ms / one->ttft_ms, per1 > 0 ? per / per1 : 0);
    }
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    args a;
    int code = parse_args(argc, argv, rank, &a);
    if (code) {
        MPI_Finalize();
        return code;
    }
    int most = 1;
    for (int c = 0; c < a.n_counts; c++)
        if (a.counts[c] > most) most = a.counts[c];
    glm_rank_options ro = {.model_dir = a.model, .device = a.device, .dtype = a.dtype, .tp = a.tp};
    ro.cpu_threads = a.threads;
    ro.step_timeout_ms = GLM_STEP_TIMEOUT_MS_DEFAULT;
    glm_model_options_default(&ro.model);
    ro.model.use_random_weights = 1;
    ro.model.random_seed = 1;
    ro.model.max_seqs = 1;
    ro.model.max_step_tokens = a.chunk;
    ro.model.max_logit_rows = 1;
    ro.model.max_images = most; /* a prompt's images go through the tower in one batch */
    ro.model.image_pool_slots = most;
    glm_rank_context ctx;
    glm_error err = {0};
    if (glm_rank_context_create(&ro, &ctx, &err)) {
        fprintf(stderr, "bench_multi_image: rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return 1;
    }
    if (rank == 0) {
        char line[512];
        glm_model_describe_memory(ctx.model, line, sizeof(line));
        printf("bench_multi_image: %s, tp %d, device %s, prefill chunk %d, %s\n", a.model, ctx.size,
               a.device, a.chunk, line);
        figure out[MAX_COUNTS] = {{0}};
        code = drive(&ctx, &a, out);
        if (glm_step_shutdown(ctx.model, &err)) code = 1;
    } else if (glm_worker_serve(ctx.model, &err)) {
        fprintf(stderr, "bench_multi_image: rank %d: %s\n", rank, err.msg);
        code = 1;
    }
    if (!glm_rank_group_ok(&ctx)) glm_rank_abort(&ctx, code, "bench_multi_image");
    glm_rank_context_destroy(&ctx);
    MPI_Finalize();
    return code;
}
