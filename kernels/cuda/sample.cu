/* Token sampling on the device, with the CPU backend's exact semantics (kernels/cpu/sample.c):
 * greedy argmax (ties to the lowest id); temperature with top-k then top-p over the rank order
 * (logit descending, id ascending); the draw walks kept ids in ascending id order against
 * u = glm_sample_uniform(seed, step) times the kept weight; logprobs are log_softmax of the raw
 * logits with the top n in rank order. Only ids and logprobs cross to the host.
 *
 * One block of 1024 threads per row. The row stays in L2 and is re-read by each pass: the top-k
 * and top-p thresholds are found by bisection over an order-preserving 32-bit key of the logit
 * (32 passes each), and ties at a threshold are resolved in id order by a block-wide scan over
 * per-thread contiguous chunks of ids. Weights follow the CPU: e_i = expf(l_i / T - max / T). */
#include "kernels/cuda/common.cuh"

#ifndef GLM_SAMPLE_LOGPROBS_STRIDE /* ops.h names it; kept here while the interface settles */
#define GLM_SAMPLE_MAX_LOGPROBS 20
#define GLM_SAMPLE_LOGPROBS_STRIDE (1 + 2 * GLM_SAMPLE_MAX_LOGPROBS)
#endif

#include <string.h>

#define SAMPLE_THREADS 1024

__device__ __forceinline__ float logit_at(const void *row, glm_dtype dt, int64_t i)
{
    float v = load_any(row, dt, i);
    return isnan(v) ? -INFINITY : v;
}

/* Order-preserving map of a float to uint32 (larger float -> larger key). */
__device__ __forceinline__ uint32_t order_key(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <typename T> __device__ T block_sum_t(T v, T *sh)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T total = 0;
    for (int i = 0; i < SAMPLE_THREADS / 32; i++) total += sh[i];
    return total;
}

/* Exclusive prefix sum of v over threads in thread order; every thread also gets the total. */
template <typename T> __device__ T block_exclusive_scan(T v, T *sh, T *total)
{
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    T incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    __syncthreads();
    if (lane == 31) sh[warp] = incl;
    __syncthreads();
    T before = 0, all = 0;
    for (int i = 0; i < SAMPLE_THREADS / 32; i++) {
        if (i < warp) before += sh[i];
        all += sh[i];
    }
    *total = all;
    return before + incl - v;
}

/* Best (value, id) in rank order among elements ranking strictly after (after_v, after_id). */
__device__ void block_best(const void *row, glm_dtype dt, int64_t vocab, float after_v,
                           int64_t after_id, bool use_after, float *best_v, int64_t *best_id)
{
    __shared__ float sv[SAMPLE_THREADS / 32];
    __shared__ int64_t si[SAMPLE_THREADS / 32];
    float bv = -INFINITY;
    int64_t bi = INT64_MAX;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = logit_at(row, dt, i);
        if (use_after && (v > after_v || (v == after_v && i <= after_id))) continue;
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
    __syncthreads();
    if (threadIdx.x % 32 == 0) {
        sv[threadIdx.x / 32] = bv;
        si[threadIdx.x / 32] = bi;
    }
    __syncthreads();
    bv = -INFINITY;
    bi = INT64_MAX;
    for (int w = 0; w < SAMPLE_THREADS / 32; w++)
        if (sv[w] > bv || (sv[w] == bv && si[w] < bi)) {
            bv = sv[w];
            bi = si[w];
        }
    *best_v = bv;
    *best_id = bi;
}

/* The kept set: key > thr, or key == thr and among the first tie_budget such ids. */
struct kept_set {
    uint32_t thr;
    int64_t tie_budget;
};

/* Per-row state shared by the passes below. */
struct row_ctx {
    const void *row;
    glm_dtype dt;
    int64_t vocab, chunk, lo, hi; /* this thread's ids [lo, hi) */
    float z_max;
};

/* glm_sample_uniform of kernels/cpu/sample.h, on the device: the same bits for (seed, step). */
__device__ __forceinline__ uint64_t mix64_dev(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float sample_uniform_dev(uint64_t seed, uint64_t step)
{
    return (float)(mix64_dev(mix64_dev(seed) ^ step) >> 40) * 0x1p-24f;
}

/* Walks this thread's chunk in id order; calls f(id, logit, kept) for every element.
 * tie_before = number of ids with key == thr before this chunk. */
template <typename F>
__device__ void walk_chunk(const row_ctx &c, const kept_set &k, int64_t tie_before, F f)
{
    int64_t ties = tie_before;
    for (int64_t i = c.lo; i < c.hi; i++) {
        float l = logit_at(c.row, c.dt, i);
        uint32_t key = order_key(l);
        bool kept = key > k.thr || (key == k.thr && ties < k.tie_budget);
        if (key == k.thr) ties++;
        if (!f(i, l, kept)) break;
    }
}

/* Number of ids with key == thr before this thread's chunk. */
__device__ int64_t ties_before(const row_ctx &c, uint32_t thr, int64_t *sh)
{
    int64_t n = 0, total;
    for (int64_t i = c.lo; i < c.hi; i++) n += order_key(logit_at(c.row, c.dt, i)) == thr;
    return block_exclusive_scan<int64_t>(n, sh, &total);
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(const void *logits, glm_dtype dt, int64_t vocab,
                  const glm_sample_params *params, uint64_t step, int32_t *ids, float *logprobs)
{
    __shared__ double sh_d[SAMPLE_THREADS / 32];
    __shared__ int64_t sh_i[SAMPLE_THREADS / 32];
    const int r = blockIdx.x;
    const glm_sample_params p = params[r];
    row_ctx c;
    c.row = (const char *)logits + (size_t)r * vocab * (dt == GLM_F32 ? 4 : 2);
    c.dt = dt;
    c.vocab = vocab;
    c.chunk = (vocab + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    c.lo = min((int64_t)threadIdx.x * c.chunk, vocab);
    c.hi = min(c.lo + c.chunk, vocab);

    float max_v;
    int64_t max_id;
    block_best(c.row, dt, vocab, 0.f, 0, false, &max_v, &max_id);
    if (!(max_v > -INFINITY && max_v < INFINITY)) {
        /* every logit NaN, or one infinite: an activation overflowed its 16-bit storage (fp16
         * holds |v| <= 65504). No id drawn from this row would mean anything: -1 (ops.h), and the
         * caller fails this row's sequence alone. */
        if (threadIdx.x == 0) {
            ids[r] = -1;
            if (logprobs) {
                float *out = logprobs + (int64_t)r * GLM_SAMPLE_LOGPROBS_STRIDE;
                out[0] = NAN;
                for (int i = 0; i < GLM_SAMPLE_MAX_LOGPROBS; i++) {
                    out[1 + 2 * i] = -1.f;
                    out[2 + 2 * i] = -INFINITY;
                }
            }
        }
        return;
    }
    int64_t chosen = max_id;
    float t = p.temperature;
    if (t > 0.f) {
        c.z_max = max_v / t; /* weights use l / t like the CPU, not l * (1 / t) */
        kept_set k = {0u, INT64_MAX};
        /* number of ids with key >= thr (top-k is the first filter: all ids count) */
        auto count_ge = [&](uint32_t thr) -> int64_t {
            int64_t n = 0;
            for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
                n += order_key(logit_at(c.row, dt, i)) >= thr;
            return block_sum_t<int64_t>(n, sh_i);
        };
        if (p.top_k > 0 && p.top_k < vocab) {
            /* the k-th largest key: largest thr with count_ge(thr) >= k */
            uint32_t lo = 0, hi = 0xffffffffu;
            while (lo < hi) {
                uint32_t mid = lo + (uint32_t)(((uint64_t)hi - lo + 1) / 2);
                if (count_ge(mid) >= p.top_k)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            uint32_t thr = lo;
            int64_t gt = thr == 0xffffffffu ? 0 : count_ge(thr + 1);
            k.thr = thr;
            k.tie_budget = (int64_t)p.top_k - (int64_t)gt;
        }
        if (p.top_p < 1.f) {
            /* kept weight (after top-k), then the top-p threshold within it */
            int64_t tb = ties_before(c, k.thr, sh_i);
            double w = 0.0;
            walk_chunk(c, k, tb, [&](int64_t, float l, bool kept) {
                if (kept) w += (double)expf(l / t - c.z_max);
                return true;
            });
            double kept_w = block_sum_t<double>(w, sh_d);
            double target = (double)p.top_p * kept_w;
            /* kept weight of ids with key >= thr */
            auto kept_ge = [&](uint32_t thr) -> double {
                double acc = 0.0;
                walk_chunk(c, k, tb, [&](int64_t, float l, bool kept) {
                    if (kept && order_key(l) >= thr) acc += (double)expf(l / t - c.z_max);
                    return true;
                });
                return block_sum_t<double>(acc, sh_d);
            };
            uint32_t lo = k.thr, hi = 0xffffffffu;
            while (lo < hi) {
                uint32_t mid = lo + (uint32_t)(((uint64_t)hi - lo + 1) / 2);
                if (kept_ge(mid) >= target)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            uint32_t thr_p = lo;
            double above = thr_p == 0xffffffffu ? 0.0 : kept_ge(thr_p + 1);
            /* walk kept ties at thr_p in id order until the running sum reaches target */
            double tw = 0.0;
            walk_chunk(c, k, tb, [&](int64_t, float l, bool kept) {
                if (kept && order_key(l) == thr_p) tw += (double)expf(l / t - c.z_max);
                return true;
            });
            double tie_total;
            double tie_prefix = block_exclusive_scan<double>(tw, sh_d, &tie_total);
            /* the thread whose chunk crosses the target counts how many ties it keeps */
            /* (above < target by the choice of thr_p, so threads before the crossing keep all
             * their ties, the crossing thread keeps up to the crossing id, later ones none) */
            int64_t n_keep_ties = 0;
            double cum = above + tie_prefix;
            walk_chunk(c, k, tb, [&](int64_t, float l, bool kept) {
                if (kept && order_key(l) == thr_p && cum < target) {
                    cum += (double)expf(l / t - c.z_max);
                    n_keep_ties++;
                }
                return true;
            });
            int64_t total_keep;
            block_exclusive_scan<int64_t>(n_keep_ties, sh_i, &total_keep);
            if (total_keep < 1 && above <= 0.0) total_keep = 1;
            int64_t budget = thr_p == k.thr ? min(total_keep, k.tie_budget) : total_keep;
            k.thr = thr_p;
            k.tie_budget = budget;
        }
        /* the draw: ascending ids, first whose running kept weight exceeds u * total */
        int64_t tb = ties_before(c, k.thr, sh_i);
        double w = 0.0;
        int64_t last_kept = -1;
        walk_chunk(c, k, tb, [&](int64_t i, float l, bool kept) {
            if (kept) {
                w += (double)expf(l / t - c.z_max);
                last_kept = i;
            }
            return true;
        });
        double total;
        double before = block_exclusive_scan<double>(w, sh_d, &total);
        double target = (double)sample_uniform_dev(p.seed, step) * total;
        __shared__ int64_t picked, last;
        if (threadIdx.x == 0) picked = INT64_MAX;
        __syncthreads();
        if (before <= target && before + w > target) {
            double cum = before;
            int64_t pick = -1;
            walk_chunk(c, k, tb, [&](int64_t i, float l, bool kept) {
                if (!kept) return true;
                cum += (double)expf(l / t - c.z_max);
                if (cum > target) {
                    pick = i;
                    return false;
                }
                return true;
            });
            if (pick >= 0) atomicMin((unsigned long long *)&picked, (unsigned long long)pick);
        }
        /* fallback: the last kept id (rounding left none) */
        if (threadIdx.x == 0) last = -1;
        __syncthreads();
        if (last_kept >= 0) atomicMax((long long *)&last, (long long)last_kept);
        __syncthreads();
        chosen = picked != INT64_MAX ? picked : last;
        __syncthreads();
    }
    if (threadIdx.x == 0) ids[r] = (int32_t)chosen;
    if (!logprobs) return;

    /* log_softmax of the raw logits, log-sum-exp in double */
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        s += exp((double)logit_at(c.row, dt, i) - (double)max_v);
    double lse = (double)max_v + log(block_sum_t<double>(s, sh_d));
    float *out = logprobs + (int64_t)r * GLM_SAMPLE_LOGPROBS_STRIDE;
    if (threadIdx.x == 0) out[0] = (float)((double)logit_at(c.row, dt, chosen) - lse);
    int n = p.n_logprobs < vocab ? p.n_logprobs : (int)vocab;
    float prev_v = max_v;
    int64_t prev_id = max_id;
    for (int i = 0; i < GLM_SAMPLE_MAX_LOGPROBS; i++) {
        if (i < n && i > 0) block_best(c.row, dt, vocab, prev_v, prev_id, true, &prev_v, &prev_id);
        if (threadIdx.x == 0) {
            out[1 + 2 * i] = i < n ? (float)prev_id : -1.f;
            out[2 + 2 * i] = i < n ? (float)((double)prev_v - lse) : -INFINITY;
        }
    }
}

void cuda_sample(glm_backend *be, int32_t *ids_host, float *logprobs_host, glm_tensor logits,
                 const glm_sample_params *params, int n_rows, uint64_t step)
{
    cuda_backend *cb = cuda_impl(be);
    int64_t vocab = glm_tensor_cols(&logits);
    CUDA_REQUIRE(be, cuda_is_half(logits.dtype) || logits.dtype == GLM_F32,
                 "sample: logits must be bf16, f16 or f32 (got %s)", glm_dtype_name(logits.dtype));
    CUDA_REQUIRE(be, n_rows >= 0 && n_rows <= glm_tensor_rows(&logits) && vocab >= 1 &&
                         vocab <= INT32_MAX && (n_rows == 0 || (ids_host && params)),
                 "sample: %d rows of logits [%lld, %lld]", n_rows,
                 (long long)glm_tensor_rows(&logits), (long long)vocab);
    for (int r = 0; r < n_rows; r++)
        if (params[r].n_logprobs < 0 || params[r].n_logprobs > GLM_SAMPLE_MAX_LOGPROBS) {
            glm_backend_fail(be, GLM_ERR_LIMIT, "sample: row %d asks for %d logprobs (max %d)", r,
                             params[r].n_logprobs, GLM_SAMPLE_MAX_LOGPROBS);
            return;
        }
    if (n_rows == 0) return;
    size_t params_bytes = (size_t)n_rows * sizeof(glm_sample_params);
    size_t ids_bytes = ((size_t)n_rows * sizeof(int32_t) + 15) / 16 * 16;
    size_t lp_bytes =
        logprobs_host ? (size_t)n_rows * GLM_SAMPLE_LOGPROBS_STRIDE * sizeof(float) : 0;
    size_t params_off = 0, ids_off = (params_bytes + 15) / 16 * 16, lp_off = ids_off + ids_bytes;
    size_t total = lp_off + lp_bytes;
    if (cb->sample_host_bytes < total) {
        CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
        if (cb->sample_host) cudaFreeHost(cb->sample_host);
        cb->sample_host = NULL;
        cb->sample_host_bytes = 0;
        CUDA_CHECK(be, cudaMallocHost(&cb->sample_host, total));
        cb->sample_host_bytes = total;
    }
    char *dev = (char *)cuda_scratch(be, total);
    if (!dev) return;
    char *host = (char *)cb->sample_host;
    memcpy(host + params_off, params, params_bytes);
    CUDA_CHECK(be, cudaMemcpyAsync(dev + params_off, host + params_off, params_bytes,
                                   cudaMemcpyHostToDevice, cb->stream));
    sample_kernel<<<n_rows, SAMPLE_THREADS, 0, cb->stream>>>(
        logits.data, logits.dtype, vocab, (const glm_sample_params *)(dev + params_off),
        step, (int32_t *)(dev + ids_off), logprobs_host ? (float *)(dev + lp_off) : NULL);
    CUDA_CHECK_LAUNCH(be);
    CUDA_CHECK(be, cudaMemcpyAsync(host + ids_off, dev + ids_off, total - ids_off,
                                   cudaMemcpyDeviceToHost, cb->stream));
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
    memcpy(ids_host, host + ids_off, (size_t)n_rows * sizeof(int32_t));
    if (logprobs_host) memcpy(logprobs_host, host + lp_off, lp_bytes);
}
