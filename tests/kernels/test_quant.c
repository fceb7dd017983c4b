/* The quantized weight formats (kernels/weight_format.h) on the host and in the CPU backend:
 * E4M3 conversion (every code, rounding ties to even, saturation, subnormals), quantize ->
 * dequantize round trips within half a step, int4 packing order and group scales (with a short
 * last group), non-finite values refused with their position, tensor-parallel slices (rows, and
 * column slices on a group boundary) equal to the same part of the whole weight quantized, the
 * backend's quantize op equal to the host quantizer, and linear with each format against a
 * double-precision reference of the stated semantics (fp8's per-token activation scales too). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static void check_e4m3(void)
{
    /* every code decodes and encodes back to itself (the NaN codes to 0x7f, keeping sign) */
    for (int c = 0; c < 256; c++) {
        float v = glm_e4m3_to_f32((uint8_t)c);
        uint8_t back = glm_f32_to_e4m3(v);
        if ((c & 0x7f) == 0x7f)
            CHECK_MSG(isnan(v) && back == 0x7f, "code %#x", c);
        else
            CHECK_MSG(back == c, "code %#x -> %g -> %#x", c, v, back);
    }
    CHECK(glm_e4m3_to_f32(0x7e) == 448.0f);
    CHECK(glm_e4m3_to_f32(0x01) == 0x1p-9f);   /* smallest subnormal */
    CHECK(glm_e4m3_to_f32(0x08) == 0x1p-6f);   /* smallest normal */
    CHECK(glm_f32_to_e4m3(1000.0f) == 0x7e);   /* saturates */
    CHECK(glm_f32_to_e4m3(-INFINITY) == 0xfe); /* -448 */
    CHECK(glm_f32_to_e4m3(1.0625f) == 0x38);   /* tie between 1 and 1.125: to even (1) */
    CHECK(glm_f32_to_e4m3(1.1875f) == 0x3a);   /* tie between 1.125 and 1.25: to even (1.25) */
    CHECK(glm_f32_to_e4m3(1.07f) == 0x39);     /* nearest */
    CHECK(glm_f32_to_e4m3(0x1p-10f) == 0x00);  /* half the smallest subnormal: ties to 0 */
    CHECK(glm_f32_to_e4m3(0x3p-10f) == 0x02);  /* 1.5 subnormal steps: to even (2) */
    CHECK(glm_f32_to_e4m3(15.5f) == 0x58);     /* 15.5 rounds up to 16 across the exponent */
    CHECK(glm_f32_to_e4m3(-0.0f) == 0x80);
    /* every float between codes rounds to one of its two neighbours, the nearer */
    test_rng rng;
    test_rng_seed(&rng, 7);
    for (int i = 0; i < 20000; i++) {
        float v = (float)(test_rng_normal(&rng) * pow(2.0, test_rng_int(&rng, -12, 8)));
        float q = glm_e4m3_to_f32(glm_f32_to_e4m3(v));
        float a = fabsf(v);
        double step = a < 0x1p-6f ? 0x1p-9 : ldexp(1.0, ilogbf(a) - 3);
        if (a < 448.0f) CHECK_MSG(fabs((double)q - v) <= step / 2, "%g -> %g", v, q);
    }
}

/* Quantizes [rows, cols] of f32, dequantizes, and checks each value within half its step. */
static void check_round_trip(glm_weight_format f, int64_t rows, int64_t cols, test_rng *rng)
{
    float *src = kt_random(rng, (size_t)(rows * cols), 0.7);
    src[0] = 0.0f; /* zero is exact in every format */
    int64_t groups = glm_weight_groups(f, cols, GLM_INT4_GROUP);
    unsigned char *codes = malloc(glm_weight_data_bytes(f, GLM_F32, rows, cols));
    float *scales = malloc(sizeof(float) * (size_t)(rows * groups));
    uint8_t *zeros = malloc((size_t)(rows * groups));
    CHECK(glm_quantize_rows(f, GLM_INT4_GROUP, src, rows, cols, codes, scales, zeros, NULL, NULL) ==
          GLM_OK);
    glm_weight w = {f,
                    GLM_F32,
                    rows,
                    cols,
                    f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0,
                    codes,
                    scales,
                    f == GLM_WEIGHT_INT4 ? zeros : NULL};
    float *back = malloc(sizeof(float) * (size_t)(rows * cols));
    glm_dequantize_rows(&w, 0, rows, back);
    int bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double s = scales[r * groups + (f == GLM_WEIGHT_INT4 ? c / GLM_INT4_GROUP : 0)];
            double v = src[r * cols + c], got = back[r * cols + c];
            /* fp8: half a step of E4M3 at v (relative 1/16), or half its smallest subnormal */
            double tol =
                f == GLM_WEIGHT_FP8 ? fmax(fabs(v) / 16, s * 0x1p-10) * 1.0001 : s / 2 * 1.0001;
            if (!(fabs(got - v) <= tol) && bad++ < 3)
                CHECK_MSG(false, "%s [%lld,%lld]: %g -> %g (scale %g)", glm_weight_format_name(f),
                          (long long)r, (long long)c, v, got, s);
        }
    CHECK(back[0] == 0.0f);
    free(src), free(codes), free(scales), free(zeros), free(back);
}

static void check_int4_layout(void)
{
    /* one row of 300 values: groups of 128, 128 and 44 */
    int64_t cols = 300;
    float src[300];
    for (int c = 0; c < cols; c++)
        src[c] = c < 128   ? (float)(c % 16) - 4.0f /* exactly representable with s = 1, z = 4 */
                 : c < 256 ? 0.5f * (float)((c - 128) % 16)
                           : -2.0f; /* a constant group: range widened to hold 0 */
    uint8_t codes[150], zeros[3];
    float scales[3];
    CHECK(glm_quantize_rows(GLM_WEIGHT_INT4, 128, src, 1, cols, codes, scales, zeros, NULL, NULL) ==
          GLM_OK);
    CHECK(glm_weight_groups(GLM_WEIGHT_INT4, cols, 128) == 3);
    CHECK(scales[0] == 1.0f && zeros[0] == 4);
    CHECK(scales[1] == 0.5f && zeros[1] == 0);
    CHECK(fabsf(scales[2] - 2.0f / 15.0f) < 1e-7f && zeros[2] == 15);
    /* low nibble holds the even k: values 0-4 = -4 -> code 0, 1-4 = -3 -> code 1 */
    CHECK(codes[0] == (0 | 1 << 4));
    CHECK(codes[1] == (2 | 3 << 4));
    CHECK(codes[7] == (14 | 15 << 4));
    glm_weight w = {GLM_WEIGHT_INT4, GLM_F32, 1, cols, 128, codes, scales, zeros};
    float back[300];
    glm_dequantize_rows(&w, 0, 1, back);
    for (int c = 0; c < 256; c++)
        CHECK_MSG(back[c] == src[c], "int4 value %d: %g -> %g", c, src[c], back[c]);
    for (int c = 256; c < 300; c++)
        CHECK(fabsf(back[c] + 2.0f) <= 1.0f / 15.0f);
}

static void check_non_finite(void)
{
    float src[2 * 40];
    for (int i = 0; i < 80; i++)
        src[i] = 0.1f * (float)i;
    src[40 + 17] = NAN;
    uint8_t codes[80], zeros[2];
    float scales[2];
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        int64_t r = -1, c = -1;
        CHECK(glm_quantize_rows(fs[i], 128, src, 2, 40, codes, scales, zeros, &r, &c) ==
              GLM_ERR_INVALID_ARG);
        CHECK(r == 1 && c == 17);
    }
    src[40 + 17] = INFINITY;
    int64_t r = -1, c = -1;
    CHECK(glm_quantize_rows(GLM_WEIGHT_INT8, 0, src, 2, 40, codes, scales, zeros, &r, &c) ==
          GLM_ERR_INVALID_ARG);
    CHECK(r == 1 && c == 17);
}

/* A rank's slice quantized alone equals the same part of the whole weight quantized: rows
 * (column-parallel) always; columns (row-parallel) when the slice starts on a group boundary. */
static void check_tp_slices(test_rng *rng)
{
    int64_t rows = 6, cols = 256;
    float *src = kt_random(rng, (size_t)(rows * cols), 1.0);
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        glm_weight_format f = fs[i];
        int64_t g = glm_weight_groups(f, cols, 128);
        size_t rb = glm_weight_row_bytes(f, GLM_F32, cols);
        unsigned char codes[6 * 256], part[6 * 256];
        float scales[12], pscales[12];
        uint8_t zeros[12], pzeros[12];
        CHECK(glm_quantize_rows(f, 128, src, rows, cols, codes, scales, zeros, NULL, NULL) == 0);
        /* TP 2, column-parallel: rank 1 owns rows 3..5 */
        CHECK(glm_quantize_rows(f, 128, src + 3 * cols, 3, cols, part, pscales, pzeros, NULL,
                                NULL) == 0);
        CHECK(memcmp(part, codes + 3 * rb, 3 * rb) == 0);
        CHECK(memcmp(pscales, scales + 3 * g, sizeof(float) * (size_t)(3 * g)) == 0);
        if (f == GLM_WEIGHT_INT4) CHECK(memcmp(pzeros, zeros + 3 * g, (size_t)(3 * g)) == 0);
        if (f != GLM_WEIGHT_INT4) continue;
        /* TP 2, row-parallel: rank 1 owns columns 128..255, which are whole groups */
        float half[6 * 128];
        for (int64_t r = 0; r < rows; r++)
            memcpy(half + r * 128, src + r * cols + 128, 512);
        CHECK(glm_quantize_rows(f, 128, half, rows, 128, part, pscales, pzeros, NULL, NULL) == 0);
        for (int64_t r = 0; r < rows; r++) {
            CHECK(memcmp(part + r * 64, codes + r * rb + 64, 64) == 0);
            CHECK(pscales[r] == scales[r * 2 + 1] && pzeros[r] == zeros[r * 2 + 1]);
        }
    }
    free(src);
}

/* y = x W^T + b with W quantized in format f: the backend against a double reference of the
 * format's semantics (weight_format.h), and its quantize op against the host quantizer. */
static void check_linear(glm_backend *be, test_rng *rng, glm_weight_format f, int64_t M, int64_t N,
                         int64_t K, bool gelu)
{
    float *x = kt_random(rng, (size_t)(M * K), 1.0), *wf = kt_random(rng, (size_t)(N * K), 0.3);
    float *b = kt_random(rng, (size_t)N, 1.0), *y = kt_poisoned((size_t)(M * N));
    int64_t groups = glm_weight_groups(f, K, GLM_INT4_GROUP);
    size_t data_bytes = glm_weight_data_bytes(f, GLM_F32, N, K);
    glm_weight w = {f,
                    GLM_F32,
                    N,
                    K,
                    f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0,
                    malloc(data_bytes),
                    malloc(sizeof(float) * (size_t)(N * groups)),
                    f == GLM_WEIGHT_INT4 ? malloc((size_t)(N * groups)) : NULL};
    /* the backend's quantize op, in two row chunks, equals the host quantizer */
    glm_op_quantize(be, w, 0, glm_tensor_2d(GLM_F32, N / 2, K, wf));
    glm_op_quantize(be, w, N / 2, glm_tensor_2d(GLM_F32, N - N / 2, K, wf + N / 2 * K));
    kt_expect_ok(be, "quantize");
    unsigned char *codes = malloc(data_bytes);
    float *scales = malloc(sizeof(float) * (size_t)(N * groups));
    uint8_t *zeros = malloc((size_t)(N * groups));
    glm_quantize_rows(f, GLM_INT4_GROUP, wf, N, K, codes, scales, zeros, NULL, NULL);
    CHECK(memcmp(codes, w.data, data_bytes) == 0);
    CHECK(memcmp(scales, w.scales, sizeof(float) * (size_t)(N * groups)) == 0);

    float *deq = malloc(sizeof(float) * (size_t)(N * K));
    glm_dequantize_rows(&w, 0, N, deq);
    double *ref = kt_doubles((size_t)(M * N)), *tol = kt_doubles((size_t)(M * N));
    float *xq = malloc(sizeof(float) * (size_t)K);
    for (int64_t m = 0; m < M; m++) {
        float sx = 1.0f;
        const float *xr = x + m * K;
        if (f == GLM_WEIGHT_FP8) { /* per-token activation codes */
            sx = glm_fp8_quantize_activation_row(xr, K, xq);
            xr = xq;
        }
        for (int64_t n = 0; n < N; n++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double t = (double)xr[k] * deq[n * K + k];
                s += t;
                mag += fabs(t);
            }
            s *= sx, mag *= sx;
            s += b[n];
            double t = 3e-6 * (mag + fabs(b[n])) + 1e-7;
            if (gelu) s = 0.5 * s * (1.0 + erf(s / sqrt(2.0))), t *= 1.2;
            ref[m * N + n] = s;
            tol[m * N + n] = t;
        }
    }
    glm_tensor bt = glm_tensor_1d(GLM_F32, N, b);
    glm_op_linear(be, glm_tensor_2d(GLM_F32, M, N, y), glm_tensor_2d(GLM_F32, M, K, x), w, &bt,
                  gelu ? GLM_ACT_GELU : GLM_ACT_NONE);
    kt_expect_ok(be, "linear quantized");
    char what[96];
    snprintf(what, sizeof(what), "linear %s M=%lld N=%lld K=%lld", glm_weight_format_name(f),
             (long long)M, (long long)N, (long long)K);
    kt_close_tol(what, y, ref, tol, (size_t)(M * N));
    /* without its scales the op refuses the weight */
    glm_weight bare = w;
    bare.scales = NULL;
    glm_op_linear(be, glm_tensor_2d(GLM_F32, M, N, y), glm_tensor_2d(GLM_F32, M, K, x), bare, NULL,
                  GLM_ACT_NONE);
    kt_expect_error(be, GLM_ERR_SHAPE, "linear without scales");
    free(x), free(wf), free(b), free(y), free(w.data), free(w.scales), free(w.zeros);
    free(codes), free(scales), free(zeros), free(deq), free(ref), free(tol), free(xq);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 99);
    check_e4m3();
    const glm_weight_format fs[] = {GLM_WEIGHT_FP8, GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        check_round_trip(fs[i], 5, 300, &rng);
        check_round_trip(fs[i], 3, 7, &rng);
    }
    check_int4_layout();
    check_non_finite();
    check_tp_slices(&rng);
    glm_backend *be = kt_backend(0);
    for (int i = 0; i < 3; i++) {
        check_linear(be, &rng, fs[i], 1, 70, 300, false);  /* decode; int4 groups 128+128+44 */
        check_linear(be, &rng, fs[i], 37, 131, 256, true); /* several slabs and row blocks */
        check_linear(be, &rng, fs[i], 3, 5, 24, false);    /* tiny-model widths */
    }
    glm_backend_destroy(be);
    return test_finish("kernels/quant");
}
