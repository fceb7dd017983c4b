/* Redis URL parsing, connecting and reply checking (see redis_conn.h). */
#include "coordinator/queue/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

glm_status glm_redis_url_parse(const char *url, glm_redis_url *out, glm_error *err)
{
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url || !*url) return glm_fail(err, GLM_ERR_INVALID_ARG, "empty Redis URL");
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0) {
        p += 8;
    } else if (strstr(p, "://")) {
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "Redis URL must start with redis://");
    }
    /* userinfo ends at the last '@' so a password may itself contain '@'. */
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t user_len = colon ? (size_t)(colon - p) : (size_t)(at - p);
        if (user_len >= sizeof out->user)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: user name too long");
        memcpy(out->user, p, user_len);
        if (colon) {
            size_t pw_len = (size_t)(at - colon - 1);
            if (pw_len >= sizeof out->password)
                return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: password too long");
            memcpy(out->password, colon + 1, pw_len);
            out->has_password = pw_len > 0;
        }
        p = at + 1;
    }
    size_t host_len = strcspn(p, ":/");
    if (host_len == 0 || host_len >= sizeof out->host)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: missing or overlong host");
    memcpy(out->host, p, host_len);
    p += host_len;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535 || (*end && *end != '/'))
            return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: bad port in %s", out->host);
        out->port = (int)port;
        p = end;
    }
    if (*p == '/') {
        if (p[1]) {
            char *end;
            long db = strtol(p + 1, &end, 10);
            if (end == p + 1 || *end || db < 0 || db > 1000000)
                return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: bad database number");
            out->db = (int)db;
        }
    } else if (*p) {
        return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL: trailing characters after host");
    }
    return GLM_OK;
}

void glm_redis_set_timeout(redisContext *c, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisSetTimeout(c, tv);
}

glm_status glm_redis_check(const redisContext *c, const redisReply *reply, int expected_type,
                           const char *what, glm_error *err)
{
    if (!reply)
        return glm_fail(err, GLM_ERR_IO, "%s: Redis connection error: %s", what,
                        c && c->err ? c->errstr : "no reply");
    if (reply->type == REDIS_REPLY_ERROR)
        return glm_fail(err,
                        glm_redis_refusal_of(reply) != GLM_REDIS_NOT_REFUSED ? GLM_ERR_LIMIT
                                                                             : GLM_ERR_FORMAT,
                        "%s: Redis error: %.*s", what, (int)reply->len, reply->str);
    if (expected_type < 0 || reply->type == expected_type) return GLM_OK;
    if (reply->type == REDIS_REPLY_NIL &&
        (expected_type == REDIS_REPLY_ARRAY || expected_type == REDIS_REPLY_STRING))
        return GLM_OK;
    return glm_fail(err, GLM_ERR_FORMAT, "%s: unexpected Redis reply type %d (wanted %d)", what,
                    reply->type, expected_type);
}

static const char *const REFUSAL_NAMES[GLM_REDIS_REFUSAL_KINDS] = {
    "", "OOM", "READONLY", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "NOREPLICAS"};

glm_redis_refusal glm_redis_refusal_of(const redisReply *reply)
{
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str) return GLM_REDIS_NOT_REFUSED;
    size_t word = strcspn(reply->str, " \r\n");
    for (int k = 1; k < GLM_REDIS_REFUSAL_KINDS; k++)
        if (strlen(REFUSAL_NAMES[k]) == word && strncmp(reply->str, REFUSAL_NAMES[k], word) == 0)
            return (glm_redis_refusal)k;
    return GLM_REDIS_NOT_REFUSED;
}

const char *glm_redis_refusal_name(glm_redis_refusal kind)
{
    return (unsigned)kind < GLM_REDIS_REFUSAL_KINDS && kind ? REFUSAL_NAMES[kind] : "none";
}

bool glm_redis_is_error(const redisReply *reply, const char *prefix)
{
    return reply && reply->type == REDIS_REPLY_ERROR && reply->str &&
           strncmp(reply->str, prefix, strlen(prefix)) == 0;
}

/* Runs one command given as argv and checks its reply; frees the reply. */
static glm_status simple_command(redisContext *c, int argc, const char **argv, int expected_type,
                                 const char *what, glm_error *err)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    glm_status st = REDIS_CHECK(c, r, expected_type, what, err);
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_redis_connect(const glm_redis_url *url, const char *password, int connect_timeout_ms,
                             int command_timeout_ms, redisContext **out, glm_error *err)
{
    *out = NULL;
    struct timeval tv = {connect_timeout_ms / 1000, (connect_timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(url->host, url->port, tv);
    if (!c)
        return glm_fail(err, GLM_ERR_NOMEM, "redis %s:%d: cannot allocate", url->host, url->port);
    if (c->err) {
        glm_fail(err, GLM_ERR_IO, "redis %s:%d: %s", url->host, url->port, c->errstr);
        redisFree(c);
        return GLM_ERR_IO;
    }
    if (command_timeout_ms > 0) glm_redis_set_timeout(c, command_timeout_ms);
    glm_status st = GLM_OK;
    const char *pw = password && *password ? password : (url->has_password ? url->password : NULL);
    if (pw) {
        const char *argv[3] = {"AUTH", url->user, pw};
        st = url->user[0] ? simple_command(c, 3, argv, REDIS_REPLY_STATUS, "AUTH", err)
                          : simple_command(c, 2, (const char *[]){"AUTH", pw}, REDIS_REPLY_STATUS,
                                           "AUTH", err);
    }
    if (st == GLM_OK && url->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", url->db);
        st =
            simple_command(c, 2, (const char *[]){"SELECT", db}, REDIS_REPLY_STATUS, "SELECT", err);
    }
    /* PING also catches a server still loading its AOF (-LOADING), which refuses commands. */
    if (st == GLM_OK)
        st = simple_command(c, 1, (const char *[]){"PING"}, REDIS_REPLY_STATUS, "PING", err);
    if (st != GLM_OK) {
        glm_error_prefix(err, "redis %s:%d/%d", url->host, url->port, url->db);
        redisFree(c);
        return st;
    }
    *out = c;
    return GLM_OK;
}

long long glm_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long glm_now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

glm_status glm_redis_password_read(const char *file, char *pw, size_t cap, glm_error *err)
{
    pw[0] = '\0';
    if (file) {
        FILE *f = fopen(file, "r");
        bool ok = f && fgets(pw, (int)cap, f);
        if (f) fclose(f);
        pw[strcspn(pw, "\r\n")] = '\0';
        if (!ok || !pw[0]) return glm_fail(err, GLM_ERR_IO, "cannot read a password from %s", file);
    } else if (getenv("GLM4V_REDIS_PASSWORD")) {
        snprintf(pw, cap, "%s", getenv("GLM4V_REDIS_PASSWORD"));
    }
    return GLM_OK;
}

glm_status glm_redis_client_connect(const char *url, const char *password, const char *prefix,
                                    size_t prefix_cap, int timeout_ms, redisContext **ctx,
                                    glm_error *err)
{
    glm_redis_url u;
    glm_status st = glm_redis_url_parse(url, &u, err);
    if (st != GLM_OK) return st;
    if (u.has_password) {
        memset(&u, 0, sizeof u);
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the Redis URL carries a password; command lines are visible to every "
                        "user (ps, shell history), so pass it with --password-file FILE or "
                        "GLM4V_REDIS_PASSWORD instead");
    }
    if (!prefix || !*prefix || strlen(prefix) >= prefix_cap)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "prefix must be 1..%zu bytes", prefix_cap - 1);
    st = glm_redis_connect(&u, password, timeout_ms, timeout_ms, ctx, err);
    memset(&u, 0, sizeof u);
    return st;
}
