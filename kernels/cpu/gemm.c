/* linear: y[M, N] = act(x[M, K] w[N, K]^T + bias[N]) in float32.
 *
 * With w stored [out, in], every output is the dot product of two contiguous rows (a row of x and
 * a row of w), so nothing needs packing. A 2x4 micro-tile computes eight dot products at once with
 * 8-lane vector accumulators: each vector loaded from x is used four times and each one from w
 * twice. The output is cut into GEMM_MB x GEMM_NB blocks that one thread computes whole, and K is
 * walked in GEMM_KC chunks so the few rows a micro-tile streams stay in L1 and the rows of a block
 * stay in L2 while the micro-tiles sweep them. Decode (M == 1) runs the same blocks with one row:
 * a streaming matrix-vector product where threads split N.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

#define GEMM_MB 32
#define GEMM_NB 64
#define GEMM_KC 512

typedef float v8f __attribute__((vector_size(32)));

/* Unaligned 8-float load; a macro because vector-typed parameters change the ABI between clones. */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))

static inline float hsum8(const v8f *v)
{
    float a[8];
    memcpy(a, v, sizeof(a));
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* out[i][j] = x[i] . w[j] over k_len, for the full 2 x 4 tile. */
static inline void tile_2x4(const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t k_len,
                            float out[2][4])
{
    const float *x0 = x, *x1 = x + ldx;
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    v8f a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
    int64_t k = 0;
    for (; k + 8 <= k_len; k += 8) {
        v8f vx0, vx1, vw0, vw1, vw2, vw3;
        LOAD8(vx0, x0 + k);
        LOAD8(vx1, x1 + k);
        LOAD8(vw0, w0 + k);
        LOAD8(vw1, w1 + k);
        LOAD8(vw2, w2 + k);
        LOAD8(vw3, w3 + k);
        a00 += vx0 * vw0;
        a01 += vx0 * vw1;
        a02 += vx0 * vw2;
        a03 += vx0 * vw3;
        a10 += vx1 * vw0;
        a11 += vx1 * vw1;
        a12 += vx1 * vw2;
        a13 += vx1 * vw3;
    }
    float s[2][4] = {{hsum8(&a00), hsum8(&a01), hsum8(&a02), hsum8(&a03)},
                     {hsum8(&a10), hsum8(&a11), hsum8(&a12), hsum8(&a13)}};
    for (; k < k_len; k++) {
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 4; j++)
                s[i][j] += x[i * ldx + k] * w[j * ldw + k];
    }
    memcpy(out, s, sizeof(s));
}

/* One row of x against four rows of w: the decode (matrix-vector) kernel. */
static inline void tile_1x4(const float *x, const float *w, int64_t ldw, int64_t k_len,
                            float out[4])
{
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t k = 0;
    for (; k + 8 <= k_len; k += 8) {
        v8f vx, vw0, vw1, vw2, vw3;
        LOAD8(vx, x + k);
        LOAD8(vw0, w0 + k);
        LOAD8(vw1, w1 + k);
        LOAD8(vw2, w2 + k);
        LOAD8(vw3, w3 + k);
        a0 += vx * vw0;
        a1 += vx * vw1;
        a2 += vx * vw2;
        a3 += vx * vw3;
    }
    float s[4] = {hsum8(&a0), hsum8(&a1), hsum8(&a2), hsum8(&a3)};
    for (; k < k_len; k++)
        for (int j = 0; j < 4; j++)
            s[j] += x[k] * w[j * ldw + k];
    memcpy(out, s, sizeof(s));
}

/* One dot product, same lane layout as the tiles so edge outputs round like inner ones. */
static inline float tile_1x1(const float *x, const float *w, int64_t k_len)
{
    v8f a = {0};
    int64_t k = 0;
    for (; k + 8 <= k_len; k += 8) {
        v8f vx, vw;
        LOAD8(vx, x + k);
        LOAD8(vw, w + k);
        a += vx * vw;
    }
    float s = hsum8(&a);
    for (; k < k_len; k++)
        s += x[k] * w[k];
    return s;
}

/* y[m0:m1, n0:n1] = x[m0:m1] w[n0:n1]^T, summed over K in GEMM_KC chunks (no bias yet). */
GLM_CPU_SIMD_CLONES
static void gemm_block(const float *x, const float *w, float *y, int64_t N, int64_t K, int64_t m0,
                       int64_t m1, int64_t n0, int64_t n1)
{
    for (int64_t k0 = 0; k0 < K; k0 += GEMM_KC) {
        int64_t kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC;
        bool first = k0 == 0;
        for (int64_t n = n0; n < n1; n += 4) {
            int64_t nr = n1 - n < 4 ? n1 - n : 4;
            const float *wn = w + n * K + k0;
            for (int64_t m = m0; m < m1; m += 2) {
                int64_t mr = m1 - m < 2 ? m1 - m : 2;
                const float *xm = x + m * K + k0;
                float t[2][4];
                if (mr == 2 && nr == 4) {
                    tile_2x4(xm, K, wn, K, kc, t);
                } else if (nr == 4) {
                    tile_1x4(xm, wn, K, kc, t[0]);
                } else {
                    for (int64_t i = 0; i < mr; i++)
                        for (int64_t j = 0; j < nr; j++)
                            t[i][j] = tile_1x1(xm + i * K, wn + j * K, kc);
                }
                for (int64_t i = 0; i < mr; i++) {
                    float *yr = y + (m + i) * N + n;
                    for (int64_t j = 0; j < nr; j++)
                        yr[j] = first ? t[i][j] : yr[j] + t[i][j];
                }
            }
        }
    }
    if (K == 0) {
        for (int64_t m = m0; m < m1; m++)
            for (int64_t n = n0; n < n1; n++)
                y[m * N + n] = 0.0f;
    }
}

static void finish_block(float *y, int64_t N, const float *bias, glm_activation act, int64_t m0,
                         int64_t m1, int64_t n0, int64_t n1)
{
    if (!bias && act == GLM_ACT_NONE) return;
    for (int64_t m = m0; m < m1; m++) {
        float *yr = y + m * N;
        if (bias)
            for (int64_t n = n0; n < n1; n++)
                yr[n] += bias[n];
        if (act == GLM_ACT_GELU)
            for (int64_t n = n0; n < n1; n++)
                yr[n] = cpu_gelu_scalar(yr[n]);
    }
}

/* The slab of GEMM_NB weight rows a quantized product works on, as f32: the stored values
 * (int8, int4), or the bare E4M3 values for fp8, whose scales are applied to the sums. */
static void decode_slab(const glm_weight *w, int64_t n0, int64_t n, float *slab)
{
    if (w->format != GLM_WEIGHT_FP8) {
        glm_dequantize_rows(w, n0, n, slab);
        return;
    }
    const uint8_t *codes = (const uint8_t *)w->data + n0 * w->cols;
    for (int64_t i = 0; i < n * w->cols; i++)
        slab[i] = glm_e4m3_to_f32(codes[i]);
}

/* The quantized product, slab by slab of weight rows: each thread decodes its GEMM_NB rows once
 * into a private f32 slab and runs every row of x against it, so memory beyond the codes stays
 * one slab per thread. fp8 first quantizes the rows of x (kernels/weight_format.h). */
static void linear_quantized(glm_backend *be, float *yd, const float *xd, const glm_weight *w,
                             const float *bd, glm_activation act, int64_t M)
{
    int64_t N = w->rows, K = w->cols;
    float *xq = NULL, *sx = NULL;
    if (w->format == GLM_WEIGHT_FP8) {
        xq = malloc((size_t)(M * K) * sizeof(float));
        sx = malloc((size_t)M * sizeof(float));
        if (!xq || !sx) {
            free(xq);
            free(sx);
            glm_backend_fail(be, GLM_ERR_NOMEM, "linear: out of memory for fp8 activations");
            return;
        }
        for (int64_t m = 0; m < M; m++)
            sx[m] = glm_fp8_quantize_activation_row(xd + m * K, K, xq + m * K);
        xd = xq;
    }
    int64_t nb = (N + GEMM_NB - 1) / GEMM_NB;
    bool parallel = (double)M * (double)N * (double)K > 32768.0, failed = false;
#pragma omp parallel num_threads(cpu_threads(be)) if (parallel)
    {
        float *slab = malloc((size_t)(GEMM_NB * K) * sizeof(float));
        if (!slab) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t bn = 0; bn < nb; bn++) {
            if (!slab) continue;
            int64_t n0 = bn * GEMM_NB, nr = n0 + GEMM_NB < N ? GEMM_NB : N - n0;
            decode_slab(w, n0, nr, slab);
            for (int64_t m0 = 0; m0 < M; m0 += GEMM_MB) {
                int64_t m1 = m0 + GEMM_MB < M ? m0 + GEMM_MB : M;
                gemm_block(xd, slab, yd + n0, N, K, m0, m1, 0, nr);
            }
            if (sx)
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = n0; n < n0 + nr; n++)
                        yd[m * N + n] *= sx[m] * w->scales[n];
            finish_block(yd, N, bd, act, 0, M, n0, n0 + nr);
        }
        free(slab);
    }
    free(xq);
    free(sx);
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "linear: out of memory for a weight slab");
}

void cpu_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w, const glm_tensor *bias,
                glm_activation act)
{
    const char *op = "linear";
    bool dense = w.format == GLM_WEIGHT_DENSE;
    if (dense && w.dtype != GLM_F32) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "linear: w is %s, expected f32",
                         glm_dtype_name(w.dtype));
        return;
    }
    if (!dense && w.format != GLM_WEIGHT_FP8 && w.format != GLM_WEIGHT_INT8 &&
        w.format != GLM_WEIGHT_INT4) {
        glm_backend_fail(be, GLM_ERR_UNSUPPORTED, "linear: unknown weight format %d",
                         (int)w.format);
        return;
    }
    if (!dense && (!w.scales || (w.format == GLM_WEIGHT_INT4 && (!w.zeros || w.group_size <= 0)))) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "linear: %s weight without its scales",
                         glm_weight_format_name(w.format));
        return;
    }
    int64_t N = w.rows, K = w.cols;
    if (!cpu_expect_matrix(be, op, "x", &x, GLM_F32, -1, K)) return;
    int64_t M = glm_tensor_rows(&x);
    if (!cpu_expect_matrix(be, op, "y", &y, GLM_F32, M, N)) return;
    if (bias && !cpu_expect_matrix(be, op, "bias", bias, GLM_F32, 1, N)) return;
    if (act != GLM_ACT_NONE && act != GLM_ACT_GELU) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "linear: unknown activation %d", (int)act);
        return;
    }
    if (M == 0 || N == 0) return;

    const float *xd = x.data, *wd = w.data, *bd = bias ? bias->data : NULL;
    float *yd = y.data;
    if (!dense) {
        linear_quantized(be, yd, xd, &w, bd, act, M);
        return;
    }
    int64_t mb = (M + GEMM_MB - 1) / GEMM_MB, nb = (N + GEMM_NB - 1) / GEMM_NB;
    int64_t n_blocks = mb * nb;
    /* Blocks that share a slab of w are neighbours in the order, so threads working at the
     * same time read the same weight rows (the big operand) from the shared cache. */
    bool parallel = (double)M * (double)N * (double)K > 32768.0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(cpu_threads(be)) if (parallel)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t bm = blk % mb, bn = blk / mb;
        int64_t m0 = bm * GEMM_MB, m1 = m0 + GEMM_MB < M ? m0 + GEMM_MB : M;
        int64_t n0 = bn * GEMM_NB, n1 = n0 + GEMM_NB < N ? n0 + GEMM_NB : N;
        gemm_block(xd, wd, yd, N, K, m0, m1, n0, n1);
        finish_block(yd, N, bd, act, m0, m1, n0, n1);
    }
}

/* Quantizes f32 rows (backend memory is host memory here) into rows of w. */
void cpu_quantize(glm_backend *be, glm_weight w, int64_t row0, glm_tensor src)
{
    if (w.format == GLM_WEIGHT_DENSE ||
        !cpu_expect_matrix(be, "quantize", "src", &src, GLM_F32, -1, w.cols))
        return;
    int64_t n = glm_tensor_rows(&src);
    if (row0 < 0 || row0 + n > w.rows) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "quantize: rows [%lld, +%lld) outside %lld",
                         (long long)row0, (long long)n, (long long)w.rows);
        return;
    }
    glm_weight v = glm_weight_row_view(&w, row0, n);
    int64_t br = 0, bc = 0;
    if (glm_quantize_rows(w.format, w.group_size, src.data, n, w.cols, v.data, v.scales, v.zeros,
                          &br, &bc))
        glm_backend_fail(be, GLM_ERR_INVALID_ARG, "quantize: non-finite value at [%lld, %lld]",
                         (long long)(row0 + br), (long long)bc);
}
