/* The CPU reference backend: host memory, float32 weights and activations, OpenMP across cores.
 *
 * Memory ops are plain libc calls (backend memory is host memory); the compute ops live one family
 * per file (gemm.c, norm.c, ...). No graphs: graph_begin/end/replay are NULL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_registry.h"
#include "kernels/cpu/cpu_internal.h"

#define CPU_ALIGN 64

int cpu_threads(const glm_backend *be)
{
    return ((const cpu_backend *)be->impl)->n_threads;
}

bool cpu_expect_dtype(glm_backend *be, const char *op, const char *name, const glm_tensor *t,
                      glm_dtype dtype)
{
    if (t->dtype != dtype) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s has dtype %s, expected %s", op, name,
                         glm_dtype_name(t->dtype), glm_dtype_name(dtype));
        return false;
    }
    if (t->ndim < 1 || t->ndim > GLM_MAX_DIMS) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s has %d dims", op, name, t->ndim);
        return false;
    }
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) {
            glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s has negative dim %d", op, name, i);
            return false;
        }
    }
    if (!t->data && glm_tensor_numel(t) > 0) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s has no data", op, name);
        return false;
    }
    return true;
}

bool cpu_expect_matrix(glm_backend *be, const char *op, const char *name, const glm_tensor *t,
                       glm_dtype dtype, int64_t rows, int64_t cols)
{
    if (!cpu_expect_dtype(be, op, name, t, dtype)) return false;
    int64_t r = glm_tensor_rows(t), c = glm_tensor_cols(t);
    if ((rows >= 0 && r != rows) || c != cols) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s is [%lld, %lld], expected [%lld, %lld]", op,
                         name, (long long)r, (long long)c, (long long)rows, (long long)cols);
        return false;
    }
    return true;
}

/* ---- memory ---- */

static glm_status cpu_alloc(glm_backend *be, size_t bytes, void **out)
{
    (void)be;
    /* aligned_alloc wants a multiple of the alignment; round up (and give 0 bytes a real block). */
    size_t rounded = bytes ? (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN : CPU_ALIGN;
    if (rounded < bytes) {
        *out = NULL;
        return GLM_ERR_NOMEM;
    }
    *out = aligned_alloc(CPU_ALIGN, rounded);
    return *out ? GLM_OK : GLM_ERR_NOMEM;
}

static void cpu_free(glm_backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static void cpu_copy(glm_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void cpu_zero(glm_backend *be, void *dst, size_t bytes)
{
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}

static void cpu_synchronize(glm_backend *be)
{
    (void)be;
}

static size_t cpu_free_memory(glm_backend *be)
{
    (void)be;
    return SIZE_MAX;
}

static void *cpu_native_stream(glm_backend *be)
{
    (void)be;
    return NULL;
}

static void cpu_destroy(glm_backend *be)
{
    free(be->impl);
    free(be);
}

static const glm_backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .free_memory = cpu_free_memory,
    .native_stream = cpu_native_stream,
    .destroy = cpu_destroy,
    .linear = cpu_linear,
    .quantize = cpu_quantize,
    .add = cpu_add,
    .scale = cpu_scale,
    .gelu = cpu_gelu,
    .silu_mul = cpu_silu_mul,
    .rmsnorm = cpu_rmsnorm,
    .add_rmsnorm = cpu_add_rmsnorm,
    .add_layernorm = cpu_add_layernorm,
    .layernorm = cpu_layernorm,
    .add_layernorm_q8 = cpu_add_layernorm_q8,
    .gelu_q8 = cpu_gelu_q8,
    .quantize_act = cpu_quantize_act,
    .linear_q8 = cpu_linear_q8,
    .embedding = cpu_embedding,
    .copy_rows = cpu_copy_rows,
    .gather_rows = cpu_gather_rows,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention_paged = cpu_attention_paged,
    .attention_full = cpu_attention_full,
    .patchify = cpu_patchify,
    .im2col_2x2 = cpu_im2col_2x2,
    .vision_embed = cpu_vision_embed,
    .sample = cpu_sample,
    .fill_normal = cpu_fill_normal,
    .graph_begin = NULL,
    .graph_end = NULL,
    .graph_replay = NULL,
};

glm_status glm_backend_cpu_create(int n_threads, glm_backend **out, glm_error *err)
{
    *out = NULL;
    if (n_threads < 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "cpu backend: n_threads %d < 0", n_threads);
    if (n_threads == 0) {
#ifdef _OPENMP
        n_threads = omp_get_max_threads();
#else
        n_threads = 1;
#endif
    }
    glm_backend *be = calloc(1, sizeof(*be));
    cpu_backend *impl = calloc(1, sizeof(*impl));
    if (!be || !impl) {
        free(be);
        free(impl);
        return glm_fail(err, GLM_ERR_NOMEM, "cpu backend: out of memory");
    }
    impl->n_threads = n_threads > 0 ? n_threads : 1;
    be->ops = &cpu_ops;
    be->name = "cpu";
    be->weight_dtype = GLM_F32;
    be->act_dtype = GLM_F32;
    be->resid_dtype = GLM_F32;
    be->host_memory = true;
    be->caps = glm_backend_cpu_entry.caps;
    be->status = GLM_OK;
    be->impl = impl;
    *out = be;
    return GLM_OK;
}

/* ---- registration (kernels/backend_registry.h) ---- */

static glm_status create_cpu(const glm_backend_params *p, glm_backend **out, glm_error *err)
{
    return glm_backend_cpu_create(p->n_threads, out, err);
}

static glm_status create_cpu_bf16(const glm_backend_params *p, glm_backend **out, glm_error *err)
{
    return glm_backend_cpu_bf16_create(p->n_threads, out, err);
}

const glm_backend_entry glm_backend_cpu_entry = {
    .name = "cpu",
    .summary = "the reference: plain C, float32 storage and math, OpenMP threads",
    .create = create_cpu,
    .caps =
        {
            .graphs = false,
            .device_sampler = true, /* the host is its device: sampling needs no copy */
            .storage_types = 0,
            .weight_formats = GLM_WEIGHT_FORMATS_16BIT | GLM_WEIGHT_FORMATS_QUANTIZED,
            .collectives = GLM_COLLECTIVE_LOCAL | GLM_COLLECTIVE_MPI,
        },
};

/* The CPU backend with the CUDA backend's 16-bit rounding (bf16_emulation.c). */
const glm_backend_entry glm_backend_cpu_bf16_entry = {
    .name = "cpu-bf16",
    .summary = "the cpu backend rounding to the cuda backend's 16-bit storage (its numerics "
               "without a GPU)",
    .create = create_cpu_bf16,
    .caps =
        {
            .graphs = false,
            .device_sampler = true,
            .storage_types = (1u << GLM_BF16) | (1u << GLM_F16),
            .weight_formats = GLM_WEIGHT_FORMATS_16BIT | GLM_WEIGHT_FORMATS_QUANTIZED,
            .collectives = GLM_COLLECTIVE_LOCAL | GLM_COLLECTIVE_MPI,
        },
};
