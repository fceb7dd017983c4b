/* Shared pieces of the CUDA backend: the backend state, checking macros, bf16 helpers and the
 * launch-side shape checks every op family uses. */
#ifndef GLM4V_CUDA_COMMON_CUH
#define GLM4V_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "kernels/ops.h"
}

#define GLM_CUDA_MAX_GRAPHS 64
#define GLM_CUDA_GEMM_CACHE 256
#define GLM_CUDA_GEMV_MAX_ROWS 8 /* the most rows gemv.cu has a kernel for */

/* One cached cuBLASLt plan: the descriptors and the algorithm the heuristic picked for a shape. */
typedef struct cuda_gemm_plan {
    int64_t m, n, k;
    int epilogue; /* cublasLtEpilogue_t */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} cuda_gemm_plan;

typedef struct cuda_graph_slot {
    int key;
    cudaGraphExec_t exec; /* NULL while unused */
} cuda_graph_slot;

typedef struct cuda_backend {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    cuda_gemm_plan plans[GLM_CUDA_GEMM_CACHE];
    int n_plans;
    /* pinned staging for uploads and small downloads (sampling results) */
    void *staging;
    size_t staging_bytes;
    /* device scratch for split-K decode attention and sampling */
    void *scratch;
    size_t scratch_bytes;
    void *retired[32]; /* outgrown scratch buffers that captured graphs may still use */
    int n_retired;
    /* pinned buffer for sampling params in and ids/logprobs out */
    void *sample_host;
    size_t sample_host_bytes;
    int n_sms;
    /* linear layers of at most gemv_max_rows rows (0: none) whose weights have at least
     * gemv_min_weights elements use gemv.cu; GLM4V_GEMV_MAX_ROWS / GLM4V_GEMV_MIN_WEIGHTS
     * override the defaults at creation */
    int gemv_max_rows;
    int64_t gemv_min_weights;
    int capturing_key; /* -1 when not capturing */
    cuda_graph_slot graphs[GLM_CUDA_MAX_GRAPHS];
} cuda_backend;

static inline cuda_backend *cuda_impl(glm_backend *be)
{
    return (cuda_backend *)be->impl;
}

/* Every CUDA call is checked where it is made; a failure becomes the backend's sticky error. The
 * macro returns from the calling launcher (void), so use it only in void functions. */
#define CUDA_CHECK(be, call)                                                                       \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess) {                                                                 \
            glm_backend_fail((be), GLM_ERR_BACKEND, "%s %s:%d: %s", #call, __FILE__, __LINE__,      \
                             cudaGetErrorString(err_));                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CUBLAS_CHECK(be, call)                                                                     \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            glm_backend_fail((be), GLM_ERR_BACKEND, "%s %s:%d: cublas status %d", #call, __FILE__,  \
                             __LINE__, (int)st_);                                                  \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* After a kernel launch: catches bad launch configurations at once. */
#define CUDA_CHECK_LAUNCH(be) CUDA_CHECK(be, cudaGetLastError())

/* Shape guard for launchers: records GLM_ERR_SHAPE and returns. */
#define CUDA_REQUIRE(be, cond, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            glm_backend_fail((be), GLM_ERR_SHAPE, __VA_ARGS__);                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static inline unsigned cuda_blocks(int64_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

/* 16 bytes of bf16: the unit of vectorized loads and stores. */
struct __align__(16) bf16x8 {
    __nv_bfloat162 h[4];
};

__device__ __forceinline__ void bf16x8_to_f32(const bf16x8 &v, float *f)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(v.h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ bf16x8 f32_to_bf16x8(const float *f)
{
    bf16x8 v;
#pragma unroll
    for (int i = 0; i < 4; i++) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
}

static inline bool cuda_aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Reads element i of a float tensor of dtype bf16 or f32 (for the few ops that take either). */
__device__ __forceinline__ float load_any(const void *p, int is_f32, int64_t i)
{
    return is_f32 ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

__device__ __forceinline__ void store_any(void *p, int is_f32, int64_t i, float v)
{
    if (is_f32)
        ((float *)p)[i] = v;
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
}

/* The op entry points each family file defines (the backend table in backend_cuda.cu). */
void cuda_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, const glm_tensor *bias,
                 glm_activation act);
void cuda_gemm_destroy_plans(cuda_backend *cb);
bool cuda_gemv(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, const void *bias);
void cuda_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b);
void cuda_scale(glm_backend *be, glm_tensor x, float s);
void cuda_gelu(glm_backend *be, glm_tensor y, glm_tensor x);
void cuda_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x);
void cuda_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, float eps);
void cuda_add_rmsnorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                      glm_tensor w, float eps);
void cuda_layernorm(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor w, glm_tensor b,
                    float eps);
void cuda_add_layernorm(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                        glm_tensor w, glm_tensor b, float eps);
void cuda_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                    int64_t vocab_start);
void cuda_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                    int64_t src_row, int64_t n_rows);
void cuda_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx);
void cuda_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
               int n_kv_heads, int head_dim, int rope_dim, float theta);
void cuda_kv_store(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                   glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim);
void cuda_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                          glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                          int n_kv_heads, int head_dim, float scale);
void cuda_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs,
                         int seq_len, int n_heads, int head_dim, float scale);
void cuda_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch);
void cuda_im2col_2x2(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid);
void cuda_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                       glm_tensor pos, int n_images);
void cuda_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std);
void cuda_sample(glm_backend *be, int32_t *ids_host, float *logprobs_host, glm_tensor logits,
                 const glm_sample_params *params, int n_rows, uint64_t step);

/* Grows the backend's device scratch to at least bytes (not during graph capture). */
void *cuda_scratch(glm_backend *be, size_t bytes);
/* Grows the pinned host staging buffer to at least bytes. */
void *cuda_staging(glm_backend *be, size_t bytes);

#endif
