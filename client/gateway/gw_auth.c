/* Bearer API keys (see gw_auth.h). */
#include "client/gateway/gw_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEYS 1024
#define MAX_KEY_BYTES 512

struct gw_auth {
    char **keys;
    size_t n_keys;
};

void gw_auth_destroy(gw_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_keys; i++) {
        memset(a->keys[i], 0, strlen(a->keys[i]));
        free(a->keys[i]);
    }
    free(a->keys);
    free(a);
}

glm_status gw_auth_load(const char *path, gw_auth **out, glm_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot read API key file %s", path);
    gw_auth *a = calloc(1, sizeof *a);
    if (a) a->keys = calloc(MAX_KEYS, sizeof *a->keys);
    if (!a || !a->keys) {
        fclose(f);
        gw_auth_destroy(a);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    char line[MAX_KEY_BYTES + 2];
    glm_status st = GLM_OK;
    int line_no = 0;
    while (st == GLM_OK && fgets(line, sizeof line, f)) {
        line_no++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            st = glm_fail(err, GLM_ERR_FORMAT, "%s:%d: key longer than %d bytes", path, line_no,
                          MAX_KEY_BYTES);
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#') continue;
        if (a->n_keys == MAX_KEYS)
            st = glm_fail(err, GLM_ERR_LIMIT, "%s: more than %d keys", path, MAX_KEYS);
        else if (!(a->keys[a->n_keys++] = strdup(s)))
            st = glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    memset(line, 0, sizeof line);
    fclose(f);
    if (st == GLM_OK && a->n_keys == 0)
        st = glm_fail(err, GLM_ERR_MISSING, "API key file %s holds no key", path);
    if (st != GLM_OK) {
        gw_auth_destroy(a);
        return st;
    }
    *out = a;
    return GLM_OK;
}

bool gw_ct_equal(const char *a, size_t na, const char *key, size_t nk)
{
    volatile unsigned char diff = (unsigned char)(na != nk);
    for (size_t i = 0; i < nk; i++) {
        /* reads a[i % na] so an attacker's short string costs as long as a right one */
        unsigned char c = na ? (unsigned char)a[i % na] : 0;
        diff |= c ^ (unsigned char)key[i];
    }
    return diff == 0;
}

bool gw_auth_check(const gw_auth *a, const char *header)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return false;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    size_t n = strlen(token);
    bool ok = false;
    for (size_t i = 0; i < a->n_keys; i++) /* every key, no early exit */
        ok |= gw_ct_equal(token, n, a->keys[i], strlen(a->keys[i]));
    return ok;
}
