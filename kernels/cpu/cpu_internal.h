/* Shared pieces of the CPU backend: the op entry points each file implements, shape checks that
 * report through glm_backend_fail, thread-count lookup and small vector helpers.
 *
 * Every op checks its inputs before touching memory and returns after glm_backend_fail on a
 * mismatch, so a bad call from model code becomes a sticky GLM_ERR_SHAPE instead of a crash. */
#ifndef GLM4V_CPU_INTERNAL_H
#define GLM4V_CPU_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* x86-64: compile the hot loops twice, once for AVX2 and once for the baseline, and pick at load
 * time. Both clones do the same float operations in the same order (no FMA contraction in ISO C
 * mode), so results do not depend on the machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__)
#define GLM_CPU_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GLM_CPU_SIMD_CLONES
#endif

typedef struct cpu_backend {
    int n_threads; /* > 0 */
} cpu_backend;

/* Threads a parallel region of this backend uses. */
int cpu_threads(const glm_backend *be);

/* Each returns false after recording GLM_ERR_SHAPE when the check fails. */
bool cpu_expect_dtype(glm_backend *be, const char *op, const char *name, const glm_tensor *t,
                      glm_dtype dtype);
/* t has dtype and is [rows, cols] as a row-major matrix (rows < 0: any). */
bool cpu_expect_matrix(glm_backend *be, const char *op, const char *name, const glm_tensor *t,
                       glm_dtype dtype, int64_t rows, int64_t cols);

/* Dot product with eight independent float accumulators, so -O3 vectorizes it without
 * reassociating a single sum. */
static inline float cpu_dot(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* y += a * x */
static inline void cpu_axpy(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* ---- ops (one family per file) ---- */
/* gemm.c */
void cpu_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w, const glm_tensor *bias,
                glm_activation act);
void cpu_quantize(glm_backend *be, glm_weight w, int64_t row0, glm_tensor src);
/* elementwise.c */
float cpu_gelu_scalar(float x);
void cpu_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std);
void cpu_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b);
void cpu_scale(glm_backend *be, glm_tensor x, float s);
void cpu_gelu(glm_backend *be, glm_tensor y, glm_tensor x);
void cpu_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x);
/* norm.c */
void cpu_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps);
void cpu_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                     glm_tensor w, float eps);
void cpu_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                       glm_tensor w, glm_tensor b, float eps);
void cpu_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                   float eps);
/* fp8 activations (act_fp8.c; ops.h): the codes of one row and its scale, as
 * glm_fp8_quantize_activation_row quantizes it; q's shape check. */
float cpu_fp8_quantize_codes(const float *x, int64_t k, uint8_t *codes);
bool cpu_expect_act_fp8(glm_backend *be, const char *op, const glm_weight *q, int64_t rows,
                        int64_t cols);
void cpu_add_layernorm_q8(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                          glm_tensor w, glm_tensor b, float eps, glm_weight q);
void cpu_gelu_q8(glm_backend *be, glm_weight q, glm_tensor x);
void cpu_quantize_act(glm_backend *be, glm_weight q, glm_tensor x);
void cpu_linear_q8(glm_backend *be, glm_tensor y, glm_weight q, glm_weight w,
                   const glm_tensor *bias, glm_activation act);
/* embedding.c */
void cpu_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                   int64_t vocab_start);
void cpu_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                   int64_t src_row, int64_t n_rows);
void cpu_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx);
/* rope.c */
void cpu_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads, int n_kv_heads,
              int head_dim, int rope_dim, float theta);
/* attention.c */
void cpu_kv_store(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                  glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim);
void cpu_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                         glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                         int n_kv_heads, int head_dim, float scale);
void cpu_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs, int seq_len,
                        int n_heads, int head_dim, float scale);
/* vision.c */
void cpu_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch);
void cpu_im2col_2x2(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid);
void cpu_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                      glm_tensor pos, int n_images);
/* sample.c */
void cpu_sample(glm_backend *be, int32_t *ids_host, float *logprobs_host, glm_tensor logits,
                const glm_sample_params *params, int n_rows, uint64_t step);

#endif
