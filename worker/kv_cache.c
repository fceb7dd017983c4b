#include "worker/kv_cache.h"

#include <stdlib.h>
#include <string.h>

size_t glm_kv_cache_block_bytes(int n_layers, int block_size, int kv_heads, int head_dim,
                                glm_dtype dtype)
{
    return (size_t)n_layers * 2 * (size_t)block_size * (size_t)kv_heads * (size_t)head_dim *
           glm_dtype_size(dtype);
}

glm_status glm_kv_cache_create(glm_kv_cache *c, int n_layers, int n_blocks, int block_size,
                               int kv_heads, int head_dim, glm_backend *be, glm_error *err)
{
    memset(c, 0, sizeof(*c));
    if (n_blocks < 1 || block_size < 1)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "KV cache needs at least one block (got %d)",
                        n_blocks);
    c->n_layers = n_layers;
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    c->kv_heads = kv_heads;
    c->head_dim = head_dim;
    c->bytes = glm_kv_cache_block_bytes(n_layers, block_size, kv_heads, head_dim, be->act_dtype) *
               (size_t)n_blocks;
    c->k = calloc((size_t)n_layers, sizeof(*c->k));
    c->v = calloc((size_t)n_layers, sizeof(*c->v));
    if (!c->k || !c->v) {
        glm_kv_cache_destroy(c, be);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for KV cache tables");
    }
    glm_status st = be->ops->alloc(be, c->bytes, &c->memory);
    if (st) {
        glm_error be_err = {0};
        glm_backend_take_error(be, &be_err);
        glm_kv_cache_destroy(c, be);
        return glm_fail(err, st, "KV cache of %d blocks needs %.2f GiB: %s", n_blocks,
                        (double)c->bytes / (1 << 30), be_err.msg);
    }
    int64_t slots = (int64_t)n_blocks * block_size, width = (int64_t)kv_heads * head_dim;
    size_t tensor_bytes = (size_t)(slots * width) * glm_dtype_size(be->act_dtype);
    for (int l = 0; l < n_layers; l++) {
        char *base = (char *)c->memory + (size_t)(2 * l) * tensor_bytes;
        c->k[l] = glm_tensor_2d(be->act_dtype, slots, width, base);
        c->v[l] = glm_tensor_2d(be->act_dtype, slots, width, base + tensor_bytes);
    }
    return GLM_OK;
}

void glm_kv_cache_destroy(glm_kv_cache *c, glm_backend *be)
{
    if (c->memory) be->ops->free(be, c->memory);
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

glm_status glm_block_allocator_init(glm_block_allocator *a, int n_blocks, glm_error *err)
{
    a->free_list = malloc((size_t)(n_blocks > 0 ? n_blocks : 1) * sizeof(int32_t));
    if (!a->free_list) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for block list");
    a->n_blocks = n_blocks;
    a->n_free = n_blocks;
    /* pop order 0, 1, 2, ...: the stack holds the highest id at the bottom */
    for (int i = 0; i < n_blocks; i++)
        a->free_list[i] = n_blocks - 1 - i;
    return GLM_OK;
}

void glm_block_allocator_free(glm_block_allocator *a)
{
    free(a->free_list);
    memset(a, 0, sizeof(*a));
}

int glm_block_alloc(glm_block_allocator *a, int n, int32_t *out)
{
    if (n > a->n_free) return -1;
    for (int i = 0; i < n; i++)
        out[i] = a->free_list[--a->n_free];
    return 0;
}

void glm_block_release(glm_block_allocator *a, int n, const int32_t *blocks)
{
    for (int i = 0; i < n; i++)
        a->free_list[a->n_free++] = blocks[i];
}

int glm_block_table_reserve(glm_block_table *t, glm_block_allocator *a, int block_size, int n_new)
{
    int need = (t->n_tokens + n_new + block_size - 1) / block_size - t->n_blocks;
    if (need <= 0) return 0;
    if (need > a->n_free) return -1;
    if (t->n_blocks + need > t->cap) {
        int cap = t->cap ? t->cap : 8;
        while (cap < t->n_blocks + need)
            cap *= 2;
        int32_t *blocks = realloc(t->blocks, (size_t)cap * sizeof(int32_t));
        if (!blocks) return -1;
        t->blocks = blocks;
        t->cap = cap;
    }
    glm_block_alloc(a, need, t->blocks + t->n_blocks);
    t->n_blocks += need;
    return 0;
}

void glm_block_table_release(glm_block_table *t, glm_block_allocator *a)
{
    glm_block_release(a, t->n_blocks, t->blocks);
    t->n_blocks = 0;
    t->n_tokens = 0;
}

void glm_block_table_free(glm_block_table *t)
{
    free(t->blocks);
    memset(t, 0, sizeof(*t));
}
