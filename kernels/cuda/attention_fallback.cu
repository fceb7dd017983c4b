/* The general attention kernel: 64 rows x 64 keys per block, mma.sync, any head dim up to 128
 * (the tiny test models' 8..24 included), full and paged modes, split-K with a combine pass. */
#include "kernels/cuda/attention_internal.cuh"

template <typename T, int D>
__global__ void __launch_bounds__(ATT_THREADS)
    flash_attention_kernel(const attn_params p)
{
    constexpr int LD = D + 8;
    constexpr int KC = D / 16; /* 16-wide k-chunks of the head dim for Q K^T */
    constexpr int NT = D / 8;  /* 8-wide n-tiles of the head dim for P V */
    __shared__ __align__(16) T sk[ATT_KEYS * LD];
    __shared__ __align__(16) T sv[ATT_KEYS * LD];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t4 = lane % 4;
    const int kv_head = blockIdx.y;
    const int seq = blockIdx.z / p.n_splits, split = blockIdx.z % p.n_splits;

    const int row0 = blockIdx.x * ATT_ROWS;
    const attn_block blk = attn_block_range(p, p.paged, seq, split, row0, ATT_ROWS);
    const int q_begin = blk.q_begin, n_rows = blk.n_rows, causal_offset = blk.causal_offset;
    const int key_begin = blk.key_begin, key_end = blk.key_end, n_keys = blk.n_keys;
    if (row0 >= n_rows) return;

    /* Q tile -> registers, staged through sk */
    auto q_row = [&](int r) -> const T * {
        int row = row0 + r;
        if (row >= n_rows) return nullptr;
        int token = row / p.group, head = kv_head * p.group + row % p.group;
        return (const T *)p.q + (int64_t)(q_begin + token) * p.q_stride +
               (int64_t)head * p.head_dim;
    };
    load_tile<T, D>(sk, p.head_dim, p.vec_ok, q_row);
    __syncthreads();
    uint32_t qa[KC][4];
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        const T *base = sk + (warp * 16 + g) * LD + kc * 16 + 2 * t4;
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
        auto kv_row = [&](int r, const T *base) -> const T * {
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
        load_tile<T, D>(sk, p.head_dim, p.vec_ok, [&](int r) { return kv_row(r, (const T *)p.k); });
        load_tile<T, D>(sv, p.head_dim, p.vec_ok, [&](int r) { return kv_row(r, (const T *)p.v); });
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows x 64 keys */
        float s[ATT_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < ATT_KEYS / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                const T *kb = sk + (j * 8 + g) * LD + kc * 16 + 2 * t4;
                mma_16816<T>(s[j], qa[kc], *(const uint32_t *)kb, *(const uint32_t *)(kb + 8));
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
            pa[j / 2][(j % 2) * 2 + 0] = pack2<T>(p0, p1);
            pa[j / 2][(j % 2) * 2 + 1] = pack2<T>(p2, p3);
        }
        /* O += P V */
#pragma unroll
        for (int c = 0; c < ATT_KEYS / 16; c++) {
#pragma unroll
            for (int i = 0; i < NT; i += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, sv + (c * 16 + (lane & 15)) * LD + i * 8 + (lane >> 4) * 8);
                mma_16816<T>(o[i], pa[c], b[0], b[1]);
                mma_16816<T>(o[i + 1], pa[c], b[2], b[3]);
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
            T *dst = (T *)p.out + (int64_t)token * p.out_stride + (int64_t)head * p.head_dim;
#pragma unroll
            for (int i = 0; i < NT; i++) {
                int col = i * 8 + 2 * t4;
                if (col < p.head_dim)
                    *(typename half_pair<T>::type *)(dst + col) =
                        pair_from_f32<T>(o[i][half * 2] * inv, o[i][half * 2 + 1] * inv);
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

/* Merges split partials: one warp per (token, head) output row. part_rows = tokens * nq. */
template <typename T>
__global__ void attention_combine_kernel(T *out, const float *part_o, const float *part_ml,
                                         int64_t part_rows, int n_splits, int head_dim)
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
        out[row * head_dim + d] = from_f32<T>(acc * inv);
    }
}


void attn_launch_combine(glm_backend *be, glm_dtype dtype, void *out, const float *part_o,
                         const float *part_ml, int64_t part_rows, int n_splits, int head_dim)
{
    cudaStream_t stream = cuda_impl(be)->stream;
    GLM_DISPATCH_HALF(dtype, T,
                      attention_combine_kernel<T><<<cuda_blocks(part_rows, 4), 128, 0, stream>>>(
                          (T *)out, part_o, part_ml, part_rows, n_splits, head_dim));
    CUDA_CHECK_LAUNCH(be);
}

template <typename T>
static void launch_flash_t(cudaStream_t stream, const attn_params *p, dim3 grid)
{
    if (p->head_dim <= 64)
        flash_attention_kernel<T, 64><<<grid, ATT_THREADS, 0, stream>>>(*p);
    else if (p->head_dim <= 112)
        flash_attention_kernel<T, 112><<<grid, ATT_THREADS, 0, stream>>>(*p);
    else
        flash_attention_kernel<T, 128><<<grid, ATT_THREADS, 0, stream>>>(*p);
}

void attn_launch_flash(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid)
{
    cudaStream_t stream = cuda_impl(be)->stream;
    GLM_DISPATCH_HALF(dtype, T, launch_flash_t<T>(stream, p, grid));
    CUDA_CHECK_LAUNCH(be);
}

