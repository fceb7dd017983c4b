/* GLM rotary embedding (interleaved partial rotary, in place on fused qkv) and the paged KV store.
 *
 * rope: one thread per (token, head, pair) over the q and k heads; the pair (d[2i], d[2i+1])
 * of the first rope_dim dims rotates by pos * theta^(-2i / rope_dim), computed in fp32.
 * kv_store: one block per token copies its k and v heads into the cache slot slots[t]
 * (negative slots are padding and skipped).
 * rope_kv_store: both in one pass, one block per token: at decode they are two of the dozen small
 * kernels a layer runs per token, each a few microseconds of fixed cost.
 * T is the 16-bit storage type (bf16 or fp16). */
#include "kernels/cuda/common.cuh"

/* Pair p of a head at position pos, rotated; shared by both rotary kernels so they agree bit for
 * bit. theta^(-2p/rope_dim) = exp2(-2p/rope_dim * log2(theta)). */
template <typename T>
__device__ __forceinline__ typename half_pair<T>::type
rotate_pair(typename half_pair<T>::type d, float pos, int p, int rope_dim, float log2_theta)
{
    float inv_freq = exp2f(-(2.f * p / (float)rope_dim) * log2_theta);
    float s, c;
    sincosf(pos * inv_freq, &s, &c);
    float2 v = pair_to_f32(d);
    return pair_from_f32<T>(v.x * c - v.y * s, v.x * s + v.y * c);
}

template <typename T>
__global__ void rope_kernel(T *qkv, const int32_t *positions, int64_t n_tokens, int n_heads_rot,
                            int row_width, int head_dim, int rope_dim, float log2_theta)
{
    typedef typename half_pair<T>::type pair;
    int pairs = rope_dim / 2;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tokens * n_heads_rot * pairs) return;
    int p = (int)(i % pairs);
    int64_t th = i / pairs;
    int h = (int)(th % n_heads_rot);
    int64_t t = th / n_heads_rot;
    pair *d = (pair *)(qkv + t * row_width + (int64_t)h * head_dim) + p;
    *d = rotate_pair<T>(*d, (float)positions[t], p, rope_dim, log2_theta);
}

static bool rope_shape_ok(glm_backend *be, const char *op, glm_tensor qkv, glm_tensor positions,
                          int n_q_heads, int n_kv_heads, int head_dim, int rope_dim)
{
    int64_t t = glm_tensor_rows(&qkv);
    int row_width = (n_q_heads + 2 * n_kv_heads) * head_dim;
    if (!cuda_is_half(qkv.dtype) || positions.dtype != GLM_I32) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: 16-bit qkv and i32 positions expected (%s, %s)",
                         op, glm_dtype_name(qkv.dtype), glm_dtype_name(positions.dtype));
        return false;
    }
    if (glm_tensor_cols(&qkv) != row_width || glm_tensor_numel(&positions) != t) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "%s: qkv [%lld,%lld] for %d+2*%d heads of %d, %lld positions", op,
                         (long long)t, (long long)glm_tensor_cols(&qkv), n_q_heads, n_kv_heads,
                         head_dim, (long long)glm_tensor_numel(&positions));
        return false;
    }
    if (rope_dim % 2 || rope_dim > head_dim || head_dim % 2) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: rope_dim %d, head_dim %d", op, rope_dim,
                         head_dim);
        return false;
    }
    return true;
}

void cuda_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
               int n_kv_heads, int head_dim, int rope_dim, float theta)
{
    if (!rope_shape_ok(be, "rope", qkv, positions, n_q_heads, n_kv_heads, head_dim, rope_dim))
        return;
    int64_t t = glm_tensor_rows(&qkv);
    int row_width = (n_q_heads + 2 * n_kv_heads) * head_dim;
    int64_t n = t * (n_q_heads + n_kv_heads) * (rope_dim / 2);
    if (n == 0) return;
    GLM_DISPATCH_HALF(qkv.dtype, T,
                      rope_kernel<T><<<cuda_blocks(n, 256), 256, 0, cuda_impl(be)->stream>>>(
                          (T *)qkv.data, (const int32_t *)positions.data, t,
                          n_q_heads + n_kv_heads, row_width, head_dim, rope_dim, log2f(theta)));
    CUDA_CHECK_LAUNCH(be);
}

/* Grid: one block per token. Copies kv_width 16-bit values of k and of v, 8 at a time when vec8;
 * the copy does not look at the values, so one kernel serves bf16 and fp16. */
__global__ void kv_store_kernel(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *qkv,
                                const int32_t *slots, int row_width, int q_width, int kv_width,
                                int vec8)
{
    int64_t t = blockIdx.x;
    int64_t slot = slots[t];
    if (slot < 0) return;
    const uint16_t *k = qkv + t * row_width + q_width;
    const uint16_t *v = k + kv_width;
    uint16_t *kd = k_cache + slot * kv_width, *vd = v_cache + slot * kv_width;
    if (vec8) {
        for (int i = threadIdx.x; i < kv_width / 8; i += blockDim.x) {
            ((uint4 *)kd)[i] = ((const uint4 *)k)[i];
            ((uint4 *)vd)[i] = ((const uint4 *)v)[i];
        }
    } else {
        for (int i = threadIdx.x; i < kv_width; i += blockDim.x) {
            kd[i] = k[i];
            vd[i] = v[i];
        }
    }
}

static bool kv_shape_ok(glm_backend *be, const char *op, glm_tensor k_cache, glm_tensor v_cache,
                        glm_tensor qkv, glm_tensor slots, int n_q_heads, int n_kv_heads,
                        int head_dim)
{
    int64_t t = glm_tensor_rows(&qkv);
    int kv_width = n_kv_heads * head_dim;
    int row_width = (n_q_heads + 2 * n_kv_heads) * head_dim;
    if (!cuda_is_half(qkv.dtype) || k_cache.dtype != qkv.dtype || v_cache.dtype != qkv.dtype ||
        slots.dtype != GLM_I32) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "%s: qkv and caches of one 16-bit dtype, i32 slots expected "
                         "(qkv %s, k %s, v %s, slots %s)",
                         op, glm_dtype_name(qkv.dtype), glm_dtype_name(k_cache.dtype),
                         glm_dtype_name(v_cache.dtype), glm_dtype_name(slots.dtype));
        return false;
    }
    if (glm_tensor_cols(&qkv) != row_width || glm_tensor_numel(&slots) != t ||
        glm_tensor_cols(&k_cache) != kv_width || glm_tensor_cols(&v_cache) != kv_width) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "%s: qkv width %lld (want %d), %lld slots for %lld tokens, cache width "
                         "%lld (want %d)",
                         op, (long long)glm_tensor_cols(&qkv), row_width,
                         (long long)glm_tensor_numel(&slots), (long long)t,
                         (long long)glm_tensor_cols(&k_cache), kv_width);
        return false;
    }
    return true;
}

void cuda_kv_store(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                   glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim)
{
    if (!kv_shape_ok(be, "kv_store", k_cache, v_cache, qkv, slots, n_q_heads, n_kv_heads,
                     head_dim))
        return;
    int64_t t = glm_tensor_rows(&qkv);
    int kv_width = n_kv_heads * head_dim, q_width = n_q_heads * head_dim;
    int row_width = q_width + 2 * kv_width;
    if (t == 0) return;
    int vec8 = kv_width % 8 == 0 && q_width % 8 == 0 && row_width % 8 == 0 &&
               cuda_aligned16(qkv.data) && cuda_aligned16(k_cache.data) &&
               cuda_aligned16(v_cache.data);
    kv_store_kernel<<<(unsigned)t, 64, 0, cuda_impl(be)->stream>>>(
        (uint16_t *)k_cache.data, (uint16_t *)v_cache.data, (const uint16_t *)qkv.data,
        (const int32_t *)slots.data, row_width, q_width, kv_width, vec8);
    CUDA_CHECK_LAUNCH(be);
}

/* Grid (tokens, pair blocks): one thread per pair of the token's row, so that a decode step's
 * single token is spread over several SMs (one block per token was 18 pairs per thread at TP 1).
 * q and k pairs in the rotary range are rotated in place; k pairs (rotated) and v pairs also go
 * to cache slot slots[t]. */
template <typename T>
__global__ void rope_kv_store_kernel(T *qkv, const int32_t *positions, const int32_t *slots,
                                     T *k_cache, T *v_cache, int n_q_heads, int n_kv_heads,
                                     int head_dim, int rope_dim, float log2_theta)
{
    typedef typename half_pair<T>::type pair;
    pdl_wait(); /* started through cuda_launch: qkv comes from the kernel ahead */
    pdl_trigger();
    int64_t t = blockIdx.x;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    int half = head_dim / 2, rot_pairs = rope_dim / 2;
    int row_width = (n_q_heads + 2 * n_kv_heads) * head_dim, kv_width = n_kv_heads * head_dim;
    int k_first = n_q_heads * half, v_first = (n_q_heads + n_kv_heads) * half;
    int n_pairs = (n_q_heads + 2 * n_kv_heads) * half;
    if (i >= n_pairs) return;
    int64_t slot = slots[t];
    float pos = (float)positions[t];
    pair *row = (pair *)(qkv + t * row_width);
    int64_t at = slot >= 0 ? slot * kv_width : 0; /* padding rows store nothing */
    pair *kc = (pair *)(k_cache + at), *vc = (pair *)(v_cache + at);
    int p = i % half;
    pair d = row[i];
    if (i < v_first && p < rot_pairs) {
        d = rotate_pair<T>(d, pos, p, rope_dim, log2_theta);
        row[i] = d;
    }
    if (slot >= 0 && i >= k_first) {
        if (i < v_first)
            kc[i - k_first] = d;
        else
            vc[i - v_first] = d;
    }
}

void cuda_rope_kv_store(glm_backend *be, glm_tensor qkv, glm_tensor positions, glm_tensor k_cache,
                        glm_tensor v_cache, glm_tensor slots, int n_q_heads, int n_kv_heads,
                        int head_dim, int rope_dim, float theta)
{
    if (!rope_shape_ok(be, "rope_kv_store", qkv, positions, n_q_heads, n_kv_heads, head_dim,
                       rope_dim) ||
        !kv_shape_ok(be, "rope_kv_store", k_cache, v_cache, qkv, slots, n_q_heads, n_kv_heads,
                     head_dim))
        return;
    int64_t t = glm_tensor_rows(&qkv);
    if (t == 0) return;
    int n_pairs = (n_q_heads + 2 * n_kv_heads) * head_dim / 2;
    dim3 grid((unsigned)t, cuda_blocks(n_pairs, 256));
    cudaError_t e;
    GLM_DISPATCH_HALF(qkv.dtype, T,
                      e = cuda_launch(cuda_impl(be), grid, 256, 0, rope_kv_store_kernel<T>,
                                      (T *)qkv.data, (const int32_t *)positions.data,
                                      (const int32_t *)slots.data, (T *)k_cache.data,
                                      (T *)v_cache.data, n_q_heads, n_kv_heads, head_dim,
                                      rope_dim, log2f(theta)));
    CUDA_CHECK(be, e);
}
