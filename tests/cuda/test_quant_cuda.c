/* Quantized linear on the CUDA backend against the CPU backend's semantics on the same quantized
 * weights (kernels/weight_format.h), and the CUDA quantize op against the host quantizer.
 *
 *   test_quant_cuda [--bench]
 *
 * Cases cover each path of gemm_quant.cu: the decode kernels (1..8 rows, gemv_quant.cuh), the
 * cuBLASLt paths (fp8 with its epilogue; int8/int4 dequantized slabs, several slabs and a short
 * tail), the exact fallback (shapes cuBLASLt and the decode kernels decline), f32 outputs (the
 * logits), bias and GELU. Bounds: rel L2 1e-5 where the GPU computes in fp32 what the CPU does
 * (decode kernels writing f32), else 1e-2 (16-bit outputs; int8/int4 prefill multiplies bf16
 * copies of the dequantized weights). --bench also prints the decode kernels' weight-read rate
 * against the device's copy rate for the GLM-4V decode shapes, and prefill TFLOP/s beside bf16. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dtype.h"
#include "kernels/ops.h"
#include "tests/testutil.h"

static test_rng rng;

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

/* n values of N(0, scale^2), rounded to bf16 so both backends see the same inputs */
static float *rand_bf16(size_t n, double scale)
{
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        h[i] = glm_bf16_to_f32(glm_f32_to_bf16((float)(test_rng_normal(&rng) * scale)));
    return h;
}

static void *dev_bf16(glm_backend *be, const float *h, size_t n)
{
    uint16_t *b = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++)
        b[i] = glm_f32_to_bf16(h[i]);
    void *d = dev_copy(be, b, n * 2);
    free(b);
    return d;
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
    float *x = rand_bf16((size_t)(m * k), 1.0), *wf = rand_bf16((size_t)(n * k), 0.05);
    float *b = rand_bf16((size_t)n, 0.5), *ref = malloc(sizeof(float) * (size_t)(m * n));
    quant_host q = quantize_host(f, wf, n, k);
    glm_tensor bt = glm_tensor_1d(GLM_F32, n, b);
    glm_activation act = gelu ? GLM_ACT_GELU : GLM_ACT_NONE;
    glm_op_linear(cpu, glm_tensor_2d(GLM_F32, m, n, ref), glm_tensor_2d(GLM_F32, m, k, x), q.w,
                  bias ? &bt : NULL, act);
    glm_error err = {0};
    CHECK(glm_backend_take_error(cpu, &err) == GLM_OK);

    glm_weight dw = to_device(gpu, &q);
    void *dx = dev_bf16(gpu, x, (size_t)(m * k)), *db = dev_bf16(gpu, b, (size_t)n);
    size_t out_bytes = (size_t)(m * n) * (out_f32 ? 4 : 2);
    void *dy = dev_copy(gpu, NULL, out_bytes);
    gpu->ops->zero(gpu, dy, out_bytes);
    glm_tensor dbt = glm_tensor_1d(GLM_BF16, n, db);
    glm_op_linear(gpu, glm_tensor_2d(out_f32 ? GLM_F32 : GLM_BF16, m, n, dy),
                  glm_tensor_2d(GLM_BF16, m, k, dx), dw, bias ? &dbt : NULL, act);
    float *y = malloc(sizeof(float) * (size_t)(m * n));
    if (out_f32) {
        gpu->ops->download(gpu, y, dy, out_bytes);
    } else {
        uint16_t *h = malloc(out_bytes);
        gpu->ops->download(gpu, h, dy, out_bytes);
        for (int64_t i = 0; i < m * n; i++)
            y[i] = glm_bf16_to_f32(h[i]);
        free(h);
    }
    glm_status st = glm_backend_take_error(gpu, &err);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    double e = rel_l2(y, ref, (size_t)(m * n));
    printf("linear %s %lldx%lldx%lld%s%s%s: rel L2 vs cpu %.2e (bound %.0e)\n",
           glm_weight_format_name(f), (long long)m, (long long)n, (long long)k,
           bias ? " +bias" : "", gelu ? " gelu" : "", out_f32 ? " f32 out" : "", e, bound);
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

/* ---- --bench ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Median-free simple timing: reps runs after 3 warm-ups, ms per run. */
static double time_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w, int reps)
{
    for (int i = 0; i < 3; i++)
        glm_op_linear(be, y, x, w, NULL, GLM_ACT_NONE);
    be->ops->synchronize(be);
    double t0 = now_ms();
    for (int i = 0; i < reps; i++)
        glm_op_linear(be, y, x, w, NULL, GLM_ACT_NONE);
    be->ops->synchronize(be);
    return (now_ms() - t0) / reps;
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

/* Decode at batch 1 on the GLM-4V-9B shapes (TP 1: qkv, dense, gate/up, down, output layer):
 * bytes of codes, scales and zero points read per second, per format; returns the quantized
 * formats' total time (the figure GLM4V_GEMVQ_COLS is chosen by). */
static double bench_decode(glm_backend *be, double copy_gbps, bool print)
{
    const int64_t shapes[][2] = {
        {4608, 4096}, {4096, 4096}, {27392, 4096}, {4096, 13696}, {151552, 4096}};
    const glm_weight_format fs[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8, GLM_WEIGHT_INT8,
                                    GLM_WEIGHT_INT4};
    double total = 0;
    for (int s = 0; s < 5; s++) {
        int64_t n = shapes[s][0], k = shapes[s][1];
        void *dx = dev_copy(be, NULL, (size_t)k * 2), *dy = dev_copy(be, NULL, (size_t)n * 4);
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, 1, k, dx), 3, 0.f, 1.f);
        for (int fi = 0; fi < 4; fi++) {
            glm_weight_format f = fs[fi];
            if (!(be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f))) continue;
            glm_weight w = random_weight(be, f, n, k);
            double ms = time_linear(be, glm_tensor_2d(GLM_BF16, 1, n, dy),
                                    glm_tensor_2d(GLM_BF16, 1, k, dx), w, 50);
            size_t read = glm_weight_data_bytes(f, GLM_BF16, n, k) +
                          glm_weight_scale_bytes(f, n, k, w.group_size) +
                          glm_weight_zero_bytes(f, n, k, w.group_size);
            double gbps = read / (ms * 1e6);
            if (f != GLM_WEIGHT_DENSE) total += ms;
            if (print)
                printf("  %-5s N %6lld K %5lld: %8.4f ms %6.0f GB/s %5.1f%% of copy\n",
                       glm_weight_format_name(f), (long long)n, (long long)k, ms, gbps,
                       100.0 * gbps / copy_gbps);
            free_weight(be, &w);
        }
        be->ops->free(be, dx), be->ops->free(be, dy);
    }
    return total;
}

static void bench(glm_backend *be)
{
    double copy_gbps = copy_rate(be);
    printf("bench copy: %.0f GB/s (read + write)\n", copy_gbps);
    /* the batch-1 kernels' columns per warp: each variant on a backend of its own */
    int best = 2;
    double best_ms = 0;
    for (int cols = 1; cols <= 4; cols *= 2) {
        char v[16];
        snprintf(v, sizeof(v), "%d", cols);
        setenv("GLM4V_GEMVQ_COLS", v, 1);
        glm_backend *b = NULL;
        glm_error err = {0};
        if (glm_backend_cuda_create(0, &b, &err)) continue;
        printf("bench decode (M = 1), GLM4V_GEMVQ_COLS=%d: bytes read per second and share of "
               "the copy rate\n",
               cols);
        double ms = bench_decode(b, copy_gbps, true);
        printf("  quantized shapes in all: %.3f ms\n", ms);
        if (best_ms == 0 || ms < best_ms) best = cols, best_ms = ms;
        glm_backend_destroy(b);
    }
    unsetenv("GLM4V_GEMVQ_COLS");
    printf("bench best GLM4V_GEMVQ_COLS=%d\n", best);
    const glm_weight_format fs[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8, GLM_WEIGHT_INT8,
                                    GLM_WEIGHT_INT4};
    /* prefill and vision shapes: TFLOP/s per format */
    const int64_t big[][3] = {{2048, 27392, 4096}, {2048, 4096, 13696}, {6401, 15360, 1792},
                              {6401, 1792, 15360}, {32, 27392, 4096},   {128, 27392, 4096}};
    printf("bench prefill / batched decode: TFLOP/s\n");
    for (int s = 0; s < 6; s++) {
        int64_t m = big[s][0], n = big[s][1], k = big[s][2];
        void *dx = dev_copy(be, NULL, (size_t)(m * k) * 2),
             *dy = dev_copy(be, NULL, (size_t)(m * n) * 2);
        glm_op_fill_normal(be, glm_tensor_2d(GLM_BF16, m, k, dx), 7, 0.f, 1.f);
        for (int fi = 0; fi < 4; fi++) {
            glm_weight_format f = fs[fi];
            glm_weight w = random_weight(be, f, n, k);
            double ms = time_linear(be, glm_tensor_2d(GLM_BF16, m, n, dy),
                                    glm_tensor_2d(GLM_BF16, m, k, dx), w, 10);
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

/* The batch-1 kernels with 1 and 4 columns per warp (the default is 2), on backends of their own:
 * odd column counts leave a warp with fewer real columns than it computes. */
static void check_decode_variants(glm_backend *cpu)
{
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int cols = 1; cols <= 4; cols *= 4) {
        setenv("GLM4V_GEMVQ_COLS", cols == 1 ? "1" : "4", 1);
        glm_backend *gpu = NULL;
        glm_error err = {0};
        CHECK_MSG(glm_backend_cuda_create(0, &gpu, &err) == GLM_OK, "%s", err.msg);
        for (int i = 0; gpu && i < 3; i++) {
            if (!(gpu->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(fs[i]))) continue;
            printf("GLM4V_GEMVQ_COLS=%d: ", cols);
            check_linear(gpu, cpu, fs[i], 1, 77, 512, true, false, true, 1e-5);
            printf("GLM4V_GEMVQ_COLS=%d: ", cols);
            check_linear(gpu, cpu, fs[i], 1, 5, 1024, false, true, true, 1e-5);
        }
        glm_backend_destroy(gpu);
    }
    unsetenv("GLM4V_GEMVQ_COLS");
}

int main(int argc, char **argv)
{
    test_rng_seed(&rng, 2024);
    glm_backend *gpu = NULL, *cpu = NULL;
    glm_error err = {0};
    unsetenv("GLM4V_GEMVQ_COLS");
    if (glm_backend_cuda_create(0, &gpu, &err) || glm_backend_cpu_create(0, &cpu, &err)) {
        fprintf(stderr, "test_quant_cuda: %s\n", err.msg);
        return 1;
    }
    check_decode_variants(cpu);
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        glm_weight_format f = fs[i];
        if (!(gpu->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f))) {
            printf("%s: not on this GPU\n", glm_weight_format_name(f));
            continue;
        }
        /* decode kernels: every row count, f32 out (fp32 as the CPU), bf16 out, bias, gelu */
        for (int m = 1; m <= 8; m++)
            check_linear(gpu, cpu, f, m, 77, 512, m % 2, false, true, 1e-5);
        check_linear(gpu, cpu, f, 1, 300, 1024, true, true, false, 1e-2);
        check_linear(gpu, cpu, f, 3, 64, 1280, false, false, true, 1e-5); /* int4: 10 groups */
        /* cuBLASLt paths: a prefill, several int8/int4 slabs with a short tail, vision-like gelu */
        check_linear(gpu, cpu, f, 64, 256, 512, true, false, false, 1e-2);
        check_linear(gpu, cpu, f, 40, 8200, 4096, false, false, false, 1e-2);
        check_linear(gpu, cpu, f, 33, 264, 256, true, true, false, 1e-2);
        check_linear(gpu, cpu, f, 16, 512, 256, false, false, true, 1e-2); /* f32 logits */
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
