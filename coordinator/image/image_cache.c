#include "coordinator/image/image_cache.h"

#include <stdlib.h>
#include <xxhash.h>

typedef struct slot {
    glm_image_key key;
    bool filled;   /* holds embeddings of key */
    bool reserved; /* key assigned, embeddings being computed */
    int refs;
    uint64_t last_use;
} slot;

struct glm_image_cache {
    slot *slots;
    int n_slots;
    uint64_t clock;
    uint64_t hits, misses;
    bool no_reuse;
};

glm_image_key glm_image_key_of(const void *bytes, size_t len)
{
    XXH128_hash_t h = XXH3_128bits(bytes, len);
    return (glm_image_key){.lo = h.low64, .hi = h.high64};
}

glm_status glm_image_cache_create(int n_slots, glm_image_cache **out, glm_error *err)
{
    glm_image_cache *c = calloc(1, sizeof(*c));
    if (c) c->slots = calloc((size_t)(n_slots > 0 ? n_slots : 1), sizeof(slot));
    if (!c || !c->slots) {
        if (c) free(c);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the image cache");
    }
    c->n_slots = n_slots;
    *out = c;
    return GLM_OK;
}

void glm_image_cache_destroy(glm_image_cache *c)
{
    if (!c) return;
    free(c->slots);
    free(c);
}

void glm_image_cache_set_reuse(glm_image_cache *c, bool reuse)
{
    c->no_reuse = !reuse;
}

static bool same(glm_image_key a, glm_image_key b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

int glm_image_cache_acquire(glm_image_cache *c, glm_image_key key, bool *hit)
{
    int victim = -1;
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (!c->no_reuse && (s->filled || s->reserved) && same(s->key, key)) {
            s->refs++;
            s->last_use = ++c->clock;
            c->hits++;
            *hit = true;
            return i;
        }
        /* empty slots have last_use 0, so they go before any filled one */
        if (s->refs == 0 && (victim < 0 || s->last_use < c->slots[victim].last_use)) victim = i;
    }
    if (victim < 0) return -1;
    slot *s = &c->slots[victim];
    s->key = key;
    s->filled = false;
    s->reserved = true;
    s->refs = 1;
    s->last_use = ++c->clock;
    c->misses++;
    *hit = false;
    return victim;
}

void glm_image_cache_mark_ready(glm_image_cache *c, int slot_index)
{
    c->slots[slot_index].filled = true;
    c->slots[slot_index].reserved = false;
}

void glm_image_cache_invalidate(glm_image_cache *c, int slot_index)
{
    c->slots[slot_index].filled = false;
    c->slots[slot_index].reserved = false;
    c->slots[slot_index].last_use = 0;
}

void glm_image_cache_release(glm_image_cache *c, int slot_index)
{
    if (c->slots[slot_index].refs > 0) c->slots[slot_index].refs--;
}

glm_image_cache_stats glm_image_cache_stats_get(const glm_image_cache *c)
{
    glm_image_cache_stats st = {.hits = c->hits, .misses = c->misses, .slots = c->n_slots};
    for (int i = 0; i < c->n_slots; i++) {
        st.pinned += c->slots[i].refs > 0;
        st.filled += c->slots[i].filled;
    }
    return st;
}
