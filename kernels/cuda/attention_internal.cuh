/* Shared pieces of the attention kernels (attention.cu dispatches; attention_fallback.cu,
 * attention_flash.cu and attention_decode.cu hold one kernel family each): the parameter block,
 * the mma / ldmatrix / cp.async helpers, tile sizes, and the launchers each file exports.
 * Kernels are templates on the 16-bit storage type T (__nv_bfloat16 or __half) of q, k, v, out
 * and the KV cache; the launchers take the dtype and pick the instantiation. */
#ifndef GLM4V_CUDA_ATTENTION_INTERNAL_CUH
#define GLM4V_CUDA_ATTENTION_INTERNAL_CUH

#include "kernels/cuda/common.cuh"

#include <math.h>
#include <stdlib.h>

#define ATT_ROWS 64
#define ATT_KEYS 64
#define ATT_THREADS 128
#define ATT_MAX_SPLITS 64
#define ATT_MAX_DEVICES 64 /* devices one process may drive */

/* q, k, v and out point at elements of the storage type T the kernel is instantiated for (one
 * block serves both types; kernels cast). Strides and offsets count elements. */
typedef struct attn_params {
    const void *q; /* row t, head h at q + t * q_stride + h * head_dim */
    const void *k, *v;
    void *out; /* row t, head h at out + t * out_stride + h * head_dim */
    int64_t q_stride, kv_stride, out_stride;
    int head_dim, group, n_q_heads;
    int kv_head_offset; /* full mode: k at column (kv_head_offset + head) * head_dim */
    float scale_log2;   /* scale * log2(e): softmax runs in base 2 */
    int vec_ok;         /* 16-byte loads are legal for q, k, v */
    /* full (vision) mode */
    int seq_len;
    /* paged mode */
    int paged;
    const int32_t *q_start, *ctx_len, *block_table;
    int block_size, max_blocks_per_seq;
    /* split-K */
    int n_splits, split_keys;
    int64_t part_rows;       /* T * nq */
    float *part_o, *part_ml; /* [splits][part_rows][head_dim], [splits][part_rows][2] (m, l) */
} attn_params;

/* C += A B on one m16n8k16 tile with fp32 accumulators; A and B hold pairs of T (pack2<T>).
 * The operand type is part of the instruction, so each storage type has its own asm. */
template <typename T>
__device__ __forceinline__ void mma_16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

/* The two specializations differ only in the operand type's name inside the instruction. */
#define GLM_MMA_16816(T, PTX_TYPE)                                                                 \
    template <>                                                                                    \
    __device__ __forceinline__ void mma_16816<T>(float *c, const uint32_t *a, uint32_t b0,         \
                                                 uint32_t b1)                                      \
    {                                                                                              \
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE ".f32 "        \
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                     \
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                              \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));              \
    }
GLM_MMA_16816(__nv_bfloat16, "bf16")
GLM_MMA_16816(__half, "f16")
#undef GLM_MMA_16816

/* Loads the B fragments of two adjacent n-tiles of a row-major [k][n] smem matrix (V). */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *smem_row)
{
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* Copies `rows` rows of head_dim T into a [ATT_ROWS][D + 8] smem tile, zero-filling padded dims
 * and rows whose source pointer is NULL. src_of(row) gives each row's address. */
template <typename T, int D, typename RowFn>
__device__ __forceinline__ void load_tile(T *tile, int head_dim, int vec_ok, RowFn src_of)
{
    constexpr int LD = D + 8;
    if (vec_ok) {
        constexpr int CHUNKS = D / 8;
        for (int c = threadIdx.x; c < ATT_ROWS * CHUNKS; c += ATT_THREADS) {
            int row = c / CHUNKS, col = (c % CHUNKS) * 8;
            const T *src = src_of(row);
            uint4 v = make_uint4(0, 0, 0, 0);
            if (src && col < head_dim) v = *(const uint4 *)(src + col);
            *(uint4 *)(tile + row * LD + col) = v;
        }
    } else {
        for (int c = threadIdx.x; c < ATT_ROWS * D; c += ATT_THREADS) {
            int row = c / D, col = c % D;
            const T *src = src_of(row);
            tile[row * LD + col] = (src && col < head_dim) ? src[col] : from_f32<T>(0.f);
        }
    }
}

#define FA_ROWS 128
#define DEC_WARPS 4
#define DEC_STAGES 3
#define DEC_KEYS 16
#define DEC_MAX_SPLITS 128

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem_row)
{
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

template <int MT>
struct fa_cfg {
    static constexpr int WARPS = FA_ROWS / (16 * MT);
    static constexpr int THREADS = WARPS * 32;
    static constexpr int KEYS = MT == 1 ? 64 : 32;
};

template <int D, int MT>
static constexpr size_t fa_smem_bytes()
{
    return (size_t)(FA_ROWS + 4 * fa_cfg<MT>::KEYS) * (D + 8) * 2;
}

/* Keys per split of a decode sequence: its real ctx_len spread over the grid's n_splits, in whole
 * 64-key steps (one 16-key tile per warp), so a grid sized for a capacity still uses every split. */
__device__ __forceinline__ int dec_split_keys(int n_keys, int n_splits)
{
    constexpr int step = DEC_WARPS * DEC_KEYS;
    int per = (n_keys + n_splits - 1) / n_splits;
    per = (per + step - 1) / step * step;
    return per > step ? per : step;
}

template <int D>
static constexpr size_t dec_smem_bytes()
{
    return (size_t)DEC_WARPS * DEC_STAGES * 2 * DEC_KEYS * (D + 8) * 2;
}

/* What block (row0, split) of sequence seq covers: the sequence's query tokens and keys, the
 * causal offset of its queries (paged: they are the last q_len of n_keys; full: none), its
 * (query, head) row count, and the key range of this split cut at the causal limit of the
 * block's last row. Callers return when row0 >= n_rows. */
typedef struct attn_block {
    int q_begin, q_len, n_keys, causal_offset, n_rows, key_begin, key_end;
} attn_block;

__device__ __forceinline__ attn_block attn_block_range(const attn_params &p, bool paged, int seq,
                                                      int split, int row0, int rows_per_block)
{
    attn_block b;
    if (paged) {
        b.q_begin = p.q_start[seq];
        b.q_len = p.q_start[seq + 1] - b.q_begin;
        b.n_keys = p.ctx_len[seq];
        b.causal_offset = b.n_keys - b.q_len;
    } else {
        b.q_begin = seq * p.seq_len;
        b.q_len = p.seq_len;
        b.n_keys = p.seq_len;
        b.causal_offset = 0;
    }
    b.n_rows = b.q_len * p.group;
    b.key_begin = split * p.split_keys;
    b.key_end = min(b.n_keys, b.key_begin + p.split_keys);
    if (paged && row0 < b.n_rows) {
        int last_token = min(b.n_rows - 1, row0 + rows_per_block - 1) / p.group;
        b.key_end = min(b.key_end, b.causal_offset + last_token + 1);
    }
    return b;
}

/* The launchers: dtype (GLM_BF16 or GLM_F16, checked by the caller) is the storage type of q, k,
 * v and out, and picks the kernels' instantiation. */
/* attention_fallback.cu: the 64-row kernel for any head dim up to 128, and its split combine. */
void attn_launch_flash(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid);
void attn_launch_combine(glm_backend *be, glm_dtype dtype, void *out, const float *part_o,
                         const float *part_ml, int64_t part_rows, int n_splits, int head_dim);
/* attention_flash.cu: the pipelined FlashAttention-2 kernel (vision, paged prefill). */
void attn_launch_fa2(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid,
                     bool paged);
/* attention_decode.cu: the GQA decode kernel over the paged cache (d = 64 or 128), and the
 * combine of its splits. */
void attn_launch_decode(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid, int d);
void attn_launch_decode_combine(glm_backend *be, glm_dtype dtype, void *out, const float *part_o,
                                const float *part_ml, const int32_t *ctx_len, int64_t part_rows,
                                int n_splits, int n_q_heads, int head_dim);

#endif
