/* Shared pieces of the CUDA backend: the backend state, checking macros, the 16-bit storage
 * types' helpers and the launch-side shape checks every op family uses.
 *
 * Storage: weights, activations and the KV cache are 16-bit floats, bf16 by default or fp16
 * (--dtype f16: 3 more significand bits, range up to 65504). Kernels that touch them are
 * templates on the storage type T (__nv_bfloat16 or __half); launchers pick the instantiation
 * from the tensor's dtype with GLM_DISPATCH_HALF. Arithmetic is fp32 either way. */
#ifndef GLM4V_CUDA_COMMON_CUH
#define GLM4V_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "kernels/ops.h"
}

#define GLM_CUDA_MAX_GRAPHS 64
#define GLM_CUDA_GEMM_CACHE 256
#define GLM_CUDA_GEMV_MAX_ROWS 8 /* the most rows gemv.cu has a kernel for */

/* The cuBLASLt descriptors of one linear layer's GEMM, as every plan here (gemm.cu, gemm_quant.cu,
 * gemm_fp8_epilogue.cu) lays it out: the row-major y [m, n] = x [m, k] W^T, W row-major [n, k], is
 * the column-major n x m product of W (k x n, transposed: layout a) and x^T (k x m: layout b) into
 * c (n x m, leading dimension ldc). */
typedef struct cuda_lt_gemm {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
} cuda_lt_gemm;

/* Creates g's descriptors (f32 compute and scale, the epilogue set); on failure the ones made
 * stay in g for cuda_lt_gemm_destroy. */
static inline cublasStatus_t cuda_lt_gemm_create(cuda_lt_gemm *g, cudaDataType_t ab_type,
                                                 cudaDataType_t c_type, int64_t m, int64_t n,
                                                 int64_t k, int64_t ldc, cublasLtEpilogue_t epi)
{
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulDescAttributes_t attr[3] = {CUBLASLT_MATMUL_DESC_TRANSA,
                                              CUBLASLT_MATMUL_DESC_TRANSB,
                                              CUBLASLT_MATMUL_DESC_EPILOGUE};
    const void *value[3] = {&ta, &tb, &epi};
    size_t size[3] = {sizeof(ta), sizeof(tb), sizeof(epi)};
    cublasStatus_t st = cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    for (int i = 0; i < 3 && !st; i++)
        st = cublasLtMatmulDescSetAttribute(g->op, attr[i], value[i], size[i]);
    if (!st) st = cublasLtMatrixLayoutCreate(&g->a, ab_type, (uint64_t)k, (uint64_t)n, k);
    if (!st) st = cublasLtMatrixLayoutCreate(&g->b, ab_type, (uint64_t)k, (uint64_t)m, k);
    if (!st) st = cublasLtMatrixLayoutCreate(&g->c, c_type, (uint64_t)n, (uint64_t)m, ldc);
    return st;
}

/* Destroys the descriptors that exist and zeroes g. */
static inline void cuda_lt_gemm_destroy(cuda_lt_gemm *g)
{
    if (g->a) cublasLtMatrixLayoutDestroy(g->a);
    if (g->b) cublasLtMatrixLayoutDestroy(g->b);
    if (g->c) cublasLtMatrixLayoutDestroy(g->c);
    if (g->op) cublasLtMatmulDescDestroy(g->op);
    *g = cuda_lt_gemm{};
}

/* One cached cuBLASLt plan: the descriptors and the algorithm the heuristic picked for a shape. */
typedef struct cuda_gemm_plan {
    int64_t m, n, k;
    int epilogue; /* cublasLtEpilogue_t */
    cuda_lt_gemm lt;
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
    int cc_major; /* compute capability: 9 on Hopper (clusters, griddepcontrol) */
    /* programmatic dependent launch for the kernels started through cuda_launch (1 by default;
     * GLM4V_PDL=0 turns it off at creation) */
    int pdl;
    /* linear layers of at most gemv_max_rows rows (0: none) whose weights have at least
     * gemv_min_weights elements use gemv.cu; GLM4V_GEMV_MAX_ROWS / GLM4V_GEMV_MIN_WEIGHTS
     * override the defaults at creation */
    int gemv_max_rows;
    int64_t gemv_min_weights;
    /* time the cuBLASLt heuristic's candidates for each new shape and keep the fastest (1 by
     * default; GLM4V_GEMM_TUNE=0 takes the heuristic's first pick) */
    int gemm_tune;
    /* cuDNN's fused attention (attention_cudnn.h; NULL: the fa2 kernels only). Chosen at creation,
     * GLM4V_ATTENTION=fa2 turns it off; causal prefill uses it from cudnn_min_prefill rows
     * (GLM4V_CUDNN_MIN_PREFILL) since every new prompt length builds a plan */
    struct cuda_cudnn *cudnn;
    int cudnn_min_prefill;
    struct cuda_quant *quant; /* gemm_quant.cu's scratch and plans, made on first use */
    struct cuda_q8 *q8;       /* gemm_fp8_epilogue.cu's plans, made on first use */
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

/* ---- 16-bit storage types ---- */

/* Conversions of one element or one pair; from_f32 and pair_from_f32 round to nearest even. */
__device__ __forceinline__ float to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
__device__ __forceinline__ float to_f32(__half v)
{
    return __half2float(v);
}
__device__ __forceinline__ float2 pair_to_f32(__nv_bfloat162 v)
{
    return __bfloat1622float2(v);
}
__device__ __forceinline__ float2 pair_to_f32(__half2 v)
{
    return __half22float2(v);
}

template <typename T> struct half_pair;
template <> struct half_pair<__nv_bfloat16> {
    typedef __nv_bfloat162 type;
};
template <> struct half_pair<__half> {
    typedef __half2 type;
};

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16(v);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float v)
{
    return __float2half_rn(v);
}

template <typename T>
__device__ __forceinline__ typename half_pair<T>::type pair_from_f32(float lo, float hi);
template <>
__device__ __forceinline__ __nv_bfloat162 pair_from_f32<__nv_bfloat16>(float lo, float hi)
{
    return __floats2bfloat162_rn(lo, hi);
}
template <> __device__ __forceinline__ __half2 pair_from_f32<__half>(float lo, float hi)
{
    return __floats2half2_rn(lo, hi);
}

/* Two elements packed in a 32-bit register (the operand form of mma.sync). */
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi)
{
    typename half_pair<T>::type v = pair_from_f32<T>(lo, hi);
    return *(uint32_t *)&v;
}

/* 16 bytes of T: the unit of vectorized loads and stores. */
template <typename T> struct __align__(16) half8 {
    typename half_pair<T>::type h[4];
};

template <typename T> __device__ __forceinline__ void half8_to_f32(const half8<T> &v, float *f)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = pair_to_f32(v.h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

template <typename T> __device__ __forceinline__ half8<T> f32_to_half8(const float *f)
{
    half8<T> v;
#pragma unroll
    for (int i = 0; i < 4; i++) v.h[i] = pair_from_f32<T>(f[2 * i], f[2 * i + 1]);
    return v;
}

/* Whether a dtype is one of the 16-bit storage types the kernels are instantiated for. */
static inline bool cuda_is_half(glm_dtype dt)
{
    return dt == GLM_BF16 || dt == GLM_F16;
}

/* Runs the statements in __VA_ARGS__ with T naming the storage type of dtype dt (bf16 or f16;
 * callers check cuda_is_half first). */
#define GLM_DISPATCH_HALF(dt, T, ...)                                                              \
    do {                                                                                           \
        if ((dt) == GLM_F16) {                                                                     \
            typedef __half T;                                                                      \
            __VA_ARGS__;                                                                           \
        } else {                                                                                   \
            typedef __nv_bfloat16 T;                                                               \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
    } while (0)

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

/* ---- programmatic dependent launch ----
 * On Hopper a kernel may be placed on the GPU before the kernel ahead of it in the stream has
 * finished: its blocks start as the earlier kernel's last blocks retire, and its prologue overlaps
 * that tail. At decode a layer is about ten kernels of a few microseconds each, so these gaps are a
 * real share of a step. The contract of a kernel started with cuda_launch: it calls pdl_wait()
 * before it reads anything an earlier kernel wrote (which is everything but the weights: those are
 * written once at load, never by the kernel just before), and pdl_trigger() once every block may
 * let the next kernel be placed. Both are no-ops when the launch did not ask for it (cb->pdl 0), so
 * the same kernel runs correctly either way. */
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* kernel<<<grid, block, smem, cb->stream>>>(args...), with programmatic serialization when
 * cb->pdl: only for kernels that keep the contract above. */
template <typename... Params, typename... Args>
static inline cudaError_t cuda_launch(const cuda_backend *cb, dim3 grid, dim3 block, size_t smem,
                                      void (*kernel)(Params...), Args... args)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = cb->pdl ? 1 : 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = cb->stream;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* An f32 result stored as OutT: the storage type (rounded to nearest even) or f32 as it is. */
template <typename OutT> __device__ __forceinline__ OutT store_f32(float v)
{
    return from_f32<OutT>(v);
}
template <> __device__ __forceinline__ float store_f32<float>(float v)
{
    return v;
}

/* Element i of a float tensor of dtype bf16, f16 or f32 (for the few ops that take any). */
__device__ __forceinline__ float load_any(const void *p, glm_dtype dt, int64_t i)
{
    if (dt == GLM_F32) return ((const float *)p)[i];
    if (dt == GLM_F16) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

__device__ __forceinline__ void store_any(void *p, glm_dtype dt, int64_t i, float v)
{
    if (dt == GLM_F32)
        ((float *)p)[i] = v;
    else if (dt == GLM_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
}

/* The op entry points each family file defines (the backend table in backend_cuda.cu). */
void cuda_linear(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w, const glm_tensor *bias,
                 glm_activation act);
/* gemm_quant.cu: linear with fp8 / int8 / int4 weights, the quantize op, the format check, and
 * its state's teardown */
void cuda_linear_quantized(glm_backend *be, glm_tensor y, glm_tensor x, glm_weight w,
                           const glm_tensor *bias, glm_activation act);
void cuda_quantize(glm_backend *be, glm_weight w, int64_t row0, glm_tensor src);
glm_status cuda_check_weight_format(glm_backend *be, glm_weight_format f, glm_error *err);
void cuda_quant_destroy(cuda_backend *cb);
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
/* fp8 activations (ops.h): norm.cu, elementwise.cu, gemm_fp8_epilogue.cu */
void cuda_add_layernorm_q8(glm_backend *be, glm_tensor y, glm_tensor resid, glm_tensor delta,
                           glm_tensor w, glm_tensor b, float eps, glm_weight q);
void cuda_gelu_q8(glm_backend *be, glm_weight q, glm_tensor x);
void cuda_quantize_act(glm_backend *be, glm_weight q, glm_tensor x);
void cuda_linear_q8(glm_backend *be, glm_tensor y, glm_weight q, glm_weight w,
                    const glm_tensor *bias, glm_activation act);
void cuda_q8_destroy(cuda_backend *cb);
void cuda_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                    int64_t vocab_start);
void cuda_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                    int64_t src_row, int64_t n_rows);
void cuda_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx);
void cuda_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads,
               int n_kv_heads, int head_dim, int rope_dim, float theta);
void cuda_rope_kv_store(glm_backend *be, glm_tensor qkv, glm_tensor positions, glm_tensor k_cache,
                        glm_tensor v_cache, glm_tensor slots, int n_q_heads, int n_kv_heads,
                        int head_dim, int rope_dim, float theta);
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
