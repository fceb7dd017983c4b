/* Skinny linear layers: y[M, N] = x[M, K] W[N, K]^T (+ bias) for 2 <= M <= 64 rows (decode at
 * batch 2..64), on tensor cores, reading W once in fully coalesced 16-byte streaming loads.
 *
 * Like gemv.cu, the speed of these products is the rate W is read at; cuBLASLt's tiles are sized
 * for large M and reach 65-83 % of the copy rate on them. Here W never goes through shared memory:
 * each W element is used once, so it is loaded straight into registers in the operand layout of
 * mma.sync.m16n8k16 (A = 16 W rows x 16 k, B = 16 k x 8 x rows, fp32 accumulators).
 *
 * The k permutation. A dot product does not care in which order k is summed, only that A and B
 * agree, so the 32 k of a step are dealt out to the fragments in the order that makes both loads
 * 16 bytes wide. Lane (g = lane / 4, t = lane % 4) loads W[row][t * 8 .. t * 8 + 7] of rows g,
 * g + 8 (and g + 16, g + 24 for the warp's second 16-row tile) and x[g][t * 8 .. t * 8 + 7] of
 * each 8-row x tile: uint4 words .x .y feed the first m16n8k16 (logical k 2t, 2t + 1 and 2t + 8,
 * 2t + 9 are actual k t * 8 + 0, 1 and + 2, 3), .z .w the second (+ 4, 5 and + 6, 7). The four
 * lanes of a group read 64 contiguous bytes of a row: every sector a warp touches is used whole.
 *
 * Layout of the work:
 *   block  = 4 warps, 128 output columns (W rows); warp w owns columns w * 32 .. + 31 (two A
 *            tiles) and all M rows of x (MT = ceil(M / 8) B tiles, rows past M are zeros).
 *   step   = 32 k: 4 W loads of 16 bytes per lane, 4 MT mma.sync. The 4 steps of a chunk (128 k)
 *            are kept in flight: each step's registers are refilled with the step a chunk ahead
 *            as soon as its mmas are issued (16 loads, 8 KB per warp, always outstanding).
 *   x      = staged a chunk at a time in shared memory with cp.async (double-buffered), shared by
 *            the 4 warps: x is read from L2 N / 128 times in all (at M = 64 half of W's bytes).
 *            Rows are padded to 160 elements so that the 16-byte B loads are conflict-free.
 *   split-K = grid.x blocks share a column block, each summing a contiguous run of steps, so that
 *            even N = 2304 fills the device. Splits (at most 8) form one thread-block cluster
 *            (sm_90): each block leaves its fp32 partial tile in its shared memory and the blocks
 *            of the cluster sum them through distributed shared memory, a fixed order for every
 *            element, so the result does not depend on timing. Before sm_90 there is one split.
 *   epilogue = fp32 sum + bias, one rounding to T, stored 4 columns per lane along N.
 *   launch = programmatic dependent launch (cuda_launch's contract in common.cuh): the first
 *            chunk of W loads is issued before waiting for the kernel ahead, x after.
 * Requires K % 32 == 0 and 16-byte aligned x, W and y (the dispatcher checks; anything else goes
 * to cuBLASLt). */
#include "kernels/cuda/common.cuh"

#include <cooperative_groups.h>

namespace cg = cooperative_groups;

#define SK_WARPS 4
#define SK_THREADS (SK_WARPS * 32)
#define SK_BN (SK_WARPS * 32)     /* output columns per block */
#define SK_STEP 32                /* k per step */
#define SK_P 4                    /* steps per chunk = W loads of a row in flight per lane */
#define SK_KC (SK_STEP * SK_P)    /* k per chunk */
#define SK_XS (SK_KC + 32)        /* x row stride in smem: 320 bytes, rows g and g + 1 on */
                                  /* different halves of the banks */
#define SK_PS (SK_BN + 4)         /* partial tile row stride (floats): conflict-free stores */
#define SK_MAX_SPLITS 8           /* the portable cluster size */
#define SK_MAX_ROWS 64
#define SK_BLOCKS_PER_SM 2        /* blocks per SM the split count aims at: one wave */

/* C += A B on one m16n8k16 tile, fp32 accumulators; the operand type is in the instruction. */
template <typename T>
__device__ __forceinline__ void sk_mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2,
                                       uint32_t a3, uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void sk_mma<__nv_bfloat16>(float *c, uint32_t a0, uint32_t a1,
                                                      uint32_t a2, uint32_t a3, uint32_t b0,
                                                      uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void sk_mma<__half>(float *c, uint32_t a0, uint32_t a1, uint32_t a2,
                                               uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void sk_cp_async16(void *smem, const void *gmem)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

__device__ __forceinline__ void sk_cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

__device__ __forceinline__ void sk_cp_async_wait1()
{
    asm volatile("cp.async.wait_group 1;\n" ::);
}

/* Shared memory of one block: two x chunks [2][MT * 8][SK_XS] of T during the K loop, then the
 * fp32 partial tile [MT * 8][SK_PS] in the same bytes. */
template <int MT>
static constexpr size_t skinny_smem_bytes()
{
    return (size_t)2 * MT * 8 * SK_XS * 2 > (size_t)MT * 8 * SK_PS * 4
               ? (size_t)2 * MT * 8 * SK_XS * 2
               : (size_t)MT * 8 * SK_PS * 4;
}

/* Copies chunk c of the split's x rows (m of them, k elements apart) into buffer dst: only the
 * 16-byte pieces of steps inside the split, the rest of a last partial chunk is left alone (its
 * steps are skipped). */
template <typename T>
__device__ __forceinline__ void skinny_stage(T *dst, const T *src, int m, int64_t k,
                                             int valid_pieces)
{
    constexpr int PIECES = SK_KC / 8; /* 16-byte pieces per row of a chunk */
    for (int i = threadIdx.x; i < m * PIECES; i += SK_THREADS) {
        int r = i / PIECES, q = i % PIECES;
        if (q < valid_pieces) sk_cp_async16(dst + r * SK_XS + q * 8, src + (size_t)r * k + q * 8);
    }
}

/* Adds the bias to 4 fp32 sums of row r, columns n .. n + 3, rounds once and stores those < N. */
template <typename T>
__device__ __forceinline__ void skinny_finish(T *y, const T *bias, float4 s, int r, int n,
                                              int n_cols)
{
    float v[4] = {s.x, s.y, s.z, s.w};
    T *dst = y + (size_t)r * n_cols + n;
    if (n + 3 < n_cols && (n_cols & 3) == 0) { /* rows 8-byte aligned: one store */
        if (bias) {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] += to_f32(bias[n + j]);
        }
        uint2 o;
        o.x = pack2<T>(v[0], v[1]);
        o.y = pack2<T>(v[2], v[3]);
        *(uint2 *)dst = o;
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (n + j < n_cols) dst[j] = from_f32<T>(v[j] + (bias ? to_f32(bias[n + j]) : 0.f));
    }
}

/* grid (splits, ceil(N / SK_BN)), SK_THREADS threads; splits > 1 only as one cluster along x. */
template <typename T, int MT>
__global__ void __launch_bounds__(SK_THREADS)
    skinny_kernel(T *y, const T *x, const T *w, const T *bias, int m, int n, int k)
{
    constexpr int MP = MT * 8; /* x rows padded to whole B tiles */
    extern __shared__ uint4 sk_smem[];
    T *xs = (T *)sk_smem;         /* [2][MP][SK_XS] */
    float *pt = (float *)sk_smem; /* [MP][SK_PS], after the K loop */
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    int splits = gridDim.x, split = blockIdx.x;
    int col0 = blockIdx.y * SK_BN;
    /* this split's steps: an even share of K / SK_STEP, in order */
    int all_steps = k / SK_STEP;
    int s_begin = (int)((int64_t)split * all_steps / splits);
    int n_steps = (int)((int64_t)(split + 1) * all_steps / splits) - s_begin;
    int n_chunks = (n_steps + SK_P - 1) / SK_P;
    int64_t k0 = (int64_t)s_begin * SK_STEP;

    /* the lane's 4 W rows: warp columns g, g + 8, g + 16, g + 24; rows past N repeat row N - 1
     * (in bounds; their sums are never stored) */
    const uint4 *wrow[4];
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        int row = min(col0 + warp * 32 + g + 8 * rr, n - 1);
        wrow[rr] = (const uint4 *)(w + (size_t)row * k + k0) + t;
    }

    /* x rows m .. MP - 1 of both buffers stay zeros for the whole loop (cp.async skips them) */
    if (m < MP) {
        constexpr int ROW16 = SK_XS / 8;
        int pad = (MP - m) * ROW16;
        for (int i = tid; i < 2 * pad; i += SK_THREADS) {
            int buf = i / pad, r = m + (i % pad) / ROW16, q = i % ROW16;
            ((uint4 *)(xs + (size_t)buf * MP * SK_XS + r * SK_XS))[q] = make_uint4(0, 0, 0, 0);
        }
    }

    float acc[2][MT][4];
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[a][mt][j] = 0.f;

    /* prologue: the first SK_P steps of W in flight before waiting for the kernel ahead (launched
     * with programmatic dependent launch, see cuda_launch in common.cuh): W is a weight, so these
     * loads overlap that kernel's tail; x is its output and is staged only after the wait */
    uint4 wr[SK_P][4];
#pragma unroll
    for (int p = 0; p < SK_P; p++)
#pragma unroll
        for (int rr = 0; rr < 4; rr++)
            wr[p][rr] = p < n_steps ? __ldcs(wrow[rr] + p * 4) : make_uint4(0, 0, 0, 0);
    pdl_wait();
    pdl_trigger();
    if (n_chunks > 0) skinny_stage(xs, x + k0, m, k, min(SK_P, n_steps) * 4);
    sk_cp_async_commit();

    for (int c = 0; c < n_chunks; c++) {
        if (c + 1 < n_chunks) /* the buffer was last read in chunk c - 1, before its barrier */
            skinny_stage(xs + (size_t)((c + 1) & 1) * MP * SK_XS, x + k0 + (int64_t)(c + 1) * SK_KC,
                         m, k, min(SK_P, n_steps - (c + 1) * SK_P) * 4);
        sk_cp_async_commit(); /* possibly empty: keeps "all but the newest group" = chunk c */
        sk_cp_async_wait1();
        __syncthreads();
        const T *xb = xs + (size_t)(c & 1) * MP * SK_XS + g * SK_XS + t * 8;
#pragma unroll
        for (int p = 0; p < SK_P; p++) {
            int s = c * SK_P + p;
            if (s < n_steps) { /* warp-uniform: only a split's last chunk may be partial */
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    uint4 b = *(const uint4 *)(xb + mt * 8 * SK_XS + p * SK_STEP);
#pragma unroll
                    for (int a = 0; a < 2; a++) {
                        const uint4 &lo = wr[p][2 * a], &hi = wr[p][2 * a + 1];
                        sk_mma<T>(acc[a][mt], lo.x, hi.x, lo.y, hi.y, b.x, b.y);
                        sk_mma<T>(acc[a][mt], lo.z, hi.z, lo.w, hi.w, b.z, b.w);
                    }
                }
            }
            if (s + SK_P < n_steps) { /* refill: the same step of the next chunk */
#pragma unroll
                for (int rr = 0; rr < 4; rr++) wr[p][rr] = __ldcs(wrow[rr] + (s + SK_P) * 4);
            }
        }
        __syncthreads();
    }

    /* the partial tile: accumulator (a, mt) of lane (g, t) holds rows mt * 8 + 2t, + 1 (x rows)
     * of columns warp * 32 + a * 16 + g, + 8 (W rows) */
    __syncthreads(); /* x buffers (and the pad stores) are done with, also when n_chunks == 0 */
#pragma unroll
    for (int a = 0; a < 2; a++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            int r = mt * 8 + 2 * t, cc = warp * 32 + a * 16 + g;
            pt[r * SK_PS + cc] = acc[a][mt][0];
            pt[(r + 1) * SK_PS + cc] = acc[a][mt][1];
            pt[r * SK_PS + cc + 8] = acc[a][mt][2];
            pt[(r + 1) * SK_PS + cc + 8] = acc[a][mt][3];
        }

    /* unit u: row u / (SK_BN / 4), columns 4 (u % (SK_BN / 4)) .. + 3 of the block; a warp's 32
     * lanes cover one row's 128 columns */
    constexpr int UPR = SK_BN / 4;
    int units = m * UPR;
    if (splits == 1) {
        __syncthreads();
        for (int u = tid; u < units; u += SK_THREADS) {
            int r = u / UPR, cc = (u % UPR) * 4;
            float4 s = *(const float4 *)(pt + r * SK_PS + cc);
            skinny_finish(y, bias, s, r, col0 + cc, n);
        }
        return;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap(); /* the launcher makes splits only on sm_90 and later */
#else
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync(); /* every block's partial tile is written and visible */
    int rank = (int)cluster.block_rank();
    for (int u = rank * SK_THREADS + tid; u < units; u += splits * SK_THREADS) {
        int r = u / UPR, cc = (u % UPR) * 4;
        float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int q = 0; q < splits; q++) { /* the same order for every element */
            float4 v = *(const float4 *)(cluster.map_shared_rank(pt, q) + r * SK_PS + cc);
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
        skinny_finish(y, bias, s, r, col0 + cc, n);
    }
    cluster.sync(); /* no block leaves while another still reads its shared memory */
#endif
}

/* The launch: programmatic dependent launch as cuda_launch in common.cuh does it (when cb->pdl),
 * and the splits of a column block as one cluster. */
template <typename T, int MT>
static cudaError_t launch_skinny_mt(const cuda_backend *cb, int splits, int col_blocks, T *y,
                                    const T *x, const T *w, const T *bias, int m, int n, int k)
{
    cudaLaunchAttribute attr[2] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = cb->pdl ? 1 : 0;
    attr[1].id = cudaLaunchAttributeClusterDimension;
    attr[1].val.clusterDim.x = (unsigned)splits;
    attr[1].val.clusterDim.y = 1;
    attr[1].val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)splits, (unsigned)col_blocks);
    cfg.blockDim = dim3(SK_THREADS);
    cfg.dynamicSmemBytes = skinny_smem_bytes<MT>(); /* at most 40 KB: under the 48 KB default */
    cfg.stream = cb->stream;
    cfg.attrs = attr;
    cfg.numAttrs = splits > 1 ? 2 : 1; /* no cluster attribute for one split (or before sm_90) */
    return cudaLaunchKernelEx(&cfg, skinny_kernel<T, MT>, y, x, w, bias, m, n, k);
}

template <typename T>
static cudaError_t launch_skinny(const cuda_backend *cb, int splits, int col_blocks,
                                 const glm_tensor &y, const glm_tensor &x, const glm_tensor &w,
                                 const void *bias)
{
    T *yd = (T *)y.data;
    const T *xd = (const T *)x.data, *wd = (const T *)w.data, *bd = (const T *)bias;
    int m = (int)glm_tensor_rows(&x), k = (int)glm_tensor_cols(&x), n = (int)glm_tensor_rows(&w);
    switch ((m + 7) / 8) {
    case 1: return launch_skinny_mt<T, 1>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 2: return launch_skinny_mt<T, 2>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 3: return launch_skinny_mt<T, 3>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 4: return launch_skinny_mt<T, 4>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 5: return launch_skinny_mt<T, 5>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 6: return launch_skinny_mt<T, 6>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    case 7: return launch_skinny_mt<T, 7>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    default: return launch_skinny_mt<T, 8>(cb, splits, col_blocks, yd, xd, wd, bd, m, n, k);
    }
}

/* Runs the product when this kernel suits it (2 <= M <= skinny_max_rows, M <= 64, N * K <=
 * skinny_max_weights, K % 32 == 0, a 16-bit dtype, 16-byte aligned x, W and y); false leaves it
 * to the caller. */
bool cuda_gemm_skinny(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, const void *bias)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t m = glm_tensor_rows(&x), k = glm_tensor_cols(&x), n = glm_tensor_rows(&w);
    if (m < 2 || m > cb->skinny_max_rows || m > SK_MAX_ROWS || n * k > cb->skinny_max_weights ||
        !cuda_is_half(w.dtype) ||
        k < SK_STEP || k % SK_STEP != 0 || k > INT32_MAX || n < 1 ||
        (n + SK_BN - 1) / SK_BN > 65535 || !cuda_aligned16(x.data) ||
        !cuda_aligned16(w.data) || !cuda_aligned16(y.data))
        return false;
    int col_blocks = (int)((n + SK_BN - 1) / SK_BN);
    /* Split K until the grid is about SK_BLOCKS_PER_SM blocks per SM (never more: the grid stays
     * one wave, every block resident), each split at least two chunks long; clusters, and so
     * splits, need sm_90. */
    int splits = 1;
    cudaError_t e;
    if (cb->cc_major >= 9) {
        splits = SK_BLOCKS_PER_SM * cb->n_sms / col_blocks;
        int most = (int)(k / SK_STEP / (2 * SK_P));
        if (splits > most) splits = most;
        if (splits > SK_MAX_SPLITS) splits = SK_MAX_SPLITS;
        if (splits < 1) splits = 1;
    }
    GLM_DISPATCH_HALF(w.dtype, T, e = launch_skinny<T>(cb, splits, col_blocks, y, x, w, bias));
    if (e != cudaSuccess)
        glm_backend_fail(be, GLM_ERR_BACKEND,
                         "gemm_skinny launch (%lld x %lld x %lld, %d splits): %s", (long long)m,
                         (long long)n, (long long)k, splits, cudaGetErrorString(e));
    return true;
}
