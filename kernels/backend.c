/* Backend selection and the sticky error shared by all backends. */
#include "kernels/ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void glm_backend_fail(glm_backend *be, glm_status status, const char *fmt, ...)
{
    if (be->status != GLM_OK) return; /* keep the first failure: later ones are consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(be->err.msg, sizeof(be->err.msg), fmt, ap);
    va_end(ap);
    be->err.status = status;
    be->status = status;
}

glm_status glm_backend_take_error(glm_backend *be, glm_error *err)
{
    glm_status status = be->status;
    if (status != GLM_OK && err) {
        err->status = status;
        snprintf(err->msg, sizeof(err->msg), "%s backend: %s", be->name, be->err.msg);
    }
    be->status = GLM_OK;
    be->err.msg[0] = '\0';
    return status;
}

glm_status glm_backend_create(const char *name, int device_index, glm_backend **out, glm_error *err)
{
    if (strcmp(name, "cpu") == 0) return glm_backend_cpu_create(0, out, err);
    if (strcmp(name, "cuda") == 0) return glm_backend_cuda_create(device_index, out, err);
    if (strcmp(name, "cpu-bf16") == 0) return glm_backend_cpu_bf16_create(0, out, err);
    return glm_fail(err, GLM_ERR_INVALID_ARG,
                    "unknown device '%s' (expected cpu, cuda or cpu-bf16)", name);
}

void glm_backend_destroy(glm_backend *be)
{
    if (be) be->ops->destroy(be);
}

glm_status glm_backend_set_storage(glm_backend *be, glm_dtype storage, glm_error *err)
{
    if (storage != GLM_BF16 && storage != GLM_F16)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "storage dtype %s: expected bf16 or f16",
                        glm_dtype_name(storage));
    if (!be->ops->set_storage)
        return glm_fail(err, GLM_ERR_UNSUPPORTED,
                        "the %s backend computes and stores f32; --dtype applies to cuda and "
                        "cpu-bf16",
                        be->name);
    return be->ops->set_storage(be, storage, err);
}

const char *const glm_storage_names[] = {"bf16", "f16", NULL};

bool glm_storage_parse(const char *name, glm_dtype *out)
{
    static const glm_dtype types[] = {GLM_BF16, GLM_F16}; /* in glm_storage_names' order */
    for (int i = 0; name && glm_storage_names[i]; i++)
        if (strcmp(name, glm_storage_names[i]) == 0) {
            *out = types[i];
            return true;
        }
    return false;
}

#ifndef GLM4V_HAVE_CUDA
glm_status glm_backend_cuda_create(int device_index, glm_backend **out, glm_error *err)
{
    (void)device_index;
    *out = NULL;
    return glm_fail(err, GLM_ERR_UNSUPPORTED,
                    "this build has no CUDA backend (configure with -DGLM4V_CUDA=ON)");
}
#endif

void glm_op_rope_kv_store(glm_backend *be, glm_tensor qkv, glm_tensor positions, glm_tensor k_cache,
                          glm_tensor v_cache, glm_tensor slots, int n_q_heads, int n_kv_heads,
                          int head_dim, int rope_dim, float theta)
{
    if (be->status != GLM_OK) return;
    if (be->ops->rope_kv_store) {
        be->ops->rope_kv_store(be, qkv, positions, k_cache, v_cache, slots, n_q_heads, n_kv_heads,
                               head_dim, rope_dim, theta);
        return;
    }
    glm_op_rope(be, qkv, positions, n_q_heads, n_kv_heads, head_dim, rope_dim, theta);
    glm_op_kv_store(be, k_cache, v_cache, qkv, slots, n_q_heads, n_kv_heads, head_dim);
}
