/* glm4v-sweep: what keeps one sweep's jobs apart from every other's, and its images inside their
 * root.
 *
 * Job ids: rows carry short ids ("1", "q1") that many datasets share, and Redis keeps Results for a
 * day, so the Redis job id is a prefix plus the row id. Without --job-prefix the prefix is derived
 * from the input file's absolute path, the image root and the sweep's defaults (sampling, --seed):
 * two different sweeps get different prefixes, and running the same command again (a resume) gets
 * the same one and finds its own Results. Whatever the prefix, every Result is also checked against
 * the fingerprint of the row's job (job_fingerprint.h), so a collision is reported, never
 * answered with someone else's text.
 *
 * Images: a row's "image" path, relative to the image root or absolute, must resolve (symlinks
 * included) to a file inside the image root; anything else is an error for that row, so an input
 * file cannot make the sweep ship arbitrary files (../../etc/passwd) to Redis. */
#ifndef GLM4V_SWEEP_IDENTITY_H
#define GLM4V_SWEEP_IDENTITY_H

#include "client/sweep_args.h"
#include "common/status.h"

#include <stddef.h>

/* Length of a derived prefix: "s" + 12 hex digits + ":". */
#define SWEEP_DERIVED_PREFIX_LEN 14

/* The default job prefix of the sweep a describes (see above) into out (cap >= 15). Fails when the
 * input file's path cannot be resolved. */
glm_status sweep_derive_job_prefix(const sweep_args *a, char *out, size_t cap, glm_error *err);

/* Resolves path (absolute, or relative to root) and checks that it names something inside
 * root_real (an already resolved directory). On success resolved holds the real path.
 * GLM_ERR_IO: it does not exist or cannot be resolved; GLM_ERR_INVALID_ARG: it lies outside. */
glm_status sweep_image_resolve(const char *root_real, const char *root, const char *path,
                               char *resolved, size_t cap, glm_error *err);

#endif
