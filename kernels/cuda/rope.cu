/* GLM rotary embedding (interleaved partial rotary, in place on fused qkv) and the paged KV store.
 *
 * rope: one thread per (token, head, pair) over the q and k heads; the pair (d[2i], d[2i+1])
 * of the first rope_dim dims rotates by pos * theta^(-2i / rope_dim), computed in fp32.
 * kv_store: one block per token copies its k and v heads into the cache slot slots[t]
 * (negative slots are padding and skipped). */
#include "kernels/cuda/common.cuh"

__global__ void rope_kernel(__nv_bfloat16 *qkv, const int32_t *positions, int64_t n_tokens,
                            int n_heads_rot, int row_width, int head_dim, int rope_dim,
                            float log2_theta)
{
    int pairs = rope_dim / 2;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tokens * n_heads_rot * pairs) return;
    int p = (int)(i % pairs);
    int64_t th = i / pairs;
    int h = (int)(th % n_heads_rot);
    int64_t t = th / n_heads_rot;
    float pos = (float)positions[t];
    /* theta^(-2p/rope_dim) = exp2(-2p/rope_dim * log2(theta)) */
    float inv_freq = exp2f(-(2.f * p / (float)rope_dim) * log2_theta);
    float s, c;
    sincosf(pos * inv_freq, &s, &c);
    __nv_bfloat162 *d = (__nv_bfloat162 *)(qkv + t * row_width + (int64_t)h * head_dim) + p;
    float2 v = __bfloat1622float2(*d);
    *d = __floats2bfloat162_rn(v.x * c - v.y * s, v.x * s + v.y * c);
}

void cuda_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
               int n_kv_heads, int head_dim, int rope_dim, float theta)
{
    int64_t t = glm_tensor_rows(&qkv);
    int row_width = (n_q_heads + 2 * n_kv_heads) * head_dim;
    CUDA_REQUIRE(be, qkv.dtype == GLM_BF16 && positions.dtype == GLM_I32,
                 "rope: bf16 qkv and i32 positions expected");
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == row_width && glm_tensor_numel(&positions) == t,
                 "rope: qkv [%lld,%lld] for %d+2*%d heads of %d, %lld positions", (long long)t,
                 (long long)glm_tensor_cols(&qkv), n_q_heads, n_kv_heads, head_dim,
                 (long long)glm_tensor_numel(&positions));
    CUDA_REQUIRE(be, rope_dim % 2 == 0 && rope_dim <= head_dim && head_dim % 2 == 0,
                 "rope: rope_dim %d, head_dim %d", rope_dim, head_dim);
    int64_t n = t * (n_q_heads + n_kv_heads) * (rope_dim / 2);
    if (n == 0) return;
    rope_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_impl(be)->stream>>>(
        (__nv_bfloat16 *)qkv.data, (const int32_t *)positions.data, t, n_q_heads + n_kv_heads,
        row_width, head_dim, rope_dim, log2f(theta));
    CUDA_CHECK_LAUNCH(be);
}

/* Grid: one block per token. Copies kv_width bf16 of k and of v, 8 at a time when vec8. */
__global__ void kv_store_kernel(__nv_bfloat16 *k_cache, __nv_bfloat16 *v_cache,
                                const __nv_bfloat16 *qkv, const int32_t *slots, int row_width,
                                int q_width, int kv_width, int vec8)
{
    int64_t t = blockIdx.x;
    int64_t slot = slots[t];
    if (slot < 0) return;
    const __nv_bfloat16 *k = qkv + t * row_width + q_width;
    const __nv_bfloat16 *v = k + kv_width;
    __nv_bfloat16 *kd = k_cache + slot * kv_width, *vd = v_cache + slot * kv_width;
    if (vec8) {
        for (int i = threadIdx.x; i < kv_width / 8; i += blockDim.x) {
            ((bf16x8 *)kd)[i] = ((const bf16x8 *)k)[i];
            ((bf16x8 *)vd)[i] = ((const bf16x8 *)v)[i];
        }
    } else {
        for (int i = threadIdx.x; i < kv_width; i += blockDim.x) {
            kd[i] = k[i];
            vd[i] = v[i];
        }
    }
}

void cuda_kv_store(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                   glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim)
{
    int64_t t = glm_tensor_rows(&qkv);
    int kv_width = n_kv_heads * head_dim, q_width = n_q_heads * head_dim;
    int row_width = q_width + 2 * kv_width;
    CUDA_REQUIRE(be, qkv.dtype == GLM_BF16 && k_cache.dtype == GLM_BF16 &&
                         v_cache.dtype == GLM_BF16 && slots.dtype == GLM_I32,
                 "kv_store: bf16 tensors and i32 slots expected");
    CUDA_REQUIRE(be, glm_tensor_cols(&qkv) == row_width && glm_tensor_numel(&slots) == t &&
                         glm_tensor_cols(&k_cache) == kv_width &&
                         glm_tensor_cols(&v_cache) == kv_width,
                 "kv_store: qkv width %lld (want %d), %lld slots for %lld tokens, cache width %lld",
                 (long long)glm_tensor_cols(&qkv), row_width, (long long)glm_tensor_numel(&slots),
                 (long long)t, (long long)glm_tensor_cols(&k_cache));
    if (t == 0) return;
    int vec8 = kv_width % 8 == 0 && q_width % 8 == 0 && row_width % 8 == 0 &&
               cuda_aligned16(qkv.data) && cuda_aligned16(k_cache.data) &&
               cuda_aligned16(v_cache.data);
    kv_store_kernel<<<(unsigned)t, 64, 0, cuda_impl(be)->stream>>>(
        (__nv_bfloat16 *)k_cache.data, (__nv_bfloat16 *)v_cache.data,
        (const __nv_bfloat16 *)qkv.data, (const int32_t *)slots.data, row_width, q_width,
        kv_width, vec8);
    CUDA_CHECK_LAUNCH(be);
}
