/* Linear weight formats: how the [out, in] matrix of one linear layer is stored, and exactly what
 * each stored weight means.
 *
 * A weight is not a tensor of one dtype but a small struct the loader, the sharding plan and every
 * backend agree on: codes, their scales (and zero points), the group size and the logical shape.
 * The semantics below are the contract: the CPU backend computes exactly this in fp32 (the
 * reference), GPU kernels compute the same values up to fp32 summation order.
 *
 *  dense  W[n,k] is the float tensor itself (the backend's storage type, f32 on the CPU).
 *  fp8    codes[n,k] are E4M3 (1-4-3, bias 7, max 448, no infinities); scales[n] one per output
 *         row: W[n,k] = e4m3(codes[n,k]) * scales[n]. Activations are quantized at run time,
 *         per row of x (per token): sx[m] = amax_k |x[m,k]| / 448 (1 when the row is all zero),
 *         xq[m,k] = e4m3_satfinite(x[m,k] * (448 / amax)), and
 *         y[m,n] = (sum_k e4m3(xq[m,k]) * e4m3(codes[n,k])) * (sx[m] * scales[n]) + b[n].
 *         This is what an E4M3 tensor-core GEMM with per-token and per-channel scales computes.
 *  int8   codes[n,k] signed in [-127, 127], scales[n]: W[n,k] = codes[n,k] * scales[n];
 *         weight-only: y = x W^T + b with x as it is.
 *  int4   unsigned codes 0..15 packed two per byte along k, the even k in the low nibble (the
 *         memory order of GPTQ's int32 packing on a little-endian machine), rows of (k + 1) / 2
 *         bytes; per (row, group of group_size consecutive k) a float scale and a uint8 zero
 *         point: W[n,k] = (code - zero[n, k / g]) * scale[n, k / g]; the last group of a row may
 *         be shorter. Weight-only.
 *
 * Quantization on load (glm_quantize_rows) is per output row, so a column-parallel slice (rows)
 * of a quantized weight equals the rows of the whole weight quantized, scales included. A
 * row-parallel slice (columns) is quantized as the rank sees it: its int4 groups start at the
 * slice's first column (equal to the whole weight's groups when the slice starts on a multiple of
 * the group size, as every real GLM-4V slice at group 128 does except dense_4h_to_h). */
#ifndef GLM4V_WEIGHT_FORMAT_H
#define GLM4V_WEIGHT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/status.h"
#include "kernels/tensor.h"

/* glm_weight_format (dense, fp8, int8, int4) is in common/dtype.h, beside glm_dtype, so that
 * common/cli.c can parse --weights without reaching up into kernels/. */

#define GLM_WEIGHT_FORMAT_BIT(f) (1u << (unsigned)(f))
#define GLM_WEIGHT_FORMATS_QUANTIZED                                                               \
    (GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_FP8) | GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_INT8) |              \
     GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_INT4))

#define GLM_INT4_GROUP 128 /* k per int4 scale, as AWQ and GPTQ checkpoints use */
#define GLM_FP8_MAX 448.0f /* largest finite E4M3 */

typedef struct glm_weight {
    glm_weight_format format;
    glm_dtype dtype;    /* dense: the element type of data; quantized: unused (GLM_F32) */
    int64_t rows, cols; /* n outputs, k inputs */
    int group_size;     /* int4: k per scale; others 0 */
    void *data;         /* backend memory: dense [n,k] of dtype; fp8/int8 [n,k] bytes; int4
                           [n, (k+1)/2] bytes */
    float *scales;      /* fp8/int8 [n]; int4 [n, groups]; dense NULL */
    uint8_t *zeros;     /* int4 [n, groups]; others NULL */
} glm_weight;

/* A dense weight over a 2-D float tensor (rows = shape[0]). */
static inline glm_weight glm_weight_dense(glm_tensor t)
{
    glm_weight w = {GLM_WEIGHT_DENSE, t.dtype, t.shape[0], 1, 0, t.data, NULL, NULL};
    for (int d = 1; d < t.ndim; d++)
        w.cols *= t.shape[d];
    return w;
}

/* The dense weight's tensor view [rows, cols]. */
static inline glm_tensor glm_weight_tensor(const glm_weight *w)
{
    return glm_tensor_2d(w->dtype, w->rows, w->cols, w->data);
}

/* "dense", "fp8", "int8", "int4". */
const char *glm_weight_format_name(glm_weight_format f);
/* int4 groups per row (ceil(cols / group_size)); 1 for per-row formats; 0 for dense. */
int64_t glm_weight_groups(glm_weight_format f, int64_t cols, int group_size);
/* Bytes of one row of codes (dense: cols * dtype size). */
size_t glm_weight_row_bytes(glm_weight_format f, glm_dtype dense_dtype, int64_t cols);
/* Bytes of codes, of scales and of zero points of a [rows, cols] weight. */
size_t glm_weight_data_bytes(glm_weight_format f, glm_dtype dense_dtype, int64_t rows,
                             int64_t cols);
size_t glm_weight_scale_bytes(glm_weight_format f, int64_t rows, int64_t cols, int group_size);
size_t glm_weight_zero_bytes(glm_weight_format f, int64_t rows, int64_t cols, int group_size);
/* Rows [first, first + count) of w, with their scales and zero points. */
glm_weight glm_weight_row_view(const glm_weight *w, int64_t first, int64_t count);

/* ---- host-side semantics (kernels/cpu/quant.c): the loader and the CPU backend use these ---- */

/* E4M3 <-> float. The conversion rounds to nearest even and saturates finite values to +-448
 * (CUDA's __NV_SATFINITE); NaN maps to the NaN code 0x7f. */
uint8_t glm_f32_to_e4m3(float f);

/* Exact and branch-light, inline: the CPU backend decodes every fp8 weight it multiplies with it. A
 * normal code's exponent and mantissa fields move into an f32's (bias 7 -> 127); a subnormal one is
 * m * 2^-9, exact in f32; 0x7f / 0xff are NaN. */
static inline float glm_e4m3_to_f32(uint8_t code)
{
    uint32_t e = (code >> 3) & 0xfu, m = code & 7u, bits;
    float v;
    if (e == 0) {
        v = (float)m * 0x1p-9f;
        memcpy(&bits, &v, sizeof(bits));
    } else if (e == 15 && m == 7) {
        bits = 0x7fc00000u;
    } else {
        bits = ((e + 120u) << 23) | (m << 20);
    }
    bits |= (uint32_t)(code & 0x80u) << 24;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

/* Quantizes rows [rows, cols] of src (f32, row-major) into codes / scales / zeros laid out as a
 * glm_weight of format f (host memory; zeros only for int4). GLM_ERR_INVALID_ARG when a value is
 * not finite; *bad_row / *bad_col (may be NULL) then name the first one. */
glm_status glm_quantize_rows(glm_weight_format f, int group_size, const float *src, int64_t rows,
                             int64_t cols, void *codes, float *scales, uint8_t *zeros,
                             int64_t *bad_row, int64_t *bad_col);
/* As glm_quantize_rows, with each row's fp8 / int8 scale taken from amax[r] instead of the row
 * (int4 ignores amax). A row-parallel slice quantized with its whole rows' amax holds exactly
 * the codes and scales of those columns of the whole weight. */
glm_status glm_quantize_rows_amax(glm_weight_format f, int group_size, const float *src,
                                  int64_t rows, int64_t cols, const float *amax, void *codes,
                                  float *scales, uint8_t *zeros, int64_t *bad_row,
                                  int64_t *bad_col);
/* The largest |x[i]| of n values (NaN ignored, as fmaxf does). */
float glm_row_amax(const float *x, int64_t n);
/* Writes rows [row0, row0 + n) of the host-memory weight w as f32 into dst [n, cols]: the stored
 * values (fp8: e4m3(code) * scale, the weight as a weight-only format would see it). */
void glm_dequantize_rows(const glm_weight *w, int64_t row0, int64_t n, float *dst);
/* fp8 activations of one row x[k]: xq[k] = e4m3(e4m3_satfinite(x[k] * (448 / amax))) as floats;
 * returns the row scale sx (amax / 448, or 1 for an all-zero row). */
float glm_fp8_quantize_activation_row(const float *x, int64_t k, float *xq);

#endif
