/* gemm_quant_mma.cuh's kernel run on the host, against the CPU semantics of the formats
 * (kernels/cpu/quant.c): no GPU needed, only the CUDA headers.
 *
 *   sim_quant_mma
 *
 * Why: the kernel's correctness rests on index arithmetic (which k each lane's 16-byte chunk
 * feeds to which MMA slot, for A and B alike), on integer dequantization tricks, on the fp8
 * activation quantization done per block and on the split-K reduction; all of that is plain C++
 * that a host compiler runs as it stands. The simulation runs each block's 256 threads as host
 * threads with a real barrier for __syncthreads, and emulates only the warp-wide operations:
 * mma.sync m16n8k16 (from the PTX fragment layout: lane l = 4 g + t holds A rows g / g + 8 at k
 * 2t, 2t + 1 and 2t + 8, 2t + 9, B at the same k for column g; C rows g / g + 8, columns 2t,
 * 2t + 1), computed in double and rounded toward zero, and the shuffle of the amax reduction.
 * Every output starts as NaN, so an unwritten one fails. Bound: rel L2 1e-5 (fp32 sums in another
 * order). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

/* ---- what the device provides, for host threads ---- */

static thread_local uint3 sim_thread, sim_block;
#define threadIdx sim_thread
#define blockIdx sim_block
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static /* blocks run one at a time, so one copy serves each block */
#undef __forceinline__
#define __forceinline__ inline
#define GQM_HOST_SIM 1

struct sim_warp {
    std::barrier<> *bar;
    uint32_t a[32][4], b[32][2];
    float c[32][4], v[32];
};
static std::barrier<> *sim_block_barrier;
static sim_warp sim_warps[8];

static void __syncthreads()
{
    sim_block_barrier->arrive_and_wait();
}

static float __shfl_xor_sync(unsigned, float v, int o)
{
    sim_warp &w = sim_warps[threadIdx.x / 32];
    int l = threadIdx.x % 32;
    w.v[l] = v;
    w.bar->arrive_and_wait();
    float r = w.v[l ^ o];
    w.bar->arrive_and_wait();
    return r;
}

template <class T> static T __ldcs(const T *p)
{
    return *p;
}
template <class T> static T __ldg(const T *p)
{
    return *p;
}

static unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
    unsigned char src[8];
    memcpy(src, &x, 4);
    memcpy(src + 4, &y, 4);
    unsigned r = 0;
    for (int i = 0; i < 4; i++)
        r |= (unsigned)src[(s >> (4 * i)) & 7] << (8 * i);
    return r;
}

static float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double half_value(uint32_t h, bool bf16)
{
    h &= 0xffff;
    if (bf16) return (double)__uint_as_float(h << 16);
    __half_raw r;
    r.x = (unsigned short)h;
    return (double)__half2float(__half(r));
}

/* The warp's m16n8k16 product: every lane posts its fragments, then computes its own outputs. */
void gqm_sim_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1, bool bf16)
{
    sim_warp &w = sim_warps[threadIdx.x / 32];
    int l = threadIdx.x % 32;
    memcpy(w.a[l], a, 16);
    w.b[l][0] = b0, w.b[l][1] = b1;
    memcpy(w.c[l], c, 16);
    w.bar->arrive_and_wait();
    double A[16][16], B[16][8];
    for (int ln = 0; ln < 32; ln++) {
        int g = ln / 4, t = ln % 4;
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = half_value(w.a[ln][0] >> (16 * h), bf16);
            A[g + 8][2 * t + h] = half_value(w.a[ln][1] >> (16 * h), bf16);
            A[g][2 * t + 8 + h] = half_value(w.a[ln][2] >> (16 * h), bf16);
            A[g + 8][2 * t + 8 + h] = half_value(w.a[ln][3] >> (16 * h), bf16);
            B[2 * t + h][g] = half_value(w.b[ln][0] >> (16 * h), bf16);
            B[2 * t + 8 + h][g] = half_value(w.b[ln][1] >> (16 * h), bf16);
        }
    }
    int g = l / 4, t = l % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    float out[4];
    for (int i = 0; i < 4; i++) {
        double s = w.c[l][i];
        for (int k = 0; k < 16; k++)
            s += A[rows[i]][k] * B[k][cols[i]];
        /* rounded toward zero, as the tensor cores' accumulation is reported to: the worst
         * case for a sum chained over many products */
        float r = (float)s;
        out[i] = fabs((double)r) > fabs(s) ? nextafterf(r, 0.f) : r;
    }
    w.bar->arrive_and_wait(); /* nobody posts the next product before all have read this one */
    memcpy(c, out, 16);
}

#include "kernels/cuda/gemm_quant_mma.cuh"

/* ---- the check ---- */

static std::mt19937_64 rng(2024);
static int failures;

template <typename T> static T to_half(float v);
template <> __nv_bfloat16 to_half(float v)
{
    return __float2bfloat16(v);
}
template <> __half to_half(float v)
{
    return __float2half(v);
}
template <typename T> static float round_half(float v)
{
    T h = to_half<T>(v);
    if constexpr (std::is_same<T, __half>::value)
        return __half2float(h);
    else
        return __bfloat162float(h);
}

/* y = x W^T (+ b, GELU) with the kernel's tile (WR row warps, NT token tiles) against the CPU
 * semantics computed in double on the same quantized weights. */
template <int FMT, int WR, int NT, typename T = __nv_bfloat16, int RT = 1>
static void check(int64_t m, int64_t n, int64_t k, bool bias, bool gelu)
{
    glm_weight_format f = (glm_weight_format)FMT;
    int group = FMT == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0;
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> wf(n * k), x(m * k), b(n);
    for (float &v : wf)
        v = normal(rng) * 0.05f;
    for (float &v : x)
        v = round_half<T>(normal(rng));
    for (float &v : b)
        v = round_half<T>(normal(rng) * 0.5f);
    std::vector<uint8_t> codes(glm_weight_data_bytes(f, GLM_F32, n, k) + 16);
    std::vector<uint8_t> zeros(glm_weight_zero_bytes(f, n, k, group) + 1);
    std::vector<float> scales(glm_weight_groups(f, k, group) * n);
    if (glm_quantize_rows(f, group, wf.data(), n, k, codes.data(), scales.data(), zeros.data(),
                          NULL, NULL) != GLM_OK) {
        printf("quantize failed\n");
        failures++;
        return;
    }
    glm_weight w = {f, GLM_F32, n, k, group, codes.data(), scales.data(), zeros.data()};
    std::vector<float> wd(n * k), xq(m * k), sx(m, 1.f);
    glm_dequantize_rows(&w, 0, n, wd.data());
    const float *xr = x.data();
    if (FMT == GLM_WEIGHT_FP8) { /* E4M3 values times the two scales, as weight_format.h says */
        for (int64_t i = 0; i < n * k; i++)
            wd[i] = glm_e4m3_to_f32(codes[i]);
        for (int64_t r = 0; r < m; r++)
            sx[r] = glm_fp8_quantize_activation_row(&x[r * k], k, &xq[r * k]);
        xr = xq.data();
    }
    std::vector<double> ref(m * n);
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < n; c++) {
            double s = 0;
            for (int64_t i = 0; i < k; i++)
                s += (double)xr[r * k + i] * wd[c * k + i];
            if (FMT == GLM_WEIGHT_FP8) s *= (double)sx[r] * scales[c];
            if (bias) s += b[c];
            if (gelu) s = 0.5 * s * (1 + erf(s / sqrt(2.0)));
            ref[r * n + c] = s;
        }

    std::vector<T> xh(m * k), bh(n);
    for (int64_t i = 0; i < m * k; i++)
        xh[i] = to_half<T>(x[i]);
    for (int64_t i = 0; i < n; i++)
        bh[i] = to_half<T>(b[i]);
    std::vector<float> y(m * n, NAN);
    dim3 grid(cuda_blocks(m, NT * 8), cuda_blocks(n, WR * 16 * RT));
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            std::barrier<> block_bar(GQM_THREADS);
            sim_block_barrier = &block_bar;
            for (sim_warp &sw : sim_warps)
                sw.bar = new std::barrier<>(32);
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < GQM_THREADS; t++)
                threads.emplace_back([&, t] {
                    sim_thread = make_uint3(t, 0, 0);
                    sim_block = make_uint3(bx, by, 0);
                    gqm_kernel<T, float, FMT, WR, NT, RT>(
                        y.data(), xh.data(), codes.data(), scales.data(), zeros.data(), group,
                        bias ? bh.data() : nullptr, gelu, m, n, k);
                });
            for (std::thread &t : threads)
                t.join();
            for (sim_warp &sw : sim_warps)
                delete sw.bar;
        }
    double num = 0, den = 0;
    bool finite = true;
    for (int64_t i = 0; i < m * n; i++) {
        finite = finite && std::isfinite(y[i]);
        num += (y[i] - ref[i]) * (y[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    double e = finite ? sqrt(num / den) : INFINITY;
    bool ok = e <= 1e-5;
    failures += !ok;
    printf("%s %s x %s, WR %d NT %d RT %d, %lldx%lldx%lld%s%s: rel L2 vs cpu %.2e (bound 1e-5)\n",
           ok ? "ok  " : "FAIL", glm_weight_format_name(f),
           std::is_same<T, __half>::value ? "f16" : "bf16", WR, NT, RT, (long long)m, (long long)n,
           (long long)k, bias ? " +bias" : "", gelu ? " gelu" : "", e);
}

int main()
{
    /* decode tiles: N ends inside a 16-row tile (77, 40), K inside a unit (1056, 1040, 4192: int4's
     * last group 96 codes), fewer units than warps (512, 16), every token count of a tile */
    check<GLM_WEIGHT_INT8, 1, 1>(1, 77, 512, true, false);
    check<GLM_WEIGHT_INT4, 1, 1>(3, 77, 1056, false, true);
    check<GLM_WEIGHT_FP8, 1, 1>(1, 77, 1056, true, false);
    check<GLM_WEIGHT_FP8, 2, 1>(7, 40, 512, false, false);
    check<GLM_WEIGHT_INT8, 2, 1>(8, 40, 1040, true, false);
    check<GLM_WEIGHT_INT4, 2, 1>(5, 40, 4192, false, false);
    check<GLM_WEIGHT_INT8, 4, 1>(2, 130, 1056, true, false);
    check<GLM_WEIGHT_FP8, 8, 1>(4, 130, 1056, false, true);
    check<GLM_WEIGHT_INT4, 8, 1>(1, 140, 1056, true, false);
    check<GLM_WEIGHT_INT8, 1, 1>(2, 16, 16, true, false);
    check<GLM_WEIGHT_FP8, 1, 1>(2, 16, 16, true, false);
    check<GLM_WEIGHT_INT4, 1, 1>(1, 24, 3424, false, false); /* TP-4 down slice width */
    /* the down projection's k: ~27 units a warp, each a fresh tensor-core sum */
    check<GLM_WEIGHT_INT8, 1, 1>(1, 32, 13696, false, false);
    check<GLM_WEIGHT_FP8, 1, 1>(2, 32, 13696, false, false);
    /* batch tiles */
    check<GLM_WEIGHT_INT8, 2, 2>(16, 40, 512, true, false);
    check<GLM_WEIGHT_INT4, 2, 2>(11, 40, 1056, true, false);
    check<GLM_WEIGHT_INT8, 4, 4>(33, 70, 1056, false, false);
    check<GLM_WEIGHT_INT4, 4, 4>(40, 70, 1056, true, true);
    check<GLM_WEIGHT_INT4, 1, 4>(33, 20, 256, false, false);
    check<GLM_WEIGHT_INT8, 2, 4>(64, 36, 1024, true, false);
    /* two row tiles per warp (GLM4V_GEMMQ_RT=2) */
    check<GLM_WEIGHT_INT8, 4, 4, __nv_bfloat16, 2>(40, 150, 1056, true, false);
    check<GLM_WEIGHT_INT4, 4, 4, __nv_bfloat16, 2>(33, 150, 1056, false, true);
    check<GLM_WEIGHT_INT4, 2, 4, __nv_bfloat16, 2>(64, 70, 4192, true, false);
    check<GLM_WEIGHT_INT8, 1, 4, __half, 2>(35, 40, 512, false, false);
    /* f16 activations: int8 / int4 dequantize to f16 there */
    check<GLM_WEIGHT_INT8, 1, 1, __half>(1, 77, 1056, true, false);
    check<GLM_WEIGHT_INT4, 2, 1, __half>(6, 77, 1056, false, true);
    check<GLM_WEIGHT_FP8, 1, 1, __half>(3, 77, 1056, true, false);
    check<GLM_WEIGHT_INT8, 4, 4, __half>(33, 70, 1056, false, false);
    check<GLM_WEIGHT_INT4, 2, 4, __half>(40, 40, 1056, true, false);
    printf("sim_quant_mma: %d failed\n", failures);
    return failures ? 1 : 0;
}
