/* A set of row ids (strings), for duplicate detection in the input and for the ids a resumed
 * output file already holds. Open addressing with linear probing; the set owns copies of the ids.
 */
#ifndef GLM4V_SWEEP_IDSET_H
#define GLM4V_SWEEP_IDSET_H

#include "common/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sweep_idset {
    char **slots; /* NULL = empty */
    size_t cap;   /* power of two */
    size_t count;
} sweep_idset;

/* Adds id; *added is false when it was already there. The set starts zero-initialized. */
glm_status sweep_idset_add(sweep_idset *s, const char *id, bool *added, glm_error *err);
bool sweep_idset_has(const sweep_idset *s, const char *id);
void sweep_idset_free(sweep_idset *s);

/* 64-bit FNV-1a of the bytes of s: the set's hash, and the per-row sampling seed (documented in
 * docs/SWEEP.md, so it must never change). */
uint64_t sweep_fnv1a64(const char *s);

#endif
