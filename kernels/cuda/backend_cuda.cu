/* The CUDA backend: device selection, stream, memory ops, graphs, and the op table.
 *
 * All work runs in order on one stream per backend. Uploads go through a pinned staging buffer
 * so that the caller's host buffer is free when upload returns, without a full device sync for
 * every small upload; downloads synchronize. */
#include "kernels/cuda/common.cuh"
#ifdef GLM4V_HAVE_CUDNN
#include "kernels/cuda/attention_cudnn.h"
#endif

extern "C" {
#include "kernels/backend_registry.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STAGING_CHUNK_BYTES ((size_t)32 << 20)

/* The staging buffer holds two chunks; an event per chunk says when the copy out of it is done,
 * so a large upload streams host -> pinned -> device in two alternating halves. */
typedef struct staging_state {
    cudaEvent_t done[2];
} staging_state;

static staging_state *staging_events(cuda_backend *cb);

void *cuda_scratch(glm_backend *be, size_t bytes)
{
    cuda_backend *cb = cuda_impl(be);
    if (cb->scratch_bytes >= bytes) return cb->scratch;
    size_t want = bytes + bytes / 4;
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, want);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_DEVICE_OOM, "scratch cudaMalloc(%zu) %s:%d: %s", want,
                         __FILE__, __LINE__, cudaGetErrorString(err));
        return NULL;
    }
    /* A captured graph may still point at the old buffer, so keep it until destroy. */
    if (cb->scratch) {
        if (cb->n_retired < (int)(sizeof(cb->retired) / sizeof(cb->retired[0])))
            cb->retired[cb->n_retired++] = cb->scratch;
        else
            cudaFree(cb->scratch);
    }
    cb->scratch = p;
    cb->scratch_bytes = want;
    return p;
}

void *cuda_staging(glm_backend *be, size_t bytes)
{
    cuda_backend *cb = cuda_impl(be);
    if (cb->staging_bytes >= bytes) return cb->staging;
    if (cb->staging) {
        cudaError_t err = cudaStreamSynchronize(cb->stream);
        if (err != cudaSuccess) {
            glm_backend_fail(be, GLM_ERR_BACKEND, "staging sync %s:%d: %s", __FILE__, __LINE__,
                             cudaGetErrorString(err));
            return NULL;
        }
        cudaFreeHost(cb->staging);
        cb->staging = NULL;
        cb->staging_bytes = 0;
    }
    void *p = NULL;
    cudaError_t err = cudaMallocHost(&p, bytes);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_NOMEM, "cudaMallocHost(%zu) %s:%d: %s", bytes, __FILE__,
                         __LINE__, cudaGetErrorString(err));
        return NULL;
    }
    cb->staging = p;
    cb->staging_bytes = bytes;
    return p;
}

/* ---- memory ---- */

static glm_status cuda_alloc(glm_backend *be, size_t bytes, void **out)
{
    cuda_backend *cb = cuda_impl(be);
    *out = NULL;
    if (bytes == 0) bytes = 16;
    cudaError_t err = cudaMalloc(out, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* cudaMalloc failures are not sticky: clear them */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        glm_backend_fail(be, GLM_ERR_DEVICE_OOM,
                         "cudaMalloc on device %d: requested %zu bytes, %zu of %zu free: %s",
                         cb->device, bytes, free_b, total_b, cudaGetErrorString(err));
        *out = NULL;
        return GLM_ERR_DEVICE_OOM;
    }
    return GLM_OK;
}

static void cuda_free(glm_backend *be, void *ptr)
{
    if (ptr) CUDA_CHECK(be, cudaFree(ptr));
}

static void cuda_upload(glm_backend *be, void *dst, const void *src_host, size_t bytes)
{
    cuda_backend *cb = cuda_impl(be);
    if (bytes == 0) return;
    staging_state *ss = staging_events(cb);
    char *stage = (char *)cuda_staging(be, 2 * STAGING_CHUNK_BYTES);
    if (!stage || !ss) return;
    size_t done = 0;
    int half = 0;
    while (done < bytes) {
        size_t n = bytes - done < STAGING_CHUNK_BYTES ? bytes - done : STAGING_CHUNK_BYTES;
        char *buf = stage + (size_t)half * STAGING_CHUNK_BYTES;
        /* wait until the previous copy out of this half has finished */
        CUDA_CHECK(be, cudaEventSynchronize(ss->done[half]));
        memcpy(buf, (const char *)src_host + done, n);
        CUDA_CHECK(be, cudaMemcpyAsync((char *)dst + done, buf, n, cudaMemcpyHostToDevice,
                                       cb->stream));
        CUDA_CHECK(be, cudaEventRecord(ss->done[half], cb->stream));
        done += n;
        half ^= 1;
    }
}

static void cuda_download(glm_backend *be, void *dst_host, const void *src, size_t bytes)
{
    cuda_backend *cb = cuda_impl(be);
    if (bytes == 0) return;
    CUDA_CHECK(be, cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, cb->stream));
    CUDA_CHECK(be, cudaStreamSynchronize(cb->stream));
}

static void cuda_copy(glm_backend *be, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return;
    CUDA_CHECK(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_impl(be)->stream));
}

static void cuda_zero(glm_backend *be, void *dst, size_t bytes)
{
    if (bytes == 0) return;
    CUDA_CHECK(be, cudaMemsetAsync(dst, 0, bytes, cuda_impl(be)->stream));
}

static void cuda_synchronize(glm_backend *be)
{
    CUDA_CHECK(be, cudaStreamSynchronize(cuda_impl(be)->stream));
}

static size_t cuda_free_memory(glm_backend *be)
{
    size_t free_b = 0, total_b = 0;
    cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_BACKEND, "cudaMemGetInfo %s:%d: %s", __FILE__, __LINE__,
                         cudaGetErrorString(err));
        return 0;
    }
    return free_b;
}

static void *cuda_native_stream(glm_backend *be)
{
    return (void *)cuda_impl(be)->stream;
}

/* ---- graphs ---- */

static cuda_graph_slot *graph_slot(cuda_backend *cb, int key, bool create)
{
    for (int i = 0; i < GLM_CUDA_MAX_GRAPHS; i++)
        if (cb->graphs[i].exec && cb->graphs[i].key == key) return &cb->graphs[i];
    if (!create) return NULL;
    for (int i = 0; i < GLM_CUDA_MAX_GRAPHS; i++)
        if (!cb->graphs[i].exec) return &cb->graphs[i];
    return NULL;
}

/* Capture is in relaxed mode: an op may grow its scratch (cudaMalloc) while capturing; the old
 * buffer is retired, not freed, so earlier graphs stay valid. */
static bool cuda_graph_begin(glm_backend *be, int key)
{
    cuda_backend *cb = cuda_impl(be);
    if (be->status != GLM_OK || cb->capturing_key >= 0) return false;
    cuda_graph_slot *slot = graph_slot(cb, key, false);
    if (!slot && !graph_slot(cb, key, true)) return false; /* table full */
    cudaError_t err = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeRelaxed);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_BACKEND, "cudaStreamBeginCapture %s:%d: %s", __FILE__,
                         __LINE__, cudaGetErrorString(err));
        return false;
    }
    cb->capturing_key = key;
    return true;
}

static void cuda_graph_end(glm_backend *be, int key)
{
    cuda_backend *cb = cuda_impl(be);
    if (cb->capturing_key != key) {
        glm_backend_fail(be, GLM_ERR_INVALID_ARG, "graph_end(%d) without graph_begin", key);
        return;
    }
    cb->capturing_key = -1;
    cudaGraph_t graph = NULL;
    cudaError_t err = cudaStreamEndCapture(cb->stream, &graph);
    if (err != cudaSuccess || be->status != GLM_OK) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        if (err != cudaSuccess)
            glm_backend_fail(be, GLM_ERR_BACKEND, "cudaStreamEndCapture %s:%d: %s", __FILE__,
                             __LINE__, cudaGetErrorString(err));
        return;
    }
    cudaGraphExec_t exec = NULL;
    err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_BACKEND, "cudaGraphInstantiate %s:%d: %s", __FILE__,
                         __LINE__, cudaGetErrorString(err));
        return;
    }
    cuda_graph_slot *slot = graph_slot(cb, key, false);
    if (slot) {
        cudaGraphExecDestroy(slot->exec);
    } else {
        slot = graph_slot(cb, key, true);
    }
    if (!slot) {
        cudaGraphExecDestroy(exec);
        glm_backend_fail(be, GLM_ERR_LIMIT, "more than %d CUDA graphs", GLM_CUDA_MAX_GRAPHS);
        return;
    }
    slot->key = key;
    slot->exec = exec;
}

static bool cuda_graph_replay(glm_backend *be, int key)
{
    cuda_backend *cb = cuda_impl(be);
    if (be->status != GLM_OK) return false;
    cuda_graph_slot *slot = graph_slot(cb, key, false);
    if (!slot) return false;
    cudaError_t err = cudaGraphLaunch(slot->exec, cb->stream);
    if (err != cudaSuccess) {
        glm_backend_fail(be, GLM_ERR_BACKEND, "cudaGraphLaunch %s:%d: %s", __FILE__, __LINE__,
                         cudaGetErrorString(err));
        return false;
    }
    return true;
}

static void cuda_graph_drop(glm_backend *be, int key)
{
    cuda_backend *cb = cuda_impl(be);
    cuda_graph_slot *slot = graph_slot(cb, key, false);
    if (!slot) return;
    cudaStreamSynchronize(cb->stream); /* a replay may still be running */
    cudaGraphExecDestroy(slot->exec);
    slot->exec = NULL;
}

/* ---- lifetime ---- */

static staging_state *staging_events(cuda_backend *cb)
{
    /* the events live right after the backend struct (see glm_backend_cuda_create) */
    return (staging_state *)(cb + 1);
}

static void cuda_destroy(glm_backend *be)
{
    cuda_backend *cb = cuda_impl(be);
    if (cb) {
        cudaSetDevice(cb->device);
        if (cb->stream) cudaStreamSynchronize(cb->stream);
        for (int i = 0; i < GLM_CUDA_MAX_GRAPHS; i++)
            if (cb->graphs[i].exec) cudaGraphExecDestroy(cb->graphs[i].exec);
        cuda_gemm_destroy_plans(cb);
        cuda_quant_destroy(cb);
        cuda_q8_destroy(cb);
#ifdef GLM4V_HAVE_CUDNN
        cuda_cudnn_destroy(cb->cudnn);
#endif
        staging_state *ss = staging_events(cb);
        for (int i = 0; i < 2; i++)
            if (ss->done[i]) cudaEventDestroy(ss->done[i]);
        for (int i = 0; i < cb->n_retired; i++) cudaFree(cb->retired[i]);
        if (cb->scratch) cudaFree(cb->scratch);
        if (cb->staging) cudaFreeHost(cb->staging);
        if (cb->sample_host) cudaFreeHost(cb->sample_host);
        if (cb->lt_workspace) cudaFree(cb->lt_workspace);
        if (cb->lt) cublasLtDestroy(cb->lt);
        if (cb->stream) cudaStreamDestroy(cb->stream);
        free(cb);
    }
    free(be);
}

/* bf16 (the default) or fp16 storage: every kernel has both instantiations, so switching is only
 * the dtype the model allocates and converts its weights to. */
static glm_status cuda_set_storage(glm_backend *be, glm_dtype storage, glm_error *err)
{
    (void)err;
    be->weight_dtype = storage;
    be->act_dtype = storage;
    return GLM_OK;
}

static const glm_backend_ops cuda_ops = {
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .zero = cuda_zero,
    .synchronize = cuda_synchronize,
    .free_memory = cuda_free_memory,
    .native_stream = cuda_native_stream,
    .destroy = cuda_destroy,
    .linear = cuda_linear,
    .quantize = cuda_quantize,
    .check_weight_format = cuda_check_weight_format,
    .add = cuda_add,
    .scale = cuda_scale,
    .gelu = cuda_gelu,
    .silu_mul = cuda_silu_mul,
    .rmsnorm = cuda_rmsnorm,
    .add_rmsnorm = cuda_add_rmsnorm,
    .add_layernorm = cuda_add_layernorm,
    .layernorm = cuda_layernorm,
    .add_layernorm_q8 = cuda_add_layernorm_q8,
    .gelu_q8 = cuda_gelu_q8,
    .quantize_act = cuda_quantize_act,
    .linear_q8 = cuda_linear_q8,
    .embedding = cuda_embedding,
    .copy_rows = cuda_copy_rows,
    .gather_rows = cuda_gather_rows,
    .rope = cuda_rope,
    .kv_store = cuda_kv_store,
    .rope_kv_store = cuda_rope_kv_store,
    .attention_paged = cuda_attention_paged,
    .attention_full = cuda_attention_full,
    .patchify = cuda_patchify,
    .im2col_2x2 = cuda_im2col_2x2,
    .vision_embed = cuda_vision_embed,
    .fill_normal = cuda_fill_normal,
    .sample = cuda_sample,
    .set_storage = cuda_set_storage,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_replay = cuda_graph_replay,
    .graph_drop = cuda_graph_drop,
};

/* A measurement knob from the environment: its integer value, or fallback when unset or empty. */
static long env_long(const char *name, long fallback)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : fallback;
}

/* The attention path, chosen once per backend and printed: cuDNN's fused engine where the build
 * has it and the device and library allow it (fa2 kernels for the shapes it refuses), else the
 * fa2 kernels. GLM4V_ATTENTION=fa2 forces the kernels; =cudnn makes cuDNN's absence an error. */
static glm_status choose_attention(glm_backend *be, cuda_backend *cb, glm_error *err)
{
    const char *want = getenv("GLM4V_ATTENTION");
    if (!want || !*want) want = "auto";
    if (strcmp(want, "auto") && strcmp(want, "cudnn") && strcmp(want, "fa2"))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "GLM4V_ATTENTION=%s: auto, cudnn or fa2", want);
    char why[GLM_ERROR_MSG_LEN] = "fa2 requested";
#ifdef GLM4V_HAVE_CUDNN
    cb->cudnn_min_prefill = (int)env_long("GLM4V_CUDNN_MIN_PREFILL", 1024);
    if (strcmp(want, "fa2") != 0) {
        glm_error cerr;
        glm_status st = cuda_cudnn_create(cb->stream, cb->cc_major, &cb->cudnn, &cerr);
        if (st) {
            if (!strcmp(want, "cudnn"))
                return glm_fail(err, st, "GLM4V_ATTENTION=cudnn: %s", cerr.msg);
            snprintf(why, sizeof(why), "%s", cerr.msg);
        }
    }
#else
    if (!strcmp(want, "cudnn"))
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "GLM4V_ATTENTION=cudnn: built without cuDNN");
    snprintf(why, sizeof(why), "built without cuDNN");
#endif
    if (cb->cudnn) {
#ifdef GLM4V_HAVE_CUDNN
        fprintf(stderr,
                "glm4v cuda device %d: attention %s (vision; causal prefill from %d rows), fa2 "
                "kernels elsewhere\n",
                cb->device, cuda_cudnn_describe(cb->cudnn), cb->cudnn_min_prefill);
#endif
    } else {
        fprintf(stderr, "glm4v cuda device %d: attention fa2 kernels (%s)\n", cb->device, why);
    }
    (void)be;
    return GLM_OK;
}

#define CREATE_CHECK(call)                                                                         \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess) {                                                                 \
            glm_status st_ = glm_fail(err, GLM_ERR_BACKEND, "cuda device %d: %s %s:%d: %s",        \
                                      device_index, #call, __FILE__, __LINE__,                     \
                                      cudaGetErrorString(err_));                                   \
            cuda_destroy(be);                                                                      \
            return st_;                                                                            \
        }                                                                                          \
    } while (0)

extern "C" glm_status glm_backend_cuda_create(int device_index, glm_backend **out,
                                              glm_error *err)
{
    *out = NULL;
    glm_backend *be = (glm_backend *)calloc(1, sizeof(*be));
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof(*cb) + sizeof(staging_state));
    if (!be || !cb) {
        free(be);
        free(cb);
        return glm_fail(err, GLM_ERR_NOMEM, "cuda backend: out of host memory");
    }
    be->ops = &cuda_ops;
    be->name = "cuda";
    be->weight_dtype = GLM_BF16;
    be->act_dtype = GLM_BF16;
    be->resid_dtype = GLM_F32;
    be->host_memory = false;
    be->caps = glm_backend_cuda_entry.caps;
    /* measurements without graphs (every decode step launched op by op) */
    if (env_long("GLM4V_NO_GRAPHS", 0) != 0) be->caps.graphs = false;
    be->status = GLM_OK;
    be->impl = cb;
    cb->device = device_index;
    cb->capturing_key = -1;

    int n_devices = 0;
    CREATE_CHECK(cudaGetDeviceCount(&n_devices));
    if (device_index < 0 || device_index >= n_devices) {
        cuda_destroy(be);
        return glm_fail(err, GLM_ERR_INVALID_ARG, "cuda device %d requested, %d present",
                        device_index, n_devices);
    }
    CREATE_CHECK(cudaSetDevice(device_index));
    CREATE_CHECK(cudaDeviceGetAttribute(&cb->n_sms, cudaDevAttrMultiProcessorCount, device_index));
    CREATE_CHECK(cudaDeviceGetAttribute(&cb->cc_major, cudaDevAttrComputeCapabilityMajor,
                                        device_index));
    int cc_minor = 0;
    CREATE_CHECK(
        cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, device_index));
    /* E4M3 tensor cores start at sm_89 (gemm_quant.cu's check names the GPU) */
    if (cb->cc_major * 10 + cc_minor < 89)
        be->caps.weight_formats &= ~GLM_WEIGHT_FORMAT_BIT(GLM_WEIGHT_FP8);
    /* griddepcontrol needs Hopper; see cuda_launch in common.cuh */
    cb->pdl = cb->cc_major >= 9 && env_long("GLM4V_PDL", 1) != 0;
    /* gemv.cu for every one-row product: on an H200 it beat cuBLASLt on each GLM-4V decode layer
     * at TP 1 and 2 (qkv 2365 against 1891 GB/s, the TP 2 dense 1655 against 1184), and lost on
     * 2 or more rows (M = 4: 1699 against 3569 GB/s). docs/notes-cuda.md has the table
     * (test_cuda_ops --bench). */
    cb->gemv_max_rows = (int)env_long("GLM4V_GEMV_MAX_ROWS", 1);
    cb->gemv_min_weights = env_long("GLM4V_GEMV_MIN_WEIGHTS", 0);
    cb->gemm_tune = env_long("GLM4V_GEMM_TUNE", 1) != 0;
    CREATE_CHECK(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    staging_state *ss = staging_events(cb);
    for (int i = 0; i < 2; i++)
        CREATE_CHECK(cudaEventCreateWithFlags(&ss->done[i], cudaEventDisableTiming));
    cublasStatus_t bst = cublasLtCreate(&cb->lt);
    if (bst != CUBLAS_STATUS_SUCCESS) {
        cb->lt = NULL;
        cuda_destroy(be);
        return glm_fail(err, GLM_ERR_BACKEND, "cublasLtCreate: status %d", (int)bst);
    }
    cb->lt_workspace_bytes = (size_t)32 << 20; /* Hopper kernels like 32 MiB */
    CREATE_CHECK(cudaMalloc(&cb->lt_workspace, cb->lt_workspace_bytes));
    glm_status ast = choose_attention(be, cb, err);
    if (ast) {
        cuda_destroy(be);
        return ast;
    }
    *out = be;
    return GLM_OK;
}

/* ---- registration (kernels/backend_registry.h) ---- */

static glm_status create_cuda(const glm_backend_params *p, glm_backend **out, glm_error *err)
{
    return glm_backend_cuda_create(p->device_index, out, err);
}

extern "C" const glm_backend_entry glm_backend_cuda_entry = {
    "cuda",
    "one NVIDIA GPU: 16-bit storage (bf16 or f16), cuBLASLt, fused kernels, CUDA graphs",
    create_cuda,
    {
        /* graphs */ true,
        /* device_sampler */ true,
        /* storage_types */ (1u << GLM_BF16) | (1u << GLM_F16),
        /* weight_formats */ GLM_WEIGHT_FORMATS_16BIT | GLM_WEIGHT_FORMATS_QUANTIZED,
        /* collectives */ GLM_COLLECTIVE_LOCAL | GLM_COLLECTIVE_NCCL,
    },
};
