/* The paged KV cache.
 *
 * Memory (every rank): for each decoder layer one K and one V tensor of n_blocks * block_size
 * slots, each slot holding this rank's KV heads: [slots, kv_heads * head_dim]. A sequence's
 * tokens live in the blocks its block table lists, so sequences grow without copying and blocks
 * return to the free list when a sequence ends or is preempted.
 *
 * Allocation (rank 0 only, by the scheduler): a free list of block ids. Block tables travel to the
 * other ranks inside the step plan, so every rank's cache holds the same blocks. */
#ifndef GLM4V_KV_CACHE_H
#define GLM4V_KV_CACHE_H

#include <stdint.h>

#include "kernels/ops.h"

typedef struct glm_kv_cache {
    int n_layers;
    int n_blocks;
    int block_size;
    int kv_heads; /* on this rank */
    int head_dim;
    void *memory; /* one allocation in backend memory */
    size_t bytes;
    glm_tensor *k; /* [n_layers] of [n_blocks * block_size, kv_heads * head_dim] */
    glm_tensor *v;
} glm_kv_cache;

/* Bytes one block costs across all layers (K and V) on this rank. */
size_t glm_kv_cache_block_bytes(int n_layers, int block_size, int kv_heads, int head_dim,
                                glm_dtype dtype);
glm_status glm_kv_cache_create(glm_kv_cache *cache, int n_layers, int n_blocks, int block_size,
                               int kv_heads, int head_dim, glm_backend *be, glm_error *err);
void glm_kv_cache_destroy(glm_kv_cache *cache, glm_backend *be);

typedef struct glm_block_allocator {
    int n_blocks;
    int n_free;
    int32_t *free_list; /* stack of free block ids */
} glm_block_allocator;

glm_status glm_block_allocator_init(glm_block_allocator *a, int n_blocks, glm_error *err);
void glm_block_allocator_free(glm_block_allocator *a);
/* Pops n blocks into out; returns -1 (taking nothing) when fewer than n are free. */
int glm_block_alloc(glm_block_allocator *a, int n, int32_t *out);
void glm_block_release(glm_block_allocator *a, int n, const int32_t *blocks);

/* A sequence's view of the cache, kept by the scheduler: its blocks and how many slots hold KV. */
typedef struct glm_block_table {
    int32_t *blocks;
    int n_blocks;
    int cap;
    int n_tokens; /* KV entries written so far */
} glm_block_table;

/* Makes room for n_new more tokens, taking blocks from a; returns -1 (taking none) when the
 * allocator has too few. */
int glm_block_table_reserve(glm_block_table *t, glm_block_allocator *a, int block_size, int n_new);
/* Cache slot of token index i of this sequence. */
static inline int32_t glm_block_table_slot(const glm_block_table *t, int block_size, int i)
{
    return t->blocks[i / block_size] * block_size + i % block_size;
}
void glm_block_table_release(glm_block_table *t, glm_block_allocator *a);
void glm_block_table_free(glm_block_table *t);

#endif
