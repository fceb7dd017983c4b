/* Derived job prefixes and image-root confinement for glm4v-sweep (see sweep_identity.h). */
#include "client/sweep_identity.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* Feeds one length-prefixed field, so ("ab","c") and ("a","bc") differ. */
static void put(XXH3_state_t *h, const void *p, size_t n)
{
    uint64_t len = n;
    XXH3_64bits_update(h, &len, sizeof len);
    if (n) XXH3_64bits_update(h, p, n);
}

static void put_text(XXH3_state_t *h, const char *s)
{
    put(h, s ? s : "", s ? strlen(s) : 0);
}

static void put_number(XXH3_state_t *h, double v)
{
    char text[64];
    snprintf(text, sizeof text, "%.9g", v);
    put_text(h, text);
}

glm_status sweep_derive_job_prefix(const sweep_args *a, char *out, size_t cap, glm_error *err)
{
    char in_real[PATH_MAX], root_real[PATH_MAX];
    if (!realpath(a->in, in_real))
        return glm_fail(err, GLM_ERR_IO, "cannot resolve %s: %s", a->in, strerror(errno));
    if (!realpath(a->image_root, root_real))
        snprintf(root_real, sizeof root_real, "%s", a->image_root);
    XXH3_state_t *h = XXH3_createState();
    if (!h) return glm_fail(err, GLM_ERR_NOMEM, "job prefix");
    XXH3_64bits_reset(h);
    put_text(h, "glm4v-sweep-job-prefix-1");
    put_text(h, in_real);
    put_text(h, root_real);
    const glm_sampling *s = &a->sampling;
    put_number(h, s->max_new_tokens);
    put_number(h, s->temperature);
    put_number(h, s->top_p);
    put_number(h, s->top_k);
    put_number(h, s->ignore_eos);
    put_number(h, (double)s->n_stop);
    for (size_t i = 0; i < s->n_stop; i++)
        put_text(h, s->stop[i]);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->sweep_seed);
    put_text(h, seed);
    uint64_t v = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    if (cap < SWEEP_DERIVED_PREFIX_LEN + 1) return glm_fail(err, GLM_ERR_INVALID_ARG, "job prefix");
    snprintf(out, cap, "s%012llx:", (unsigned long long)(v >> 16));
    return GLM_OK;
}

glm_status sweep_image_resolve(const char *root_real, const char *root, const char *path,
                               char *resolved, size_t cap, glm_error *err)
{
    char joined[PATH_MAX + 1], real[PATH_MAX];
    int n = path[0] == '/' ? snprintf(joined, sizeof joined, "%s", path)
                           : snprintf(joined, sizeof joined, "%s/%s", root, path);
    if (n < 0 || (size_t)n >= sizeof joined)
        return glm_fail(err, GLM_ERR_IO, "image path %s is too long", path);
    if (!realpath(joined, real))
        return glm_fail(err, GLM_ERR_IO, "cannot open image %s: %s", joined, strerror(errno));
    size_t root_len = strlen(root_real);
    bool inside = root_len == 1 /* "/" */ ||
                  (strncmp(real, root_real, root_len) == 0 && real[root_len] == '/');
    if (!inside)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "image %s resolves to %s, outside --image-root %s: refused", path, real,
                        root_real);
    if (strlen(real) >= cap) return glm_fail(err, GLM_ERR_IO, "image path %s is too long", real);
    snprintf(resolved, cap, "%s", real);
    return GLM_OK;
}
