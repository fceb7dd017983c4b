/* Quantized linear on the CUDA backend against the CPU backend's semantics on the same quantized
 * weights (kernels/weight_format.h), and the CUDA quantize op against the host quantizer.
 *
 *   test_quant_cuda [--bench]
 *
 * Cases cover each path of gemm_quant.cu: the tensor-core kernel (gemm_quant_mma.cuh: fp8 at
 * M <= 8 with its fused activation quantization, int8 / int4 up to M = 128) on odd shapes (N not
 * a multiple of its 16-row tile, K not a multiple of its 64 / 128-code unit, fewer units than
 * warps), the GLM-4V decode shapes and their TP-2 / TP-4 slices, bf16 and f16 activations, and
 * inside a captured CUDA graph; the CUDA-core decode kernels (GLM4V_GEMVQ_MMA=0); the cuBLASLt
 * paths (fp8 with its epilogue; int8/int4 dequantized slabs, several slabs and a short tail);
 * the exact fallback; f32 outputs (the logits), bias and GELU. Bounds: rel L2 1e-5 where the GPU
 * computes in fp32 what the CPU does (f32 outputs of the decode kernels), else 1e-2 (16-bit
 * outputs; int8/int4 slabs multiply bf16 copies of the dequantized weights). --bench prints the
 * decode kernels' weight-read rate against the device's copy rate for the GLM-4V decode shapes
 * (weights rotated through more than the L2 holds, graph replays), batched decode against bf16
 * and prefill TFLOP/s. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dtype.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

static test_rng rng;
/* the activations' storage type in check_linear (bf16 or f16) */
static glm_dtype xdt = GLM_BF16;

typedef struct quant_host {
    glm_weight w; /* host memory */
    size_t data_bytes, scale_bytes, zero_bytes;
} quant_host;

static quant_host quantize_host(glm_weight_format f, const float *wf, int64_t n, int64_t k)
{
    quant_host q = {0};
    int g = f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0;
    q.data_bytes = glm_weight_data_bytes(f, GLM_F32, n, k);
    q.scale_bytes = glm_weight_scale_bytes(f, n, k, g);
    q.zero_bytes = glm_weight_zero_bytes(f, n, k, g);
    q.w = (glm_weight){f,
                       GLM_F32,
                       n,
                       k,
                       g,
                       malloc(q.data_bytes),
                       malloc(q.scale_bytes),
                       q.zero_bytes ? malloc(q.zero_bytes) : NULL};
    CHECK(glm_quantize_rows(f, g, wf, n, k, q.w.data, q.w.scales, q.w.zeros, NULL, NULL) == 0);
    return q;
}

static void quant_host_free(quant_host *q)
{
    free(q->w.data), free(q->w.scales), free(q->w.zeros);
}

static void *dev_copy(glm_backend *be, const void *h, size_t bytes)
{
    void *d = NULL;
    if (be->ops->alloc(be, bytes + 256, &d)) return NULL;
    if (h) be->ops->upload(be, d, h, bytes);
    return d;
}

static glm_weight to_device(glm_backend *be, const quant_host *q)
{
    glm_weight d = q->w;
    d.data = dev_copy(be, q->w.data, q->data_bytes);
    d.scales = dev_copy(be, q->w.scales, q->scale_bytes);
    d.zeros = q->zero_bytes ? dev_copy(be, q->w.zeros, q->zero_bytes) : NULL;
    return d;
}

static void free_device(glm_backend *be, glm_weight *w)
{
    be->ops->free(be, w->data);
    be->ops->free(be, w->scales);
    if (w->zeros) be->ops->free(be, w->zeros);
}

static float round16(float v, glm_dtype dt)
{
    return dt == GLM_F16 ? glm_f16_to_f32(glm_f32_to_f16(v)) : glm_bf16_to_f32(glm_f32_to_bf16(v));
}

/* n values of N(0, scale^2) (large n: uniform of the same deviation, cheaper on the host),
 * rounded to the storage type so both backends see the same inputs */
static float *rand_half(size_t n, double scale, glm_dtype dt)
{
    float *h = malloc(n * sizeof(float));
    bool big = n > ((size_t)1 << 22);
    for (size_t i = 0; i < n; i++) {
        double v = big ? (test_rng_uniform(&rng) * 2 - 1) * 1.7320508 : test_rng_normal(&rng);
        h[i] = round16((float)(v * scale), dt);
    }
    return h;
}

static float *rand_bf16(size_t n, double scale)
{
    return rand_half(n, scale, GLM_BF16);
}

static void *dev_half(glm_backend *be, const float *h, size_t n, glm_dtype dt)
{
    uint16_t *b = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++)
        b[i] = dt == GLM_F16 ? glm_f32_to_f16(h[i]) : glm_f32_to_bf16(h[i]);
    void *d = dev_copy(be, b, n * 2);
    free(b);
    return d;
}

static void *dev_bf16(glm_backend *be, const float *h, size_t n)
{
    return dev_half(be, h, n, GLM_BF16);
}

static double rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check_linear(glm_backend *gpu, glm_backend *cpu, glm_weight_format f, int64_t m,
                         int64_t n, int64_t k, bool bias, bool gelu, bool out_f32, double bound)
{
    float *x = rand_half((size_t)(m * k), 1.0, xdt), *wf = rand_bf16((size_t)(n * k), 0.05);
    float *b = rand_half((size_t)n, 0.5, xdt), *ref = malloc(sizeof(float) * (size_t)(m * n));
    quant_host q = quantize_host(f, wf, n, k);
    glm_tensor bt = glm_tensor_1d(GLM_F32, n, b);
    glm_activation act = gelu ? GLM_ACT_GELU : GLM_ACT_NONE;
    glm_op_linear(cpu, glm_tensor_2d(GLM_F32, m, n, ref), glm_tensor_2d(GLM_F32, m, k, x), q.w,
                  bias ? &bt : NULL, act);
    glm_error err = {0};
    CHECK(glm_backend_take_error(cpu, &err) == GLM_OK);

    glm_weight dw = to_device(gpu, &q);
    void *dx = dev_half(gpu, x, (size_t)(m * k), xdt), *db = dev_half(gpu, b, (size_t)n, xdt);
    size_t out_bytes = (size_t)(m * n) * (out_f32 ? 4 : 2);
    void *dy = dev_copy(gpu, NULL, out_bytes);
    /* poisoned: an output the kernel leaves unwritten fails the check */
    void *poison = memset(malloc(out_bytes), 0xff, out_bytes);
    gpu->ops->upload(gpu, dy, poison, out_bytes);
    free(poison);
    glm_tensor dbt = glm_tensor_1d(xdt, n, db);
    glm_op_linear(gpu, glm_tensor_2d(out_f32 ? GLM_F32 : xdt, m, n, dy),
                  glm_tensor_2d(xdt, m, k, dx), dw, bias ? &dbt : NULL, act);
    float *y = malloc(sizeof(float) * (size_t)(m * n));
    if (out_f32) {
        gpu->ops->download(gpu, y, dy, out_bytes);
    } else {
        uint16_t *h = malloc(out_bytes);
        gpu->ops->download(gpu, h, dy, out_bytes);
        for (int64_t i = 0; i < m * n; i++)
            y[i] = xdt == GLM_F16 ? glm_f16_to_f32(h[i]) : glm_bf16_to_f32(h[i]);
        free(h);
    }
    glm_status st = glm_backend_take_error(gpu, &err);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    double e = rel_l2(y, ref, (size_t)(m * n));
    printf("linear %s %lldx%lldx%lld%s%s%s%s: rel L2 vs cpu %.2e (bound %.0e)\n",
           glm_weight_format_name(f), (long long)m, (long long)n, (long long)k,
           bias ? " +bias" : "", gelu ? " gelu" : "", out_f32 ? " f32 out" : "",
           xdt == GLM_F16 ? " f16" : "", e, bound);
    CHECK_MSG(st == GLM_OK && e <= bound, "%s %lldx%lldx%lld: rel L2 %g", glm_weight_format_name(f),
              (long long)m, (long long)n, (long long)k, e);
    free_device(gpu, &dw);
    gpu->ops->free(gpu, dx), gpu->ops->free(gpu, db), gpu->ops->free(gpu, dy);
    quant_host_free(&q);
    free(x), free(wf), free(b), free(ref), free(y);
}

/* The CUDA quantize op on bf16 rows equals the host quantizer on the same values, bit for bit. */
static void check_quantize(glm_backend *gpu, glm_weight_format f, int64_t n, int64_t k)
{
    float *wf = rand_bf16((size_t)(n * k), 0.3);
    wf[3] = 0.0f;
    quant_host q = quantize_host(f, wf, n, k);
    glm_weight dw = q.w;
    dw.data = dev_copy(gpu, NULL, q.data_bytes);
    dw.scales = dev_copy(gpu, NULL, q.scale_bytes);
    dw.zeros = q.zero_bytes ? dev_copy(gpu, NULL, q.zero_bytes) : NULL;
    void *src = dev_bf16(gpu, wf, (size_t)(n * k));
    int64_t half_rows = n / 2;
    glm_op_quantize(gpu, dw, 0, glm_tensor_2d(GLM_BF16, half_rows, k, src));
    glm_op_quantize(gpu, dw, half_rows,
                    glm_tensor_2d(GLM_BF16, n - half_rows, k, (uint16_t *)src + half_rows * k));
    unsigned char *codes = malloc(q.data_bytes), *zeros = malloc(q.zero_bytes + 1);
    float *scales = malloc(q.scale_bytes);
    gpu->ops->download(gpu, codes, dw.data, q.data_bytes);
    gpu->ops->download(gpu, scales, dw.scales, q.scale_bytes);
    if (q.zero_bytes) gpu->ops->download(gpu, zeros, dw.zeros, q.zero_bytes);
    glm_error err = {0};
    CHECK_MSG(glm_backend_take_error(gpu, &err) == GLM_OK, "%s", err.msg);
    size_t diff = 0;
    for (size_t i = 0; i < q.data_bytes; i++)
        diff += codes[i] != ((unsigned char *)q.w.data)[i];
    CHECK_MSG(diff == 0, "quantize %s: %zu code bytes differ from the host's",
              glm_weight_format_name(f), diff);
    CHECK(memcmp(scales, q.w.scales, q.scale_bytes) == 0);
    if (q.zero_bytes) CHECK(memcmp(zeros, q.w.zeros, q.zero_bytes) == 0);
    printf("quantize %s %lldx%lld on the GPU: %zu of %zu code bytes differ from the host's\n",
           glm_weight_format_name(f), (long long)n, (long long)k, diff, q.data_bytes);
    free_device(gpu, &dw);
    gpu->ops->free(gpu, src);
    quant_host_free(&q);
    free(wf), free(codes), free(zeros), free(scales);
}

/* The product captured once in a CUDA graph and replayed on new activations written into the
 * same buffer: each replay's result against the CPU on those activations. */
static void check_graph(glm_backend *gpu, glm_backend *cpu, glm_weight_format f, int64_t m,
                        int64_t n, int64_t k)
{
    if (!gpu->ops->graph_begin) return;
    float *wf = rand_bf16((size_t)(n * k), 0.05), *ref = malloc(sizeof(float) * (size_t)(m * n));
    float *y = malloc(sizeof(float) * (size_t)(m * n));
    quant_host q = quantize_host(f, wf, n, k);
    glm_weight dw = to_device(gpu, &q);
    float *x = rand_bf16((size_t)(m * k), 1.0);
    void *dx = dev_bf16(gpu, x, (size_t)(m * k)), *dy = dev_copy(gpu, NULL, (size_t)(m * n) * 4);
    glm_tensor yt = glm_tensor_2d(GLM_F32, m, n, dy), xt = glm_tensor_2d(GLM_BF16, m, k, dx);
    glm_op_linear(gpu, yt, xt, dw, NULL, GLM_ACT_NONE); /* scratch grows outside capture */
    const int key = 4242;
    CHECK(gpu->ops->graph_begin(gpu, key));
    glm_op_linear(gpu, yt, xt, dw, NULL, GLM_ACT_NONE);
    gpu->ops->graph_end(gpu, key);
    glm_error err = {0};
    for (int rep = 0; rep < 2; rep++) {
        free(x);
        x = rand_bf16((size_t)(m * k), rep ? 3.0 : 0.5);
        uint16_t *h = malloc((size_t)(m * k) * 2);
        for (int64_t i = 0; i < m * k; i++)
            h[i] = glm_f32_to_bf16(x[i]);
        gpu->ops->upload(gpu, dx, h, (size_t)(m * k) * 2);
        free(h);
        gpu->ops->zero(gpu, dy, (size_t)(m * n) * 4);
        CHECK(gpu->ops->graph_replay(gpu, key));
        gpu->ops->download(gpu, y, dy, (size_t)(m * n) * 4);
        glm_op_linear(cpu, glm_tensor_2d(GLM_F32, m, n, ref), glm_tensor_2d(GLM_F32, m, k, x), q.w,
                      NULL, GLM_ACT_NONE);
        CHECK(glm_backend_take_error(cpu, &err) == GLM_OK);
        glm_status st = glm_backend_take_error(gpu, &err);
        CHECK_MSG(st == GLM_OK, "%s", err.msg);
        double e = rel_l2(y, ref, (size_t)(m * n));
        printf("graph replay %d: linear %s %lldx%lldx%lld: rel L2 vs cpu %.2e (bound 1e-5)\n", rep,
               glm_weight_format_name(f), (long long)m, (long long)n, (long long)k, e);
        CHECK_MSG(e <= 1e-5, "graph replay %s m %lld: rel L2 %g", glm_weight_format_name(f),
                  (long long)m, e);
    }
    gpu->ops->graph_drop(gpu, key);
    free_device(gpu, &dw);
    gpu->ops->free(gpu, dx), gpu->ops->free(gpu, dy);
    quant_host_free(&q);
    free(x), free(wf), free(ref), free(y);
}

/* ---- --bench ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ms per product y = x W^T, W taking each of the `copies` weights in turn (so that what they read
 * adds up to more than the L2 holds), timed over graph replays of one product per copy (launch
 * gaps as in the decode graphs) when the backend has graphs. */
static double time_linear(glm_backend *be, glm_tensor y, glm_tensor x, const glm_weight *ws,
                          int copies, int reps)
{
    for (int i = 0; i < copies; i++) /* warm-up; scratch grows outside capture */
        glm_op_linear(be, y, x, ws[i], NULL, GLM_ACT_NONE);
    be->ops->synchronize(be);
    const int key = 4343;
    bool graph = be->ops->graph_begin && be->ops->graph_begin(be, key);
    if (graph) {
        for (int i = 0; i < copies; i++)
            glm_op_linear(be, y, x, ws[i], NULL, GLM_ACT_NONE);
        be->ops->graph_end(be, key);
        be->ops->graph_replay(be, key);
    }
    be->ops->synchronize(be);
    double t0 = now_ms();
    for (int r = 0; r < reps; r++) {
        if (graph)
            be->ops->graph_replay(be, key);
        else
            for (int i = 0; i < copies; i++)
                glm_op_linear(be, y, x, ws[i], NULL, GLM_ACT_NONE);
    }
    be->ops->synchronize(be);
    double ms = (now_ms() - t0) / ((double)reps * copies);
    if (graph) be->ops->graph_drop(be, key);
    return ms;
}

/* A weight of format f [n, k] on the device with random values (quantized there). */
static glm_weight random_weight(glm_backend *be, glm_weight_format f, int64_t n, int64_t k)
{
    int g = f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0;
    glm_weight w = {f,    f == GLM_WEIGHT_DENSE ? GLM_BF16 : GLM_F32,
                    n,    k,
                    g,    dev_copy(be, NULL, glm_weight_data_bytes(f, GLM_BF16, n, k)),
                    NULL, NULL};
    if (f == GLM_WEIGHT_DENSE) {
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, n, k, w.data), 5, 0.f, 0.02f);
        return w;
    }
    w.scales = dev_copy(be, NULL, glm_weight_scale_bytes(f, n, k, g));
    if (f == GLM_WEIGHT_INT4) w.zeros = dev_copy(be, NULL, glm_weight_zero_bytes(f, n, k, g));
    int64_t chunk = 256;
    void *src = dev_copy(be, NULL, (size_t)(k * chunk) * 2);
    glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, chunk, k, src), 5, 0.f, 0.02f);
    for (int64_t r = 0; r < n; r += chunk)
        glm_op_quantize(be, w, r, glm_tensor_2d(GLM_BF16, n - r < chunk ? n - r : chunk, k, src));
    be->ops->free(be, src);
    return w;
}

static void free_weight(glm_backend *be, glm_weight *w)
{
    be->ops->free(be, w->data);
    if (w->scales) be->ops->free(be, w->scales);
    if (w->zeros) be->ops->free(be, w->zeros);
}

static size_t weight_bytes(const glm_weight *w)
{
    return glm_weight_data_bytes(w->format, GLM_BF16, w->rows, w->cols) +
           glm_weight_scale_bytes(w->format, w->rows, w->cols, w->group_size) +
           glm_weight_zero_bytes(w->format, w->rows, w->cols, w->group_size);
}

#define MAX_COPIES 64

/* copies of an [n, k] weight of format f, as row views of one weight, together >= 256 MB */
static int rotating_weights(glm_backend *be, glm_weight_format f, int64_t n, int64_t k,
                            glm_weight *whole, glm_weight *ws)
{
    glm_weight one = {f,    GLM_BF16, n,   k, f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0,
                      NULL, NULL,     NULL};
    size_t bytes = weight_bytes(&one);
    int copies = (int)(((size_t)256 << 20) / bytes) + 1;
    if (copies > MAX_COPIES) copies = MAX_COPIES;
    *whole = random_weight(be, f, n * copies, k);
    for (int i = 0; i < copies; i++)
        ws[i] = glm_weight_row_view(whole, n * i, n);
    return copies;
}

static double copy_rate(glm_backend *be)
{
    size_t bytes = (size_t)1 << 30; /* bytes read + written of 1 GiB device-to-device copies */
    void *a = dev_copy(be, NULL, bytes), *b = dev_copy(be, NULL, bytes);
    be->ops->zero(be, a, bytes);
    be->ops->copy(be, b, a, bytes);
    be->ops->synchronize(be);
    double t0 = now_ms();
    for (int i = 0; i < 10; i++)
        be->ops->copy(be, b, a, bytes);
    be->ops->synchronize(be);
    double gbps = 2.0 * bytes * 10 / ((now_ms() - t0) * 1e6);
    be->ops->free(be, a), be->ops->free(be, b);
    return gbps;
}

/* backends of the variants compared: the default (tensor-core kernel, taking every M here but
 * one token against a wide fp8 weight, its row warps chosen per shape), the same with one row
 * warp (most split-K), with two row tiles per warp in batches, the CUDA-core kernels + slabs,
 * four units a load batch, the row warps aiming at two blocks a multiprocessor (the default
 * before PERF.md's fourth-session table), and one row warp's runs in batches of two units */
enum { V_MMA, V_MMA_WR1, V_MMA_RT2, V_OLD, V_MMA_U4, V_MMA_BPS2, V_MMA_ONE0, N_VARIANTS };
static const char *variant_env[N_VARIANTS][4] = {
    {"GLM4V_GEMVQ_WR", "0"},   {"GLM4V_GEMVQ_WR", "1"},
    {"GLM4V_GEMMQ_RT", "2"},   {"GLM4V_GEMVQ_MMA", "0"},
    {"GLM4V_GEMVQ_U", "4"},    {"GLM4V_GEMVQ_BPS", "2"},
    {"GLM4V_GEMVQ_ONE", "0"}};
static const char *variant_name[N_VARIANTS] = {"default", "mma-wr1",  "mma-rt2", "old",
                                               "mma-u4",  "mma-bps2", "mma-one0"};

/* The backend reads the GLM4V_GEMVQ / GEMMQ knobs at its first quantized product: one small
 * product runs while they are set, so that several variants can live side by side. */
static void bind_quant_knobs(glm_backend *be)
{
    glm_weight w = random_weight(be, GLM_WEIGHT_INT8, 16, 16);
    void *buf = dev_copy(be, NULL, 16 * 2 + 16 * 4);
    be->ops->zero(be, buf, 16 * 2 + 16 * 4);
    glm_op_linear(be, glm_tensor_2d(GLM_F32, 1, 16, (char *)buf + 32),
                  glm_tensor_2d(GLM_BF16, 1, 16, buf), w, NULL, GLM_ACT_NONE);
    be->ops->synchronize(be);
    free_weight(be, &w);
    be->ops->free(be, buf);
}

static glm_backend *variant_backend(int v)
{
    setenv("GLM4V_GEMMQ_MAX_M", "100000", 1);
    for (int i = 0; i < 4 && variant_env[v][i]; i += 2)
        setenv(variant_env[v][i], variant_env[v][i + 1], 1);
    glm_backend *b = NULL;
    glm_error err = {0};
    glm_status st = glm_backend_cuda_create(0, &b, &err);
    if (st == GLM_OK) bind_quant_knobs(b);
    for (int i = 0; i < 4 && variant_env[v][i]; i += 2)
        unsetenv(variant_env[v][i]);
    unsetenv("GLM4V_GEMMQ_MAX_M");
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    return st == GLM_OK ? b : NULL;
}

/* Decode at batch 1 on the GLM-4V-9B shapes (TP 1: qkv, dense, gate/up, down, output layer; TP 2
 * and TP 4 slices): bytes of codes, scales and zero points read per second against the copy
 * rate, per format and variant. */
static void bench_decode(glm_backend **vb, double copy_gbps)
{
    const int64_t shapes[][2] = {{4608, 4096},   {4096, 4096}, {27392, 4096}, {4096, 13696},
                                 {151552, 4096}, {2304, 4096}, {13696, 4096}, {4096, 6848},
                                 {75776, 4096},  {6848, 4096}, {4096, 3424},  {37888, 4096}};
    const glm_weight_format fs[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8, GLM_WEIGHT_INT8,
                                    GLM_WEIGHT_INT4};
    printf("bench decode (M = 1): weight bytes read per second, %% of the copy rate; weights "
           "rotated through >= 256 MB, graph replays\n");
    printf("  %-14s %-6s %13s %13s %13s %13s %13s %13s\n", "N x K", "format", "default",
           "mma-wr1", "old", "mma-u4", "mma-bps2", "mma-one0");
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int64_t n = shapes[s][0], k = shapes[s][1];
        glm_backend *be = vb[V_MMA];
        void *dx = dev_copy(be, NULL, (size_t)k * 2), *dy = dev_copy(be, NULL, (size_t)n * 4);
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, 1, k, dx), 3, 0.f, 1.f);
        for (int fi = 0; fi < 4; fi++) {
            glm_weight_format f = fs[fi];
            if (!(be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f))) continue;
            glm_weight whole, ws[MAX_COPIES];
            int copies = rotating_weights(be, f, n, k, &whole, ws);
            double gbps = weight_bytes(&ws[0]) / 1e6;
            char shape[32];
            snprintf(shape, sizeof(shape), "%lldx%lld", (long long)n, (long long)k);
            printf("  %-14s %-6s", shape, glm_weight_format_name(f));
            const int vs[] = {V_MMA, V_MMA_WR1, V_OLD, V_MMA_U4, V_MMA_BPS2, V_MMA_ONE0};
            for (int vi = 0; vi < 6; vi++) {
                int v = vs[vi];
                if (f == GLM_WEIGHT_DENSE && vi > 0) break;
                double ms = time_linear(vb[v], glm_tensor_2d(GLM_BF16, 1, n, dy),
                                        glm_tensor_2d(GLM_BF16, 1, k, dx), ws, copies, 20);
                printf(" %4.0f%% %5.1fus", 100.0 * gbps / ms / copy_gbps, ms * 1e3);
            }
            printf("\n");
            free_weight(be, &whole);
        }
        be->ops->free(be, dx), be->ops->free(be, dy);
    }
}

/* Batched decode: M tokens against the gate/up, down and qkv weights, per format: the tensor-core
 * kernel and the CUDA-core kernels / slabs against bf16 (cuBLASLt, or gemv.cu at M <= its rows). */
static void bench_batched(glm_backend **vb)
{
    const int64_t shapes[][2] = {{27392, 4096}, {4096, 13696}, {4608, 4096}};
    const int64_t ms_[] = {2, 8, 16, 32, 64, 128, 256};
    const glm_weight_format fs[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8, GLM_WEIGHT_INT8,
                                    GLM_WEIGHT_INT4};
    printf("bench batched decode: us per product (int8 / int4: mma / mma-rt2 / old)\n");
    for (int s = 0; s < 3; s++) {
        int64_t n = shapes[s][0], k = shapes[s][1];
        glm_backend *be = vb[V_MMA];
        glm_weight whole[4], ws[4][MAX_COPIES];
        int copies[4];
        for (int fi = 0; fi < 4; fi++)
            copies[fi] = rotating_weights(be, fs[fi], n, k, &whole[fi], ws[fi]);
        void *dx = dev_copy(be, NULL, (size_t)(256 * k) * 2),
             *dy = dev_copy(be, NULL, (size_t)(256 * n) * 2);
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, 256, k, dx), 3, 0.f, 1.f);
        for (size_t mi = 0; mi < sizeof(ms_) / sizeof(ms_[0]); mi++) {
            int64_t m = ms_[mi];
            glm_tensor yt = glm_tensor_2d(GLM_BF16, m, n, dy),
                       xt = glm_tensor_2d(GLM_BF16, m, k, dx);
            printf("  %6lldx%-6lld M %3lld:", (long long)n, (long long)k, (long long)m);
            for (int fi = 0; fi < 4; fi++) {
                double a = time_linear(be, yt, xt, ws[fi], copies[fi], 10);
                if (fi < 2) {
                    printf(" %s %7.1f", glm_weight_format_name(fs[fi]), a * 1e3);
                    continue;
                }
                double r = time_linear(vb[V_MMA_RT2], yt, xt, ws[fi], copies[fi], 10);
                double o = time_linear(vb[V_OLD], yt, xt, ws[fi], copies[fi], 10);
                printf(" %s %7.1f / %7.1f / %7.1f", glm_weight_format_name(fs[fi]), a * 1e3,
                       r * 1e3, o * 1e3);
            }
            printf("\n");
        }
        for (int fi = 0; fi < 4; fi++)
            free_weight(be, &whole[fi]);
        be->ops->free(be, dx), be->ops->free(be, dy);
    }
}

static void bench(glm_backend *be)
{
    double copy_gbps = copy_rate(be);
    printf("bench copy: %.0f GB/s (read + write)\n", copy_gbps);
    glm_backend *vb[N_VARIANTS];
    for (int v = 0; v < N_VARIANTS; v++)
        if (!(vb[v] = variant_backend(v))) return;
    bench_decode(vb, copy_gbps);
    bench_batched(vb);
    for (int v = 0; v < N_VARIANTS; v++) {
        glm_error err = {0};
        CHECK_MSG(glm_backend_take_error(vb[v], &err) == GLM_OK, "bench %s: %s", variant_name[v],
                  err.msg);
        glm_backend_destroy(vb[v]);
    }
    const glm_weight_format fs[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8, GLM_WEIGHT_INT8,
                                    GLM_WEIGHT_INT4};
    /* prefill: TFLOP/s per format (int8 / int4: slabs + cuBLASLt) */
    const int64_t big[][3] = {{2048, 27392, 4096}, {2048, 4096, 13696}};
    printf("bench prefill: TFLOP/s\n");
    for (int s = 0; s < 2; s++) {
        int64_t m = big[s][0], n = big[s][1], k = big[s][2];
        void *dx = dev_copy(be, NULL, (size_t)(m * k) * 2),
             *dy = dev_copy(be, NULL, (size_t)(m * n) * 2);
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, m, k, dx), 7, 0.f, 1.f);
        for (int fi = 0; fi < 4; fi++) {
            glm_weight_format f = fs[fi];
            glm_weight w = random_weight(be, f, n, k);
            double ms = time_linear(be, glm_tensor_2d(GLM_BF16, m, n, dy),
                                    glm_tensor_2d(GLM_BF16, m, k, dx), &w, 1, 10);
            printf("  %-5s M %5lld N %6lld K %5lld: %8.3f ms %7.1f TFLOP/s\n",
                   glm_weight_format_name(f), (long long)m, (long long)n, (long long)k, ms,
                   2.0 * m * n * k / (ms * 1e9));
            free_weight(be, &w);
        }
        be->ops->free(be, dx), be->ops->free(be, dy);
    }
    glm_error err = {0};
    CHECK_MSG(glm_backend_take_error(be, &err) == GLM_OK, "bench: %s", err.msg);
}

/* The same products on backends of other variants: the CUDA-core decode kernels with slabs above
 * M = 8 (GLM4V_GEMVQ_MMA=0), one and eight warps along rows (GLM4V_GEMVQ_WR), two row tiles per
 * warp in batches (GLM4V_GEMMQ_RT=2), and slabs from M = 1 up for int8 / int4
 * (GLM4V_GEMMQ_MAX_M=0: the cuBLASLt slab path, several slabs and a tail). */
static void check_variants(glm_backend *cpu)
{
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    const char *env[][2] = {{"GLM4V_GEMVQ_MMA", "0"},
                            {"GLM4V_GEMVQ_WR", "1"},
                            {"GLM4V_GEMVQ_WR", "8"},
                            {"GLM4V_GEMMQ_RT", "2"},
                            {"GLM4V_GEMMQ_MAX_M", "0"},
                            {"GLM4V_GEMVQ_U", "4"},
                            {"GLM4V_GEMVQ_BPS", "2"},
                            {"GLM4V_GEMVQ_FP8_WIDE", "0"},
                            {"GLM4V_GEMVQ_ONE", "0"}};
    for (int v = 0; v < 9; v++) {
        setenv(env[v][0], env[v][1], 1);
        glm_backend *gpu = NULL;
        glm_error err = {0};
        CHECK_MSG(glm_backend_cuda_create(0, &gpu, &err) == GLM_OK, "%s", err.msg);
        if (gpu) bind_quant_knobs(gpu);
        unsetenv(env[v][0]);
        for (int i = 0; gpu && i < 3; i++) {
            glm_weight_format f = fs[i];
            if (!(gpu->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f))) continue;
            printf("%s=%s: ", env[v][0], env[v][1]);
            check_linear(gpu, cpu, f, 1, 77, 512, true, false, true, 1e-5);
            printf("%s=%s: ", env[v][0], env[v][1]);
            check_linear(gpu, cpu, f, 5, 300, 1056, false, true, true, 1e-5);
            if (v == 3 && f != GLM_WEIGHT_FP8) { /* batch tiles of 4, 2 and 1 row warps */
                printf("%s=%s: ", env[v][0], env[v][1]);
                check_linear(gpu, cpu, f, 40, 34000, 512, true, false, true, 1e-5);
                printf("%s=%s: ", env[v][0], env[v][1]);
                check_linear(gpu, cpu, f, 128, 4500, 1056, false, true, true, 1e-5);
                printf("%s=%s: ", env[v][0], env[v][1]);
                check_linear(gpu, cpu, f, 33, 300, 4096, true, false, true, 1e-5);
            }
            if (v >= 5) { /* four units a load batch; the row warps aiming at two blocks a
                             * multiprocessor; fp8 wide weights on the tensor-core kernel; one
                             * row warp's runs in batches of two: the decode shapes, 1 to 8 row
                             * warps */
                const int64_t shapes[][3] = {{1, 4608, 4096}, {1, 4096, 13696}, {1, 27392, 4096},
                                             {8, 8500, 1056}, {3, 17000, 1056}, {1, 34000, 1024},
                                             {2, 4096, 3424}};
                for (int j = 0; j < 7; j++) {
                    printf("%s=%s: ", env[v][0], env[v][1]);
                    check_linear(gpu, cpu, f, shapes[j][0], shapes[j][1], shapes[j][2], j % 2,
                                 j == 3, true, 1e-5);
                }
            }
            if (v != 4) continue;
            printf("%s=%s: ", env[v][0], env[v][1]);
            check_linear(gpu, cpu, f, 40, 8200, 4096, false, false, false, 1e-2);
            printf("%s=%s: ", env[v][0], env[v][1]);
            check_linear(gpu, cpu, f, 33, 264, 256, true, true, false, 1e-2);
        }
        glm_backend_destroy(gpu);
    }
}

int main(int argc, char **argv)
{
    test_rng_seed(&rng, 2024);
    glm_backend *gpu = NULL, *cpu = NULL;
    glm_error err = {0};
    unsetenv("GLM4V_GEMVQ_MMA"), unsetenv("GLM4V_GEMVQ_WR"), unsetenv("GLM4V_GEMMQ_MAX_M");
    unsetenv("GLM4V_GEMVQ_U"), unsetenv("GLM4V_GEMVQ_BPS"), unsetenv("GLM4V_GEMVQ_FP8_WIDE");
    unsetenv("GLM4V_GEMVQ_ONE");
    if (glm_backend_cuda_create(0, &gpu, &err) || glm_backend_cpu_create(0, &cpu, &err)) {
        fprintf(stderr, "test_quant_cuda: %s\n", err.msg);
        return 1;
    }
    check_variants(cpu);
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        glm_weight_format f = fs[i];
        if (!(gpu->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f))) {
            printf("%s: not on this GPU\n", glm_weight_format_name(f));
            continue;
        }
        bool fp8 = f == GLM_WEIGHT_FP8;
        /* the tensor-core kernel: row counts 1..8 and batches (fp8 above 8: cuBLASLt), f32 out
         * (fp32 as the CPU); N = 77 / 300 end inside a 16-row tile; K = 1056 ends inside a unit
         * (16 or 32 codes of 64 / 128 past the last whole one); K = 512 leaves warps idle */
        const int64_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 16, 33, 128};
        for (size_t j = 0; j < sizeof(ms) / sizeof(ms[0]); j++) {
            int64_t m = ms[j];
            double bound = fp8 && m > 8 ? 1e-2 : 1e-5;
            check_linear(gpu, cpu, f, m, 77, 512, m % 2, false, true, bound);
            check_linear(gpu, cpu, f, m, 300, 1056, m % 2 == 0, m == 7, true, bound);
        }
        check_linear(gpu, cpu, f, 1, 300, 1024, true, true, false, 1e-2); /* bf16 out */
        check_linear(gpu, cpu, f, 3, 64, 1280, false, false, true, 1e-5); /* int4: 10 groups */
        check_linear(gpu, cpu, f, 2, 16, 16, true, false, true, 1e-5);    /* one chunk */
        /* f16 activations (int8 / int4 dequantize to f16 there) */
        xdt = GLM_F16;
        check_linear(gpu, cpu, f, 1, 300, 1056, true, false, true, 1e-5);
        check_linear(gpu, cpu, f, 6, 77, 512, false, true, true, 1e-5);
        check_linear(gpu, cpu, f, 33, 77, 1056, true, false, false, 1e-2);
        xdt = GLM_BF16;
        /* GLM-4V-9B decode shapes (qkv, down) and the TP-2 / TP-4 down slices (K 6848, 3424:
         * int4's last group 64 / 96 wide) */
        check_linear(gpu, cpu, f, 1, 4608, 4096, true, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 4096, 13696, false, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 27392, 4096, false, false, true, 1e-5); /* gate/up */
        check_linear(gpu, cpu, f, 2, 4096, 6848, false, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 4096, 3424, false, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 6848, 4096, false, false, true, 1e-5);
        /* M <= 8 with 2, 4 and 8 row warps (chosen by block count on a 132-SM device) */
        check_linear(gpu, cpu, f, 8, 8500, 1056, true, false, true, 1e-5);
        check_linear(gpu, cpu, f, 3, 17000, 1056, false, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 34000, 1024, true, true, true, 1e-5);
        if (!fp8) { /* batch tiles of 1, 2 and 4 row warps (gqm_launch picks by block count) */
            check_linear(gpu, cpu, f, 32, 2304, 4096, false, false, true, 1e-5);
            check_linear(gpu, cpu, f, 128, 4096, 1056, true, false, true, 1e-5);
            check_linear(gpu, cpu, f, 33, 17000, 512, false, true, true, 1e-5);
        }
        /* inside a captured graph, replayed on new activations */
        check_graph(gpu, cpu, f, 1, 4608, 4096);
        check_graph(gpu, cpu, f, 4, 300, 1056);
        if (!fp8) check_graph(gpu, cpu, f, 40, 300, 1056);
        /* cuBLASLt paths above the kernel's rows: a prefill, vision-like gelu */
        check_linear(gpu, cpu, f, 200, 256, 512, true, false, false, 1e-2);
        check_linear(gpu, cpu, f, 160, 264, 256, true, true, false, 1e-2);
        /* the exact fallback: widths the other paths decline (tiny test models: K 24, 588) */
        check_linear(gpu, cpu, f, 5, 24, 12, true, false, false, 1e-2);
        check_linear(gpu, cpu, f, 9, 36, 588, true, true, false, 1e-2);
        check_linear(gpu, cpu, f, 2, 20, 24, false, false, true, 1e-5);
        check_quantize(gpu, f, 37, 300);
        check_quantize(gpu, f, 64, 4096);
    }
    glm_error e2 = {0};
    if (gpu->ops->check_weight_format)
        printf("fp8 check on this GPU: %s\n",
               gpu->ops->check_weight_format(gpu, GLM_WEIGHT_FP8, &e2) ? e2.msg : "ok");
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench(gpu);
    glm_backend_destroy(gpu);
    glm_backend_destroy(cpu);
    return test_finish("cuda/quant");
}
