/* The backend registry (backend_registry.h) and the sticky error shared by all backends. */
#include "kernels/backend_registry.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Every backend of this build, in the order --help lists them. Adding a backend: define its
 * glm_backend_entry beside its constructor and add it here. */
static const glm_backend_entry *const registry[] = {
    &glm_backend_cpu_entry,
    &glm_backend_cpu_bf16_entry,
#ifdef GLM4V_HAVE_CUDA
    &glm_backend_cuda_entry,
#endif
    NULL,
};

const glm_backend_entry *const *glm_backend_registry(void)
{
    return registry;
}

const glm_backend_entry *glm_backend_find(const char *name)
{
    for (int i = 0; name && registry[i]; i++)
        if (strcmp(registry[i]->name, name) == 0) return registry[i];
    return NULL;
}

const char *glm_backend_names(char *buf, size_t cap)
{
    size_t used = 0;
    if (cap) buf[0] = '\0';
    for (int i = 0; registry[i] && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", registry[i]->name);
    return buf;
}

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

glm_status glm_backend_create_from(const glm_backend_entry *entry, const glm_backend_params *params,
                                   glm_backend **out, glm_error *err)
{
    glm_backend_params none = {0};
    return entry->create(params ? params : &none, out, err);
}

glm_status glm_backend_create(const char *name, int device_index, glm_backend **out, glm_error *err)
{
    *out = NULL;
    const glm_backend_entry *entry = glm_backend_find(name);
    char names[128];
    if (!entry)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "unknown device '%s' (this build has %s%s)",
                        name ? name : "(null)", glm_backend_names(names, sizeof(names)),
#ifdef GLM4V_HAVE_CUDA
                        "");
#else
                        "; cuda needs a build configured with -DGLM4V_CUDA=ON");
#endif
    glm_backend_params params = {.device_index = device_index};
    return glm_backend_create_from(entry, &params, out, err);
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
    if (!(be->caps.storage_types & (1u << storage)) || !be->ops->set_storage) {
        /* name the backends that do take it, from the registry */
        char takers[128] = "";
        size_t used = 0;
        for (int i = 0; registry[i] && used < sizeof(takers); i++)
            if (registry[i]->caps.storage_types & (1u << storage))
                used += (size_t)snprintf(takers + used, sizeof(takers) - used, "%s%s",
                                         used ? ", " : "", registry[i]->name);
        return glm_fail(err, GLM_ERR_UNSUPPORTED,
                        "the %s backend computes and stores f32; --dtype %s applies to %s",
                        be->name, storage == GLM_F16 ? "f16" : "bf16",
                        takers[0] ? takers : "no backend of this build");
    }
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
