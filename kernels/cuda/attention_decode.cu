/* decode_kernel: q_len == 1 over the paged cache. One block per (split of the keys, kv head,
 * sequence); its 16 rows are the G <= 16 query heads of that kv head (one m16 tile, padded rows
 * zero). Four warps walk interleaved 16-key tiles of the split independently, each through its
 * own 3-stage cp.async ring (no block barrier in the loop), then merge their (m, l, O) in shared
 * memory; splits > 1 go through decode_combine_kernel (flash-decoding). The grid depends on
 * max_ctx_len only (a capacity under graph capture): the real ctx_len is read on the device and
 * blocks past it write an empty partial (m = -inf, l = 0, O = 0). */

#include "kernels/cuda/attention_internal.cuh"

template <typename T, int D>
__global__ void __launch_bounds__(DEC_WARPS * 32) decode_kernel(const attn_params p)
{
    constexpr int LD = D + 8, KC = D / 16, NT = D / 8, CH = D / 8;
    constexpr int TILE = DEC_KEYS * LD;
    static_assert(DEC_WARPS * 16 * (D + 2) * 4 <= (int)dec_smem_bytes<D>(), "merge space");
    extern __shared__ __align__(16) unsigned char dec_smem[];
    pdl_wait(); /* started through cuda_launch: the cache rows come from the kernel ahead */
    pdl_trigger();
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t4 = lane % 4;
    T *ring = (T *)dec_smem + warp * DEC_STAGES * 2 * TILE;
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
        T *dk = ring + st * 2 * TILE, *dv = dk + TILE;
#pragma unroll
        for (int u = 0; u < DEC_KEYS * CH / 32; u++) {
            int c = u * 32 + lane, r = c / CH, col = (c % CH) * 8, j = kbase + r;
            const T *ks = (const T *)p.k, *vs = (const T *)p.v;
            int bytes = 0;
            if (j < key_end && col < hd) {
                int64_t slot =
                    (int64_t)p.block_table[table_row + j / p.block_size] * p.block_size +
                    j % p.block_size;
                int64_t off = slot * p.kv_stride + (int64_t)kv_head * hd + col;
                ks = (const T *)p.k + off;
                vs = (const T *)p.v + off;
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
    const T *qb = (const T *)p.q + (int64_t)token * p.q_stride + (int64_t)kv_head * group * hd;
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
        const T *ck = ring + (i % DEC_STAGES) * 2 * TILE, *cv = ck + TILE;
        const int k0 = key_begin + (warp + i * DEC_WARPS) * DEC_KEYS;
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            uint32_t b[4];
            ldmatrix_x4(b, ck + ((lane >> 4) * 8 + (lane & 7)) * LD + kc * 16 + ((lane >> 3) & 1) * 8);
            mma_16816<T>(s[0], qa[kc], b[0], b[1]);
            mma_16816<T>(s[1], qa[kc], b[2], b[3]);
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
        uint32_t pa[4] = {pack2<T>(pv[0][0], pv[0][1]), pack2<T>(pv[0][2], pv[0][3]),
                          pack2<T>(pv[1][0], pv[1][1]), pack2<T>(pv[1][2], pv[1][3])};
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
            mma_16816<T>(o[n], pa, b[0], b[1]);
            mma_16816<T>(o[n + 1], pa, b[2], b[3]);
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
        T *dst = (T *)p.out + (int64_t)token * p.out_stride + (int64_t)head * hd;
#pragma unroll
        for (int c = 0; c < PER; c += 2)
            if (c0 + c < hd)
                *(typename half_pair<T>::type *)(dst + c0 + c) =
                    pair_from_f32<T>(acc[c] * inv, acc[c + 1] * inv);
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


/* Merges decode split partials: one warp per (token, head) row, token t being sequence t (every
 * q_len is 1). Only the splits that hold keys of the sequence's real ctx_len are read. */
template <typename T>
__global__ void decode_combine_kernel(T *out, const float *part_o, const float *part_ml,
                                      const int32_t *ctx_len, int64_t part_rows, int n_splits,
                                      int n_q_heads, int head_dim)
{
    pdl_wait(); /* started through cuda_launch */
    pdl_trigger();
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
        *(typename half_pair<T>::type *)(out + row * head_dim + d) =
            pair_from_f32<T>(a0 * inv, a1 * inv);
    }
}

template <typename T, int D>
static void launch_decode_t(glm_backend *be, const attn_params *p, dim3 grid)
{
    /* the shared-memory limit is a property of the function in each device's context, so it is
     * raised once per device (a process may drive several GPUs); attr_set is per instantiation,
     * like the kernel it guards (the bf16 kernel's limit says nothing of the f16 one's) */
    static bool attr_set[ATT_MAX_DEVICES];
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev < 0 || dev >= ATT_MAX_DEVICES) dev = 0;
    constexpr size_t smem = dec_smem_bytes<D>();
    if (!attr_set[dev]) {
        CUDA_CHECK(be, cudaFuncSetAttribute(decode_kernel<T, D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set[dev] = true;
    }
    CUDA_CHECK(be,
               cuda_launch(cuda_impl(be), grid, DEC_WARPS * 32, smem, decode_kernel<T, D>, *p));
}

void attn_launch_decode(glm_backend *be, glm_dtype dtype, const attn_params *p, dim3 grid, int d)
{
    if (d == 64)
        GLM_DISPATCH_HALF(dtype, T, launch_decode_t<T, 64>(be, p, grid));
    else
        GLM_DISPATCH_HALF(dtype, T, launch_decode_t<T, 128>(be, p, grid));
}

void attn_launch_decode_combine(glm_backend *be, glm_dtype dtype, void *out, const float *part_o,
                                const float *part_ml, const int32_t *ctx_len, int64_t part_rows,
                                int n_splits, int n_q_heads, int head_dim)
{
    cudaError_t e;
    GLM_DISPATCH_HALF(dtype, T,
                      e = cuda_launch(cuda_impl(be), cuda_blocks(part_rows, 4), 128, 0,
                                      decode_combine_kernel<T>, (T *)out, part_o, part_ml, ctx_len,
                                      part_rows, n_splits, n_q_heads, head_dim));
    CUDA_CHECK(be, e);
}

