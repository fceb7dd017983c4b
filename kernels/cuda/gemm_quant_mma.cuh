/* Skinny products with quantized weights on the tensor cores (gemm_quant.cu includes this):
 * y[M, N] = x[M, K] W[N, K]^T for decode (M <= 8) and batched decode (M up to a few hundred),
 * reading each packed weight byte once per token tile.
 *
 * Why the tensor cores at batch 1: a 16-byte load holds 16 (8-bit) or 32 (int4) codes, and a
 * CUDA-core dot product spends one FMA per code plus the x side's loads and conversions, which
 * measured at 10-74 % of the copy rate (docs/PERF.md, issue 15). mma.sync m16n8k16 multiplies 16
 * weight rows by 8 tokens per instruction, so the per-code work left is the dequantization, done
 * with integer tricks on packed halves.
 *
 * Work layout. A warp owns 16 weight rows (output columns) g and g + 8, g = lane / 4, and a run
 * of "units" along k: 4 lanes (t = lane % 4) each load one 16-byte chunk of row g and one of row
 * g + 8, so a unit is 64 codes (8-bit) or 128 codes (int4: exactly one scale group of 128). The
 * k order inside a unit is free as long as A (weights) and B (x) use the same one, so each lane
 * feeds the MMA slots the fragment layout gives it from its own chunk: it needs x only at its
 * chunk's k, for token g of the tile, which it loads itself (16-byte loads, L1-resident). Warps
 * of a block are WR along rows (they share k, so x is read from L1 once per block step) by 8 / WR
 * along k (split-K, summed in shared memory). Each block does NT tiles of 8 tokens.
 *
 * Numbers (kernels/weight_format.h's semantics, fp32 sums):
 *  int8: the codes become 16-bit floats exactly (|q| <= 127): for f16, a byte placed under the
 *        exponent of 1024 is 1024 + (q + 128), minus 1152; for bf16 (7 stored significand bits,
 *        too few for a byte) via the f32 2^23 trick and a packed conversion. x stays the storage
 *        type, so A*B products are exact and sums fp32; y = s[n] * sum.
 *  int4: 128 + q (bf16) or 1024 + q (f16) by OR-ing the nibble under the exponent, minus 128 + z
 *        (or 1024 + z): q - z exactly. Each unit's sum is scaled by its group's s.
 *  fp8:  both operands are E4M3 values, exact in f16: the weights via cvt e4m3x2 -> f16x2; x is
 *        quantized in the kernel: the block first takes each token's amax over the whole row (x
 *        is 8-27 KB a token, read from L2), then every lane converts its own chunk
 *        (e4m3_satfinite(x * 448 / amax)), as glm_fp8_quantize_activation_row does, instead of a
 *        separate launch writing codes. y = sum * (sx[m] * s[n]).
 * The tensor cores sum products exactly representable in fp32; each unit's sum (64 or 128 k) starts
 * from zero and is added to the row's total in fp32 by the CUDA cores, so the tensor cores'
 * truncating accumulation never chains over more than one unit. Only the summation order differs
 * from the CPU. */
#ifndef GLM4V_CUDA_GEMM_QUANT_MMA_CUH
#define GLM4V_CUDA_GEMM_QUANT_MMA_CUH

#include <cuda_fp8.h>

#include <string.h>
#include <type_traits>

#include "kernels/cuda/common.cuh"

#define GQM_WARPS 8
#define GQM_THREADS (GQM_WARPS * 32)
#define GQM_U 2 /* units per load batch; two batches in flight (double buffer) */
/* the most rows gemm_quant.cu gives it by default (above: slabs + cuBLASLt) */
#define GQM_DEFAULT_MAX_M 128

/* D += A B for one m16n8k16 tile with fp32 accumulators; MT picks bf16 or f16 operands.
 * GQM_HOST_SIM: tests/cuda/sim_quant_mma.cpp runs this file's kernel on the host (a block's
 * threads as host threads) and supplies the warp-wide product itself. */
template <typename MT>
__device__ __forceinline__ void gqm_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);

#ifdef GQM_HOST_SIM
void gqm_sim_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1, bool bf16);
template <>
inline void gqm_mma<__nv_bfloat16>(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    gqm_sim_mma(c, a, b0, b1, true);
}
template <> inline void gqm_mma<__half>(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    gqm_sim_mma(c, a, b0, b1, false);
}
#else
template <>
__device__ __forceinline__ void gqm_mma<__nv_bfloat16>(float *c, const uint32_t *a, uint32_t b0,
                                                       uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void gqm_mma<__half>(float *c, const uint32_t *a, uint32_t b0,
                                                uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

template <typename MT> struct gqm_traits;
template <> struct gqm_traits<__nv_bfloat16> {
    static constexpr uint32_t nibble_magic = 0x43004300u; /* bf16 128.0 in both halves */
    static constexpr float nibble_base = 128.f;
};
template <> struct gqm_traits<__half> {
    static constexpr uint32_t nibble_magic = 0x64006400u; /* f16 1024.0 in both halves */
    static constexpr float nibble_base = 1024.f;
};

/* The same 32 bits as another type of that size (registers; no aliasing through pointers). */
template <typename To, typename From> __device__ __forceinline__ To gqm_bits(const From &f)
{
    static_assert(sizeof(To) == sizeof(From), "gqm_bits: sizes differ");
    To t;
    memcpy((void *)&t, (const void *)&f, sizeof(To));
    return t;
}

__device__ __forceinline__ uint32_t gqm_sub2(uint32_t a, uint32_t b, __nv_bfloat16)
{
    return gqm_bits<uint32_t>(__hsub2(gqm_bits<__nv_bfloat162>(a), gqm_bits<__nv_bfloat162>(b)));
}
__device__ __forceinline__ uint32_t gqm_sub2(uint32_t a, uint32_t b, __half)
{
    return gqm_bits<uint32_t>(__hsub2(gqm_bits<__half2>(a), gqm_bits<__half2>(b)));
}

/* Both halves of a 32-bit word holding the 16-bit float v (exact: v is a small integer). */
template <typename MT> __device__ __forceinline__ uint32_t gqm_splat(float v)
{
    return gqm_bits<uint32_t>(pair_from_f32<MT>(v, v));
}

/* The two int8 codes of bytes (2p, 2p + 1) of word w as a packed pair of exact 16-bit floats;
 * wx = w ^ 0x80808080 (the codes plus 128, unsigned). */
__device__ __forceinline__ uint32_t gqm_int8_pair(uint32_t wx, int p, __half)
{
    uint32_t h = __byte_perm(wx, 0x64646464u, p ? 0x4342u : 0x4140u); /* 1024 + (q + 128) */
    return gqm_sub2(h, 0x64806480u, __half());                        /* minus 1152 */
}
__device__ __forceinline__ uint32_t gqm_int8_pair(uint32_t wx, int p, __nv_bfloat16)
{
    /* 2^23 + (q + 128) as f32, minus 2^23 + 128: q exactly, then packed (exact: |q| <= 127) */
    float lo = __uint_as_float(__byte_perm(wx, 0x4B000000u, 0x7440u + 2 * p)) - 8388736.f;
    float hi = __uint_as_float(__byte_perm(wx, 0x4B000000u, 0x7441u + 2 * p)) - 8388736.f;
    return gqm_bits<uint32_t>(__floats2bfloat162_rn(lo, hi));
}

/* Codes (2p, 2p + 1) of a word of four E4M3 codes as f16x2 (exact). */
__device__ __forceinline__ uint32_t gqm_fp8_pair(uint32_t w, int p)
{
    __half2_raw h =
        __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(p ? w >> 16 : w & 0xffffu), __NV_E4M3);
    return (uint32_t)h.x | ((uint32_t)h.y << 16);
}

/* x values a and b (f32) quantized to E4M3 with the row's factor inv and returned as f16x2. */
__device__ __forceinline__ uint32_t gqm_fp8_x_pair(float a, float b, float inv)
{
    __nv_fp8x2_storage_t q =
        __nv_cvt_float2_to_fp8x2(make_float2(a * inv, b * inv), __NV_SATFINITE, __NV_E4M3);
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(q, __NV_E4M3);
    return (uint32_t)h.x | ((uint32_t)h.y << 16);
}

__device__ __forceinline__ float2 gqm_unpack(uint32_t v, __nv_bfloat16)
{
    return __bfloat1622float2(gqm_bits<__nv_bfloat162>(v));
}
__device__ __forceinline__ float2 gqm_unpack(uint32_t v, __half)
{
    return __half22float2(gqm_bits<__half2>(v));
}

/* Everything one lane loads for one unit: for each of its warp's RT row tiles, its 16-byte chunks
 * of rows g and g + 8, and for int4 those rows' scale and zero point of the unit's group. */
template <int RT> struct gqm_load {
    uint4 a[RT], b[RT];
    float sa[RT], sb[RT];
    uint32_t za[RT], zb[RT];
};

/* The A fragments of one unit's STEPS k16 steps from a lane's chunks wa (row g) and wb (row
 * g + 8); za / zb: int4 zero points. */
template <typename MT, int FMT, int STEPS>
__device__ __forceinline__ void gqm_dequant(uint32_t (*af)[4], const uint4 &la, const uint4 &lb,
                                            uint32_t za, uint32_t zb)
{
    const uint32_t wa[4] = {la.x, la.y, la.z, la.w};
    const uint32_t wb[4] = {lb.x, lb.y, lb.z, lb.w};
    if (FMT == GLM_WEIGHT_INT4) {
        uint32_t zza = gqm_splat<MT>(gqm_traits<MT>::nibble_base + (float)za);
        uint32_t zzb = gqm_splat<MT>(gqm_traits<MT>::nibble_base + (float)zb);
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            /* step s: word s / 2, nibble pairs j0 = 2 (s % 2) and j0 + 1; the pair from shift
             * 4j holds codes (8i + j, 8i + j + 4) */
            const int i4 = s / 2, j0 = 2 * (s % 2);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int sh = 4 * (j0 + h);
                uint32_t qa = ((wa[i4] >> sh) & 0x000f000fu) | gqm_traits<MT>::nibble_magic;
                uint32_t qb = ((wb[i4] >> sh) & 0x000f000fu) | gqm_traits<MT>::nibble_magic;
                af[s][2 * h] = gqm_sub2(qa, zza, MT());
                af[s][2 * h + 1] = gqm_sub2(qb, zzb, MT());
            }
        }
    } else if (FMT == GLM_WEIGHT_INT8) {
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            uint32_t xa = wa[s] ^ 0x80808080u, xb = wb[s] ^ 0x80808080u;
            af[s][0] = gqm_int8_pair(xa, 0, MT());
            af[s][1] = gqm_int8_pair(xb, 0, MT());
            af[s][2] = gqm_int8_pair(xa, 1, MT());
            af[s][3] = gqm_int8_pair(xb, 1, MT());
        }
    } else {
#pragma unroll
        for (int s = 0; s < STEPS; s++) {
            af[s][0] = gqm_fp8_pair(wa[s], 0);
            af[s][1] = gqm_fp8_pair(wb[s], 0);
            af[s][2] = gqm_fp8_pair(wa[s], 1);
            af[s][3] = gqm_fp8_pair(wb[s], 1);
        }
    }
}

/* One product tile: block (bx, by) computes tokens [bx * 8 NT, +8 NT) of rows [by * 16 WR RT,
 * +16 WR RT): the token tiles of one row block are neighbours in launch order, so they run
 * together and all but the first read its weights from L2. Each warp owns RT tiles of 16 rows,
 * so that every x fragment it loads feeds RT products (batches: x traffic per weight byte / RT).
 * Requirements (gqm_fits): k % 16 == 0 (int4: k % 32 and group % 128 == 0), 16-byte aligned codes
 * and x. */
template <typename T, typename OutT, int FMT, int WR, int NT, int RT = 1, int UB = GQM_U,
          int MINB = 1, bool ONE = false>
__global__ void __launch_bounds__(GQM_THREADS, MINB)
    gqm_kernel(OutT *y, const T *x, const uint8_t *codes, const float *scales, const uint8_t *zeros,
               int group, const T *bias, int gelu, int64_t m, int64_t n, int64_t k)
{
    typedef typename std::conditional<FMT == GLM_WEIGHT_FP8, __half, T>::type MT;
    constexpr bool int4 = FMT == GLM_WEIGHT_INT4;
    constexpr int WK = GQM_WARPS / WR;
    constexpr int E = int4 ? 32 : 16;      /* codes in a lane's 16-byte chunk */
    constexpr int UNIT = 4 * E;            /* k of one unit */
    constexpr int STEPS = E / 4;           /* k16 MMA steps per unit */
    constexpr int LDR = NT * 8 + 1;        /* reduction row stride (floats) */
    constexpr int ROWS = WR * 16 * RT;     /* rows of the block */
    constexpr int U = RT == 1 ? UB : 1;    /* units per load batch (registers) */
    __shared__ float red[WK * ROWS * LDR];
    __shared__ float tok_inv[8], tok_sx[8]; /* fp8: per-token 448 / amax and amax / 448 */

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int g = lane / 4, t = lane % 4;
    const int wr = warp % WR, wk = warp / WR;
    const int64_t row0 = (int64_t)blockIdx.y * ROWS + wr * 16 * RT; /* the warp's first row */
    const int64_t row_bytes = int4 ? k / 2 : k;
    const int64_t units = (k + UNIT - 1) / UNIT;
    const int64_t ub = units * wk / WK, ue = units * (wk + 1) / WK;
    const int64_t groups = int4 ? (k + group - 1) / group : 1;
    int64_t ra[RT], rb[RT]; /* rows g and g + 8 of each tile, past n clamped (never stored) */
#pragma unroll
    for (int r = 0; r < RT; r++) {
        int64_t row = row0 + 16 * r + g;
        ra[r] = row < n ? row : n - 1;
        rb[r] = row + 8 < n ? row + 8 : n - 1;
    }
    const int64_t tok0 = (int64_t)blockIdx.x * (NT * 8);
    /* one token tile reads the weights once: streaming loads (evict first) keep them from
     * pushing x and the KV cache out of L2; several tiles want them to stay there */
    const bool once = m <= NT * 8;

    /* lane t's chunk of unit u starts at code u * UNIT + t * E; past k it reads as zero */
    auto load = [&](int64_t u, gqm_load<RT> &l) {
        int64_t kc = u * UNIT + t * E, off = int4 ? kc / 2 : kc;
#pragma unroll
        for (int r = 0; r < RT; r++) {
            l.a[r] = l.b[r] = make_uint4(0, 0, 0, 0);
            l.sa[r] = l.sb[r] = 0.f;
            l.za[r] = l.zb[r] = 0;
            if (u >= ue) continue;
            if (kc < k) {
                const uint4 *qa = (const uint4 *)(codes + ra[r] * row_bytes + off);
                const uint4 *qb = (const uint4 *)(codes + rb[r] * row_bytes + off);
                l.a[r] = once ? __ldcs(qa) : __ldg(qa);
                l.b[r] = once ? __ldcs(qb) : __ldg(qb);
            }
            if (int4) { /* the row's group scale applies to the MMA's sum over all four lanes */
                int64_t gi = u * UNIT / group;
                l.sa[r] = scales[ra[r] * groups + gi];
                l.sb[r] = scales[rb[r] * groups + gi];
                l.za[r] = zeros[ra[r] * groups + gi];
                l.zb[r] = zeros[rb[r] * groups + gi];
            }
        }
    };

    gqm_load<RT> cur[U], nxt[U];
    /* the first weight loads go out before waiting for the kernel ahead (cuda_launch): weights
     * are never written by it; x is its output and is read only after pdl_wait */
#pragma unroll
    for (int i = 0; i < U; i++)
        load(ub + i, cur[i]);
    pdl_wait();
    pdl_trigger();

    if (FMT == GLM_WEIGHT_FP8) {
        /* each token's amax over its whole row, by the whole block */
        float amax[8];
#pragma unroll
        for (int j = 0; j < 8; j++)
            amax[j] = 0.f;
        for (int64_t c = threadIdx.x; c < k / 8; c += GQM_THREADS) {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                if (tok0 + j >= m) break;
                float f[8];
                half8_to_f32(((const half8<T> *)(x + (tok0 + j) * k))[c], f);
#pragma unroll
                for (int i = 0; i < 8; i++)
                    amax[j] = fmaxf(amax[j], fabsf(f[i]));
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
            amax[j] = warp_max(amax[j]);
        if (lane == 0)
#pragma unroll
            for (int j = 0; j < 8; j++)
                red[warp * 8 + j] = amax[j];
        __syncthreads();
        if (threadIdx.x < 8) {
            float a = 0.f;
            for (int w = 0; w < GQM_WARPS; w++)
                a = fmaxf(a, red[w * 8 + threadIdx.x]);
            bool live = a > 0.f;
            tok_inv[threadIdx.x] = live ? GLM_FP8_MAX / a : 0.f;
            tok_sx[threadIdx.x] = live ? a / GLM_FP8_MAX : 1.f;
        }
        __syncthreads();
    }

    float acc[RT][NT][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int j = 0; j < NT; j++)
            acc[r][j][0] = acc[r][j][1] = acc[r][j][2] = acc[r][j][3] = 0.f;

    for (int64_t u0 = ub; u0 < ue; u0 += U) {
        /* ONE: a warp's whole run of units went out in the first batch (gqm_launch picks it
         * when the run fits), so no registers hold a second batch; were the run longer, each
         * further batch is loaded here, unprefetched, and the sums stay right */
        if (ONE && u0 != ub)
#pragma unroll
            for (int i = 0; i < U; i++)
                load(u0 + i, cur[i]);
        if (!ONE)
#pragma unroll
            for (int i = 0; i < U; i++)
                load(u0 + U + i, nxt[i]);
#pragma unroll
        for (int i = 0; i < U; i++) {
            const int64_t u = u0 + i;
            if (u >= ue) break;
            const gqm_load<RT> &l = cur[i];
            uint32_t af[RT][STEPS][4]; /* A fragments of every step of the unit, per row tile */
#pragma unroll
            for (int r = 0; r < RT; r++)
                gqm_dequant<MT, FMT, STEPS>(af[r], l.a[r], l.b[r], l.za[r], l.zb[r]);
            const int64_t kc = u * UNIT + t * E;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int64_t tok = tok0 + j * 8 + g;
                /* x at this lane's chunk for token g of tile j (zero past m or k) */
                uint32_t xw[E / 2];
                if (tok < m && kc < k) {
                    const uint4 *xp = (const uint4 *)(x + tok * k + kc);
#pragma unroll
                    for (int q = 0; q < E / 8; q++) {
                        uint4 v = __ldg(xp + q);
                        xw[4 * q] = v.x, xw[4 * q + 1] = v.y, xw[4 * q + 2] = v.z,
                               xw[4 * q + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int q = 0; q < E / 2; q++)
                        xw[q] = 0;
                }
                if (FMT == GLM_WEIGHT_FP8) {
                    float inv = tok_inv[g]; /* NT == 1 for fp8 */
#pragma unroll
                    for (int q = 0; q < E / 2; q++) {
                        float2 f = gqm_unpack(xw[q], T());
                        xw[q] = gqm_fp8_x_pair(f.x, f.y, inv);
                    }
                }
                /* B fragments of every step: int4's pairs are (8i + j, 8i + j + 4), taken from
                 * words 4i + s%2 and 4i + s%2 + 2 */
                uint32_t bf[STEPS][2];
#pragma unroll
                for (int s = 0; s < STEPS; s++) {
                    if (FMT == GLM_WEIGHT_INT4) {
                        const int i4 = s / 2, sb = s % 2;
                        uint32_t lo = xw[4 * i4 + sb], hi = xw[4 * i4 + sb + 2];
                        bf[s][0] = __byte_perm(lo, hi, 0x5410u);
                        bf[s][1] = __byte_perm(lo, hi, 0x7632u);
                    } else {
                        bf[s][0] = xw[2 * s];
                        bf[s][1] = xw[2 * s + 1];
                    }
                }
#pragma unroll
                for (int r = 0; r < RT; r++) {
                    /* a fresh sum per unit, added in fp32 by the CUDA cores: the tensor
                     * cores' own accumulation is not round-to-nearest (it truncates), and
                     * chained over a whole row its bias would grow with k; int4 scales it by
                     * the unit's group scale on the way */
                    float tmp[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                    for (int s = 0; s < STEPS; s++)
                        gqm_mma<MT>(tmp, af[r][s], bf[s][0], bf[s][1]);
                    if (FMT == GLM_WEIGHT_INT4) {
                        acc[r][j][0] = fmaf(tmp[0], l.sa[r], acc[r][j][0]);
                        acc[r][j][1] = fmaf(tmp[1], l.sa[r], acc[r][j][1]);
                        acc[r][j][2] = fmaf(tmp[2], l.sb[r], acc[r][j][2]);
                        acc[r][j][3] = fmaf(tmp[3], l.sb[r], acc[r][j][3]);
                    } else {
#pragma unroll
                        for (int q = 0; q < 4; q++)
                            acc[r][j][q] += tmp[q];
                    }
                }
            }
        }
        if (!ONE)
#pragma unroll
            for (int i = 0; i < U; i++)
                cur[i] = nxt[i];
    }

    /* split-K sums through shared memory: C fragment (row g / g + 8, tokens 2t, 2t + 1) */
    if (FMT == GLM_WEIGHT_FP8) __syncthreads(); /* red held the amax partials */
#pragma unroll
    for (int r = 0; r < RT; r++) {
        float *mine = red + (wk * ROWS + wr * 16 * RT + 16 * r) * LDR;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            mine[g * LDR + j * 8 + 2 * t] = acc[r][j][0];
            mine[g * LDR + j * 8 + 2 * t + 1] = acc[r][j][1];
            mine[(g + 8) * LDR + j * 8 + 2 * t] = acc[r][j][2];
            mine[(g + 8) * LDR + j * 8 + 2 * t + 1] = acc[r][j][3];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < ROWS * NT * 8; i += GQM_THREADS) {
        const int rr = i % ROWS, c = i / ROWS;
        const int64_t row = (int64_t)blockIdx.y * ROWS + rr, tok = tok0 + c;
        if (row >= n || tok >= m) continue;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < WK; w++)
            v += red[(w * ROWS + rr) * LDR + c];
        if (FMT == GLM_WEIGHT_FP8) v *= tok_sx[c] * scales[row];
        if (FMT == GLM_WEIGHT_INT8) v *= scales[row];
        if (bias) v += to_f32(bias[row]);
        if (gelu) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
        y[tok * n + row] = store_f32<OutT>(v);
    }
}

/* Whether gqm_kernel takes this product. */
static inline bool gqm_fits(const glm_weight &w, const void *x, int64_t m)
{
    bool int4 = w.format == GLM_WEIGHT_INT4;
    return m >= 1 && w.cols % (int4 ? 32 : 16) == 0 && (!int4 || w.group_size % 128 == 0) &&
           (w.format != GLM_WEIGHT_FP8 || m <= 8) && w.rows <= 65535 * 16 &&
           cuda_aligned16(w.data) && cuda_aligned16(x);
}

/* Blocks of 16 WR RT rows, each over 8 NT tokens; UB units per load batch (M <= 8), MINB blocks
 * per multiprocessor the registers must allow. */
template <typename T, typename OutT, int FMT, int WR, int NT, int RT = 1, int UB = GQM_U,
          int MINB = 1, bool ONE = false>
static cudaError_t gqm_launch_shape(const cuda_backend *cb, OutT *y, const T *x,
                                    const glm_weight &w, const T *bias, int gelu, int64_t m)
{
    dim3 grid(cuda_blocks(m, NT * 8), cuda_blocks(w.rows, WR * 16 * RT)), block(GQM_THREADS);
    return cuda_launch(cb, grid, block, 0, gqm_kernel<T, OutT, FMT, WR, NT, RT, UB, MINB, ONE>, y, x,
                       (const uint8_t *)w.data, (const float *)w.scales, (const uint8_t *)w.zeros,
                       w.group_size, bias, gelu, m, w.rows, w.cols);
}

/* The tile shape. At M <= 8 one token tile, and WR (warps side by side along rows; the rest
 * split k) as given, or with wr = 0 the largest of 8, 4, 2, 1 that still gives the device
 * knobs.bps blocks per multiprocessor (4: at 2, wave tails cost the wide weights 10-20 %,
 * PERF.md's fourth-session table): few, long runs of units per warp keep its loads streaming (at k =
 * 4096, WR 1 leaves a warp 4 int4 units, all in flight at once, then the block ends), and fp8
 * blocks each take x's amax once. M <= 16: two token tiles; above, four (32 tokens a block),
 * where WR row warps share each x load through L1: the largest WR of 4, 2, 1 by the same rule;
 * rt = 2 gives each warp two row tiles there (each x fragment feeds two products: half the x
 * traffic per weight byte, more registers; GLM4V_GEMMQ_RT). */
/* M <= 8 with WR row warps, UB units per load batch (2, or 4: twice the weight bytes in flight
 * per warp, registers capped so that two blocks still fit a multiprocessor). */
template <typename T, typename OutT, int FMT, int UB>
static cudaError_t gqm_launch_decode(const cuda_backend *cb, OutT *y, const T *x,
                                     const glm_weight &w, const T *bias, int gelu, int64_t m,
                                     int wr)
{
    constexpr int MINB = UB > GQM_U ? 2 : 1;
    switch (wr) {
    case 8:
        return gqm_launch_shape<T, OutT, FMT, 8, 1, 1, UB, MINB>(cb, y, x, w, bias, gelu, m);
    case 4:
        return gqm_launch_shape<T, OutT, FMT, 4, 1, 1, UB, MINB>(cb, y, x, w, bias, gelu, m);
    case 2:
        return gqm_launch_shape<T, OutT, FMT, 2, 1, 1, UB, MINB>(cb, y, x, w, bias, gelu, m);
    default:
        return gqm_launch_shape<T, OutT, FMT, 1, 1, 1, UB, MINB>(cb, y, x, w, bias, gelu, m);
    }
}

/* The decode knobs (gemm_quant.cu reads them from the environment once per backend). */
typedef struct gqm_knobs {
    int wr;  /* row warps at M <= 8; 0: chosen per shape */
    int rt;  /* row tiles per warp above 16 rows: 1 or 2 */
    int u;   /* units per load batch at M <= 8: 2 or 4 */
    int one; /* at M <= 8 with one row warp: a warp's whole run of units in one batch when it
                holds at most 8 (4 int4) units */
    int bps; /* blocks per multiprocessor the M <= 8 row-warp choice aims at */
} gqm_knobs;

template <typename T, typename OutT, int FMT>
static cudaError_t gqm_launch(const cuda_backend *cb, OutT *y, const T *x, const glm_weight &w,
                              const T *bias, int gelu, int64_t m, const gqm_knobs &kn)
{
    const int64_t sms = cb->n_sms > 0 ? cb->n_sms : 132;
    const int64_t want = 2 * sms;
    int wr = kn.wr, rt = kn.rt;
    if (m <= 8) {
        const int64_t aim = (kn.bps > 0 ? kn.bps : 2) * sms;
        if (wr <= 0)
            for (wr = 8; wr > 1 && (int64_t)cuda_blocks(w.rows, 16 * wr) < aim; wr /= 2) {
            }
        /* one row warp (the narrow weights: qkv, dense): each of the 8 warps has k / 8 codes,
         * 512 at k = 4096, so its whole run goes out in one batch: one memory round trip
         * instead of four. Measured (PERF.md, fourth session of 2026-12-03): int8 / int4 qkv
         * + dense 19.5 / 13.7 us against 19.9 / 14.8, fp8 22.4 against 21.3 (its block-wide
         * amax prologue already overlaps the first batch), so fp8 keeps batches of two */
        if constexpr (FMT != GLM_WEIGHT_FP8) {
            constexpr int ONE_UNITS = FMT == GLM_WEIGHT_INT4 ? 4 : 8;
            constexpr int UNIT = FMT == GLM_WEIGHT_INT4 ? 128 : 64;
            const int64_t per_warp = ((w.cols + UNIT - 1) / UNIT + GQM_WARPS - 1) / GQM_WARPS;
            if (kn.one && wr == 1 && per_warp <= ONE_UNITS)
                return gqm_launch_shape<T, OutT, FMT, 1, 1, 1, ONE_UNITS, 2, true>(
                    cb, y, x, w, bias, gelu, m);
        }
        if (kn.u >= 4) return gqm_launch_decode<T, OutT, FMT, 4>(cb, y, x, w, bias, gelu, m, wr);
        return gqm_launch_decode<T, OutT, FMT, GQM_U>(cb, y, x, w, bias, gelu, m, wr);
    }
    if constexpr (FMT == GLM_WEIGHT_FP8) {
        return cudaErrorInvalidValue; /* gqm_fits refuses it: fp8 batches go to cuBLASLt */
    } else {
        if (m <= 16) return gqm_launch_shape<T, OutT, FMT, 2, 2>(cb, y, x, w, bias, gelu, m);
        int64_t tiles = (m + 31) / 32;
        if (rt >= 2) {
            if ((int64_t)cuda_blocks(w.rows, 128) * tiles >= want)
                return gqm_launch_shape<T, OutT, FMT, 4, 4, 2>(cb, y, x, w, bias, gelu, m);
            if ((int64_t)cuda_blocks(w.rows, 64) * tiles >= want)
                return gqm_launch_shape<T, OutT, FMT, 2, 4, 2>(cb, y, x, w, bias, gelu, m);
            return gqm_launch_shape<T, OutT, FMT, 1, 4, 2>(cb, y, x, w, bias, gelu, m);
        }
        if ((int64_t)cuda_blocks(w.rows, 64) * tiles >= want)
            return gqm_launch_shape<T, OutT, FMT, 4, 4>(cb, y, x, w, bias, gelu, m);
        if ((int64_t)cuda_blocks(w.rows, 32) * tiles >= want)
            return gqm_launch_shape<T, OutT, FMT, 2, 4>(cb, y, x, w, bias, gelu, m);
        return gqm_launch_shape<T, OutT, FMT, 1, 4>(cb, y, x, w, bias, gelu, m);
    }
}

/* The product on the backend's stream, by weight format. */
template <typename T, typename OutT>
static cudaError_t gqm_run(glm_backend *be, glm_tensor y, glm_tensor x, const glm_weight &w,
                           const void *bias, int gelu, int64_t m, const gqm_knobs &kn)
{
    const cuda_backend *cb = cuda_impl(be);
    OutT *yd = (OutT *)y.data;
    const T *xd = (const T *)x.data, *bd = (const T *)bias;
    if (w.format == GLM_WEIGHT_FP8)
        return gqm_launch<T, OutT, GLM_WEIGHT_FP8>(cb, yd, xd, w, bd, gelu, m, kn);
    if (w.format == GLM_WEIGHT_INT8)
        return gqm_launch<T, OutT, GLM_WEIGHT_INT8>(cb, yd, xd, w, bd, gelu, m, kn);
    return gqm_launch<T, OutT, GLM_WEIGHT_INT4>(cb, yd, xd, w, bd, gelu, m, kn);
}

#endif
