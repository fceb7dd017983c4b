/* glm4v-run: one request through the model, on one rank or a tensor-parallel group started by
 * mpirun. Rank 0 reads the inputs and runs them as a one-sequence batch through the server's
 * path (coordinator/serve/run_once.c: scheduler, step driver, device sampler, greedy); the other
 * ranks serve its step plans.
 *
 *   glm4v-run --model DIR [--device cpu|cuda] [--tp N] --input-ids 1,2,3 [--pixels F[:T]] ...
 *
 * Exit codes: 0 success, 1 runtime failure (loading, backend), 2 bad flags or inputs. */
#include <errno.h>
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "coordinator/rank_flags.h"
#include "coordinator/rank_main.h"
#include "coordinator/run_inputs.h"
#include "coordinator/serve/run_once.h"
#include "kernels/backend_registry.h"
#include "worker/rank_context.h"
#include "worker/safetensors.h"
#include "worker/step_exec.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: glm4v-run --model DIR [options]\n"
               "  --device cpu|cuda|cpu-bf16  compute backend (default cpu; cpu-bf16: the CUDA path's\n"
               "                           bf16 rounding on the CPU)\n"
               "  --dtype bf16|f16         16-bit storage of cuda / cpu-bf16 (default bf16; f16 is\n"
               "                           8x more precise, refused for weights over 65504)\n"
               "  --weights bf16|f16|fp8|int8|int4  linear weights: 16-bit, or quantized on load (fp8:\n"
               "                           E4M3 + per-channel and per-token scales, sm_89+; int8:\n"
               "                           weight-only per channel; int4: groups of 128, zero points)\n"
               "  --vision-weights FORMAT  the vision tower's (default: as --weights)\n"
               "  --tp N                   tensor-parallel ranks (= mpirun -np N; default 1)\n"
               "  --input-ids 1,2,3        prompt as token ids\n"
               "  --prompt TEXT            prompt text (chat template applied)\n"
               "  --system TEXT            system message\n"
               "  --messages FILE          a JSON conversation instead of --prompt: [{\"role\":\n"
               "                           \"user\", \"content\": [{\"image\": 0}, {\"text\": \"..\"}]},\n"
               "                           ...]; {\"image\": K} is the K-th --image / --pixels\n"
               "                           image, each used once; any user turn may hold images\n"
               "  --image FILE             JPEG/PNG/WebP image for the prompt; repeat for several\n"
               "                           (in prompt order, all in the user message, at most 8)\n"
               "  --pixels FILE[:TENSOR]   preprocessed pixels [n,3,S,S] (n images) from a\n"
               "                           safetensors file (tensor default: pixel_values);\n"
               "                           repeatable, in prompt order\n"
               "  --max-new-tokens N       tokens to generate (default 32; 0: prefill only)\n"
               "  --ignore-eos             do not stop at eos ids\n"
               "  --dump-logits OUT        write logits [prompt positions, vocab] float32 to OUT\n"
               "  --dump-pixels OUT        write the preprocessed image as pixel_values to OUT\n"
               "  --json                   print one JSON object with the results\n"
               "  --prefill-chunk N        prompt tokens per step (default 512)\n"
               "  --random-weights SEED    random weights of the config's shape (benchmarks)\n"
               "  --gpu-memory GIB         memory budget per rank (default: free minus a margin)\n"
               "  --threads N              CPU threads per rank (default: OpenMP's)\n"
               "  --step-timeout-ms N      step watchdog: deadline of every collective and step\n"
               "                           plan (default 30000, the first steps 10x; 0: none)\n");
}

/* Returns 0, or 2 for a usage error (message printed by rank 0). */
static int parse_args(int argc, char **argv, int rank, glm_run_args *a, glm_rank_options *ro)
{
    enum {
        O_IDS = GLM_RANK_FLAG_END,
        O_PIXELS,
        O_MAXNEW,
        O_IGNORE_EOS,
        O_DUMP_LOGITS,
        O_DUMP_PIXELS,
        O_JSON,
        O_CHUNK,
        O_GPU_MEM,
        O_THREADS,
        O_STEPTO,
        O_PROMPT,
        O_SYSTEM,
        O_MESSAGES,
        O_IMAGE,
        O_TP,
        O_DEVICE,
        O_HELP
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, GLM_RANK_FLAG_MODEL},
        {"device", required_argument, 0, O_DEVICE},
        {"dtype", required_argument, 0, GLM_RANK_FLAG_DTYPE},
        {"weights", required_argument, 0, GLM_RANK_FLAG_WEIGHTS},
        {"vision-weights", required_argument, 0, GLM_RANK_FLAG_VISION_WEIGHTS},
        {"tp", required_argument, 0, O_TP},
        {"input-ids", required_argument, 0, O_IDS},
        {"prompt", required_argument, 0, O_PROMPT},
        {"system", required_argument, 0, O_SYSTEM},
        {"messages", required_argument, 0, O_MESSAGES},
        {"image", required_argument, 0, O_IMAGE},
        {"pixels", required_argument, 0, O_PIXELS},
        {"max-new-tokens", required_argument, 0, O_MAXNEW},
        {"ignore-eos", no_argument, 0, O_IGNORE_EOS},
        {"dump-logits", required_argument, 0, O_DUMP_LOGITS},
        {"dump-pixels", required_argument, 0, O_DUMP_PIXELS},
        {"json", no_argument, 0, O_JSON},
        {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"random-weights", required_argument, 0, GLM_RANK_FLAG_RANDOM_WEIGHTS},
        {"gpu-memory", required_argument, 0, O_GPU_MEM},
        {"threads", required_argument, 0, O_THREADS},
        {"step-timeout-ms", required_argument, 0, O_STEPTO},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof(*a));
    glm_rank_flags rf;
    glm_rank_flags_begin(&rf, "glm4v-run", ro);
    a->max_new_tokens = 32;
    a->prefill_chunk = 512;
    const glm_cli_int_flag ints[] = {
        {O_TP, "--tp", 1, 64, &ro->tp},
        {O_MAXNEW, "--max-new-tokens", 0, 1 << 20, &a->max_new_tokens},
        {O_CHUNK, "--prefill-chunk", 1, 1 << 16, &a->prefill_chunk},
        {O_THREADS, "--threads", 1, 1024, &ro->cpu_threads},
        {O_STEPTO, "--step-timeout-ms", 0, 86400000, &ro->step_timeout_ms},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int taken = glm_rank_flag(&rf, c, optarg);
        if (!taken)
            taken = glm_cli_int_flags("glm4v-run", ints, sizeof(ints) / sizeof(ints[0]), c, optarg);
        if (taken < 0) return 2;
        if (taken) continue;
        switch (c) {
        case O_DEVICE:
            if (!glm_backend_find(optarg)) { /* the backend registry: what this build has */
                char names[128];
                if (!rank)
                    fprintf(stderr, "glm4v-run: --device must be one of: %s\n",
                            glm_backend_names(names, sizeof(names)));
                return 2;
            }
            ro->device = optarg;
            break;
        case O_IDS:
            a->input_ids = optarg;
            break;
        case O_PROMPT:
            a->prompt = optarg;
            break;
        case O_SYSTEM:
            a->system = optarg;
            break;
        case O_MESSAGES:
            a->messages = optarg;
            break;
        case O_IMAGE:
        case O_PIXELS: {
            int *n = c == O_IMAGE ? &a->n_images : &a->n_pixels;
            if (*n == GLM_RUN_MAX_IMAGES) {
                if (!rank) fprintf(stderr, "glm4v-run: more than %d images\n", GLM_RUN_MAX_IMAGES);
                return 2;
            }
            (c == O_IMAGE ? a->images : a->pixels)[(*n)++] = optarg;
            break;
        }
        case O_IGNORE_EOS:
            a->ignore_eos = true;
            break;
        case O_DUMP_LOGITS:
            a->dump_logits = optarg;
            break;
        case O_DUMP_PIXELS:
            a->dump_pixels = optarg;
            break;
        case O_JSON:
            a->json = true;
            break;
        case O_GPU_MEM:
            ro->gpu_memory_gib = strtod(optarg, NULL);
            if (ro->gpu_memory_gib <= 0) {
                if (!rank) fprintf(stderr, "glm4v-run: --gpu-memory expects a positive GiB\n");
                return 2;
            }
            break;
        case O_HELP:
            if (!rank) usage(stdout);
            exit(0);
        default:
            glm_cli_bad_option("glm4v-run", argv[optind - 1], rank != 0, usage);
            return 2;
        }
    }
    if (optind < argc) {
        if (!rank) fprintf(stderr, "glm4v-run: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!glm_rank_flags_finish(&rf, rank != 0)) return 2;
    if ((a->input_ids != NULL) + (a->prompt != NULL) + (a->messages != NULL) != 1) {
        if (!rank)
            fprintf(stderr,
                    "glm4v-run: give exactly one of --input-ids, --prompt and --messages\n");
        return 2;
    }
    if (a->messages && a->system) {
        if (!rank) fprintf(stderr, "glm4v-run: with --messages, put the system message in it\n");
        return 2;
    }
    if (a->n_images && a->n_pixels) {
        if (!rank) fprintf(stderr, "glm4v-run: give --image or --pixels, not both\n");
        return 2;
    }
    if (a->input_ids && (a->n_images || a->system)) {
        if (!rank)
            fprintf(stderr, "glm4v-run: --image and --system need --prompt (with --input-ids, "
                            "give preprocessed --pixels and the image ids yourself)\n");
        return 2;
    }
    return 0;
}

static int write_logits(const char *path, const float *logits, int rows, int vocab)
{
    glm_st_write_tensor t = {
        .name = "logits", .dtype = GLM_F32, .ndim = 2, .shape = {rows, vocab}, .data = logits};
    glm_error err = {0};
    if (glm_safetensors_write(path, &t, 1, &err)) {
        fprintf(stderr, "glm4v-run: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Rank 0: inputs -> one-sequence batch -> output. Returns the process exit code. */
static int drive(glm_rank_context *ctx, glm_run_args *a)
{
    glm_error err = {0};
    glm_run_inputs in = {0};
    int code = 0;
    glm_status st =
        glm_run_inputs_prepare(a, &ctx->cfg, glm_model_image_rows(ctx->model), &in, &err);
    int spliced = 0;
    glm_run_once_request req = {.max_new_tokens = a->max_new_tokens,
                                .ignore_eos = a->ignore_eos,
                                .prefill_chunk = a->prefill_chunk};
    if (!st) {
        req.ids = in.ids;
        req.n_ids = in.n_ids;
        req.pixels = in.pixels;
        req.n_images = in.n_images;
        st = glm_run_once_validate(ctx->model, &req, &spliced, &err);
    }
    if (st) {
        fprintf(stderr, "glm4v-run: %s\n", err.msg);
        glm_run_inputs_free(&in);
        return 2;
    }
    if (a->dump_logits &&
        !(req.dump_logits = malloc(sizeof(float) * (size_t)spliced * ctx->cfg.padded_vocab_size))) {
        fprintf(stderr, "glm4v-run: out of memory for %d x %d logits\n", spliced,
                ctx->cfg.padded_vocab_size);
        glm_run_inputs_free(&in);
        return 1;
    }
    glm_run_once_result res;
    st = glm_run_once(ctx->model, &req, &res, &err);
    if (st) {
        fprintf(stderr, "glm4v-run: %s\n", err.msg);
        code = st == GLM_ERR_INVALID_ARG || st == GLM_ERR_LIMIT ? 2 : 1;
    } else {
        if (a->dump_logits)
            code =
                write_logits(a->dump_logits, req.dump_logits, spliced, ctx->cfg.padded_vocab_size);
        glm_run_print_result(a, &in, &res, stdout);
        glm_run_once_result_free(&res);
    }
    free(req.dump_logits);
    glm_run_inputs_free(&in);
    return code;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    glm_run_args args;
    glm_rank_options ro;
    int code = parse_args(argc, argv, rank, &args, &ro);
    args.model_dir = ro.model_dir;
    if (code) {
        MPI_Finalize();
        return code;
    }
    /* every rank sizes its vision batch and image pool for the prompt's images: rank 0 counts
     * them (reading --pixels headers) and tells the others; -1 stops them all on an input error */
    int n_images = 0;
    if (rank == 0) {
        glm_error cerr = {0};
        if (glm_run_count_images(&args, &n_images, &cerr)) {
            fprintf(stderr, "glm4v-run: %s\n", cerr.msg);
            n_images = -1;
        }
    }
    MPI_Bcast(&n_images, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (n_images < 0) {
        MPI_Finalize();
        return 2;
    }
    ro.model.max_seqs = 1;
    ro.model.max_step_tokens = args.prefill_chunk;
    ro.model.max_logit_rows = args.dump_logits ? args.prefill_chunk : 1;
    ro.model.max_images = n_images > 0 ? n_images : 1;
    ro.model.image_pool_slots = ro.model.max_images;

    glm_rank_context ctx;
    glm_error err = {0};
    glm_status st = glm_rank_context_create(&ro, &ctx, &err);
    if (st) {
        fprintf(stderr, "glm4v-run: rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return st == GLM_ERR_INVALID_ARG ? 2 : 1;
    }
    if (rank == 0) {
        char line[512];
        glm_shard_plan_describe(&ctx.cfg, glm_model_shard_plan(ctx.model), line, sizeof(line));
        if (ctx.size > 1) fprintf(stderr, "glm4v-run: %s\n", line);
        glm_model_describe_memory(ctx.model, line, sizeof(line));
        fprintf(stderr, "glm4v-run: %s\n", line);
        code = drive(&ctx, &args);
        if (glm_step_shutdown(ctx.model, &err)) code = 1;
    }
    return glm_rank_main_end(&ctx, code, "glm4v-run");
}
