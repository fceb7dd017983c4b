/* The paged KV cache.
 *
 * Memory (every rank): for each decoder layer one K and one V tensor of n_blocks * block_size
 * slots, each slot holding this rank's KV heads: [slots, kv_heads * head_dim]. A sequence's
 * tokens live in the blocks its block table lists, so sequences grow without copying and blocks
 * return to the free list when a sequence ends or is preempted.
 *
 * Allocation (rank 0 only, by the scheduler): the block manager below. Block tables travel to the
 * other ranks inside the step plan, so every rank's cache holds the same blocks; a block reused
 * from the prefix cache needs no more than that either, since every rank wrote the same rows
 * into it when it was computed. */
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

/* What one prompt row holds, as far as its KV is concerned: a text token (token >= 0), or row
 * `row` of the image whose content hash is (image_lo, image_hi). Two rows with equal keys at the
 * same place after equal prefixes have equal KV, which is what lets blocks be shared. Several
 * images per prompt need nothing more: each image row names its own image's hash. */
typedef struct glm_row_key {
    uint64_t image_lo, image_hi;
    int32_t token; /* -1 on image rows */
    int32_t row;   /* row within its image, -1 on text */
} glm_row_key;

static inline glm_row_key glm_row_key_token(int32_t token)
{
    return (glm_row_key){.token = token, .row = -1};
}
static inline glm_row_key glm_row_key_image(uint64_t lo, uint64_t hi, int32_t row)
{
    return (glm_row_key){.image_lo = lo, .image_hi = hi, .token = -1, .row = row};
}

/* The block manager (rank 0): which blocks are free, which sequences use which, and - once
 * prefix caching is enabled - which full blocks hold known content.
 *
 * A block that some sequence filled completely with prompt rows can be registered under a hash
 * chain of its contents (its parent block's hash and its rows' keys), so a later sequence whose
 * prompt starts with the same rows takes the block instead of computing it again. Blocks are
 * reference counted; a shared block is only read (a sequence writes just the rows after its
 * reused prefix, into blocks of its own), and a partly filled block is never registered. A
 * registered block whose last user left keeps its content and stays findable; it is reused for
 * other content (evicted, least recently released first) only when no empty block is left. So
 * n_free counts both empty and evictable blocks: caching never makes an allocation fail. */
typedef struct glm_block_allocator {
    int n_blocks;
    int n_free;         /* empty + cached blocks nobody uses: what an allocation may take */
    int n_empty;        /* blocks holding nothing: the stack in free_list */
    int n_cached;       /* registered blocks, used or not */
    int32_t *free_list; /* stack of empty block ids */
    int32_t *refs;      /* [n_blocks] sequences holding each block */
    /* prefix caching; all NULL until glm_block_allocator_enable_prefix */
    int block_size;
    uint64_t *hash;  /* [n_blocks] chain hash of a registered block */
    int32_t *parent; /* [n_blocks] block before it in its chain, -1 for a first block */
    uint32_t *parent_gen;
    uint32_t *gen;     /* bumped whenever a block's content is forgotten */
    glm_row_key *rows; /* [n_blocks * block_size] keys of a registered block's rows */
    int32_t *bucket;   /* [n_buckets] first registered block of each hash bucket, -1 none */
    int32_t *bucket_next;
    int n_buckets;                /* a power of two */
    int32_t *lru_prev, *lru_next; /* cached blocks nobody uses, least recently released first */
    int32_t lru_head, lru_tail;
    uint64_t evictions;
} glm_block_allocator;

glm_status glm_block_allocator_init(glm_block_allocator *a, int n_blocks, glm_error *err);
/* Turns on prefix caching for blocks of block_size rows. */
glm_status glm_block_allocator_enable_prefix(glm_block_allocator *a, int block_size,
                                             glm_error *err);
void glm_block_allocator_free(glm_block_allocator *a);
/* Takes n blocks into out (empty ones first, then the least recently released cached ones);
 * returns -1 (taking nothing) when fewer than n are free. */
int glm_block_alloc(glm_block_allocator *a, int n, int32_t *out);
/* Drops one reference to each block; a block nobody holds becomes empty, or evictable when it is
 * registered. Released last to first, so a chain's tail is evicted before its head. */
void glm_block_release(glm_block_allocator *a, int n, const int32_t *blocks);

/* A sequence's view of the cache, kept by the scheduler: its blocks and how many slots hold KV. */
typedef struct glm_block_table {
    int32_t *blocks;
    int n_blocks;
    int cap;
    int n_tokens; /* KV entries written so far */
    int n_hashed; /* leading blocks known to the prefix cache (found or registered) */
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

/* How many leading full blocks of rows[0, n_rows) are cached, without taking them. */
int glm_prefix_probe(const glm_block_allocator *a, const glm_row_key *rows, int n_rows);
/* For an empty table: takes every cached full block that rows[0, n_rows) starts with (one more
 * reference each) and marks their rows as written. Returns the rows reused (a multiple of the
 * block size; 0 when caching is off), or -1 when the table cannot grow (nothing taken). */
int glm_block_table_match_prefix(glm_block_table *t, glm_block_allocator *a,
                                 const glm_row_key *rows, int n_rows);
/* Registers the table's full blocks among rows[0, n_rows) not yet known to the cache; n_rows
 * must not pass the rows whose KV is written. A block whose content another block already holds
 * is swapped for that one (its own block released), so equal prefixes computed side by side
 * still end up in one chain. */
void glm_block_table_register(glm_block_table *t, glm_block_allocator *a, const glm_row_key *rows,
                              int n_rows);
/* Forgets every cached block nobody uses (they become empty). */
void glm_block_allocator_drop_cached(glm_block_allocator *a);

#endif
