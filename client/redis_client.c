/* Client side of the Redis job protocol (see redis_client.h). */
#include "client/redis_client.h"

#include "coordinator/queue/redis_conn.h"

#include <stdlib.h>
#include <string.h>

struct glm_client {
    redisContext *ctx; /* NULL after a failed reconnection */
    char prefix[64];
    int timeout_ms;
    char *url, *password; /* kept for glm_client_reconnect; the password is wiped on destroy */
};

glm_status glm_client_connect(const char *url, const char *password, const char *prefix,
                              int timeout_ms, glm_client **out, glm_error *err)
{
    *out = NULL;
    redisContext *ctx = NULL;
    glm_status st = glm_redis_client_connect(url, password, prefix, 64, timeout_ms, &ctx, err);
    if (st != GLM_OK) return st;
    glm_client *c = calloc(1, sizeof *c);
    if (!c) {
        redisFree(ctx);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    c->ctx = ctx;
    snprintf(c->prefix, sizeof c->prefix, "%s", prefix);
    c->timeout_ms = timeout_ms;
    c->url = strdup(url);
    c->password = password ? strdup(password) : NULL;
    if (!c->url || (password && !c->password)) {
        glm_client_destroy(c);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    *out = c;
    return GLM_OK;
}

void glm_client_destroy(glm_client *c)
{
    if (!c) return;
    if (c->ctx) redisFree(c->ctx);
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c->url);
    free(c);
}

glm_status glm_client_reconnect(glm_client *c, glm_error *err)
{
    if (c->ctx) redisFree(c->ctx);
    c->ctx = NULL;
    return glm_redis_client_connect(c->url, c->password, c->prefix, sizeof c->prefix, c->timeout_ms,
                                    &c->ctx, err);
}

/* After a failed glm_client_reconnect there is no connection until the next one succeeds. */
static glm_status need_ctx(const glm_client *c, glm_error *err)
{
    return c->ctx ? GLM_OK : glm_fail(err, GLM_ERR_IO, "not connected to Redis");
}

glm_status glm_client_submit(glm_client *c, const char *job_id, const void *job, size_t len,
                             glm_error *err)
{
    if (!glm_job_id_valid(job_id)) return glm_fail(err, GLM_ERR_INVALID_ARG, "invalid job id");
    if (need_ctx(c, err)) return GLM_ERR_IO;
    char key[128];
    snprintf(key, sizeof key, "%s:jobs", c->prefix);
    const char *argv[] = {"XADD", key, "*", "job", job, "id", job_id};
    size_t lens[] = {4, strlen(key), 1, 3, len, 2, strlen(job_id)};
    redisReply *r = redisCommandArgv(c->ctx, 7, argv, lens);
    glm_status st = REDIS_CHECK(c->ctx, r, REDIS_REPLY_STRING, "XADD job", err);
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_client_cancel(glm_client *c, const char *job_id, glm_error *err)
{
    if (!glm_job_id_valid(job_id)) return glm_fail(err, GLM_ERR_INVALID_ARG, "invalid job id");
    if (need_ctx(c, err)) return GLM_ERR_IO;
    char key[256];
    snprintf(key, sizeof key, "%s:cancel:%s", c->prefix, job_id);
    glm_redis_set_timeout(c->ctx, c->timeout_ms);
    const char *argv[] = {"SET", key, "1", "EX", "3600"};
    redisReply *r = redisCommandArgv(c->ctx, 5, argv, NULL);
    glm_status st = REDIS_CHECK(c->ctx, r, REDIS_REPLY_STATUS, "SET cancel", err);
    if (r) freeReplyObject(r);
    return st;
}

/* Decodes one out-stream entry [id, [field, value]] into event. */
static void decode_entry(const redisReply *e, glm_client_event *event)
{
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        glm_error err = {0};
        if (strcmp(k->str, "chunk") == 0) {
            if (glm_chunk_decode(v->str, v->len, &event->chunk, &err) == GLM_OK)
                event->kind = GLM_EVENT_CHUNK;
        } else if (strcmp(k->str, "result") == 0) {
            if (glm_result_decode(v->str, v->len, &event->result, &err) == GLM_OK)
                event->kind = GLM_EVENT_RESULT;
        } else {
            continue;
        }
        if (event->kind == GLM_EVENT_NONE)
            fprintf(stderr, "glm4v client: skipping entry %s: %s\n", e->element[0]->str, err.msg);
        return;
    }
}

glm_status glm_client_next(glm_client *c, const char *job_id, char cursor[48], int block_ms,
                           glm_client_event *event, glm_error *err)
{
    memset(event, 0, sizeof *event);
    if (need_ctx(c, err)) return GLM_ERR_IO;
    char key[256], block[24];
    snprintf(key, sizeof key, "%s:out:%s", c->prefix, job_id);
    snprintf(block, sizeof block, "%d", block_ms > 0 ? block_ms : 1);
    for (;;) {
        const char *argv[] = {"XREAD", "COUNT", "1", "BLOCK", block, "STREAMS", key, cursor};
        glm_redis_set_timeout(c->ctx, c->timeout_ms + (block_ms > 0 ? block_ms : 1));
        redisReply *r = redisCommandArgv(c->ctx, 8, argv, NULL);
        glm_status st = REDIS_CHECK(c->ctx, r, REDIS_REPLY_ARRAY, "XREAD results", err);
        if (st != GLM_OK || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            if (r) freeReplyObject(r);
            return st; /* error, or nothing within block_ms */
        }
        const redisReply *entries = r->element[0]->element[1];
        if (entries->elements == 0) {
            freeReplyObject(r);
            return GLM_OK;
        }
        const redisReply *e = entries->element[0];
        snprintf(cursor, 48, "%s", e->element[0]->str);
        decode_entry(e, event);
        freeReplyObject(r);
        if (event->kind != GLM_EVENT_NONE) return GLM_OK;
        /* an entry we could not use: look at the next one without waiting again */
    }
}

/* Runs a command, returns its integer reply or -1 (error message in err). */
static long long integer_command(glm_client *c, int argc, const char **argv, const char *what,
                                 glm_error *err)
{
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, NULL);
    long long v =
        REDIS_CHECK(c->ctx, r, REDIS_REPLY_INTEGER, what, err) == GLM_OK ? r->integer : -1;
    if (r) freeReplyObject(r);
    return v;
}

static glm_status print_servers(glm_client *c, FILE *out, glm_error *err)
{
    char match[128], cursor[32] = "0";
    snprintf(match, sizeof match, "%s:server:*", c->prefix);
    int n = 0;
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", "200"};
        redisReply *r = redisCommandArgv(c->ctx, 6, argv, NULL);
        glm_status st = REDIS_CHECK(c->ctx, r, REDIS_REPLY_ARRAY, "SCAN servers", err);
        if (st != GLM_OK || r->elements != 2) {
            if (r) freeReplyObject(r);
            return st != GLM_OK ? st : glm_fail(err, GLM_ERR_FORMAT, "SCAN: odd reply");
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *key = keys->element[i]->str;
            redisReply *v = redisCommand(c->ctx, "GET %s", key);
            redisReply *t = redisCommand(c->ctx, "TTL %s", key);
            if (v && v->type == REDIS_REPLY_STRING) {
                fprintf(out, "server %s ttl=%llds %s\n", key + strlen(c->prefix) + 8,
                        t && t->type == REDIS_REPLY_INTEGER ? t->integer : -1, v->str);
                n++;
            }
            if (v) freeReplyObject(v);
            if (t) freeReplyObject(t);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    fprintf(out, "servers: %d live\n", n);
    return GLM_OK;
}

glm_status glm_client_status(glm_client *c, FILE *out, glm_error *err)
{
    if (need_ctx(c, err)) return GLM_ERR_IO;
    glm_status st = print_servers(c, out, err);
    if (st != GLM_OK) return st;
    char jobs[128], dead[128], group[128];
    snprintf(jobs, sizeof jobs, "%s:jobs", c->prefix);
    snprintf(dead, sizeof dead, "%s:dead", c->prefix);
    snprintf(group, sizeof group, "%s:servers", c->prefix);
    long long depth = integer_command(c, 2, (const char *[]){"XLEN", jobs}, "XLEN jobs", err);
    if (depth < 0) return GLM_ERR_IO;
    long long n_dead = integer_command(c, 2, (const char *[]){"XLEN", dead}, "XLEN dead", err);
    if (n_dead < 0) return GLM_ERR_IO;
    long long pending = 0;
    redisReply *r = redisCommandArgv(c->ctx, 3, (const char *[]){"XPENDING", jobs, group}, NULL);
    if (glm_redis_is_error(r, "NOGROUP")) {
        pending = 0; /* no server has created the group yet */
    } else if ((st = REDIS_CHECK(c->ctx, r, REDIS_REPLY_ARRAY, "XPENDING", err)) != GLM_OK) {
        if (r) freeReplyObject(r);
        return st;
    } else if (r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER) {
        pending = r->element[0]->integer;
    }
    if (r) freeReplyObject(r);
    /* Finished entries are deleted from the stream, so XLEN counts waiting + running jobs. */
    fprintf(out, "queue depth: %lld\n", depth);
    fprintf(out, "pending: %lld\n", pending);
    fprintf(out, "waiting: %lld\n", depth - pending > 0 ? depth - pending : 0);
    fprintf(out, "dead letters: %lld\n", n_dead);
    return GLM_OK;
}
