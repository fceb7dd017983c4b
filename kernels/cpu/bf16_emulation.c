/* "cpu-bf16": the CPU backend with the CUDA backend's storage rounding, to study and guard the
 * numerics of the bf16 path on machines without a GPU.
 *
 * The CUDA backend keeps weights and activations in bf16 and accumulates in fp32; only the two
 * residual streams are f32 (resid_dtype). This backend runs the CPU ops unchanged (fp32 math) and
 * rounds to bf16 what CUDA stores in bf16: every weight an op reads (rounding is idempotent, so
 * rounding the model's own tensors in place on each use costs time, not accuracy) and every op
 * output, except the residual streams written by add_rmsnorm, add_layernorm and vision_embed.
 * Not modelled: the bf16 rounding of the attention probabilities inside the CUDA attention kernels
 * and differences in summation order. Measured agreement with the GPU: docs/PERF.md.
 *
 * The storage choice of the CUDA backend (--dtype) applies here too: f16 rounds to fp16's 11-bit
 * significand instead of bf16's 8 (range not modelled).
 * A study setting, read from the environment when the backend is created (docs/PERF.md's error
 * budget was measured with it): GLM4V_EMU_EXACT, a comma list of op classes whose outputs stay f32
 * (linear, rmsnorm, add_rmsnorm, rope, attention, silu_mul, gather_rows). */
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_registry.h"
#include "kernels/cpu/cpu_internal.h"

enum {
    EXACT_NEVER = 0, /* outputs every setting rounds */
    EXACT_LINEAR = 1 << 0,
    EXACT_RMSNORM = 1 << 1,
    EXACT_ADD_RMSNORM = 1 << 2,
    EXACT_ROPE = 1 << 3,
    EXACT_ATTENTION = 1 << 4,
    EXACT_SILU_MUL = 1 << 5,
    EXACT_GATHER_ROWS = 1 << 6,
};

/* This backend's op table and settings, one allocation per backend (be->ops points at .ops). */
typedef struct emu_table {
    glm_backend_ops ops;
    int exact;          /* EXACT_* classes left unrounded */
    uint32_t keep_mask; /* significand bits kept: 0xffff0000 (bf16) or 0xffffe000 (fp16) */
} emu_table;

static const emu_table *settings(const glm_backend *be)
{
    return (const emu_table *)be->ops;
}

/* Round-to-nearest-even to the storage type, in place, as __float2bfloat16 does (NaN stays NaN). */
static void round_stored(const glm_backend *be, glm_tensor t)
{
    uint32_t keep = settings(be)->keep_mask, half = ~keep >> 1, lsb = ~keep + 1;
    float *p = t.data;
    int64_t n = glm_tensor_numel(&t);
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &p[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) continue;
        u += half + ((u & lsb) ? 1u : 0u);
        u &= keep;
        memcpy(&p[i], &u, 4);
    }
}

/* Rounds an op's output unless its class is left exact. */
static void round_out(const glm_backend *be, int cls, glm_tensor t)
{
    if (be->status == GLM_OK && !(settings(be)->exact & cls)) round_stored(be, t);
}

static void round_rows(glm_backend *be, glm_tensor t, int64_t row, int64_t n_rows)
{
    int64_t cols = glm_tensor_cols(&t);
    if (be->status != GLM_OK || n_rows <= 0 || row < 0 || row + n_rows > glm_tensor_rows(&t))
        return;
    round_stored(be, glm_tensor_2d(t.dtype, n_rows, cols, (float *)t.data + row * cols));
}

/* The wrappers: round the weights read, run the CPU op, round its stored outputs (round_out and
 * round_rows skip a failed op's garbage: the status is sticky). */

static void emu_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w,
                       const glm_tensor *bias, glm_activation act)
{
    /* quantized weights hold exactly their stored values on the GPU too */
    if (w.format == GLM_WEIGHT_DENSE) round_stored(be, glm_weight_tensor(&w));
    if (bias) round_stored(be, *bias);
    cpu_linear(be, y, x, w, bias, act);
    round_out(be, EXACT_LINEAR, y);
}

static void emu_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b)
{
    cpu_add(be, y, a, b);
    round_out(be, EXACT_NEVER, y);
}

static void emu_scale(glm_backend *be, glm_tensor x, float s)
{
    cpu_scale(be, x, s);
    round_out(be, EXACT_NEVER, x);
}

static void emu_gelu(glm_backend *be, glm_tensor y, glm_tensor x)
{
    cpu_gelu(be, y, x);
    round_out(be, EXACT_NEVER, y);
}

static void emu_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x)
{
    cpu_silu_mul(be, y, x);
    round_out(be, EXACT_SILU_MUL, y);
}

static void emu_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps)
{
    round_stored(be, w);
    cpu_rmsnorm(be, y, x, w, eps);
    round_out(be, EXACT_RMSNORM, y);
}

static void emu_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                            glm_tensor w, float eps)
{
    round_stored(be, w);
    cpu_add_rmsnorm(be, y, resid, delta, w, eps); /* resid: the f32 stream, not rounded */
    round_out(be, EXACT_ADD_RMSNORM, y);
}

static void emu_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                          float eps)
{
    round_stored(be, w), round_stored(be, b);
    cpu_layernorm(be, y, x, w, b, eps);
    round_out(be, EXACT_NEVER, y);
}

static void emu_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                              glm_tensor w, glm_tensor b, float eps)
{
    round_stored(be, w), round_stored(be, b);
    cpu_add_layernorm(be, y, resid, delta, w, b, eps); /* resid: the f32 stream */
    round_out(be, EXACT_NEVER, y);
}

static void emu_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                          int64_t vocab_start)
{
    round_stored(be, table); /* rows of a bf16 table are exact in the f32 stream */
    cpu_embedding(be, y, table, ids, vocab_start);
}

/* Copies into the f32 stream carry bf16 values already; copies into bf16 tensors round. */
static void emu_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                          int64_t src_row, int64_t n_rows)
{
    cpu_copy_rows(be, dst, dst_row, src, src_row, n_rows);
    round_rows(be, dst, dst_row, n_rows);
}

static void emu_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx)
{
    cpu_gather_rows(be, y, x, idx);
    round_out(be, EXACT_GATHER_ROWS, y);
}

static void emu_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
                     int n_kv_heads, int head_dim, int rope_dim, float theta)
{
    cpu_rope(be, qkv, positions, n_q_heads, n_kv_heads, head_dim, rope_dim, theta);
    round_out(be, EXACT_ROPE, qkv);
}

static void emu_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                                glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                                int n_kv_heads, int head_dim, float scale)
{
    cpu_attention_paged(be, out, qkv, k_cache, v_cache, batch, n_q_heads, n_kv_heads, head_dim,
                        scale);
    round_out(be, EXACT_ATTENTION, out);
}

static void emu_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs,
                               int seq_len, int n_heads, int head_dim, float scale)
{
    cpu_attention_full(be, out, qkv, n_seqs, seq_len, n_heads, head_dim, scale);
    round_out(be, EXACT_NEVER, out);
}

static void emu_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch)
{
    cpu_patchify(be, y, pixels, patch);
    round_out(be, EXACT_NEVER, y); /* the pixels are uploaded as bf16 */
}

static void emu_im2col_2x2(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid)
{
    cpu_im2col_2x2(be, y, x, n_images, grid);
    round_out(be, EXACT_NEVER, y);
}

static void emu_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                             glm_tensor pos, int n_images)
{
    round_stored(be, cls), round_stored(be, pos);
    cpu_vision_embed(be, y, patches, cls, pos, n_images); /* y: the f32 stream */
}

static void emu_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std)
{
    cpu_fill_normal(be, t, seed, mean, std);
    round_out(be, EXACT_NEVER, t);
}

/* The CPU backend's own destroy frees impl and be; the ops table is this backend's. */
static void emu_destroy(glm_backend *be)
{
    emu_table *own = (emu_table *)be->ops;
    be->ops = NULL;
    free(own);
    free(be->impl);
    free(be);
}

/* The study settings from the environment (see the top of the file). */
static void read_settings(emu_table *t)
{
    static const struct {
        const char *name;
        int bit;
    } classes[] = {{"linear", EXACT_LINEAR},           {"rmsnorm", EXACT_RMSNORM},
                   {"add_rmsnorm", EXACT_ADD_RMSNORM}, {"rope", EXACT_ROPE},
                   {"attention", EXACT_ATTENTION},     {"silu_mul", EXACT_SILU_MUL},
                   {"gather_rows", EXACT_GATHER_ROWS}};
    t->keep_mask = 0xffff0000u;
    t->exact = 0;
    const char *list = getenv("GLM4V_EMU_EXACT");
    while (list && *list) {
        size_t len = strcspn(list, ",");
        for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
            if (strlen(classes[i].name) == len && strncmp(list, classes[i].name, len) == 0)
                t->exact |= classes[i].bit;
        list += len + (list[len] == ',');
    }
}

static glm_status emu_set_storage(glm_backend *be, glm_dtype storage, glm_error *err)
{
    (void)err;
    emu_table *t = (emu_table *)be->ops; /* this backend's own table (see create) */
    t->keep_mask = storage == GLM_F16 ? 0xffffe000u : 0xffff0000u;
    return GLM_OK;
}

glm_status glm_backend_cpu_bf16_create(int n_threads, glm_backend **out, glm_error *err)
{
    glm_status st = glm_backend_cpu_create(n_threads, out, err);
    if (st) return st;
    glm_backend *be = *out;
    emu_table *table = malloc(sizeof(*table)); /* per backend: no shared mutable table */
    if (!table) {
        glm_backend_destroy(be);
        *out = NULL;
        return glm_fail(err, GLM_ERR_NOMEM, "cpu-bf16 backend: out of memory");
    }
    read_settings(table);
    glm_backend_ops *ops = &table->ops;
    *ops = *be->ops;
    ops->destroy = emu_destroy;
    ops->linear = emu_linear;
    ops->add = emu_add;
    ops->scale = emu_scale;
    ops->gelu = emu_gelu;
    ops->silu_mul = emu_silu_mul;
    ops->rmsnorm = emu_rmsnorm;
    ops->add_rmsnorm = emu_add_rmsnorm;
    ops->layernorm = emu_layernorm;
    ops->add_layernorm = emu_add_layernorm;
    /* no fused fp8 activations here: the model's unfused path gets this backend's roundings */
    ops->add_layernorm_q8 = NULL;
    ops->gelu_q8 = NULL;
    ops->quantize_act = NULL;
    ops->linear_q8 = NULL;
    ops->embedding = emu_embedding;
    ops->copy_rows = emu_copy_rows;
    ops->gather_rows = emu_gather_rows;
    ops->rope = emu_rope;
    ops->attention_paged = emu_attention_paged;
    ops->attention_full = emu_attention_full;
    ops->patchify = emu_patchify;
    ops->im2col_2x2 = emu_im2col_2x2;
    ops->vision_embed = emu_vision_embed;
    ops->fill_normal = emu_fill_normal;
    ops->set_storage = emu_set_storage;
    be->ops = ops;
    be->name = "cpu-bf16";
    be->caps = glm_backend_cpu_bf16_entry.caps;
    return GLM_OK;
}
