/* API keys: read from a file (one key per line; blank lines and lines starting with '#' are
 * skipped) at start and on each reload (SIGHUP), checked against "Authorization: Bearer <key>" in
 * time that does not depend on how much of a key matched. Safe to check from many threads while
 * another reloads. */
#ifndef GLM4V_GW_AUTH_H
#define GLM4V_GW_AUTH_H

#include "common/status.h"

#include <stdbool.h>

typedef struct gw_auth gw_auth;

/* An empty or unreadable file is an error (a gateway meant to be locked must not start open). */
glm_status gw_auth_load(const char *path, gw_auth **out, glm_error *err);
void gw_auth_destroy(gw_auth *a);

/* Reads path again and swaps the new key set in at once (*n_keys: how many it holds). On any error
 * (unreadable, empty, a key too long) the old keys stay in force and err says why: rotating keys
 * must never open the gateway or lock everyone out by accident. */
glm_status gw_auth_reload(gw_auth *a, const char *path, size_t *n_keys, glm_error *err);

/* header: the Authorization header's value or NULL. True when it is "Bearer <one of the keys>". */
bool gw_auth_check(gw_auth *a, const char *header);

/* Constant-time comparison of a (na bytes, untrusted) with key (nk bytes): the loop runs over the
 * key's length whatever a holds. */
bool gw_ct_equal(const char *a, size_t na, const char *key, size_t nk);

#endif
