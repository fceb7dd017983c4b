#include "worker/kv_cache.h"

#include <stdbool.h>
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

static void free_prefix(glm_block_allocator *a)
{
    free(a->hash);
    free(a->parent);
    free(a->parent_gen);
    free(a->gen);
    free(a->rows);
    free(a->bucket);
    free(a->bucket_next);
    free(a->lru_prev);
    free(a->lru_next);
    a->hash = NULL, a->parent = NULL, a->parent_gen = a->gen = NULL, a->rows = NULL;
    a->bucket = a->bucket_next = a->lru_prev = a->lru_next = NULL;
    a->block_size = a->n_buckets = 0;
}

glm_status glm_block_allocator_init(glm_block_allocator *a, int n_blocks, glm_error *err)
{
    memset(a, 0, sizeof(*a));
    size_t n = (size_t)(n_blocks > 0 ? n_blocks : 1);
    a->free_list = malloc(n * sizeof(int32_t));
    a->refs = calloc(n, sizeof(int32_t));
    if (!a->free_list || !a->refs) {
        glm_block_allocator_free(a);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for block list");
    }
    a->n_blocks = n_blocks;
    a->n_free = n_blocks;
    a->n_empty = n_blocks;
    a->lru_head = a->lru_tail = -1;
    /* pop order 0, 1, 2, ...: the stack holds the highest id at the bottom */
    for (int i = 0; i < n_blocks; i++)
        a->free_list[i] = n_blocks - 1 - i;
    return GLM_OK;
}

glm_status glm_block_allocator_enable_prefix(glm_block_allocator *a, int block_size, glm_error *err)
{
    if (a->hash) return GLM_OK;
    if (block_size < 1)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "prefix cache needs a block size (got %d)",
                        block_size);
    size_t n = (size_t)(a->n_blocks > 0 ? a->n_blocks : 1);
    int buckets = 16;
    while (buckets < 2 * a->n_blocks)
        buckets *= 2;
    a->block_size = block_size;
    a->n_buckets = buckets;
    a->hash = calloc(n, sizeof(*a->hash));
    a->parent = calloc(n, sizeof(*a->parent));
    a->parent_gen = calloc(n, sizeof(*a->parent_gen));
    a->gen = calloc(n, sizeof(*a->gen));
    a->rows = calloc(n * (size_t)block_size, sizeof(*a->rows));
    a->bucket = malloc((size_t)buckets * sizeof(*a->bucket));
    a->bucket_next = malloc(n * sizeof(*a->bucket_next));
    a->lru_prev = malloc(n * sizeof(*a->lru_prev));
    a->lru_next = malloc(n * sizeof(*a->lru_next));
    if (!a->hash || !a->parent || !a->parent_gen || !a->gen || !a->rows || !a->bucket ||
        !a->bucket_next || !a->lru_prev || !a->lru_next) {
        free_prefix(a); /* back to a plain allocator: the caller may go on without caching */
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the prefix cache");
    }
    for (int i = 0; i < buckets; i++)
        a->bucket[i] = -1;
    for (size_t i = 0; i < n; i++) {
        a->parent[i] = -2; /* -2: holds nothing registered; -1: registered first block */
        a->bucket_next[i] = a->lru_prev[i] = a->lru_next[i] = -1;
    }
    return GLM_OK;
}

void glm_block_allocator_free(glm_block_allocator *a)
{
    free_prefix(a);
    free(a->free_list);
    free(a->refs);
    memset(a, 0, sizeof(*a));
}

/* ---- the hash chain ---- */

/* splitmix64's finalizer: every input bit reaches every output bit */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t absorb(uint64_t h, uint64_t v)
{
    return mix64(h ^ mix64(v + 0x9e3779b97f4a7c15ull));
}

/* Hash of a block: its parent's hash (a fixed seed for a first block) and its rows' keys. The
 * hash only finds candidates; a match is confirmed by comparing keys and parent (find_block), so
 * a collision costs a lookup, never a wrong reuse. */
static uint64_t block_hash(uint64_t parent_hash, const glm_row_key *rows, int n)
{
    uint64_t h = parent_hash;
    for (int i = 0; i < n; i++) {
        h = absorb(h, (uint64_t)(uint32_t)rows[i].token | (uint64_t)(uint32_t)rows[i].row << 32);
        if (rows[i].token < 0) {
            h = absorb(h, rows[i].image_lo);
            h = absorb(h, rows[i].image_hi);
        }
    }
    return h;
}

#define FIRST_BLOCK_SEED 0x6a09e667f3bcc909ull

static bool same_rows(const glm_row_key *x, const glm_row_key *y, int n)
{
    for (int i = 0; i < n; i++)
        if (x[i].token != y[i].token || x[i].row != y[i].row || x[i].image_lo != y[i].image_lo ||
            x[i].image_hi != y[i].image_hi)
            return false;
    return true;
}

static bool is_cached(const glm_block_allocator *a, int32_t b)
{
    return a->hash && a->parent[b] != -2;
}

/* The registered block with these rows after parent (-1: first block), or -1. Identity of the
 * parent is its id and generation, so a block registered after a parent that was since evicted
 * and refilled with other content is never taken. */
static int32_t find_block(const glm_block_allocator *a, uint64_t h, int32_t parent,
                          const glm_row_key *rows)
{
    for (int32_t b = a->bucket[h & (uint64_t)(a->n_buckets - 1)]; b >= 0; b = a->bucket_next[b])
        if (a->hash[b] == h && a->parent[b] == parent &&
            (parent < 0 || a->parent_gen[b] == a->gen[parent]) &&
            same_rows(a->rows + (size_t)b * a->block_size, rows, a->block_size))
            return b;
    return -1;
}

static void lru_unlink(glm_block_allocator *a, int32_t b)
{
    int32_t p = a->lru_prev[b], n = a->lru_next[b];
    if (p >= 0)
        a->lru_next[p] = n;
    else
        a->lru_head = n;
    if (n >= 0)
        a->lru_prev[n] = p;
    else
        a->lru_tail = p;
    a->lru_prev[b] = a->lru_next[b] = -1;
}

static void lru_append(glm_block_allocator *a, int32_t b)
{
    a->lru_prev[b] = a->lru_tail;
    a->lru_next[b] = -1;
    if (a->lru_tail >= 0)
        a->lru_next[a->lru_tail] = b;
    else
        a->lru_head = b;
    a->lru_tail = b;
}

/* Forgets a registered block's content: out of its bucket, and its generation moves on so
 * blocks registered after it no longer match. */
static void unregister(glm_block_allocator *a, int32_t b)
{
    int32_t *link = &a->bucket[a->hash[b] & (uint64_t)(a->n_buckets - 1)];
    while (*link != b)
        link = &a->bucket_next[*link];
    *link = a->bucket_next[b];
    a->bucket_next[b] = -1;
    a->parent[b] = -2;
    a->gen[b]++;
    a->n_cached--;
}

/* Takes one more reference to a block found in the cache. */
static void take(glm_block_allocator *a, int32_t b)
{
    if (a->refs[b]++ == 0) {
        lru_unlink(a, b);
        a->n_free--;
    }
}

/* ---- allocation ---- */

int glm_block_alloc(glm_block_allocator *a, int n, int32_t *out)
{
    if (n > a->n_free) return -1;
    for (int i = 0; i < n; i++) {
        int32_t b;
        if (a->n_empty > 0) {
            b = a->free_list[--a->n_empty];
        } else { /* no empty block left: evict the least recently released cached one */
            b = a->lru_head;
            lru_unlink(a, b);
            unregister(a, b);
            a->evictions++;
        }
        a->refs[b] = 1;
        a->n_free--;
        out[i] = b;
    }
    return 0;
}

void glm_block_release(glm_block_allocator *a, int n, const int32_t *blocks)
{
    for (int i = n - 1; i >= 0; i--) {
        int32_t b = blocks[i];
        if (--a->refs[b] > 0) continue;
        a->n_free++;
        if (is_cached(a, b))
            lru_append(a, b);
        else
            a->free_list[a->n_empty++] = b;
    }
}

void glm_block_allocator_drop_cached(glm_block_allocator *a)
{
    if (!a->hash) return;
    while (a->lru_head >= 0) {
        int32_t b = a->lru_head;
        lru_unlink(a, b);
        unregister(a, b);
        a->free_list[a->n_empty++] = b;
    }
}

static int grow_table(glm_block_table *t, int n_blocks)
{
    if (n_blocks <= t->cap) return 0;
    int cap = t->cap ? t->cap : 8;
    while (cap < n_blocks)
        cap *= 2;
    int32_t *blocks = realloc(t->blocks, (size_t)cap * sizeof(int32_t));
    if (!blocks) return -1;
    t->blocks = blocks;
    t->cap = cap;
    return 0;
}

int glm_block_table_reserve(glm_block_table *t, glm_block_allocator *a, int block_size, int n_new)
{
    int need = (t->n_tokens + n_new + block_size - 1) / block_size - t->n_blocks;
    if (need <= 0) return 0;
    if (need > a->n_free) return -1;
    if (grow_table(t, t->n_blocks + need) != 0) return -1;
    glm_block_alloc(a, need, t->blocks + t->n_blocks);
    t->n_blocks += need;
    return 0;
}

void glm_block_table_release(glm_block_table *t, glm_block_allocator *a)
{
    glm_block_release(a, t->n_blocks, t->blocks);
    t->n_blocks = 0;
    t->n_tokens = 0;
    t->n_hashed = 0;
}

void glm_block_table_free(glm_block_table *t)
{
    free(t->blocks);
    memset(t, 0, sizeof(*t));
}

/* ---- prefix matching ---- */

int glm_prefix_probe(const glm_block_allocator *a, const glm_row_key *rows, int n_rows)
{
    if (!a->hash) return 0;
    int bs = a->block_size, n = 0;
    int32_t parent = -1;
    uint64_t h = FIRST_BLOCK_SEED;
    for (; (n + 1) * bs <= n_rows; n++) {
        h = block_hash(h, rows + (size_t)n * bs, bs);
        int32_t b = find_block(a, h, parent, rows + (size_t)n * bs);
        if (b < 0) break;
        parent = b;
    }
    return n;
}

int glm_block_table_match_prefix(glm_block_table *t, glm_block_allocator *a,
                                 const glm_row_key *rows, int n_rows)
{
    if (!a->hash || t->n_blocks > 0) return 0;
    int bs = a->block_size, n = glm_prefix_probe(a, rows, n_rows);
    if (n == 0) return 0;
    if (grow_table(t, n) != 0) return -1;
    int32_t parent = -1;
    uint64_t h = FIRST_BLOCK_SEED;
    for (int i = 0; i < n; i++) {
        h = block_hash(h, rows + (size_t)i * bs, bs);
        int32_t b = find_block(a, h, parent, rows + (size_t)i * bs);
        take(a, b);
        t->blocks[i] = b;
        parent = b;
    }
    t->n_blocks = n;
    t->n_hashed = n;
    t->n_tokens = n * bs;
    return n * bs;
}

void glm_block_table_register(glm_block_table *t, glm_block_allocator *a, const glm_row_key *rows,
                              int n_rows)
{
    if (!a->hash) return;
    int bs = a->block_size;
    if (n_rows > t->n_tokens) n_rows = t->n_tokens;
    for (int i = t->n_hashed; (i + 1) * bs <= n_rows && i < t->n_blocks; i++) {
        int32_t parent = i > 0 ? t->blocks[i - 1] : -1;
        uint64_t h =
            block_hash(i > 0 ? a->hash[parent] : FIRST_BLOCK_SEED, rows + (size_t)i * bs, bs);
        int32_t b = t->blocks[i];
        int32_t twin = find_block(a, h, parent, rows + (size_t)i * bs);
        if (twin >= 0) { /* computed side by side with an equal prefix: keep one copy */
            take(a, twin);
            glm_block_release(a, 1, &b);
            t->blocks[i] = twin;
        } else {
            a->hash[b] = h;
            a->parent[b] = parent;
            a->parent_gen[b] = parent >= 0 ? a->gen[parent] : 0;
            memcpy(a->rows + (size_t)b * bs, rows + (size_t)i * bs, sizeof(*rows) * (size_t)bs);
            size_t k = h & (uint64_t)(a->n_buckets - 1);
            a->bucket_next[b] = a->bucket[k];
            a->bucket[k] = b;
            a->n_cached++;
        }
        t->n_hashed = i + 1;
    }
}
