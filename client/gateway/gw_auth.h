/* API keys: read once from a file (one key per line; blank lines and lines starting with '#' are
 * skipped), checked against "Authorization: Bearer <key>" in time that does not depend on how
 * much of a key matched. */
#ifndef GLM4V_GW_AUTH_H
#define GLM4V_GW_AUTH_H

#include "common/status.h"

#include <stdbool.h>

typedef struct gw_auth gw_auth;

/* An empty or unreadable file is an error (a gateway meant to be locked must not start open). */
glm_status gw_auth_load(const char *path, gw_auth **out, glm_error *err);
void gw_auth_destroy(gw_auth *a);

/* header: the Authorization header's value or NULL. True when it is "Bearer <one of the keys>". */
bool gw_auth_check(const gw_auth *a, const char *header);

/* Constant-time comparison of a (na bytes, untrusted) with key (nk bytes): the loop runs over the
 * key's length whatever a holds. */
bool gw_ct_equal(const char *a, size_t na, const char *key, size_t nk);

#endif
