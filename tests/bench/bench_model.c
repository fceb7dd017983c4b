/* bench_model: full-size GLM-4V-9B benchmark on random weights (issues 4 and 5).
 *
 *   [mpirun -np N] bench_model --model configs/glm-4v-9b --device cuda [--tp N] [options]
 *
 * Rank 0 drives; the other ranks sit in glm_worker_serve and run the plans it broadcasts, exactly as
 * in glm4v-run / glm4v-serve. Every figure goes through the public model API (glm_step_execute
 * and the draw it returns, glm_step_output), so host work (plan building, uploads, the MPI plan broadcast) is part of the
 * time, as it is for a user.
 *
 * Timing: the backend is synchronized (be->ops->synchronize) before each host clock reading; every
 * figure is the median of several timed runs after warm-up runs. Inputs are random, never zeros.
 *
 * perf mode (default), in this order:
 *   1. device ceilings on rank 0: device-to-device copy bandwidth (bytes read + written) and the
 *      bf16 GEMM rate through glm_op_linear (cuBLASLt on CUDA);
 *   2. vision tower ms for --vision 1,4,16 images (one glm_model_encode_images call of n images);
 *   3. prefill ms of an image prompt (4 text rows + 1602 image rows + 26 text rows = 1632) and of
 *      --text-prefill 4096 text tokens in chunks of --prefill-chunk (default: one step of 4096);
 *   4. decode tokens/s for --decode 1,8,32,64,128,256 sequences at --ctx 1024: the contexts are
 *      prefilled first (several sequences per step), then each timed step feeds one token per
 *      sequence and samples greedily on the device (glm_step_output); tokens/s = batch / step time;
 *   5. memory: weights / KV / scratch per rank and the device memory in use (peak);
 *   6. with --tp > 1 and --no-comm, every rank's all-reduce and all-gather are no-ops (the plan
 *      broadcast over MPI stays): the same figures then give each step's time without NCCL, and
 *      1 - (that time / the time with NCCL) is NCCL's share of the step, waiting included
 *      (scripts/bench-gpu.sh runs both and prints the shares). The numbers it computes are
 *      meaningless; only their time is.
 * Each figure is printed as one machine-readable line when measured
 *   bench <figure> key=value ... value=V unit=U floor=F
 * (floor: the time or rate the measured ceilings allow for that figure's FLOPs and bytes) and
 * again in a table at the end.
 *
 * memory mode (--mode memory, for the "two 24 GB cards" claim at TP 2): --gpu-memory GIB budget per
 * rank, --mem-seqs 16 sequences of --mem-ctx 4096 tokens prefilled in --mem-chunk 2048 chunks (one
 * image encoded first), then --mem-decode-steps decode steps of all of them; prints per-rank
 * weights / KV / scratch GiB and the device memory in use. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GLM4V_HAVE_CUDA
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>
#endif

#include "common/cli.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "tests/bench/bench_util.h"
#include "worker/rank_context.h"
#include "worker/step_exec.h"

/* Each timed phase is an NVTX range (vision-N, prefill-image, prefill-text, decode-bN, warm-up
 * runs included), so that a profiler can take one phase alone, e.g.
 *   ncu --nvtx --nvtx-include "decode-b1/" --launch-count 40 bench_model ... */
#ifdef GLM4V_HAVE_CUDA
#define PHASE_BEGIN(name) nvtxRangePushA(name)
#define PHASE_END() nvtxRangePop()
#else
#define PHASE_BEGIN(name) ((void)(name))
#define PHASE_END() ((void)0)
#endif

#define MAX_LIST 16
#define MAX_RESULTS 64

/* ---- options ---- */

typedef struct bench_args {
    const char *model_dir;
    const char *device;
    const char *dtype; /* NULL: the backend's default */
    const char *weights, *vision_weights; /* --weights / --vision-weights (NULL: 16-bit) */
    int tp;
    int threads;
    uint64_t seed;
    int quick;
    int memory_mode;
    int no_comm; /* --no-comm: data collectives skipped (timing the step without NCCL) */
    double gpu_memory_gib;
    int ceilings;
    int vision[MAX_LIST], n_vision;
    int decode[MAX_LIST], n_decode;
    int ctx;
    int text_prefill;
    int prefill_chunk;
    int image_text_rows; /* text rows around the image in the image prompt (30) */
    int decode_steps, decode_warmup;
    int warmup, reps;
    int mem_seqs, mem_ctx, mem_chunk, mem_decode_steps;
} bench_args;

static int parse_list(const char *s, int *out, int *n)
{
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > (1 << 20) || *n >= MAX_LIST) return -1;
        out[(*n)++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: [mpirun -np N] bench_model --model DIR [options]\n"
            "  --device cpu|cuda        backend (default cuda)\n"
            "  --dtype bf16|f16         16-bit storage on cuda (default bf16)\n"
            "  --weights bf16|f16|fp8|int8|int4  linear weight format (default 16-bit); the\n"
            "                           decode floor counts that format's bytes\n"
            "  --vision-weights FORMAT  the vision tower's (default: as --weights)\n"
            "  --tp N                   tensor-parallel ranks (= mpirun -np N; default 1)\n"
            "  --random-weights SEED    weight seed (default 1; the bench never reads weights)\n"
            "  --quick                  small shapes and few repetitions (CI smoke on tiny models)\n"
            "  --mode perf|memory       figures (default) or the TP memory run\n"
            "  --no-ceilings            skip the copy / GEMM ceiling measurement\n"
            "  --no-comm                skip every all-reduce / all-gather (TP step time without\n"
            "                           NCCL; results are garbage, times are not)\n"
            "  --vision LIST            images per vision batch (default 1,4,16; empty: skip)\n"
            "  --decode LIST            decode batch sizes (default 1,8,32,64,128,256; empty: skip)\n"
            "  --ctx N                  decode context (default 1024)\n"
            "  --text-prefill N         text prompt rows (default 4096; 0: skip)\n"
            "  --prefill-chunk N        rows per prefill step (default: the whole prompt)\n"
            "  --decode-steps N         timed decode steps per batch (default 32)\n"
            "  --warmup N / --reps N    warm-up and timed runs for prefill (default 2 / 5)\n"
            "  --gpu-memory GIB         memory budget per rank (memory mode: default 22)\n"
            "  --mem-seqs N --mem-ctx N --mem-chunk N --mem-decode-steps N   memory mode shape\n"
            "                           (default 16, 4096, 2048, 8)\n"
            "  --threads N              CPU threads per rank\n");
}

static int parse_args(int argc, char **argv, int rank, bench_args *a)
{
    memset(a, 0, sizeof(*a));
    a->device = "cuda";
    a->tp = 1;
    a->seed = 1;
    a->ceilings = 1;
    int vision_set = 0, decode_set = 0;
    a->ctx = 1024;
    a->text_prefill = 4096;
    a->image_text_rows = 30;
    a->decode_steps = 32;
    a->decode_warmup = 4;
    a->warmup = 2;
    a->reps = 5;
    a->mem_seqs = 16;
    a->mem_ctx = 4096;
    a->mem_chunk = 2048;
    a->mem_decode_steps = 8;
    int ctx_set = 0, text_set = 0, steps_set = 0, warm_set = 0, reps_set = 0;
    static const char *with_value[] = {
        "--model", "--device", "--dtype", "--tp", "--threads", "--random-weights", "--mode", "--vision",
        "--decode", "--ctx", "--text-prefill", "--prefill-chunk", "--decode-steps", "--warmup",
        "--reps", "--gpu-memory", "--mem-seqs", "--mem-ctx", "--mem-chunk", "--mem-decode-steps",
        "--weights", "--vision-weights"};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = NULL;
        for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
            if (!strcmp(o, with_value[k])) {
                if (i + 1 >= argc) {
                    if (!rank) fprintf(stderr, "bench_model: %s needs a value\n", o);
                    return 2;
                }
                v = argv[++i];
            }
        if (!strcmp(o, "--model")) a->model_dir = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--dtype")) a->dtype = v;
        else if (!strcmp(o, "--weights")) a->weights = v;
        else if (!strcmp(o, "--vision-weights")) a->vision_weights = v;
        else if (!strcmp(o, "--tp")) a->tp = atoi(v);
        else if (!strcmp(o, "--threads")) a->threads = atoi(v);
        else if (!strcmp(o, "--random-weights")) a->seed = strtoull(v, NULL, 10);
        else if (!strcmp(o, "--quick")) a->quick = 1;
        else if (!strcmp(o, "--no-ceilings")) a->ceilings = 0;
        else if (!strcmp(o, "--no-comm")) a->no_comm = 1;
        else if (!strcmp(o, "--mode")) {
            if (!strcmp(v, "memory")) a->memory_mode = 1;
            else if (strcmp(v, "perf")) goto bad;
        } else if (!strcmp(o, "--vision")) {
            if (parse_list(v, a->vision, &a->n_vision)) goto bad;
            vision_set = 1;
        } else if (!strcmp(o, "--decode")) {
            if (parse_list(v, a->decode, &a->n_decode)) goto bad;
            decode_set = 1;
        } else if (!strcmp(o, "--ctx")) a->ctx = atoi(v), ctx_set = 1;
        else if (!strcmp(o, "--text-prefill")) a->text_prefill = atoi(v), text_set = 1;
        else if (!strcmp(o, "--prefill-chunk")) a->prefill_chunk = atoi(v);
        else if (!strcmp(o, "--decode-steps")) a->decode_steps = atoi(v), steps_set = 1;
        else if (!strcmp(o, "--warmup")) a->warmup = atoi(v), warm_set = 1;
        else if (!strcmp(o, "--reps")) a->reps = atoi(v), reps_set = 1;
        else if (!strcmp(o, "--gpu-memory")) a->gpu_memory_gib = atof(v);
        else if (!strcmp(o, "--mem-seqs")) a->mem_seqs = atoi(v);
        else if (!strcmp(o, "--mem-ctx")) a->mem_ctx = atoi(v);
        else if (!strcmp(o, "--mem-chunk")) a->mem_chunk = atoi(v);
        else if (!strcmp(o, "--mem-decode-steps")) a->mem_decode_steps = atoi(v);
        else if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            if (!rank) usage(stdout);
            return 1;
        } else goto bad;
        continue;
    bad:
        if (!rank) {
            fprintf(stderr, "bench_model: bad option or value: %s %s\n", o, v ? v : "");
            usage(stderr);
        }
        return 2;
    }
    if (!a->model_dir) {
        if (!rank) fprintf(stderr, "bench_model: --model DIR is required\n");
        return 2;
    }
    if (strcmp(a->device, "cpu") && strcmp(a->device, "cuda")) {
        if (!rank) fprintf(stderr, "bench_model: --device must be cpu or cuda\n");
        return 2;
    }
    if (a->quick) {
        int qv[] = {1, 2}, qd[] = {1, 4};
        if (!vision_set) memcpy(a->vision, qv, sizeof(qv)), a->n_vision = 2;
        if (!decode_set) memcpy(a->decode, qd, sizeof(qd)), a->n_decode = 2;
        if (!ctx_set) a->ctx = 32;
        if (!text_set) a->text_prefill = 64;
        if (!steps_set) a->decode_steps = 3;
        if (!warm_set) a->warmup = 1;
        if (!reps_set) a->reps = 2;
        a->decode_warmup = 1;
        if (a->mem_ctx == 4096) a->mem_ctx = 64;
        if (a->mem_chunk == 2048) a->mem_chunk = 32;
        if (a->mem_seqs == 16) a->mem_seqs = 4;
        if (a->mem_decode_steps == 8) a->mem_decode_steps = 2;
    } else {
        int dv[] = {1, 4, 16}, dd[] = {1, 8, 32, 64, 128, 256};
        if (!vision_set) memcpy(a->vision, dv, sizeof(dv)), a->n_vision = 3;
        if (!decode_set) memcpy(a->decode, dd, sizeof(dd)), a->n_decode = 6;
    }
    if (a->memory_mode && a->gpu_memory_gib <= 0 && !a->quick) a->gpu_memory_gib = 22;
    if (a->tp < 1 || a->ctx < 1 || a->decode_steps < 1 || a->reps < 1 || a->warmup < 0 ||
        a->mem_seqs < 1 || a->mem_ctx < 1 || a->mem_chunk < 1 || a->mem_decode_steps < 1) {
        if (!rank) fprintf(stderr, "bench_model: sizes must be positive\n");
        return 2;
    }
    for (int i = 0; i < a->n_vision; i++)
        if (a->vision[i] < 1) {
            if (!rank) fprintf(stderr, "bench_model: --vision counts must be >= 1\n");
            return 2;
        }
    for (int i = 0; i < a->n_decode; i++)
        if (a->decode[i] < 1) {
            if (!rank) fprintf(stderr, "bench_model: --decode batches must be >= 1\n");
            return 2;
        }
    return 0;
}

/* ---- small helpers ---- */

static int max_of(const int *v, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > m) m = v[i];
    return m;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int32_t random_token(int vocab)
{
    return (int32_t)(rng_next() % (uint64_t)vocab);
}

/* ---- results ---- */

typedef struct result {
    char figure[48];
    char params[96];
    double value;
    const char *unit;
    double floor; /* same unit as value; 0: none */
    int higher_better;
} result;

static result results[MAX_RESULTS];
static int n_results;

/* Prints the machine-readable line and keeps the figure for the table. */
static void report(const char *figure, const char *params, double value, const char *unit,
                   double floor, int higher_better, const char *extra)
{
    printf("bench %s%s%s value=%.4g unit=%s", figure, params[0] ? " " : "", params, value, unit);
    if (floor > 0) printf(" floor=%.4g", floor);
    if (extra && extra[0]) printf(" %s", extra);
    printf("\n");
    fflush(stdout);
    if (n_results < MAX_RESULTS) {
        result *r = &results[n_results++];
        snprintf(r->figure, sizeof(r->figure), "%s", figure);
        snprintf(r->params, sizeof(r->params), "%s", params);
        r->value = value;
        r->unit = unit;
        r->floor = floor;
        r->higher_better = higher_better;
    }
}

/* ---- FLOP and byte counts of the whole model (divided by tp for one rank) ---- */

typedef struct model_counts {
    double dec_params;    /* linear weights of the 40 layers */
    double out_params;    /* output_layer */
    double dec_weight_bytes_step; /* bytes every decode step reads: layers + output + norms */
    double kv_bytes_per_token;    /* K and V of all layers, all KV heads */
} model_counts;

static model_counts count_model(const glm_model_config *c)
{
    model_counts k;
    double h = c->hidden_size, hd = c->kv_channels, q = c->num_attention_heads,
           kv = c->multi_query_group_num, f = c->ffn_hidden_size;
    double layer = h * (q + 2 * kv) * hd + (q + 2 * kv) * hd + q * hd * h + h * 2 * f + f * h + 2 * h;
    k.dec_params = c->num_layers * layer;
    k.out_params = (double)c->padded_vocab_size * h;
    k.dec_weight_bytes_step = 2.0 * (k.dec_params + k.out_params + h);
    k.kv_bytes_per_token = 2.0 * c->num_layers * 2 * kv * hd;
    return k;
}

/* Bytes a decode step reads per weight in the --weights format: 2 for 16-bit, 1 for fp8 and
 * int8 (a scale per row is noise), int4 half a byte plus a float scale and a zero point per 128. */
static double weight_bytes_per_param(const char *weights)
{
    if (!weights || !strcmp(weights, "bf16") || !strcmp(weights, "f16")) return 2.0;
    return strcmp(weights, "int4") == 0 ? 0.5 + 5.0 / GLM_INT4_GROUP : 1.0;
}

/* Prefill of T rows of one sequence (causal attention over itself), logits for one row. */
static double prefill_flops(const glm_model_config *c, double T)
{
    model_counts k = count_model(c);
    double attn = c->num_layers * 4.0 * c->num_attention_heads * c->kv_channels * T * (T + 1) / 2;
    return 2.0 * T * k.dec_params + 2.0 * k.out_params + attn;
}

static double vision_flops(const glm_model_config *c, double n)
{
    const glm_vision_config *v = &c->vision;
    double g = v->image_size / v->patch_size, S = g * g + 1, hv = v->hidden_size;
    double h = c->hidden_size, f = c->ffn_hidden_size, t = (g / 2) * (g / 2);
    double layer = 2 * S * (hv * 3 * hv + hv * hv + 2 * hv * v->intermediate_size) + 4 * S * S * hv;
    double patch = 2 * g * g * v->in_channels * v->patch_size * v->patch_size * hv;
    double conv = 2 * t * 4 * hv * h;
    double proj = 2 * t * (h * h + 2 * h * f + f * h);
    return n * (v->num_layers * layer + patch + conv + proj);
}

typedef struct ceilings {
    double copy_gbps;   /* GB/s, bytes read + written */
    double gemm_tflops; /* bf16 */
} ceilings;

/* Floors in ms for one rank of tp (work split evenly), or 0 without ceilings. */
static double floor_ms(const ceilings *cl, double flops, double bytes, int tp)
{
    if (cl->copy_gbps <= 0 || cl->gemm_tflops <= 0) return 0;
    double t_c = flops / tp / (cl->gemm_tflops * 1e9), t_m = bytes / tp / (cl->copy_gbps * 1e6);
    return t_c > t_m ? t_c : t_m;
}

/* ---- memory probe (device memory in use; CUDA only) ---- */

static size_t mem_total, mem_free_start, mem_free_min = SIZE_MAX;

/* On the rank's own GPU (the one glm_rank_context will pick: the node-local rank): a bare
 * cudaFree(0) would open a context on device 0 in every rank, and at TP > 1 those stray contexts
 * showed up as rank 0's memory. */
static void mem_probe_start(void)
{
#ifdef GLM4V_HAVE_CUDA
    MPI_Comm node;
    int local_rank = 0, n_devices = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || local_rank >= n_devices) return;
    size_t f = 0, t = 0;
    if (cudaSetDevice(local_rank) == cudaSuccess && cudaFree(0) == cudaSuccess &&
        cudaMemGetInfo(&f, &t) == cudaSuccess) {
        mem_free_start = f;
        mem_total = t;
    }
#endif
}

static void mem_probe(glm_backend *be)
{
    size_t f = be->ops->free_memory(be);
    if (f != SIZE_MAX && f < mem_free_min) mem_free_min = f;
}

static double gib(double bytes)
{
    return bytes / (1024.0 * 1024.0 * 1024.0);
}

/* Parses "weights X GiB, KV cache Y GiB ... scratch Z GiB, image pool W GiB" of
 * glm_model_describe_memory into out[4]. */
static void parse_memory_line(const char *line, double out[4])
{
    const char *keys[4] = {"weights ", "KV cache ", "scratch ", "image pool "};
    for (int i = 0; i < 4; i++) {
        const char *p = strstr(line, keys[i]);
        out[i] = p ? atof(p + strlen(keys[i])) : 0;
    }
}

/* ---- the driver (rank 0) ---- */

typedef struct driver {
    bench_args *a;
    glm_rank_context *ctx;
    glm_model *m;
    glm_backend *be;
    const glm_model_config *cfg;
    void *world; /* MPI_Comm *, NULL with one rank */
    glm_step_plan plan;
    int bs, max_blocks, image_rows;
    int blocks_per_seq; /* decode sequences' blocks */
    ceilings cl;
    glm_sample_params *greedy;
    int32_t *ids;
    glm_error err;
    /* step times kept for the NCCL share (rank 0) */
    double decode_step_ms[MAX_LIST];
    double prefill_image_ms, vision1_ms;
} driver;

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        glm_status st_ = (expr);                                                                   \
        if (st_) {                                                                                 \
            fprintf(stderr, "bench_model: %s:%d: %s\n", __FILE__, __LINE__, d->err.msg);           \
            return st_;                                                                            \
        }                                                                                          \
    } while (0)

static glm_status sync_be(driver *d)
{
    d->be->ops->synchronize(d->be);
    return glm_backend_take_error(d->be, &d->err);
}

/* One step on every rank; ids (when not NULL) receives a greedy draw of each logit row, made on
 * the device as the server makes it. */
static glm_status exec(driver *d, const float *pixels, int32_t *ids)
{
    glm_step_output out = {.sample = d->greedy, .ids_host = ids};
    return glm_step_execute(d->m, &d->plan, pixels, ids ? &out : NULL, &d->err);
}

/* Ceilings on rank 0's device: copy bandwidth and bf16 GEMM rate, through the backend's own ops. */
static glm_status measure_ceilings(driver *d)
{
    glm_backend *be = d->be;
    size_t copy_bytes = d->a->quick ? (size_t)32 << 20 : (size_t)1 << 30;
    int64_t n = d->a->quick ? 256 : 8192;
    void *src = NULL, *dst = NULL, *x = NULL, *w = NULL, *y = NULL;
    glm_status st = be->ops->alloc(be, copy_bytes, &src);
    if (!st) st = be->ops->alloc(be, copy_bytes, &dst);
    if (!st) st = be->ops->alloc(be, (size_t)(n * n) * glm_dtype_size(be->act_dtype), &x);
    if (!st) st = be->ops->alloc(be, (size_t)(n * n) * glm_dtype_size(be->weight_dtype), &w);
    if (!st) st = be->ops->alloc(be, (size_t)(n * n) * glm_dtype_size(be->act_dtype), &y);
    if (st) {
        glm_backend_take_error(be, &d->err);
        fprintf(stderr, "bench_model: ceilings skipped: %s\n", d->err.msg);
        goto done;
    }
    glm_tensor tx = glm_tensor_2d(be->act_dtype, n, n, x), tw = glm_tensor_2d(be->weight_dtype, n, n, w);
    glm_tensor ty = glm_tensor_2d(be->act_dtype, n, n, y);
    glm_op_fill_normal(be, glm_tensor_1d(be->act_dtype,
                                         (int64_t)(copy_bytes / glm_dtype_size(be->act_dtype)), src),
                       7, 0.f, 1.f);
    glm_op_fill_normal(be, tx, 11, 0.f, 1.f);
    glm_op_fill_normal(be, tw, 13, 0.f, 0.02f);
    if ((st = sync_be(d))) goto done;
    int batch = d->a->quick ? 2 : 10, rounds = d->a->quick ? 2 : 7;
    double t[16];
    for (int i = 0; i < 3; i++) be->ops->copy(be, dst, src, copy_bytes);
    if ((st = sync_be(d))) goto done;
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_now_ms();
        for (int i = 0; i < batch; i++) be->ops->copy(be, dst, src, copy_bytes);
        be->ops->synchronize(be);
        t[r] = (bench_now_ms() - t0) / batch;
    }
    double ms = bench_median(t, rounds);
    d->cl.copy_gbps = 2.0 * copy_bytes / ms / 1e6;
    char params[96];
    snprintf(params, sizeof(params), "bytes=%zu", copy_bytes);
    report("ceiling_copy_gbps", params, d->cl.copy_gbps, "GB/s", 0, 1, "");

    batch = d->a->quick ? 2 : 5;
    glm_weight tww = glm_weight_dense(tw);
    for (int i = 0; i < 3; i++) glm_op_linear(be, ty, tx, tww, NULL, GLM_ACT_NONE);
    if ((st = sync_be(d))) goto done;
    for (int r = 0; r < rounds; r++) {
        double t0 = bench_now_ms();
        for (int i = 0; i < batch; i++) glm_op_linear(be, ty, tx, tww, NULL, GLM_ACT_NONE);
        be->ops->synchronize(be);
        t[r] = (bench_now_ms() - t0) / batch;
    }
    if ((st = glm_backend_take_error(be, &d->err))) goto done;
    ms = bench_median(t, rounds);
    d->cl.gemm_tflops = 2.0 * n * n * n / ms / 1e9;
    snprintf(params, sizeof(params), "m=%lld n=%lld k=%lld", (long long)n, (long long)n, (long long)n);
    report("ceiling_gemm_tflops", params, d->cl.gemm_tflops, "TFLOP/s", 0, 1, "");
done:
    be->ops->free(be, src), be->ops->free(be, dst), be->ops->free(be, x), be->ops->free(be, w),
        be->ops->free(be, y);
    glm_backend_take_error(be, &d->err);
    return GLM_OK; /* the figures still run without ceilings */
}

static float *random_pixels(int n, const glm_vision_config *v)
{
    size_t count = (size_t)n * v->in_channels * v->image_size * v->image_size;
    float *p = malloc(count * sizeof(float));
    if (!p) return NULL;
    for (size_t i = 0; i < count; i++) /* normalized pixel range, about [-1.8, 2.1] */
        p[i] = (float)((double)(rng_next() >> 11) / 9007199254740992.0 * 3.9 - 1.8);
    return p;
}

static glm_status bench_vision(driver *d)
{
    const glm_vision_config *v = &d->cfg->vision;
    int nmax = max_of(d->a->vision, d->a->n_vision);
    if (nmax < 1) nmax = 1;
    float *pixels = random_pixels(nmax, v);
    if (!pixels) return glm_fail(&d->err, GLM_ERR_NOMEM, "out of host memory for pixels");
    glm_status st = GLM_OK;
    /* slot 0 always gets an image: the image prompt prefill reads it */
    for (int k = -1; k < d->a->n_vision && !st; k++) {
        int n = k < 0 ? 1 : d->a->vision[k];
        int warm = k < 0 ? 1 : d->a->quick ? 1 : n >= 16 ? 1 : 2;
        int reps = k < 0 ? 0 : d->a->quick ? 1 : n >= 16 ? 3 : n >= 4 ? 4 : 7;
        st = glm_step_plan_resize(&d->plan, 0, 0, d->max_blocks, 0, n, &d->err);
        if (st) break;
        d->plan.flags = 0;
        for (int i = 0; i < n; i++) d->plan.image_slots[i] = i;
        double t[16];
        char phase[32];
        snprintf(phase, sizeof(phase), "vision-%d", n);
        PHASE_BEGIN(phase);
        for (int r = 0; r < warm + reps && !st; r++) {
            if ((st = sync_be(d))) break;
            double t0 = bench_now_ms();
            st = exec(d, pixels, NULL);
            if (!st) st = sync_be(d);
            if (r >= warm) t[r - warm] = bench_now_ms() - t0;
        }
        PHASE_END();
        if (st || k < 0) continue;
        double ms = bench_median(t, reps);
        if (n == 1) d->vision1_ms = ms;
        char params[96], extra[160];
        snprintf(params, sizeof(params), "n=%d", n);
        /* the pixels go up as float32 and patchify converts them on the device: the call has no
         * host conversion pass left to report */
        snprintf(extra, sizeof(extra), "per_image_ms=%.4g reps=%d", ms / n, reps);
        report("vision_ms", params, ms, "ms",
               floor_ms(&d->cl, vision_flops(d->cfg, n), 0, d->ctx->size), 0, extra);
    }
    free(pixels);
    return st;
}

/* Fills d->plan with rows [first, first + n) of one sequence whose blocks are first_block.. and
 * whose rows are given by ids / positions / image_rows arrays. */
static glm_status plan_chunk(driver *d, const int32_t *ids, const int32_t *pos, const int32_t *img,
                             int first, int n, int total, int first_block)
{
    int last = first + n == total;
    glm_status st = glm_step_plan_resize(&d->plan, 1, n, d->max_blocks, last ? 1 : 0, 0, &d->err);
    if (st) return st;
    glm_step_plan *p = &d->plan;
    p->flags = 0;
    for (int i = 0; i < n; i++) {
        int r = first + i;
        p->token_ids[i] = ids[r];
        p->positions[i] = pos[r];
        p->image_rows[i] = img[r];
        p->slots[i] = (first_block + r / d->bs) * d->bs + r % d->bs;
    }
    p->q_start[0] = 0;
    p->q_start[1] = n;
    p->ctx_len[0] = first + n;
    memset(p->block_table, 0, sizeof(int32_t) * (size_t)d->max_blocks);
    for (int b = 0; b < (total + d->bs - 1) / d->bs; b++) p->block_table[b] = first_block + b;
    if (last) p->logit_rows[0] = n - 1;
    return GLM_OK;
}

/* One prompt through the decoder in chunks, then one greedy sample; returns ms. */
static glm_status run_prompt(driver *d, const int32_t *ids, const int32_t *pos, const int32_t *img,
                             int total, int chunk, double *ms)
{
    glm_status st = sync_be(d);
    if (st) return st;
    int32_t next = 0;
    double t0 = bench_now_ms();
    for (int first = 0; first < total && !st; first += chunk) {
        int n = total - first < chunk ? total - first : chunk;
        st = plan_chunk(d, ids, pos, img, first, n, total, 0);
        if (!st) st = exec(d, NULL, &next); /* the last chunk's row draws the first token */
    }
    if (!st) st = sync_be(d);
    *ms = bench_now_ms() - t0;
    return st;
}

static glm_status bench_prefill(driver *d)
{
    int img_total = d->cfg->has_vision ? d->image_rows + d->a->image_text_rows : 0;
    int text_total = d->a->text_prefill;
    int cap = img_total > text_total ? img_total : text_total;
    if (cap == 0) return GLM_OK;
    int32_t *ids = malloc(sizeof(int32_t) * cap), *pos = malloc(sizeof(int32_t) * cap),
            *img = malloc(sizeof(int32_t) * cap);
    if (!ids || !pos || !img) {
        free(ids), free(pos), free(img);
        return glm_fail(&d->err, GLM_ERR_NOMEM, "out of host memory");
    }
    glm_status st = GLM_OK;
    for (int kind = 0; kind < 2 && !st; kind++) {
        int total = kind == 0 ? img_total : text_total;
        if (total <= 0) continue;
        int vocab = d->cfg->padded_vocab_size;
        if (kind == 0) {
            /* [gMASK]<sop><|user|>\n boi [1600 patches] eoi + 26 text rows; the image in pool slot 0 */
            int b = 4, after = d->a->image_text_rows - b;
            for (int r = 0; r < b; r++) ids[r] = random_token(vocab), pos[r] = r, img[r] = -1;
            for (int j = 0; j < d->image_rows; j++) {
                ids[b + j] = -1;
                img[b + j] = j;
                pos[b + j] = j == 0 ? b : j == d->image_rows - 1 ? b + 2 : b + 1;
            }
            for (int j = 0; j < after; j++) {
                int r = b + d->image_rows + j;
                ids[r] = random_token(vocab), pos[r] = b + 3 + j, img[r] = -1;
            }
        } else {
            for (int r = 0; r < total; r++) ids[r] = random_token(vocab), pos[r] = r, img[r] = -1;
        }
        int chunk = kind == 0 || d->a->prefill_chunk <= 0 ? total : d->a->prefill_chunk;
        double t[32];
        int warm = d->a->warmup, reps = d->a->reps > 32 ? 32 : d->a->reps;
        PHASE_BEGIN(kind == 0 ? "prefill-image" : "prefill-text");
        for (int r = 0; r < warm + reps && !st; r++) {
            double ms = 0;
            st = run_prompt(d, ids, pos, img, total, chunk, &ms);
            if (r >= warm) t[r - warm] = ms;
        }
        PHASE_END();
        if (st) break;
        double ms = bench_median(t, reps);
        model_counts k = count_model(d->cfg);
        double fl = floor_ms(&d->cl, prefill_flops(d->cfg, total),
                             2.0 * (k.dec_params + k.out_params) + total * k.kv_bytes_per_token,
                             d->ctx->size);
        char params[96], extra[96];
        snprintf(params, sizeof(params), "kind=%s rows=%d chunk=%d", kind == 0 ? "image" : "text",
                 total, chunk);
        snprintf(extra, sizeof(extra), "tokens_per_s=%.0f reps=%d", total / ms * 1e3, reps);
        report("prefill_ms", params, ms, "ms", fl, 0, extra);
        if (kind == 0) d->prefill_image_ms = ms;
    }
    free(ids), free(pos), free(img);
    return st;
}

/* Decode sequence s owns blocks s * blocks_per_seq ...; its first ctx rows are prefilled once. */
static int32_t decode_slot(const driver *d, int s, int row)
{
    return (s * d->blocks_per_seq + row / d->bs) * d->bs + row % d->bs;
}

static void decode_block_row(const driver *d, int s, int32_t *row)
{
    memset(row, 0, sizeof(int32_t) * (size_t)d->max_blocks);
    for (int b = 0; b < d->blocks_per_seq; b++) row[b] = s * d->blocks_per_seq + b;
}

/* Prefills rows [0, ctx) of sequences [0, n_seqs), several sequences per step. */
static glm_status fill_contexts(driver *d, int n_seqs, int ctx, int max_tokens)
{
    int per_step = max_tokens / ctx;
    if (per_step < 1) per_step = 1;
    int chunk = ctx < max_tokens ? ctx : max_tokens;
    glm_status st = GLM_OK;
    for (int s0 = 0; s0 < n_seqs && !st; s0 += per_step) {
        int ns = n_seqs - s0 < per_step ? n_seqs - s0 : per_step;
        for (int first = 0; first < ctx && !st; first += chunk) {
            int n = ctx - first < chunk ? ctx - first : chunk;
            st = glm_step_plan_resize(&d->plan, ns, ns * n, d->max_blocks, 0, 0, &d->err);
            if (st) break;
            glm_step_plan *p = &d->plan;
            p->flags = 0;
            p->q_start[0] = 0;
            for (int i = 0; i < ns; i++) {
                int s = s0 + i;
                for (int j = 0; j < n; j++) {
                    int t = i * n + j, r = first + j;
                    p->token_ids[t] = random_token(d->cfg->padded_vocab_size);
                    p->positions[t] = r;
                    p->image_rows[t] = -1;
                    p->slots[t] = decode_slot(d, s, r);
                }
                p->q_start[i + 1] = (i + 1) * n;
                p->ctx_len[i] = first + n;
                decode_block_row(d, s, p->block_table + (size_t)i * d->max_blocks);
            }
            st = exec(d, NULL, NULL);
        }
    }
    if (!st) st = sync_be(d);
    return st;
}

/* One decode step of sequences [0, B) at row `row` (context row + 1 after it); samples greedily. */
static glm_status decode_step(driver *d, int B, int row)
{
    glm_status st = glm_step_plan_resize(&d->plan, B, B, d->max_blocks, B, 0, &d->err);
    if (st) return st;
    glm_step_plan *p = &d->plan;
    p->flags = 0;
    p->q_start[0] = 0;
    for (int s = 0; s < B; s++) {
        p->token_ids[s] = d->ids[s];
        p->positions[s] = row;
        p->image_rows[s] = -1;
        p->slots[s] = decode_slot(d, s, row);
        p->q_start[s + 1] = s + 1;
        p->ctx_len[s] = row + 1;
        p->logit_rows[s] = s;
        decode_block_row(d, s, p->block_table + (size_t)s * d->max_blocks);
    }
    st = exec(d, NULL, d->ids);
    return st;
}

static glm_status bench_decode(driver *d)
{
    int bmax = max_of(d->a->decode, d->a->n_decode);
    if (bmax < 1) return GLM_OK;
    int ctx = d->a->ctx;
    double t0 = bench_now_ms();
    glm_status st = fill_contexts(d, bmax, ctx, d->a->quick ? ctx : 4096);
    if (st) return st;
    fprintf(stderr, "bench_model: prefilled %d contexts of %d tokens in %.1f s\n", bmax, ctx,
            (bench_now_ms() - t0) / 1e3);
    model_counts k = count_model(d->cfg);
    for (int bi = 0; bi < d->a->n_decode && !st; bi++) {
        int B = d->a->decode[bi];
        for (int s = 0; s < B; s++) d->ids[s] = random_token(d->cfg->padded_vocab_size);
        int warm = d->a->decode_warmup, steps = d->a->decode_steps;
        double *t = malloc(sizeof(double) * (size_t)steps);
        if (!t) return glm_fail(&d->err, GLM_ERR_NOMEM, "out of host memory");
        double total = 0;
        char phase[32];
        snprintf(phase, sizeof(phase), "decode-b%d", B);
        PHASE_BEGIN(phase);
        for (int i = 0; i < warm + steps && !st; i++) {
            /* rows ctx .. ctx + warm + steps - 1: the context stays ~ctx for every batch size */
            if ((st = sync_be(d))) break;
            double ts = bench_now_ms();
            st = decode_step(d, B, ctx + i);
            if (!st) st = sync_be(d);
            if (i >= warm) t[i - warm] = bench_now_ms() - ts, total += t[i - warm];
        }
        PHASE_END();
        if (st) {
            free(t);
            break;
        }
        double ms = bench_median(t, steps);
        free(t);
        d->decode_step_ms[bi] = ms;
        double mid_ctx = ctx + warm + steps / 2.0;
        double bytes = weight_bytes_per_param(d->a->weights) / 2.0 * k.dec_weight_bytes_step +
                       B * mid_ctx * k.kv_bytes_per_token;
        double flops = 2.0 * B * (k.dec_params + k.out_params) +
                       4.0 * B * mid_ctx * d->cfg->num_attention_heads * d->cfg->kv_channels *
                           d->cfg->num_layers;
        double fms = floor_ms(&d->cl, flops, bytes, d->ctx->size);
        char params[96], extra[128];
        snprintf(params, sizeof(params), "batch=%d ctx=%d", B, ctx);
        snprintf(extra, sizeof(extra), "step_ms=%.4g mean_step_ms=%.4g steps=%d", ms, total / steps,
                 steps);
        report("decode_tps", params, B / ms * 1e3, "tok/s", fms > 0 ? B / fms * 1e3 : 0, 1, extra);
    }
    return st;
}

static void report_memory(driver *d)
{
    char line[512];
    glm_model_describe_memory(d->m, line, sizeof(line));
    fprintf(stderr, "bench_model: %s\n", line);
}

/* Rank 0's whole perf run. */
static glm_status drive_perf(driver *d)
{
    if (d->a->ceilings) TRY(measure_ceilings(d));
    mem_probe(d->be);
    if (d->cfg->has_vision) TRY(bench_vision(d));
    mem_probe(d->be);
    TRY(bench_prefill(d));
    mem_probe(d->be);
    TRY(bench_decode(d));
    mem_probe(d->be);
    return GLM_OK;
}

/* Rank 0's memory-mode run: an image, then mem_seqs sequences of mem_ctx tokens, then decode. */
static glm_status drive_memory(driver *d)
{
    bench_args *a = d->a;
    int need = a->mem_seqs * d->blocks_per_seq;
    if (glm_model_kv_blocks(d->m) < need)
        return glm_fail(&d->err, GLM_ERR_LIMIT,
                        "KV cache has %d blocks; %d sequences of %d tokens need %d",
                        glm_model_kv_blocks(d->m), a->mem_seqs, a->mem_ctx, need);
    if (d->cfg->has_vision) {
        float *pixels = random_pixels(1, &d->cfg->vision);
        if (!pixels) return glm_fail(&d->err, GLM_ERR_NOMEM, "out of host memory");
        glm_status st = glm_step_plan_resize(&d->plan, 0, 0, d->max_blocks, 0, 1, &d->err);
        if (!st) {
            d->plan.flags = 0;
            d->plan.image_slots[0] = 0;
            st = exec(d, pixels, NULL);
        }
        free(pixels);
        TRY(st);
    }
    double t0 = bench_now_ms();
    TRY(fill_contexts(d, a->mem_seqs, a->mem_ctx, a->mem_chunk));
    double fill_ms = bench_now_ms() - t0;
    char params[96], extra[96];
    snprintf(params, sizeof(params), "seqs=%d ctx=%d chunk=%d", a->mem_seqs, a->mem_ctx, a->mem_chunk);
    snprintf(extra, sizeof(extra), "tokens_per_s=%.0f", (double)a->mem_seqs * a->mem_ctx / fill_ms * 1e3);
    report("mem_prefill_ms", params, fill_ms, "ms", 0, 0, extra);
    for (int s = 0; s < a->mem_seqs; s++) d->ids[s] = random_token(d->cfg->padded_vocab_size);
    double t[64];
    int steps = a->mem_decode_steps > 64 ? 64 : a->mem_decode_steps;
    for (int i = 0; i < steps; i++) {
        TRY(sync_be(d));
        double ts = bench_now_ms();
        TRY(decode_step(d, a->mem_seqs, a->mem_ctx + i));
        TRY(sync_be(d));
        t[i] = bench_now_ms() - ts;
    }
    double ms = bench_median(t, steps);
    snprintf(params, sizeof(params), "batch=%d ctx=%d", a->mem_seqs, a->mem_ctx);
    snprintf(extra, sizeof(extra), "step_ms=%.4g", ms);
    report("mem_decode_tps", params, a->mem_seqs / ms * 1e3, "tok/s", 0, 1, extra);
    mem_probe(d->be);
    return GLM_OK;
}

/* ---- --no-comm: a communicator whose data collectives do nothing ---- */

static glm_status skip_allreduce(glm_comm *comm, void *data, size_t count, glm_dtype dtype)
{
    (void)comm, (void)data, (void)count, (void)dtype;
    return GLM_OK;
}

static glm_status skip_allgather(glm_comm *comm, void *dst, const void *src, size_t count,
                                 glm_dtype dtype)
{
    (void)comm, (void)dst, (void)src, (void)count, (void)dtype;
    return GLM_OK;
}

/* ---- the table (rank 0) ---- */

static void print_table(const bench_args *a, const glm_rank_context *ctx)
{
    printf("\n%-16s %-34s %12s %-8s %12s %9s\n", "figure", "params", "value", "unit", "floor",
           "of floor");
    for (int i = 0; i < n_results; i++) {
        const result *r = &results[i];
        char fl[32] = "-", eff[32] = "-";
        if (r->floor > 0) {
            snprintf(fl, sizeof(fl), "%.4g", r->floor);
            double e = r->higher_better ? r->value / r->floor : r->floor / r->value;
            snprintf(eff, sizeof(eff), "%.0f%%", 100 * e);
        }
        printf("%-16s %-34s %12.4g %-8s %12s %9s\n", r->figure, r->params, r->value, r->unit, fl, eff);
    }
    printf("(tp %d, device %s, %s mode%s; 'of floor': the floor-limited time over ours, or our rate "
           "over the floor rate)\n",
           ctx->size, a->device, a->memory_mode ? "memory" : "perf", a->quick ? ", quick" : "");
}

/* Every rank: memory figures gathered to rank 0. */
static void gather_memory(glm_rank_context *ctx, const bench_args *a)
{
    char line[512];
    glm_model_describe_memory(ctx->model, line, sizeof(line));
    mem_probe(ctx->be);
    double mine[8] = {0};
    parse_memory_line(line, mine);
    int have_dev = mem_total > 0 && mem_free_min != SIZE_MAX;
    mine[4] = have_dev ? gib((double)mem_free_start - (double)mem_free_min) : -1; /* this program */
    mine[5] = have_dev ? gib((double)mem_total - (double)mem_free_min) : -1;      /* whole card */
    mine[6] = have_dev ? gib((double)mem_total) : -1;
    double *all = ctx->rank == 0 ? malloc(sizeof(double) * 8 * (size_t)ctx->size) : NULL;
    MPI_Gather(mine, 8, MPI_DOUBLE, all, 8, MPI_DOUBLE, 0, ctx->world);
    if (ctx->rank != 0) return;
    for (int r = 0; r < ctx->size; r++) {
        double *m = all + 8 * r;
        char params[96], extra[256];
        snprintf(params, sizeof(params), "rank=%d", r);
        snprintf(extra, sizeof(extra),
                 "weights_gib=%.3f kv_gib=%.3f scratch_gib=%.3f image_pool_gib=%.3f "
                 "device_used_gib=%.3f card_used_gib=%.3f card_total_gib=%.3f budget_gib=%.3g",
                 m[0], m[1], m[2], m[3], m[4], m[5], m[6], a->gpu_memory_gib);
        /* value: peak device memory this program used (or the model's own allocations on the CPU) */
        report("memory_gib", params, m[4] >= 0 ? m[4] : m[0] + m[1] + m[2] + m[3], "GiB", 0, 0,
               extra);
        snprintf(extra, sizeof(extra), "bytes=%.0f", m[0] * 1024.0 * 1024 * 1024);
        report("weights_gb", params, m[0] * 1.073741824, "GB", 0, 0, extra);
    }
    free(all);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    bench_args a;
    int code = parse_args(argc, argv, rank, &a);
    if (code) {
        MPI_Finalize();
        return code == 1 ? 0 : code;
    }
    glm_model_config cfg;
    glm_error err = {0};
    if (glm_config_load(a.model_dir, &cfg, &err)) {
        if (!rank) fprintf(stderr, "bench_model: %s\n", err.msg);
        MPI_Finalize();
        return 2;
    }

    /* shapes -> model capacities */
    int bs = 16, max_blocks = (cfg.seq_length + bs - 1) / bs;
    int image_rows = cfg.has_vision ? 2 + glm_config_image_tokens(&cfg) : 0;
    int bmax = max_of(a.decode, a.n_decode), nimg = max_of(a.vision, a.n_vision);
    int img_prompt = cfg.has_vision ? image_rows + a.image_text_rows : 0;
    glm_rank_options ro;
    memset(&ro, 0, sizeof(ro));
    ro.model_dir = a.model_dir;
    ro.device = a.device;
    ro.dtype = a.dtype;
    ro.tp = a.tp;
    ro.cpu_threads = a.threads;
    ro.gpu_memory_gib = a.gpu_memory_gib;
    glm_model_options_default(&ro.model);
    if (!glm_cli_weights("bench_model", a.weights, a.vision_weights, &ro.dtype,
                         &ro.model.weight_format, &ro.model.vision_weight_format)) {
        MPI_Finalize();
        return 2;
    }
    ro.model.use_random_weights = 1;
    ro.model.random_seed = a.seed;
    ro.model.kv_block_size = bs;
    int blocks_per_seq;
    if (a.memory_mode) {
        blocks_per_seq = (a.mem_ctx + a.mem_decode_steps + bs) / bs;
        ro.model.max_step_tokens = a.mem_chunk > a.mem_seqs ? a.mem_chunk : a.mem_seqs;
        ro.model.max_seqs = a.mem_seqs;
        ro.model.max_logit_rows = a.mem_seqs;
        ro.model.max_images = 1;
        ro.model.image_pool_slots = 1;
        if (a.gpu_memory_gib <= 0) /* quick CPU run: KV just large enough */
            ro.model.kv_blocks = a.mem_seqs * blocks_per_seq > max_blocks
                                     ? a.mem_seqs * blocks_per_seq : max_blocks;
        if (a.mem_ctx + a.mem_decode_steps > cfg.seq_length) {
            if (!rank) fprintf(stderr, "bench_model: --mem-ctx exceeds seq_length %d\n", cfg.seq_length);
            MPI_Finalize();
            return 2;
        }
    } else {
        int steps = a.decode_warmup + a.decode_steps;
        blocks_per_seq = (a.ctx + steps + bs) / bs;
        if (a.ctx + steps > cfg.seq_length || a.text_prefill > cfg.seq_length ||
            img_prompt > cfg.seq_length) {
            if (!rank)
                fprintf(stderr, "bench_model: a prompt or context exceeds seq_length %d\n",
                        cfg.seq_length);
            MPI_Finalize();
            return 2;
        }
        int step_tokens = a.text_prefill;
        if (a.prefill_chunk > 0 && a.prefill_chunk < step_tokens) step_tokens = a.prefill_chunk;
        if (img_prompt > step_tokens) step_tokens = img_prompt;
        if (bmax > step_tokens) step_tokens = bmax;
        int ctx_step = a.quick ? a.ctx : (a.ctx > 4096 ? a.ctx : 4096);
        if (bmax > 0 && ctx_step > step_tokens) step_tokens = ctx_step;
        ro.model.max_step_tokens = step_tokens;
        ro.model.max_seqs = bmax > 0 ? bmax : 1;
        if (bmax > 0 && step_tokens / a.ctx > ro.model.max_seqs) ro.model.max_seqs = step_tokens / a.ctx;
        ro.model.max_logit_rows = bmax > 1 ? bmax : 1;
        ro.model.max_images = nimg > 0 ? nimg : 1;
        ro.model.image_pool_slots = ro.model.max_images;
        int need = bmax * blocks_per_seq, prompt_blocks = (step_tokens + bs - 1) / bs;
        if (a.text_prefill / bs + 1 > prompt_blocks) prompt_blocks = a.text_prefill / bs + 1;
        if (prompt_blocks > need) need = prompt_blocks;
        if (max_blocks > need) need = max_blocks;
        if (a.gpu_memory_gib <= 0) ro.model.kv_blocks = need; /* KV sized to the figures */
    }

    mem_probe_start();
    glm_rank_context ctx;
    double t0 = bench_now_ms();
    glm_status st = glm_rank_context_create(&ro, &ctx, &err);
    if (st) {
        fprintf(stderr, "bench_model: rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return 1;
    }
    ctx.be->ops->synchronize(ctx.be); /* the random fill runs on the device */
    double create_s = (bench_now_ms() - t0) / 1e3;
    mem_probe(ctx.be);
    /* every rank swaps at the same point, before any step, so no rank waits in a collective */
    glm_comm_ops skipping;
    if (a.no_comm && ctx.comm) {
        skipping = *ctx.comm->ops;
        skipping.allreduce_sum = skip_allreduce;
        skipping.allgather = skip_allgather;
        ctx.comm->ops = &skipping;
    }

    driver d;
    memset(&d, 0, sizeof(d));
    d.a = &a;
    d.ctx = &ctx;
    d.m = ctx.model;
    d.be = ctx.be;
    d.cfg = &ctx.cfg;
    d.world = ctx.size > 1 ? (void *)&ctx.world : NULL;
    d.bs = glm_model_kv_block_size(ctx.model);
    d.max_blocks = glm_model_max_blocks_per_seq(ctx.model);
    d.image_rows = cfg.has_vision ? glm_model_image_rows(ctx.model) : 0;
    d.blocks_per_seq = blocks_per_seq;
    int nrows = ro.model.max_logit_rows > 0 ? ro.model.max_logit_rows : 1;
    d.greedy = calloc((size_t)nrows, sizeof(glm_sample_params));
    d.ids = calloc((size_t)nrows, sizeof(int32_t));
    for (int i = 0; i < nrows && d.greedy; i++) d.greedy[i].top_p = 1.0f;

    if (rank == 0) {
        char line[512];
        printf("bench_model: %s, tp %d, device %s, %s storage, weights random (seed %llu) in "
               "%s (vision %s), created in %.1f s\n",
               a.model_dir, ctx.size, a.device, glm_dtype_name(ctx.be->weight_dtype),
               (unsigned long long)a.seed, glm_weight_format_name(ro.model.weight_format),
               glm_weight_format_name(ro.model.vision_weight_format), create_s);
        glm_shard_plan_describe(&ctx.cfg, glm_model_shard_plan(ctx.model), line, sizeof(line));
        if (ctx.size > 1) printf("bench_model: %s\n", line);
        report_memory(&d);
        fflush(stdout);
        if (!d.greedy || !d.ids) st = glm_fail(&d.err, GLM_ERR_NOMEM, "out of host memory");
        else st = a.memory_mode ? drive_memory(&d) : drive_perf(&d);
        if (st) {
            fprintf(stderr, "bench_model: %s\n", d.err.msg);
            code = 1;
        }
        if (glm_step_shutdown(ctx.model, &err)) code = 1;
    } else if ((st = glm_worker_serve(ctx.model, &err))) {
        fprintf(stderr, "bench_model: rank %d: %s\n", rank, err.msg);
        MPI_Abort(ctx.world, 1);
    }
    gather_memory(&ctx, &a);
    if (rank == 0) print_table(&a, &ctx);
    int all = 0;
    MPI_Allreduce(&code, &all, 1, MPI_INT, MPI_MAX, ctx.world);
    free(d.greedy);
    free(d.ids);
    glm_step_plan_free(&d.plan);
    glm_rank_context_destroy(&ctx);
    MPI_Finalize();
    return all;
}
