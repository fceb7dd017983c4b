/* Bearer API keys (see gw_auth.h). */
#include "client/gateway/gw_auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_KEYS 1024
#define MAX_KEY_BYTES 512

/* One key set. A reload builds a whole new one and swaps it in: a check never sees half of each. */
typedef struct key_set {
    char **keys;
    size_t n_keys;
} key_set;

struct gw_auth {
    pthread_rwlock_t lock; /* read: every request's check; write: a reload's swap */
    key_set set;
};

static void key_set_free(key_set *s)
{
    for (size_t i = 0; i < s->n_keys; i++) {
        memset(s->keys[i], 0, strlen(s->keys[i]));
        free(s->keys[i]);
    }
    free(s->keys);
    *s = (key_set){0};
}

static glm_status key_set_read(const char *path, key_set *out, glm_error *err)
{
    *out = (key_set){0};
    FILE *f = fopen(path, "r");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot read API key file %s", path);
    key_set s = {.keys = calloc(MAX_KEYS, sizeof(char *))};
    if (!s.keys) {
        fclose(f);
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
        char *t = line;
        while (*t == ' ' || *t == '\t')
            t++;
        if (!*t || *t == '#') continue;
        if (s.n_keys == MAX_KEYS)
            st = glm_fail(err, GLM_ERR_LIMIT, "%s: more than %d keys", path, MAX_KEYS);
        else if (!(s.keys[s.n_keys] = strdup(t)))
            st = glm_fail(err, GLM_ERR_NOMEM, "out of memory");
        else
            s.n_keys++;
    }
    /* a read error part way is not an end of file: a short key set must not replace a whole one */
    if (st == GLM_OK && ferror(f)) st = glm_fail(err, GLM_ERR_IO, "error reading %s", path);
    memset(line, 0, sizeof line);
    fclose(f);
    if (st == GLM_OK && s.n_keys == 0)
        st = glm_fail(err, GLM_ERR_MISSING, "API key file %s holds no key", path);
    if (st != GLM_OK) {
        key_set_free(&s);
        return st;
    }
    *out = s;
    return GLM_OK;
}

void gw_auth_destroy(gw_auth *a)
{
    if (!a) return;
    key_set_free(&a->set);
    pthread_rwlock_destroy(&a->lock);
    free(a);
}

glm_status gw_auth_load(const char *path, gw_auth **out, glm_error *err)
{
    *out = NULL;
    key_set s;
    glm_status st = key_set_read(path, &s, err);
    if (st != GLM_OK) return st;
    gw_auth *a = calloc(1, sizeof *a);
    if (!a || pthread_rwlock_init(&a->lock, NULL) != 0) {
        free(a);
        key_set_free(&s);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    a->set = s;
    *out = a;
    return GLM_OK;
}

glm_status gw_auth_reload(gw_auth *a, const char *path, size_t *n_keys, glm_error *err)
{
    key_set fresh;
    glm_status st = key_set_read(path, &fresh, err);
    if (st != GLM_OK) return st;
    *n_keys = fresh.n_keys;
    pthread_rwlock_wrlock(&a->lock);
    key_set old = a->set;
    a->set = fresh;
    pthread_rwlock_unlock(&a->lock);
    key_set_free(&old); /* no check can hold it now: each held the read lock while it looked */
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

bool gw_auth_check(gw_auth *a, const char *header)
{
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return false;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    size_t n = strlen(token);
    bool ok = false;
    pthread_rwlock_rdlock(&a->lock);
    for (size_t i = 0; i < a->set.n_keys; i++) /* every key, no early exit */
        ok |= gw_ct_equal(token, n, a->set.keys[i], strlen(a->set.keys[i]));
    pthread_rwlock_unlock(&a->lock);
    return ok;
}
