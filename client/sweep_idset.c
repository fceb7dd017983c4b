/* Set of row ids (see sweep_idset.h). */
#include "client/sweep_idset.h"

#include <stdlib.h>
#include <string.h>

uint64_t sweep_fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The slot holding id, or the empty slot where it would go. */
static size_t find_slot(char *const *slots, size_t cap, const char *id)
{
    size_t i = (size_t)sweep_fnv1a64(id) & (cap - 1);
    while (slots[i] && strcmp(slots[i], id) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

static glm_status grow(sweep_idset *s, glm_error *err)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    char **slots = calloc(cap, sizeof *slots);
    if (!slots) return glm_fail(err, GLM_ERR_NOMEM, "id set of %zu slots", cap);
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i]) slots[find_slot(slots, cap, s->slots[i])] = s->slots[i];
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return GLM_OK;
}

glm_status sweep_idset_add(sweep_idset *s, const char *id, bool *added, glm_error *err)
{
    *added = false;
    /* keep the load factor under 1/2 so probes stay short */
    if ((s->count + 1) * 2 > s->cap) {
        glm_status st = grow(s, err);
        if (st != GLM_OK) return st;
    }
    size_t i = find_slot(s->slots, s->cap, id);
    if (s->slots[i]) return GLM_OK;
    s->slots[i] = strdup(id);
    if (!s->slots[i]) return glm_fail(err, GLM_ERR_NOMEM, "id set");
    s->count++;
    *added = true;
    return GLM_OK;
}

bool sweep_idset_has(const sweep_idset *s, const char *id)
{
    return s->cap && s->slots[find_slot(s->slots, s->cap, id)] != NULL;
}

void sweep_idset_free(sweep_idset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof *s);
}
