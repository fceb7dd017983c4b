/* Attention: FlashAttention-2 style fused kernel on bf16 tensor cores (mma.sync m16n8k16), used
 * for the vision tower's bidirectional attention and for decoder attention over the paged cache,
 * plus the split-K (flash-decoding) combine pass.
 *
 * Layout of one block (128 threads = 4 warps): 64 "rows", 16 per warp. A row is a (query token,
 * query head) pair of ONE kv head: row r is token r / G, head kv_head * G + r % G with G the
 * GQA group size. So all query heads sharing a kv head read each K/V tile once (decode with
 * G = 16 fills one warp's m16 tile with the 16 heads of one token).
 * Grid: (row tiles, kv heads, sequences * splits). Each block loops over 64-key tiles of its
 * split of the keys: K and V tiles are staged in shared memory ([64][D + 8] bf16, the +8 breaks
 * bank conflicts), S = Q K^T stays in registers, the online softmax rescales the fp32 O
 * accumulators, and P (bf16) feeds the P V product directly from registers. No S x S matrix is
 * ever stored. D is the head dim rounded up to 64, 112 or 128; padded dims are zero.
 * Splits > 1 write unnormalized partial O with the running max and sum to scratch; the combine
 * kernel merges them. */
#include "kernels/cuda/common.cuh"

#include <math.h>
#include <stdlib.h>

#define ATT_ROWS 64
#define ATT_KEYS 64
#define ATT_THREADS 128
#define ATT_MAX_SPLITS 64

typedef struct attn_params {
    const __nv_bfloat16 *q; /* row t, head h at q + t * q_stride + h * head_dim */
    const __nv_bfloat16 *k, *v;
    __nv_bfloat16 *out; /* row t, head h at out + t * out_stride + h * head_dim */
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

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Loads the B fragments of two adjacent n-tiles of a row-major [k][n] smem matrix (V). */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *smem_row)
{
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* Copies `rows` rows of head_dim bf16 into a [ATT_ROWS][D + 8] smem tile, zero-filling padded
 * dims and rows whose source pointer is NULL. src_of(row) gives each row's address. */
template <int D, typename RowFn>
__device__ __forceinline__ void load_tile(__nv_bfloat16 *tile, int head_dim, int vec_ok,
                                          RowFn src_of)
{
    constexpr int LD = D + 8;
    if (vec_ok) {
        constexpr int CHUNKS = D / 8;
        for (int c = threadIdx.x; c < ATT_ROWS * CHUNKS; c += ATT_THREADS) {
            int row = c / CHUNKS, col = (c % CHUNKS) * 8;
            const __nv_bfloat16 *src = src_of(row);
            uint4 v = make_uint4(0, 0, 0, 0);
            if (src && col < head_dim) v = *(const uint4 *)(src + col);
            *(uint4 *)(tile + row * LD + col) = v;
        }
    } else {
        for (int c = threadIdx.x; c < ATT_ROWS * D; c += ATT_THREADS) {
            int row = c / D, col = c % D;
            const __nv_bfloat16 *src = src_of(row);
            tile[row * LD + col] = (src && col < head_dim) ? src[col] : __float2bfloat16(0.f);
        }
    }
}

template <int D>
__global__ void __launch_bounds__(ATT_THREADS)
    flash_attention_kernel(const attn_params p)
{
    constexpr int LD = D + 8;
    constexpr int KC = D / 16; /* 16-wide k-chunks of the head dim for Q K^T */
    constexpr int NT = D / 8;  /* 8-wide n-tiles of the head dim for P V */
    __shared__ __align__(16) __nv_bfloat16 sk[ATT_KEYS * LD];
    __shared__ __align__(16) __nv_bfloat16 sv[ATT_KEYS * LD];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t4 = lane % 4;
    const int kv_head = blockIdx.y;
    const int seq = blockIdx.z / p.n_splits, split = blockIdx.z % p.n_splits;

    int q_begin, q_len, n_keys, causal_offset;
    if (p.paged) {
        q_begin = p.q_start[seq];
        q_len = p.q_start[seq + 1] - q_begin;
        n_keys = p.ctx_len[seq];
        causal_offset = n_keys - q_len;
    } else {
        q_begin = seq * p.seq_len;
        q_len = p.seq_len;
        n_keys = p.seq_len;
        causal_offset = 0;
    }
    const int n_rows = q_len * p.group;
    const int row0 = blockIdx.x * ATT_ROWS;
    if (row0 >= n_rows) return;

    /* key range of this block: its split, cut at the causal limit of its last row */
    int key_begin = split * p.split_keys;
    int key_end = min(n_keys, key_begin + p.split_keys);
    if (p.paged) {
        int last_token = min(n_rows - 1, row0 + ATT_ROWS - 1) / p.group;
        key_end = min(key_end, causal_offset + last_token + 1);
    }

    /* Q tile -> registers, staged through sk */
    auto q_row = [&](int r) -> const __nv_bfloat16 * {
        int row = row0 + r;
        if (row >= n_rows) return nullptr;
        int token = row / p.group, head = kv_head * p.group + row % p.group;
        return p.q + (int64_t)(q_begin + token) * p.q_stride + (int64_t)head * p.head_dim;
    };
    load_tile<D>(sk, p.head_dim, p.vec_ok, q_row);
    __syncthreads();
    uint32_t qa[KC][4];
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        const __nv_bfloat16 *base = sk + (warp * 16 + g) * LD + kc * 16 + 2 * t4;
        qa[kc][0] = *(const uint32_t *)(base);
        qa[kc][1] = *(const uint32_t *)(base + 8 * LD);
        qa[kc][2] = *(const uint32_t *)(base + 8);
        qa[kc][3] = *(const uint32_t *)(base + 8 * LD + 8);
    }
    __syncthreads();

    /* causal limits of this thread's two rows (g and g + 8 of the warp's 16) */
    int row_lo = row0 + warp * 16 + g, row_hi = row_lo + 8;
    int limit_lo = p.paged ? causal_offset + row_lo / p.group : n_keys - 1;
    int limit_hi = p.paged ? causal_offset + row_hi / p.group : n_keys - 1;
    limit_lo = min(limit_lo, n_keys - 1);
    limit_hi = min(limit_hi, n_keys - 1);

    float o[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;

    for (int k0 = key_begin; k0 < key_end; k0 += ATT_KEYS) {
        auto kv_row = [&](int r, const __nv_bfloat16 *base) -> const __nv_bfloat16 * {
            int j = k0 + r;
            if (j >= key_end) return nullptr;
            if (p.paged) {
                int64_t slot = (int64_t)p.block_table[(int64_t)seq * p.max_blocks_per_seq +
                                                      j / p.block_size] *
                                   p.block_size +
                               j % p.block_size;
                return base + slot * p.kv_stride + (int64_t)kv_head * p.head_dim;
            }
            return base + (int64_t)(q_begin + j) * p.kv_stride +
                   (int64_t)(p.kv_head_offset + kv_head) * p.head_dim;
        };
        load_tile<D>(sk, p.head_dim, p.vec_ok, [&](int r) { return kv_row(r, p.k); });
        load_tile<D>(sv, p.head_dim, p.vec_ok, [&](int r) { return kv_row(r, p.v); });
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows x 64 keys */
        float s[ATT_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < ATT_KEYS / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                const __nv_bfloat16 *kb = sk + (j * 8 + g) * LD + kc * 16 + 2 * t4;
                mma_bf16(s[j], qa[kc], *(const uint32_t *)kb, *(const uint32_t *)(kb + 8));
            }
        }
        /* mask, scale, and the online softmax update (rows g and g + 8) */
        float tmax_lo = -INFINITY, tmax_hi = -INFINITY;
#pragma unroll
        for (int j = 0; j < ATT_KEYS / 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int key = k0 + j * 8 + 2 * t4 + e;
                s[j][e] = key <= limit_lo ? s[j][e] * p.scale_log2 : -INFINITY;
                s[j][2 + e] = key <= limit_hi ? s[j][2 + e] * p.scale_log2 : -INFINITY;
                tmax_lo = fmaxf(tmax_lo, s[j][e]);
                tmax_hi = fmaxf(tmax_hi, s[j][2 + e]);
            }
        }
        tmax_lo = fmaxf(tmax_lo, __shfl_xor_sync(0xffffffffu, tmax_lo, 1));
        tmax_lo = fmaxf(tmax_lo, __shfl_xor_sync(0xffffffffu, tmax_lo, 2));
        tmax_hi = fmaxf(tmax_hi, __shfl_xor_sync(0xffffffffu, tmax_hi, 1));
        tmax_hi = fmaxf(tmax_hi, __shfl_xor_sync(0xffffffffu, tmax_hi, 2));
        float mnew_lo = fmaxf(m_lo, tmax_lo), mnew_hi = fmaxf(m_hi, tmax_hi);
        /* a row with no visible key yet keeps max -inf: use 0 as the base so exp2 gives 0 */
        float base_lo = mnew_lo == -INFINITY ? 0.f : mnew_lo;
        float base_hi = mnew_hi == -INFINITY ? 0.f : mnew_hi;
        float corr_lo = exp2f(m_lo - base_lo), corr_hi = exp2f(m_hi - base_hi);
        m_lo = mnew_lo;
        m_hi = mnew_hi;
        l_lo *= corr_lo;
        l_hi *= corr_hi;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            o[i][0] *= corr_lo;
            o[i][1] *= corr_lo;
            o[i][2] *= corr_hi;
            o[i][3] *= corr_hi;
        }
        uint32_t pa[ATT_KEYS / 16][4];
#pragma unroll
        for (int j = 0; j < ATT_KEYS / 8; j++) {
            float p0 = exp2f(s[j][0] - base_lo), p1 = exp2f(s[j][1] - base_lo);
            float p2 = exp2f(s[j][2] - base_hi), p3 = exp2f(s[j][3] - base_hi);
            l_lo += p0 + p1;
            l_hi += p2 + p3;
            /* C fragment of n-tiles 2c and 2c+1 == A fragment of k-chunk c */
            pa[j / 2][(j % 2) * 2 + 0] = pack_bf16(p0, p1);
            pa[j / 2][(j % 2) * 2 + 1] = pack_bf16(p2, p3);
        }
        /* O += P V */
#pragma unroll
        for (int c = 0; c < ATT_KEYS / 16; c++) {
#pragma unroll
            for (int i = 0; i < NT; i += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, sv + (c * 16 + (lane & 15)) * LD + i * 8 + (lane >> 4) * 8);
                mma_bf16(o[i], pa[c], b[0], b[1]);
                mma_bf16(o[i + 1], pa[c], b[2], b[3]);
            }
        }
        __syncthreads(); /* sk / sv are overwritten by the next tile */
    }

    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);

#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = half ? row_hi : row_lo;
        if (row >= n_rows) continue;
        int token = q_begin + row / p.group, head = kv_head * p.group + row % p.group;
        float l = half ? l_hi : l_lo, m = half ? m_hi : m_lo;
        if (p.n_splits == 1) {
            float inv = l > 0.f ? 1.f / l : 0.f;
            __nv_bfloat16 *dst = p.out + (int64_t)token * p.out_stride + (int64_t)head * p.head_dim;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                int col = i * 8 + 2 * t4;
                if (col < p.head_dim)
                    *(__nv_bfloat162 *)(dst + col) = __floats2bfloat162_rn(
                        o[i][half * 2] * inv, o[i][half * 2 + 1] * inv);
            }
        } else {
            int64_t out_row = (int64_t)token * p.n_q_heads + head;
            float *po = p.part_o + ((int64_t)split * p.part_rows + out_row) * p.head_dim;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                int col = i * 8 + 2 * t4;
                if (col < p.head_dim) {
                    po[col] = o[i][half * 2];
                    po[col + 1] = o[i][half * 2 + 1];
                }
            }
            if (t4 == 0) {
                float *pml = p.part_ml + ((int64_t)split * p.part_rows + out_row) * 2;
                pml[0] = m;
                pml[1] = l;
            }
        }
    }
}

/* Merges split partials: one warp per (token, head) output row. part_rows = T * nq. */
__global__ void attention_combine_kernel(__nv_bfloat16 *out, const float *part_o,
                                         const float *part_ml, int64_t part_rows, int n_splits,
                                         int head_dim)
{
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= part_rows) return;
    float m = -INFINITY;
    for (int s = 0; s < n_splits; s++) m = fmaxf(m, part_ml[((int64_t)s * part_rows + row) * 2]);
    float base = m == -INFINITY ? 0.f : m;
    float l = 0.f;
    for (int s = 0; s < n_splits; s++) {
        const float *ml = part_ml + ((int64_t)s * part_rows + row) * 2;
        l += exp2f(ml[0] - base) * ml[1];
    }
    float inv = l > 0.f ? 1.f / l : 0.f;
    for (int d = lane; d < head_dim; d += 32) {
        float acc = 0.f;
        for (int s = 0; s < n_splits; s++) {
            float w = exp2f(part_ml[((int64_t)s * part_rows + row) * 2] - base);
            acc += w * part_o[((int64_t)s * part_rows + row) * head_dim + d];
        }
        out[row * head_dim + d] = __float2bfloat16(acc * inv);
    }
}

/* ---- pipelined kernels (Hopper; sm_80+ instructions) ----
 *
 * fa2_kernel: the FlashAttention-2 loop for long query sets (vision, paged prefill). 128 rows per
 * block; each warp owns MT m16 tiles (MT = 1: 8 warps, 64-key tiles; MT = 2: 4 warps, 32-key
 * tiles, every K/V fragment feeds two mma). Q is staged once through shared memory into
 * registers (ldmatrix); K/V tiles are double-buffered with 16-byte cp.async (zero-fill past the
 * keys / head dim), so the loads of tile i+1 run under the math of tile i with one barrier per
 * tile. Rows of the smem tiles are padded to D + 8 elements: 8 consecutive rows then fall on 8
 * different 16-byte bank groups, so ldmatrix is conflict-free. Softmax in base 2 on raw scores,
 * scaled by one FFMA inside the exp2.
 *
 * decode_kernel: q_len == 1 over the paged cache. One block per (split of the keys, kv head,
 * sequence); its 16 rows are the G <= 16 query heads of that kv head (one m16 tile, padded rows
 * zero). Four warps walk interleaved 16-key tiles of the split independently, each through its
 * own 3-stage cp.async ring (no block barrier in the loop), then merge their (m, l, O) in shared
 * memory; splits > 1 go through attention_combine_kernel (flash-decoding). The grid depends on
 * max_ctx_len only (a capacity under graph capture): the real ctx_len is read on the device and
 * blocks past it write an empty partial (m = -inf, l = 0, O = 0). */

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

template <int D, int MT, bool PAGED>
__global__ void __launch_bounds__(fa_cfg<MT>::THREADS, MT == 1 ? 1 : 2)
    fa2_kernel(const attn_params p)
{
    constexpr int THREADS = fa_cfg<MT>::THREADS, KEYS = fa_cfg<MT>::KEYS;
    constexpr int LD = D + 8, KC = D / 16, NT = D / 8, CH = D / 8, NK = KEYS / 8;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    __nv_bfloat16 *sq = (__nv_bfloat16 *)fa_smem;
    __nv_bfloat16 *skv = sq + FA_ROWS * LD; /* stage st: K at st * 2 * KEYS * LD, V after it */

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t4 = lane % 4;
    const int kv_head = blockIdx.y;
    const int seq = blockIdx.z / p.n_splits, split = blockIdx.z % p.n_splits;

    int q_begin, q_len, n_keys, causal_offset;
    if (PAGED) {
        q_begin = p.q_start[seq];
        q_len = p.q_start[seq + 1] - q_begin;
        n_keys = p.ctx_len[seq];
        causal_offset = n_keys - q_len;
    } else {
        q_begin = seq * p.seq_len;
        q_len = p.seq_len;
        n_keys = p.seq_len;
        causal_offset = 0;
    }
    const int n_rows = q_len * p.group;
    const int row0 = blockIdx.x * FA_ROWS;
    if (row0 >= n_rows) return;
    int key_begin = split * p.split_keys;
    int key_end = min(n_keys, key_begin + p.split_keys);
    if (PAGED) {
        int last_token = min(n_rows - 1, row0 + FA_ROWS - 1) / p.group;
        key_end = min(key_end, causal_offset + last_token + 1);
    }

    for (int c = tid; c < FA_ROWS * CH; c += THREADS) {
        int r = c / CH, col = (c % CH) * 8, row = row0 + r;
        const __nv_bfloat16 *src = p.q;
        int bytes = 0;
        if (row < n_rows && col < p.head_dim) {
            int token = row / p.group, head = kv_head * p.group + row % p.group;
            src = p.q + (int64_t)(q_begin + token) * p.q_stride + (int64_t)head * p.head_dim + col;
            bytes = 16;
        }
        cp_async16(sq + r * LD + col, src, bytes);
    }
    cp_async_commit();

    auto load_kv = [&](int k0, int st) {
        __nv_bfloat16 *dk = skv + st * 2 * KEYS * LD, *dv = dk + KEYS * LD;
        for (int c = tid; c < KEYS * CH; c += THREADS) {
            int r = c / CH, col = (c % CH) * 8, j = k0 + r;
            const __nv_bfloat16 *ks = p.k, *vs = p.v;
            int bytes = 0;
            if (j < key_end && col < p.head_dim) {
                int64_t off;
                if (PAGED) {
                    int64_t slot = (int64_t)p.block_table[(int64_t)seq * p.max_blocks_per_seq +
                                                          j / p.block_size] *
                                       p.block_size +
                                   j % p.block_size;
                    off = slot * p.kv_stride + (int64_t)kv_head * p.head_dim;
                } else {
                    off = (int64_t)(q_begin + j) * p.kv_stride +
                          (int64_t)(p.kv_head_offset + kv_head) * p.head_dim;
                }
                ks = p.k + off + col;
                vs = p.v + off + col;
                bytes = 16;
            }
            cp_async16(dk + r * LD + col, ks, bytes);
            cp_async16(dv + r * LD + col, vs, bytes);
        }
    };

    const int n_tiles = key_end > key_begin ? (key_end - key_begin + KEYS - 1) / KEYS : 0;
    if (n_tiles > 0) load_kv(key_begin, 0);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    uint32_t qa[MT][KC][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kc = 0; kc < KC; kc++)
            ldmatrix_x4(qa[mt][kc],
                        sq + (warp * 16 * MT + mt * 16 + (lane & 15)) * LD + kc * 16 + (lane >> 4) * 8);

    int limit[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = row0 + warp * 16 * MT + mt * 16 + g + 8 * h;
            int lim = PAGED ? causal_offset + row / p.group : key_end - 1;
            limit[mt][h] = min(lim, key_end - 1);
        }

    const float sl2 = p.scale_log2;
    float o[MT][NT][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int i = 0; i < NT; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }

    for (int it = 0; it < n_tiles; it++) {
        cp_async_wait<0>();
        __syncthreads();
        if (it + 1 < n_tiles) load_kv(key_begin + (it + 1) * KEYS, (it + 1) & 1);
        cp_async_commit();
        const __nv_bfloat16 *ck = skv + (it & 1) * 2 * KEYS * LD, *cv = ck + KEYS * LD;
        const int k0 = key_begin + it * KEYS;

        float s[MT][NK][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < NK; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int j = 0; j < NK; j += 2)
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                uint32_t b[4];
                ldmatrix_x4(b, ck + (j * 8 + (lane >> 4) * 8 + (lane & 7)) * LD + kc * 16 +
                                   ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][j], qa[mt][kc], b[0], b[1]);
                    mma_bf16(s[mt][j + 1], qa[mt][kc], b[2], b[3]);
                }
            }

        const bool need_mask = PAGED || k0 + KEYS > key_end;
        uint32_t pa[MT][KEYS / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (need_mask) {
#pragma unroll
                for (int j = 0; j < NK; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        int key = k0 + j * 8 + 2 * t4 + e;
                        if (key > limit[mt][0]) s[mt][j][e] = -INFINITY;
                        if (key > limit[mt][1]) s[mt][j][2 + e] = -INFINITY;
                    }
            }
            float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < NK; j++) {
                tmax0 = fmaxf(tmax0, fmaxf(s[mt][j][0], s[mt][j][1]));
                tmax1 = fmaxf(tmax1, fmaxf(s[mt][j][2], s[mt][j][3]));
            }
            tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
            tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
            tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
            tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
            float mn0 = fmaxf(m[mt][0], tmax0), mn1 = fmaxf(m[mt][1], tmax1);
            float b0 = mn0 == -INFINITY ? 0.f : mn0 * sl2, b1 = mn1 == -INFINITY ? 0.f : mn1 * sl2;
            float c0 = fast_exp2(m[mt][0] * sl2 - b0), c1 = fast_exp2(m[mt][1] * sl2 - b1);
            m[mt][0] = mn0;
            m[mt][1] = mn1;
            float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
            for (int j = 0; j < NK; j++) {
                float p0 = fast_exp2(fmaf(s[mt][j][0], sl2, -b0));
                float p1 = fast_exp2(fmaf(s[mt][j][1], sl2, -b0));
                float p2 = fast_exp2(fmaf(s[mt][j][2], sl2, -b1));
                float p3 = fast_exp2(fmaf(s[mt][j][3], sl2, -b1));
                ls0 += p0 + p1;
                ls1 += p2 + p3;
                pa[mt][j / 2][(j % 2) * 2 + 0] = pack_bf16(p0, p1);
                pa[mt][j / 2][(j % 2) * 2 + 1] = pack_bf16(p2, p3);
            }
            l[mt][0] = l[mt][0] * c0 + ls0;
            l[mt][1] = l[mt][1] * c1 + ls1;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                o[mt][i][0] *= c0;
                o[mt][i][1] *= c0;
                o[mt][i][2] *= c1;
                o[mt][i][3] *= c1;
            }
        }
#pragma unroll
        for (int c = 0; c < KEYS / 16; c++)
#pragma unroll
            for (int i = 0; i < NT; i += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, cv + (c * 16 + (lane & 15)) * LD + i * 8 + (lane >> 4) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(o[mt][i], pa[mt][c], b[0], b[1]);
                    mma_bf16(o[mt][i + 1], pa[mt][c], b[2], b[3]);
                }
            }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float lv = l[mt][h];
            lv += __shfl_xor_sync(0xffffffffu, lv, 1);
            lv += __shfl_xor_sync(0xffffffffu, lv, 2);
            int row = row0 + warp * 16 * MT + mt * 16 + g + 8 * h;
            if (row >= n_rows) continue;
            int token = q_begin + row / p.group, head = kv_head * p.group + row % p.group;
            if (p.n_splits == 1) {
                float inv = lv > 0.f ? 1.f / lv : 0.f;
                __nv_bfloat16 *dst =
                    p.out + (int64_t)token * p.out_stride + (int64_t)head * p.head_dim;
#pragma unroll
                for (int i = 0; i < NT; i++) {
                    int col = i * 8 + 2 * t4;
                    if (col < p.head_dim)
                        *(__nv_bfloat162 *)(dst + col) =
                            __floats2bfloat162_rn(o[mt][i][2 * h] * inv, o[mt][i][2 * h + 1] * inv);
                }
            } else {
                int64_t out_row = (int64_t)token * p.n_q_heads + head;
                float *po = p.part_o + ((int64_t)split * p.part_rows + out_row) * p.head_dim;
#pragma unroll
                for (int i = 0; i < NT; i++) {
                    int col = i * 8 + 2 * t4;
                    if (col < p.head_dim)
                        *(float2 *)(po + col) = make_float2(o[mt][i][2 * h], o[mt][i][2 * h + 1]);
                }
                if (t4 == 0) {
                    float *pml = p.part_ml + ((int64_t)split * p.part_rows + out_row) * 2;
                    pml[0] = m[mt][h] == -INFINITY ? -INFINITY : m[mt][h] * sl2;
                    pml[1] = lv;
                }
            }
        }
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

template <int D>
__global__ void __launch_bounds__(DEC_WARPS * 32) decode_kernel(const attn_params p)
{
    constexpr int LD = D + 8, KC = D / 16, NT = D / 8, CH = D / 8;
    constexpr int TILE = DEC_KEYS * LD;
    static_assert(DEC_WARPS * 16 * (D + 2) * 4 <= (int)dec_smem_bytes<D>(), "merge space");
    extern __shared__ __align__(16) unsigned char dec_smem[];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t4 = lane % 4;
    __nv_bfloat16 *ring = (__nv_bfloat16 *)dec_smem + warp * DEC_STAGES * 2 * TILE;
    const int split = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
    const int token = p.q_start[seq];
    const int n_keys = p.ctx_len[seq];
    const int split_keys = dec_split_keys(n_keys, p.n_splits);
    const int key_begin = split * split_keys;
    const int key_end = min(n_keys, key_begin + split_keys);
    const int n_tiles = key_end > key_begin ? (key_end - key_begin + DEC_KEYS - 1) / DEC_KEYS : 0;
    if (n_tiles == 0 && p.n_splits > 1) return; /* decode_combine_kernel skips empty splits */
    const int my_tiles = n_tiles > warp ? (n_tiles - warp + DEC_WARPS - 1) / DEC_WARPS : 0;
    const int hd = p.head_dim, group = p.group;
    const int64_t table_row = (int64_t)seq * p.max_blocks_per_seq;

    auto load = [&](int i, int st) { /* the warp's i-th tile */
        int kbase = key_begin + (warp + i * DEC_WARPS) * DEC_KEYS;
        __nv_bfloat16 *dk = ring + st * 2 * TILE, *dv = dk + TILE;
#pragma unroll
        for (int u = 0; u < DEC_KEYS * CH / 32; u++) {
            int c = u * 32 + lane, r = c / CH, col = (c % CH) * 8, j = kbase + r;
            const __nv_bfloat16 *ks = p.k, *vs = p.v;
            int bytes = 0;
            if (j < key_end && col < hd) {
                int64_t slot =
                    (int64_t)p.block_table[table_row + j / p.block_size] * p.block_size +
                    j % p.block_size;
                int64_t off = slot * p.kv_stride + (int64_t)kv_head * hd + col;
                ks = p.k + off;
                vs = p.v + off;
                bytes = 16;
            }
            cp_async16(dk + r * LD + col, ks, bytes);
            cp_async16(dv + r * LD + col, vs, bytes);
        }
    };

#pragma unroll
    for (int st = 0; st < DEC_STAGES - 1; st++) {
        if (st < my_tiles) load(st, st);
        cp_async_commit();
    }

    /* Q fragments straight from global: rows g and g + 8 are heads kv_head * G + row */
    uint32_t qa[KC][4];
    const __nv_bfloat16 *qb = p.q + (int64_t)token * p.q_stride + (int64_t)kv_head * group * hd;
#pragma unroll
    for (int kc = 0; kc < KC; kc++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = g + 8 * h, col = kc * 16 + 2 * t4;
            bool ok = row < group;
            qa[kc][h] = ok && col < hd ? *(const uint32_t *)(qb + (int64_t)row * hd + col) : 0u;
            qa[kc][2 + h] =
                ok && col + 8 < hd ? *(const uint32_t *)(qb + (int64_t)row * hd + col + 8) : 0u;
        }

    const float sl2 = p.scale_log2;
    float o[NT][4];
#pragma unroll
    for (int i = 0; i < NT; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int i = 0; i < my_tiles; i++) {
        cp_async_wait<DEC_STAGES - 2>();
        __syncwarp();
        {
            int nx = i + DEC_STAGES - 1;
            if (nx < my_tiles) load(nx, nx % DEC_STAGES);
            cp_async_commit();
        }
        const __nv_bfloat16 *ck = ring + (i % DEC_STAGES) * 2 * TILE, *cv = ck + TILE;
        const int k0 = key_begin + (warp + i * DEC_WARPS) * DEC_KEYS;
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            uint32_t b[4];
            ldmatrix_x4(b, ck + ((lane >> 4) * 8 + (lane & 7)) * LD + kc * 16 + ((lane >> 3) & 1) * 8);
            mma_bf16(s[0], qa[kc], b[0], b[1]);
            mma_bf16(s[1], qa[kc], b[2], b[3]);
        }
        if (k0 + DEC_KEYS > key_end) {
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    if (k0 + j * 8 + 2 * t4 + e >= key_end) s[j][e] = s[j][2 + e] = -INFINITY;
        }
        float tmax0 = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
        float tmax1 = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
        tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
        tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
        tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
        tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
        float mn0 = fmaxf(m0, tmax0), mn1 = fmaxf(m1, tmax1);
        float b0 = mn0 == -INFINITY ? 0.f : mn0 * sl2, b1 = mn1 == -INFINITY ? 0.f : mn1 * sl2;
        float c0 = fast_exp2(m0 * sl2 - b0), c1 = fast_exp2(m1 * sl2 - b1);
        m0 = mn0;
        m1 = mn1;
        float pv[2][4];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            pv[j][0] = fast_exp2(fmaf(s[j][0], sl2, -b0));
            pv[j][1] = fast_exp2(fmaf(s[j][1], sl2, -b0));
            pv[j][2] = fast_exp2(fmaf(s[j][2], sl2, -b1));
            pv[j][3] = fast_exp2(fmaf(s[j][3], sl2, -b1));
        }
        l0 = l0 * c0 + pv[0][0] + pv[0][1] + pv[1][0] + pv[1][1];
        l1 = l1 * c1 + pv[0][2] + pv[0][3] + pv[1][2] + pv[1][3];
        uint32_t pa[4] = {pack_bf16(pv[0][0], pv[0][1]), pack_bf16(pv[0][2], pv[0][3]),
                          pack_bf16(pv[1][0], pv[1][1]), pack_bf16(pv[1][2], pv[1][3])};
#pragma unroll
        for (int n = 0; n < NT; n++) {
            o[n][0] *= c0;
            o[n][1] *= c0;
            o[n][2] *= c1;
            o[n][3] *= c1;
        }
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, cv + (lane & 15) * LD + n * 8 + (lane >> 4) * 8);
            mma_bf16(o[n], pa, b[0], b[1]);
            mma_bf16(o[n + 1], pa, b[2], b[3]);
        }
    }
    cp_async_wait<0>();
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);

    /* merge the warps: [warp][16][D + 2] floats (O, then m and l) over the rings */
    __syncthreads();
    float *sm = (float *)dec_smem;
    constexpr int RS = D + 2;
    {
        float *r0 = sm + (warp * 16 + g) * RS, *r1 = r0 + 8 * RS;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            int col = n * 8 + 2 * t4;
            r0[col] = o[n][0];
            r0[col + 1] = o[n][1];
            r1[col] = o[n][2];
            r1[col + 1] = o[n][3];
        }
        if (t4 == 0) {
            r0[D] = m0 == -INFINITY ? -INFINITY : m0 * sl2;
            r0[D + 1] = l0;
            r1[D] = m1 == -INFINITY ? -INFINITY : m1 * sl2;
            r1[D + 1] = l1;
        }
    }
    __syncthreads();
    constexpr int PER = D / 8; /* columns per thread: 128 threads = 16 rows x 8 parts */
    const int row = tid / 8, c0 = (tid % 8) * PER;
    if (row >= group) return;
    float mw[DEC_WARPS], M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
        mw[w] = sm[(w * 16 + row) * RS + D];
        M = fmaxf(M, mw[w]);
    }
    float base = M == -INFINITY ? 0.f : M, L = 0.f;
    float acc[PER];
#pragma unroll
    for (int c = 0; c < PER; c++) acc[c] = 0.f;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
        const float *r = sm + (w * 16 + row) * RS;
        float wt = fast_exp2(mw[w] - base);
        L += wt * r[D + 1];
#pragma unroll
        for (int c = 0; c < PER; c++) acc[c] += wt * r[c0 + c];
    }
    const int head = kv_head * group + row;
    if (p.n_splits == 1) {
        float inv = L > 0.f ? 1.f / L : 0.f;
        __nv_bfloat16 *dst = p.out + (int64_t)token * p.out_stride + (int64_t)head * hd;
#pragma unroll
        for (int c = 0; c < PER; c += 2)
            if (c0 + c < hd)
                *(__nv_bfloat162 *)(dst + c0 + c) = __floats2bfloat162_rn(acc[c] * inv, acc[c + 1] * inv);
    } else {
        int64_t out_row = (int64_t)token * p.n_q_heads + head;
        float *po = p.part_o + ((int64_t)split * p.part_rows + out_row) * hd;
#pragma unroll
        for (int c = 0; c < PER; c += 2)
            if (c0 + c < hd) *(float2 *)(po + c0 + c) = make_float2(acc[c], acc[c + 1]);
        if (tid % 8 == 0) {
            float *pml = p.part_ml + ((int64_t)split * p.part_rows + out_row) * 2;
            pml[0] = M;
            pml[1] = L;
        }
    }
}

static void launch_flash(glm_backend *be, const attn_params *p, dim3 grid)
{
    cudaStream_t stream = cuda_impl(be)->stream;
    if (p->head_dim <= 64)
        flash_attention_kernel<64><<<grid, ATT_THREADS, 0, stream>>>(*p);
    else if (p->head_dim <= 112)
        flash_attention_kernel<112><<<grid, ATT_THREADS, 0, stream>>>(*p);
    else
        flash_attention_kernel<128><<<grid, ATT_THREADS, 0, stream>>>(*p);
    CUDA_CHECK_LAUNCH(be);
}

/* Variant of the full/prefill kernel: 1 (8 warps x 16 rows, 64-key tiles) or 2 (4 warps x 32
 * rows, 32-key tiles). GLM4V_FA_MT overrides it (benchmarks). */
/* Merges decode split partials: one warp per (token, head) row, token t being sequence t (every
 * q_len is 1). Only the splits that hold keys of the sequence's real ctx_len are read. */
__global__ void decode_combine_kernel(__nv_bfloat16 *out, const float *part_o, const float *part_ml,
                                      const int32_t *ctx_len, int64_t part_rows, int n_splits,
                                      int n_q_heads, int head_dim)
{
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= part_rows) return;
    int n_keys = ctx_len[row / n_q_heads];
    int split_keys = dec_split_keys(n_keys, n_splits);
    int active = min(n_splits, (n_keys + split_keys - 1) / split_keys);
    float m = -INFINITY;
    for (int s = lane; s < active; s += 32) m = fmaxf(m, part_ml[((int64_t)s * part_rows + row) * 2]);
    m = warp_max(m);
    float base = m == -INFINITY ? 0.f : m, l = 0.f;
    for (int s = lane; s < active; s += 32) {
        const float *ml = part_ml + ((int64_t)s * part_rows + row) * 2;
        l += exp2f(ml[0] - base) * ml[1];
    }
    l = warp_sum(l);
    float inv = l > 0.f ? 1.f / l : 0.f;
    for (int d = 2 * lane; d < head_dim; d += 64) {
        float a0 = 0.f, a1 = 0.f;
        for (int s = 0; s < active; s++) {
            float w = exp2f(part_ml[((int64_t)s * part_rows + row) * 2] - base);
            float2 v = *(const float2 *)(part_o + ((int64_t)s * part_rows + row) * head_dim + d);
            a0 += w * v.x;
            a1 += w * v.y;
        }
        *(__nv_bfloat162 *)(out + row * head_dim + d) = __floats2bfloat162_rn(a0 * inv, a1 * inv);
    }
}

static int fa_variant(void)
{
    const char *e = getenv("GLM4V_FA_MT");
    return e && atoi(e) == 1 ? 1 : 2;
}

template <int D, int MT, bool PAGED>
static void launch_fa2_t(glm_backend *be, const attn_params *p, dim3 grid)
{
    static bool attr_set = false;
    constexpr size_t smem = fa_smem_bytes<D, MT>();
    if (!attr_set) {
        CUDA_CHECK(be, cudaFuncSetAttribute(fa2_kernel<D, MT, PAGED>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    fa2_kernel<D, MT, PAGED>
        <<<grid, fa_cfg<MT>::THREADS, smem, cuda_impl(be)->stream>>>(*p);
    CUDA_CHECK_LAUNCH(be);
}

template <int D, bool PAGED>
static void launch_fa2_d(glm_backend *be, const attn_params *p, dim3 grid)
{
    if (fa_variant() == 1)
        launch_fa2_t<D, 1, PAGED>(be, p, grid);
    else
        launch_fa2_t<D, 2, PAGED>(be, p, grid);
}

/* grid.x counts 128-row tiles. Head dims 64..128 (multiples of 8, 16-byte aligned rows). */
static void launch_fa2(glm_backend *be, const attn_params *p, dim3 grid, bool paged)
{
    if (p->head_dim <= 64)
        paged ? launch_fa2_d<64, true>(be, p, grid) : launch_fa2_d<64, false>(be, p, grid);
    else if (p->head_dim <= 112)
        paged ? launch_fa2_d<112, true>(be, p, grid) : launch_fa2_d<112, false>(be, p, grid);
    else
        paged ? launch_fa2_d<128, true>(be, p, grid) : launch_fa2_d<128, false>(be, p, grid);
}

template <int D>
static void launch_decode_t(glm_backend *be, const attn_params *p, dim3 grid)
{
    static bool attr_set = false;
    constexpr size_t smem = dec_smem_bytes<D>();
    if (!attr_set) {
        CUDA_CHECK(be, cudaFuncSetAttribute(decode_kernel<D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    decode_kernel<D><<<grid, DEC_WARPS * 32, smem, cuda_impl(be)->stream>>>(*p);
    CUDA_CHECK_LAUNCH(be);
}

static bool vec_ok(const void *a, const void *b, const void *c, int64_t s1, int64_t s2,
                   int head_dim)
{
    return head_dim % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0 && cuda_aligned16(a) &&
           cuda_aligned16(b) && cuda_aligned16(c);
}

void cuda_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs,
                         int seq_len, int n_heads, int head_dim, float scale)
{
    int64_t width = 3 * (int64_t)n_heads * head_dim;
    CUDA_REQUIRE(be, qkv.dtype == GLM_BF16 && out.dtype == GLM_BF16,
                 "attention_full: bf16 expected");
    CUDA_REQUIRE(be, head_dim > 0 && head_dim <= 128 && head_dim % 2 == 0,
                 "attention_full: head_dim %d unsupported (even, <= 128)", head_dim);
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == width &&
                         glm_tensor_rows(&qkv) == (int64_t)n_seqs * seq_len &&
                         glm_tensor_cols(&out) == (int64_t)n_heads * head_dim &&
                         glm_tensor_rows(&out) == (int64_t)n_seqs * seq_len,
                 "attention_full: qkv [%lld,%lld], out [%lld,%lld] for %d x %d, %d heads of %d",
                 (long long)glm_tensor_rows(&qkv), (long long)glm_tensor_cols(&qkv),
                 (long long)glm_tensor_rows(&out), (long long)glm_tensor_cols(&out), n_seqs,
                 seq_len, n_heads, head_dim);
    if (n_seqs == 0 || seq_len == 0) return;
    const __nv_bfloat16 *q = (const __nv_bfloat16 *)qkv.data;
    attn_params p = {};
    p.q = q;
    p.k = q;
    /* k and v rows are found at column (kv_head_offset + head) * head_dim from their base:
     * k from the row start, v from one q-block further */
    p.v = q + (int64_t)n_heads * head_dim;
    p.out = (__nv_bfloat16 *)out.data;
    p.q_stride = p.kv_stride = width;
    p.out_stride = (int64_t)n_heads * head_dim;
    p.head_dim = head_dim;
    p.group = 1;
    p.n_q_heads = n_heads;
    p.kv_head_offset = n_heads; /* k heads follow the q heads; v has its own base pointer */
    p.scale_log2 = scale * 1.4426950408889634f;
    p.vec_ok = vec_ok(qkv.data, out.data, qkv.data, width, p.out_stride, head_dim);
    p.seq_len = seq_len;
    p.n_splits = 1;
    p.split_keys = seq_len;
    if (p.vec_ok && head_dim >= 64) {
        launch_fa2(be, &p, dim3(cuda_blocks(seq_len, FA_ROWS), n_heads, n_seqs), false);
        return;
    }
    dim3 grid(cuda_blocks(seq_len, ATT_ROWS), n_heads, n_seqs);
    launch_flash(be, &p, grid);
}

void cuda_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                          glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                          int n_kv_heads, int head_dim, float scale)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t width = (int64_t)(n_q_heads + 2 * n_kv_heads) * head_dim;
    int64_t kv_width = (int64_t)n_kv_heads * head_dim;
    CUDA_REQUIRE(be, qkv.dtype == GLM_BF16 && out.dtype == GLM_BF16 &&
                         k_cache.dtype == GLM_BF16 && v_cache.dtype == GLM_BF16,
                 "attention_paged: bf16 expected");
    CUDA_REQUIRE(be, head_dim > 0 && head_dim <= 128 && head_dim % 2 == 0 && n_kv_heads > 0 &&
                         n_q_heads % n_kv_heads == 0,
                 "attention_paged: head_dim %d, %d q heads, %d kv heads unsupported", head_dim,
                 n_q_heads, n_kv_heads);
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == width &&
                         glm_tensor_rows(&qkv) == batch->n_tokens &&
                         glm_tensor_rows(&out) == batch->n_tokens &&
                         glm_tensor_cols(&out) == (int64_t)n_q_heads * head_dim &&
                         glm_tensor_cols(&k_cache) == kv_width &&
                         glm_tensor_cols(&v_cache) == kv_width,
                 "attention_paged: qkv [%lld,%lld], out [%lld,%lld], cache width %lld, %d tokens",
                 (long long)glm_tensor_rows(&qkv), (long long)glm_tensor_cols(&qkv),
                 (long long)glm_tensor_rows(&out), (long long)glm_tensor_cols(&out),
                 (long long)glm_tensor_cols(&k_cache), batch->n_tokens);
    if (batch->n_seqs == 0 || batch->n_tokens == 0) return;
    int group = n_q_heads / n_kv_heads;
    attn_params p = {};
    p.q = (const __nv_bfloat16 *)qkv.data;
    p.k = (const __nv_bfloat16 *)k_cache.data;
    p.v = (const __nv_bfloat16 *)v_cache.data;
    p.out = (__nv_bfloat16 *)out.data;
    p.q_stride = width;
    p.kv_stride = kv_width;
    p.out_stride = (int64_t)n_q_heads * head_dim;
    p.head_dim = head_dim;
    p.group = group;
    p.n_q_heads = n_q_heads;
    p.scale_log2 = scale * 1.4426950408889634f;
    p.vec_ok = vec_ok(qkv.data, k_cache.data, v_cache.data, width, kv_width, head_dim);
    p.paged = 1;
    p.q_start = batch->q_start;
    p.ctx_len = batch->ctx_len;
    p.block_table = batch->block_table;
    p.block_size = batch->block_size;
    p.max_blocks_per_seq = batch->max_blocks_per_seq;

    int max_ctx = batch->max_ctx_len > 0 ? batch->max_ctx_len : 1;
    int64_t part_rows = (int64_t)batch->n_tokens * n_q_heads;
    auto partials = [&](int n_splits) -> bool {
        size_t o_bytes = (size_t)n_splits * part_rows * head_dim * sizeof(float);
        size_t ml_bytes = (size_t)n_splits * part_rows * 2 * sizeof(float);
        char *scratch = (char *)cuda_scratch(be, o_bytes + ml_bytes);
        if (!scratch) return false;
        p.part_o = (float *)scratch;
        p.part_ml = (float *)(scratch + o_bytes);
        p.part_rows = part_rows; /* every split block writes all its rows, even with no keys */
        return true;
    };
    auto combine = [&]() {
        if (p.n_splits > 1 && be->status == GLM_OK) {
            attention_combine_kernel<<<cuda_blocks(part_rows, 4), 128, 0, cb->stream>>>(
                p.out, p.part_o, p.part_ml, part_rows, p.n_splits, head_dim);
            CUDA_CHECK_LAUNCH(be);
        }
    };

    /* Decode (every q_len 1): the pipelined GQA decode kernel. The grid comes from n_seqs and
     * max_ctx_len only, so a captured graph stays valid for any ctx_len <= max_ctx_len. */
    if (batch->max_q_len == 1 && p.vec_ok && group <= 16 && head_dim >= 16) {
        int64_t pairs = (int64_t)batch->n_seqs * n_kv_heads;
        int per_sm = head_dim <= 64 ? 4 : 2; /* resident decode blocks per SM (shared memory) */
        int64_t cap = (int64_t)per_sm * cb->n_sms;
        int n_splits = (int)(cap / pairs);
        int min_keys = DEC_WARPS * DEC_KEYS; /* one tile per warp */
        int max_useful = (max_ctx + min_keys - 1) / min_keys;
        if (n_splits > max_useful) n_splits = max_useful;
        if (n_splits > DEC_MAX_SPLITS) n_splits = DEC_MAX_SPLITS;
        if (n_splits < 1) n_splits = 1;
        p.n_splits = n_splits; /* split sizes follow each sequence's ctx_len on the device */
        if (n_splits > 1 && !partials(n_splits)) return;
        dim3 grid((unsigned)n_splits, n_kv_heads, (unsigned)batch->n_seqs);
        if (head_dim <= 64)
            launch_decode_t<64>(be, &p, grid);
        else
            launch_decode_t<128>(be, &p, grid);
        if (n_splits > 1 && be->status == GLM_OK) {
            decode_combine_kernel<<<cuda_blocks(part_rows, 4), 128, 0, cb->stream>>>(
                p.out, p.part_o, p.part_ml, p.ctx_len, part_rows, n_splits, n_q_heads, head_dim);
            CUDA_CHECK_LAUNCH(be);
        }
        return;
    }

    /* Split the keys when the row tiles alone cannot fill the GPU (short prefill). */
    bool fa2 = p.vec_ok && head_dim >= 64;
    int tile_rows = fa2 ? FA_ROWS : ATT_ROWS;
    int64_t row_tiles = cuda_blocks((int64_t)batch->max_q_len * group, tile_rows);
    int64_t blocks = row_tiles * n_kv_heads * batch->n_seqs;
    int n_splits = (int)((2 * (int64_t)cb->n_sms + blocks - 1) / blocks);
    int max_useful = (max_ctx + 255) / 256; /* at least 256 keys per split */
    if (n_splits > max_useful) n_splits = max_useful;
    if (n_splits > ATT_MAX_SPLITS) n_splits = ATT_MAX_SPLITS;
    if (n_splits < 1) n_splits = 1;
    int split_keys = (max_ctx + n_splits - 1) / n_splits;
    split_keys = (split_keys + ATT_KEYS - 1) / ATT_KEYS * ATT_KEYS;
    n_splits = (max_ctx + split_keys - 1) / split_keys;
    p.n_splits = n_splits;
    p.split_keys = split_keys;
    if (n_splits > 1 && !partials(n_splits)) return;
    dim3 grid((unsigned)row_tiles, n_kv_heads, (unsigned)(batch->n_seqs * n_splits));
    if (fa2)
        launch_fa2(be, &p, grid, true);
    else
        launch_flash(be, &p, grid);
    combine();
}
