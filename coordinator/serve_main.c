/* glm4v-serve: one replica of the cluster, started as `mpirun -np TP glm4v-serve ...`.
 *
 * Rank 0 is the coordinator: it takes jobs from the Redis stream, turns them into sequences,
 * runs the continuous-batching loop (step plan -> all ranks -> logits -> sampled tokens), streams
 * Chunks and writes each Result, acknowledging the job in the same step. Ranks > 0 run the step
 * plans rank 0 broadcasts. SIGTERM drains: no new jobs, running ones finish within the grace
 * period, the rest are handed back for other replicas, exit 0.
 *
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad flags. */
#include <getopt.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "coordinator/rank_flags.h"
#include "coordinator/rank_main.h"
#include "coordinator/serve/metrics.h"
#include "coordinator/serve/scheduler.h"
#include "coordinator/serve/serve_loop.h"
#include "worker/rank_context.h"
#include "worker/step_exec.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_sigterm(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: mpirun -np TP glm4v-serve --model DIR [options]\n"
        "  --device cpu|cuda          backend (default cpu)\n"
        "  --dtype bf16|f16           16-bit storage on cuda (default bf16; f16: 8x more precise,\n"
        "                             refused for weights over 65504)\n"
        "  --weights bf16|f16|fp8|int8|int4  linear weights: 16-bit or quantized on load (see\n"
        "                             glm4v-run --help; fp8 needs sm_89+)\n"
        "  --vision-weights FORMAT    the vision tower's (default: as --weights)\n"
        "  --tp N                     tensor-parallel ranks (= mpirun -np)\n"
        "  --redis URL                redis://host:port[/db] (default redis://127.0.0.1:6379)\n"
        "  --redis-password-file F    Redis password (or env GLM4V_REDIS_PASSWORD)\n"
        "  --prefix P                 key prefix (default glm4v)\n"
        "  --server-id ID             consumer name (default host-pid)\n"
        "  --max-batch N              sequences per step (default 64)\n"
        "  --max-tokens-per-step N    token budget per step (default 2048)\n"
        "  --prefill-chunk N          prompt rows per sequence per step (default 512)\n"
        "  --max-new-tokens N         default when a job gives none (default 256)\n"
        "  --vision-cache N           image embeddings kept (default 16); also the most\n"
        "                             images being prefilled at once\n"
        "  --max-images-per-prompt N  images one job may carry, in any user messages (default 4,\n"
        "                             at most 8; more: ERROR_TOO_MANY_IMAGES); several images are\n"
        "                             an extension, the model was trained with one\n"
        "  --no-vision-reuse          never reuse a cached embedding (to measure the cache)\n"
        "  --no-prefix-cache          compute every prompt in full, never reusing the KV blocks\n"
        "                             of an earlier prompt's equal beginning (to measure it)\n"
        "  --kv-blocks N              KV blocks (default: from memory)\n"
        "  --gpu-memory GIB           memory budget per rank\n"
        "  --visibility-timeout-ms N  reclaim jobs idle this long (default 60000)\n"
        "  --max-deliveries N         dead-letter after N deliveries (default 3)\n"
        "  --grace-ms N               SIGTERM drain time (default 30000)\n"
        "  --step-timeout-ms N        step watchdog: deadline of every collective and step plan\n"
        "                             (default 30000, the first steps 10x; 0: none); a rank past\n"
        "                             it aborts the replica, whose jobs go to other replicas\n"
        "  --prep-threads N           threads decoding/tokenizing new jobs (default 4)\n"
        "  --metrics-port P           Prometheus /metrics port (0: off; default off)\n"
        "  --metrics-bind ADDR        bind address (default 127.0.0.1)\n"
        "  --crash-on-prompt TEXT     fault injection for tests: abort on a prompt holding TEXT\n"
        "  --random-weights SEED      random full-size weights (benchmarks)\n");
}

static int parse_args(int argc, char **argv, int rank, glm_serve_options *so, glm_rank_options *ro)
{
    enum {
        O_DEVICE = GLM_RANK_FLAG_END,
        O_TP,
        O_REDIS,
        O_PWFILE,
        O_PREFIX,
        O_ID,
        O_BATCH,
        O_BUDGET,
        O_CHUNK,
        O_MAXNEW,
        O_VCACHE,
        O_NOREUSE,
        O_NOPREFIX,
        O_KVB,
        O_GPU,
        O_VIS,
        O_DELIV,
        O_GRACE,
        O_STEPTO,
        O_MPORT,
        O_MBIND,
        O_CRASH,
        O_PREP,
        O_MAXIMG,
        O_HELP
    };
    static const struct option opts[] = {
        {"model", 1, 0, GLM_RANK_FLAG_MODEL},
        {"device", 1, 0, O_DEVICE},
        {"dtype", 1, 0, GLM_RANK_FLAG_DTYPE},
        {"weights", 1, 0, GLM_RANK_FLAG_WEIGHTS},
        {"vision-weights", 1, 0, GLM_RANK_FLAG_VISION_WEIGHTS},
        {"tp", 1, 0, O_TP},
        {"redis", 1, 0, O_REDIS},
        {"redis-password-file", 1, 0, O_PWFILE},
        {"prefix", 1, 0, O_PREFIX},
        {"server-id", 1, 0, O_ID},
        {"max-batch", 1, 0, O_BATCH},
        {"max-tokens-per-step", 1, 0, O_BUDGET},
        {"prefill-chunk", 1, 0, O_CHUNK},
        {"max-new-tokens", 1, 0, O_MAXNEW},
        {"vision-cache", 1, 0, O_VCACHE},
        {"no-vision-reuse", 0, 0, O_NOREUSE},
        {"no-prefix-cache", 0, 0, O_NOPREFIX},
        {"kv-blocks", 1, 0, O_KVB},
        {"gpu-memory", 1, 0, O_GPU},
        {"visibility-timeout-ms", 1, 0, O_VIS},
        {"max-deliveries", 1, 0, O_DELIV},
        {"grace-ms", 1, 0, O_GRACE},
        {"step-timeout-ms", 1, 0, O_STEPTO},
        {"metrics-port", 1, 0, O_MPORT},
        {"metrics-bind", 1, 0, O_MBIND},
        {"crash-on-prompt", 1, 0, O_CRASH},
        {"random-weights", 1, 0, GLM_RANK_FLAG_RANDOM_WEIGHTS},
        {"prep-threads", 1, 0, O_PREP},
        {"max-images-per-prompt", 1, 0, O_MAXIMG},
        {"help", 0, 0, O_HELP},
        {0, 0, 0, 0},
    };
    glm_serve_options_default(so);
    glm_rank_flags rf;
    glm_rank_flags_begin(&rf, "glm4v-serve", ro);
    /* integer flags: each must be a whole number inside its range, or the server does not start */
    const glm_cli_int_flag ints[] = {
        {O_TP, "--tp", 1, 64, &ro->tp},
        {O_BATCH, "--max-batch", 1, 4096, &so->max_batch},
        {O_BUDGET, "--max-tokens-per-step", 1, 1 << 20, &so->max_tokens_per_step},
        {O_CHUNK, "--prefill-chunk", 1, 1 << 20, &so->prefill_chunk},
        {O_MAXNEW, "--max-new-tokens", 1, 1 << 20, &so->default_max_new_tokens},
        {O_VCACHE, "--vision-cache", 1, 1 << 16, &so->vision_cache},
        {O_KVB, "--kv-blocks", 1, 1 << 30, &ro->model.kv_blocks},
        {O_VIS, "--visibility-timeout-ms", 100, 86400000, &so->visibility_timeout_ms},
        {O_DELIV, "--max-deliveries", 1, 1000, &so->max_deliveries},
        {O_GRACE, "--grace-ms", 0, 86400000, &so->grace_ms},
        {O_STEPTO, "--step-timeout-ms", 0, 86400000, &ro->step_timeout_ms},
        {O_MPORT, "--metrics-port", 0, 65535, &so->metrics_port},
        {O_PREP, "--prep-threads", 1, 64, &so->prep_threads},
        {O_MAXIMG, "--max-images-per-prompt", 1, GLM_SEQ_MAX_IMAGES, &so->max_images_per_prompt},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int taken = glm_rank_flag(&rf, c, optarg);
        if (!taken)
            taken =
                glm_cli_int_flags("glm4v-serve", ints, sizeof(ints) / sizeof(ints[0]), c, optarg);
        if (taken < 0) return 2;
        if (taken) continue;
        switch (c) {
        case O_DEVICE:
            ro->device = optarg;
            break;
        case O_REDIS:
            if (strchr(optarg, '@')) {
                if (!rank)
                    fprintf(stderr, "glm4v-serve: passwords do not go on the command line; use "
                                    "--redis-password-file or GLM4V_REDIS_PASSWORD\n");
                return 2;
            }
            so->redis_url = optarg;
            break;
        case O_PWFILE:
            so->password_file = optarg;
            break;
        case O_PREFIX:
            so->prefix = optarg;
            break;
        case O_ID:
            so->server_id = optarg;
            break;
        case O_GPU: {
            double gib;
            if (!glm_cli_number("glm4v-serve", "--gpu-memory", optarg, 0.1, 1e6, &gib)) return 2;
            ro->gpu_memory_gib = gib;
            break;
        }
        case O_MBIND:
            so->metrics_bind = optarg;
            break;
        case O_CRASH:
            so->crash_on_prompt = optarg;
            break;
        case O_NOREUSE:
            so->no_vision_reuse = true;
            break;
        case O_NOPREFIX:
            so->no_prefix_cache = true;
            break;
        case O_HELP:
            if (!rank) usage(stdout);
            exit(0);
        default:
            glm_cli_bad_option("glm4v-serve", argv[optind - 1], rank != 0, usage);
            return 2;
        }
    }
    if (!glm_rank_flags_finish(&rf, rank != 0)) return 2;
    if (so->max_batch < 1 || so->max_tokens_per_step < so->max_batch || so->prefill_chunk < 1 ||
        so->vision_cache < 1 || so->max_deliveries < 1 || so->grace_ms < 0 ||
        so->prep_threads < 1 || so->prep_threads > 64) {
        if (!rank) fprintf(stderr, "glm4v-serve: batch/budget/chunk/cache values out of range\n");
        return 2;
    }
    /* a sequence's images are all held, and the new ones encoded, in the step admitting it */
    if (so->vision_cache < so->max_images_per_prompt) {
        if (!rank)
            fprintf(stderr, "glm4v-serve: --vision-cache %d must hold --max-images-per-prompt %d\n",
                    so->vision_cache, so->max_images_per_prompt);
        return 2;
    }
    if (so->max_images_per_step < so->max_images_per_prompt)
        so->max_images_per_step = so->max_images_per_prompt;
    /* the model's capacities follow the scheduler's */
    ro->model.max_seqs = so->max_batch;
    ro->model.max_step_tokens = so->max_tokens_per_step;
    ro->model.max_logit_rows = so->max_batch;
    ro->model.max_images = so->max_images_per_step;
    ro->model.image_pool_slots = so->vision_cache;
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    /* every rank ignores the signal's default action; only rank 0 acts on it */
    struct sigaction sa = {.sa_handler = on_sigterm};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    glm_serve_options so;
    glm_rank_options ro;
    int code = parse_args(argc, argv, rank, &so, &ro);
    if (code) {
        MPI_Finalize();
        return code;
    }
    glm_rank_context ctx;
    glm_error err = {0};
    if (glm_rank_context_create(&ro, &ctx, &err)) {
        fprintf(stderr, "glm4v-serve: rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return 1;
    }
    if (rank == 0) {
        code = glm_serve_run(&ctx, &ro, &so, &stop_requested, &err) ? 1 : 0;
        if (code) fprintf(stderr, "glm4v-serve: %s\n", err.msg);
        glm_error e2 = {0};
        if (glm_step_shutdown(ctx.model, &e2)) code = 1;
    }
    return glm_rank_main_end(&ctx, code, "glm4v-serve");
}
