/* The vision cache: which image sits in which slot of the model's image-embedding pool.
 *
 * Images are keyed by a 128-bit hash of their bytes. A slot holding an image that a running
 * sequence uses is pinned (reference count > 0); unpinned slots are reused least recently used
 * first, so a repeated image (several questions about one picture) skips the vision tower. */
#ifndef GLM4V_IMAGE_CACHE_H
#define GLM4V_IMAGE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct glm_image_key {
    uint64_t lo, hi;
} glm_image_key;

typedef struct glm_image_cache glm_image_cache;

glm_status glm_image_cache_create(int n_slots, glm_image_cache **out, glm_error *err);
void glm_image_cache_destroy(glm_image_cache *c);
/* reuse false: no image is ever found in the cache, so every job runs the vision tower (the slots
 * still hold running sequences' embeddings). For measuring what the cache is worth. */
void glm_image_cache_set_reuse(glm_image_cache *c, bool reuse);

/* Pins the slot for key. *hit is true when the slot already holds the embeddings (or is being
 * filled this step); otherwise the slot was taken from the least recently used unpinned one and
 * the caller must encode the image into it. Returns -1 when every slot is pinned. */
int glm_image_cache_acquire(glm_image_cache *c, glm_image_key key, bool *hit);
/* Marks a slot acquired with hit == false as filled (after the vision step ran). */
void glm_image_cache_mark_ready(glm_image_cache *c, int slot);
/* Forgets a slot whose encoding failed, so a later acquire encodes again. */
void glm_image_cache_invalidate(glm_image_cache *c, int slot);
void glm_image_cache_release(glm_image_cache *c, int slot);

typedef struct glm_image_cache_stats {
    uint64_t hits, misses;
    int slots, pinned, filled;
} glm_image_cache_stats;
glm_image_cache_stats glm_image_cache_stats_get(const glm_image_cache *c);

glm_image_key glm_image_key_of(const void *bytes, size_t len);

#endif
