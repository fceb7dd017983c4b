/* The quantized weight formats on the host: E4M3 conversion, quantization on load, and the stored
 * values each format stands for (kernels/weight_format.h states the semantics). The loader
 * quantizes with these, the CPU backend computes with them, and the GPU kernels are tested
 * against them. */
#include "kernels/weight_format.h"

#include <math.h>
#include <string.h>

const char *glm_weight_format_name(glm_weight_format f)
{
    switch (f) {
    case GLM_WEIGHT_DENSE:
        return "dense";
    case GLM_WEIGHT_FP8:
        return "fp8";
    case GLM_WEIGHT_INT8:
        return "int8";
    case GLM_WEIGHT_INT4:
        return "int4";
    default:
        return "?";
    }
}

int64_t glm_weight_groups(glm_weight_format f, int64_t cols, int group_size)
{
    if (f == GLM_WEIGHT_DENSE) return 0;
    if (f != GLM_WEIGHT_INT4 || group_size <= 0) return 1;
    return (cols + group_size - 1) / group_size;
}

size_t glm_weight_row_bytes(glm_weight_format f, glm_dtype dense_dtype, int64_t cols)
{
    switch (f) {
    case GLM_WEIGHT_DENSE:
        return (size_t)cols * glm_dtype_size(dense_dtype);
    case GLM_WEIGHT_INT4:
        return (size_t)(cols + 1) / 2;
    default:
        return (size_t)cols;
    }
}

size_t glm_weight_data_bytes(glm_weight_format f, glm_dtype dense_dtype, int64_t rows, int64_t cols)
{
    return (size_t)rows * glm_weight_row_bytes(f, dense_dtype, cols);
}

size_t glm_weight_scale_bytes(glm_weight_format f, int64_t rows, int64_t cols, int group_size)
{
    return (size_t)rows * (size_t)glm_weight_groups(f, cols, group_size) * sizeof(float);
}

size_t glm_weight_zero_bytes(glm_weight_format f, int64_t rows, int64_t cols, int group_size)
{
    return f == GLM_WEIGHT_INT4 ? (size_t)rows * (size_t)glm_weight_groups(f, cols, group_size) : 0;
}

glm_weight glm_weight_row_view(const glm_weight *w, int64_t first, int64_t count)
{
    glm_weight v = *w;
    int64_t groups = glm_weight_groups(w->format, w->cols, w->group_size);
    v.rows = count;
    v.data = (char *)w->data + (size_t)first * glm_weight_row_bytes(w->format, w->dtype, w->cols);
    if (w->scales) v.scales = w->scales + first * groups;
    if (w->zeros) v.zeros = w->zeros + first * groups;
    return v;
}

/* ---- E4M3 ----------------------------------------------------------------------------------- */

uint8_t glm_f32_to_e4m3(float f)
{
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= GLM_FP8_MAX) return sign | 0x7e; /* saturate, infinities included */
    if (a < 0x1p-6f) {
        /* subnormals: multiples of 2^-9; 8 of them is the smallest normal, whose code is 8 too */
        return sign | (uint8_t)rintf(a * 512.0f);
    }
    int e;
    frexpf(a, &e); /* a = fr 2^e, fr in [0.5, 1): the leading bit is 2^(e-1) */
    int exp = e - 1;
    float q = rintf(ldexpf(a, 3 - exp)); /* 8..16: the significand in eighths, rounded even */
    if (q == 16.0f) q = 8.0f, exp++;
    return sign | (uint8_t)(((exp + 7) << 3) | ((int)q - 8));
}

/* ---- quantization ------------------------------------------------------------------------- */

static bool find_non_finite(const float *row, int64_t cols, int64_t *col)
{
    for (int64_t k = 0; k < cols; k++)
        if (!isfinite(row[k])) {
            *col = k;
            return true;
        }
    return false;
}

float glm_row_amax(const float *x, int64_t n)
{
    float a = 0.0f;
    for (int64_t k = 0; k < n; k++)
        a = fmaxf(a, fabsf(x[k]));
    return a;
}

static void quantize_row_fp8(const float *w, int64_t cols, float amax, uint8_t *codes, float *scale)
{
    float s = amax > 0.0f ? amax / GLM_FP8_MAX : 1.0f;
    float inv = amax > 0.0f ? GLM_FP8_MAX / amax : 1.0f;
    for (int64_t k = 0; k < cols; k++)
        codes[k] = glm_f32_to_e4m3(w[k] * inv);
    *scale = s;
}

static void quantize_row_int8(const float *w, int64_t cols, float amax, int8_t *codes, float *scale)
{
    float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    for (int64_t k = 0; k < cols; k++) {
        float q = rintf(w[k] / s);
        codes[k] = (int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
    }
    *scale = s;
}

/* Asymmetric 4-bit, as GPTQ: the range [min, max] of the group, widened to hold 0, in 15 steps. */
static void quantize_row_int4(const float *w, int64_t cols, int group, uint8_t *packed,
                              float *scales, uint8_t *zeros)
{
    memset(packed, 0, (size_t)(cols + 1) / 2);
    for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group, gi++) {
        int64_t g1 = g0 + group < cols ? g0 + group : cols;
        float lo = 0.0f, hi = 0.0f;
        for (int64_t k = g0; k < g1; k++) {
            lo = fminf(lo, w[k]);
            hi = fmaxf(hi, w[k]);
        }
        float s = (hi - lo) / 15.0f;
        if (!(s > 0.0f)) s = 1.0f; /* an all-zero group */
        float z = rintf(-lo / s);
        z = z < 0.0f ? 0.0f : z > 15.0f ? 15.0f : z;
        for (int64_t k = g0; k < g1; k++) {
            float q = rintf(w[k] / s) + z;
            q = q < 0.0f ? 0.0f : q > 15.0f ? 15.0f : q;
            packed[k / 2] |= (uint8_t)((int)q << (4 * (k & 1)));
        }
        scales[gi] = s;
        zeros[gi] = (uint8_t)z;
    }
}

glm_status glm_quantize_rows(glm_weight_format f, int group_size, const float *src, int64_t rows,
                             int64_t cols, void *codes, float *scales, uint8_t *zeros,
                             int64_t *bad_row, int64_t *bad_col)
{
    return glm_quantize_rows_amax(f, group_size, src, rows, cols, NULL, codes, scales, zeros,
                                  bad_row, bad_col);
}

glm_status glm_quantize_rows_amax(glm_weight_format f, int group_size, const float *src,
                                  int64_t rows, int64_t cols, const float *amax, void *codes,
                                  float *scales, uint8_t *zeros, int64_t *bad_row, int64_t *bad_col)
{
    if (f != GLM_WEIGHT_FP8 && f != GLM_WEIGHT_INT8 && f != GLM_WEIGHT_INT4)
        return GLM_ERR_INVALID_ARG;
    if (f == GLM_WEIGHT_INT4 && group_size <= 0) return GLM_ERR_INVALID_ARG;
    int64_t groups = glm_weight_groups(f, cols, group_size);
    size_t row_bytes = glm_weight_row_bytes(f, GLM_F32, cols);
    for (int64_t r = 0; r < rows; r++) {
        const float *w = src + r * cols;
        int64_t col;
        if (find_non_finite(w, cols, &col)) {
            if (bad_row) *bad_row = r;
            if (bad_col) *bad_col = col;
            return GLM_ERR_INVALID_ARG;
        }
        unsigned char *out = (unsigned char *)codes + (size_t)r * row_bytes;
        if (f == GLM_WEIGHT_FP8)
            quantize_row_fp8(w, cols, amax ? amax[r] : glm_row_amax(w, cols), out, &scales[r]);
        else if (f == GLM_WEIGHT_INT8)
            quantize_row_int8(w, cols, amax ? amax[r] : glm_row_amax(w, cols), (int8_t *)out,
                              &scales[r]);
        else
            quantize_row_int4(w, cols, group_size, out, scales + r * groups, zeros + r * groups);
    }
    return GLM_OK;
}

void glm_dequantize_rows(const glm_weight *w, int64_t row0, int64_t n, float *dst)
{
    int64_t cols = w->cols, groups = glm_weight_groups(w->format, cols, w->group_size);
    size_t row_bytes = glm_weight_row_bytes(w->format, w->dtype, cols);
    for (int64_t r = 0; r < n; r++) {
        const unsigned char *c = (const unsigned char *)w->data + (size_t)(row0 + r) * row_bytes;
        float *out = dst + r * cols;
        const float *s = w->scales ? w->scales + (row0 + r) * groups : NULL;
        switch (w->format) {
        case GLM_WEIGHT_FP8:
            for (int64_t k = 0; k < cols; k++)
                out[k] = glm_e4m3_to_f32(c[k]) * s[0];
            break;
        case GLM_WEIGHT_INT8:
            for (int64_t k = 0; k < cols; k++)
                out[k] = (float)(int8_t)c[k] * s[0];
            break;
        case GLM_WEIGHT_INT4: {
            const uint8_t *z = w->zeros + (row0 + r) * groups;
            for (int64_t k = 0; k < cols; k++) {
                int64_t g = k / w->group_size;
                int q = (c[k / 2] >> (4 * (k & 1))) & 0xf;
                out[k] = (float)(q - (int)z[g]) * s[g];
            }
            break;
        }
        default: /* dense f32 only on the host */
            memcpy(out, c, (size_t)cols * sizeof(float));
            break;
        }
    }
}

float glm_fp8_quantize_activation_row(const float *x, int64_t k, float *xq)
{
    float amax = glm_row_amax(x, k);
    if (!(amax > 0.0f)) {
        /* all zero (or NaN hidden from fmaxf): keep NaN visible to the sampler's check */
        for (int64_t i = 0; i < k; i++)
            xq[i] = x[i] * 0.0f;
        return 1.0f;
    }
    float inv = GLM_FP8_MAX / amax;
    for (int64_t i = 0; i < k; i++)
        xq[i] = glm_e4m3_to_f32(glm_f32_to_e4m3(x[i] * inv));
    return amax / GLM_FP8_MAX;
}
