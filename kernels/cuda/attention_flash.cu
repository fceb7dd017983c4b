/* fa2_kernel: the FlashAttention-2 loop for long query sets (vision, paged prefill). 128 rows per
 * block; each warp owns MT m16 tiles (MT = 1: 8 warps, 64-key tiles; MT = 2: 4 warps, 32-key
 * tiles, every K/V fragment feeds two mma). Q is staged once through shared memory into
 * registers (ldmatrix); K/V tiles are double-buffered with 16-byte cp.async (zero-fill past the
 * keys / head dim), so the loads of tile i+1 run under the math of tile i with one barrier per
 * tile. Rows of the smem tiles are padded to D + 8 elements: 8 consecutive rows then fall on 8
 * different 16-byte bank groups, so ldmatrix is conflict-free. Softmax in base 2 on raw scores,
 * scaled by one FFMA inside the exp2. */
#include "kernels/cuda/attention_internal.cuh"

#include <stdlib.h>

template <typename T, int D, int MT, bool PAGED>
__global__ void __launch_bounds__(fa_cfg<MT>::THREADS, MT == 1 ? 1 : 2)
    fa2_kernel(const attn_params p)
{
    constexpr int THREADS = fa_cfg<MT>::THREADS, KEYS = fa_cfg<MT>::KEYS;
    constexpr int LD = D + 8, KC = D / 16, NT = D / 8, CH = D / 8, NK = KEYS / 8;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    T *sq = (T *)fa_smem;
    T *skv = sq + FA_ROWS * LD; /* stage st: K at st * 2 * KEYS * LD, V after it */

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t4 = lane % 4;
    /* Causal (paged) rows: a row tile's work grows with its position, so the blocks are handed
     * out heaviest first, both kv heads' tiles interleaved, and the light tiles fill the last
     * wave instead of the heavy ones trailing alone (the hardware starts blocks in index order). */
    int tile = blockIdx.x, kv_head = blockIdx.y;
    if (PAGED) {
        int lin = blockIdx.x + blockIdx.y * gridDim.x;
        tile = gridDim.x - 1 - lin / gridDim.y;
        kv_head = lin % gridDim.y;
    }
    const int seq = blockIdx.z / p.n_splits, split = blockIdx.z % p.n_splits;

    const int row0 = tile * FA_ROWS;
    const attn_block blk = attn_block_range(p, PAGED, seq, split, row0, FA_ROWS);
    const int q_begin = blk.q_begin, n_rows = blk.n_rows, causal_offset = blk.causal_offset;
    const int key_begin = blk.key_begin, key_end = blk.key_end;
    if (row0 >= n_rows) return;

    for (int c = tid; c < FA_ROWS * CH; c += THREADS) {
        int r = c / CH, col = (c % CH) * 8, row = row0 + r;
        const T *src = (const T *)p.q;
        int bytes = 0;
        if (row < n_rows && col < p.head_dim) {
            int token = row / p.group, head = kv_head * p.group + row % p.group;
            src = (const T *)p.q + (int64_t)(q_begin + token) * p.q_stride +
                  (int64_t)head * p.head_dim + col;
            bytes = 16;
        }
        cp_async16(sq + r * LD + col, src, bytes);
    }
    cp_async_commit();

    auto load_kv = [&](int k0, int st) {
        T *dk = skv + st * 2 * KEYS * LD, *dv = dk + KEYS * LD;
        for (int c = tid; c < KEYS * CH; c += THREADS) {
            int r = c / CH, col = (c % CH) * 8, j = k0 + r;
            const T *ks = (const T *)p.k, *vs = (const T *)p.v;
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
                ks = (const T *)p.k + off + col;
                vs = (const T *)p.v + off + col;
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
        const T *ck = skv + (it & 1) * 2 * KEYS * LD, *cv = ck + KEYS * LD;
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
                    mma_16816<T>(s[mt][j], qa[mt][kc], b[0], b[1]);
                    mma_16816<T>(s[mt][j + 1], qa[mt][kc], b[2], b[3]);
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
                pa[mt][j / 2][(j % 2) * 2 + 0] = pack2<T>(p0, p1);
                pa[mt][j / 2][(j % 2) * 2 + 1] = pack2<T>(p2, p3);
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
                    mma_16816<T>(o[mt][i], pa[mt][c], b[0], b[1]);
                    mma_16816<T>(o[mt][i + 1], pa[mt][c], b[2], b[3]);
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
                T *dst = (T *)p.out + (int64_t)token * p.out_stride + (int64_t)head * p.head_dim;
#pragma unroll
                for (int i = 0; i < NT; i++) {
                    int col = i * 8 + 2 * t4;
                    if (col < p.head_dim)
                        *(typename half_pair<T>::type *)(dst + col) =
                            pair_from_f32<T>(o[mt][i][2 * h] * inv, o[mt][i][2 * h + 1] * inv);
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


/* Variant of the full/prefill kernel: 1 (8 warps x 16 rows, 64-key tiles) or 2 (4 warps x 32
 * rows, 32-key tiles). Measured on an H100 (test_cuda_ops --bench): the vision tower's full
 * attention (6401 x 16 x 112) 1.30 ms with 1 against 1.35 with 2; the causal image prefill (1632,
 * 32q / 2kv x 128) 0.131 ms with 2 against 0.138 with 1. GLM4V_FA_MT overrides it (benchmarks). */
static int fa_variant(bool paged)
{
    const char *e = getenv("GLM4V_FA_MT");
    if (e && (atoi(e) == 1 || atoi(e) == 2)) return atoi(e);
    return paged ? 2 : 1;
}

template <typename T, int D, int MT, bool PAGED>
static void launch_fa2_t(glm_backend *be, const attn_params *p, dim3 grid)
{
    /* the shared-memory limit is a property of the function in each device's context, so it is
     * raised once per device (a process may drive several GPUs); attr_set is per instantiation,
     * like the kernel it guards (the bf16 kernel's limit says nothing of the f16 one's) */
    static bool attr_set[ATT_MAX_DEVICES];
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= ATT_MAX_DEVICES) dev = 0;
    constexpr size_t smem = fa_smem_bytes<D, MT>();
    if (!attr_set[dev]) {
        CUDA_CHECK(be, cudaFuncSetAttribute(fa2_kernel<T, D, MT, PAGED>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set[dev] = true;
    }
    fa2_kernel<T, D, MT, PAGED>
        <<<grid, fa_cfg<MT>::THREADS, smem, cuda_impl(be)->stream>>>(*p);
    CUDA_CHECK_LAUNCH(be);
}

template <typename T, int D, bool PAGED>
static void launch_fa2_d(glm_backend *be, const attn_params *p, dim3 grid)
{
    if (fa_variant(PAGED) == 1)
        launch_fa2_t<T, D, 1, PAGED>(be, p, grid);
    else
        launch_fa2_t<T, D, 2, PAGED>(be, p, grid);
}

template <typename T>
static void launch_fa2_h(glm_backend *be, const attn_params *p, dim3 grid, bool paged)
{
    if (p->head_dim <= 64)
        paged ? launch_fa2_d<T, 64, true>(be, p, grid) : launch_fa2_d<T, 64, false>(be, p, grid);
    else if (p->head_dim <= 112)
        paged ? launch_fa2_d<T, 112, true>(be, p, grid) : launch_fa2_d<T, 112, false>(be, p, grid);
    else
        paged ? launch_fa2_d<T, 128, true>(be, p, grid) : launch_fa2_d<T, 128, false>(be, p, grid);
}

/* grid.x counts 128-row tiles. Head dims 64..128 (multiples of 8, 16-byte aligned rows). */
void attn_launch_fa2(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid,
                     bool paged)
{
    GLM_DISPATCH_HALF(dtype, T, launch_fa2_h<T>(be, p, grid, paged));
}

