/* Redis side of glm4v-sweep (see sweep_queue.h). */
#include "client/sweep_queue.h"

#include "coordinator/queue/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Result-stream entries read per stream per XREAD: enough to get past a burst of Chunks. */
#define ENTRIES_PER_READ "256"
#define PREFIX_MAX 64

struct sweep_queue {
    redisContext *ctx;
    char prefix[PREFIX_MAX];
    int timeout_ms;
};

glm_status sweep_queue_connect(const char *url, const char *password, const char *prefix,
                               int timeout_ms, sweep_queue **out, glm_error *err)
{
    *out = NULL;
    redisContext *ctx = NULL;
    glm_status st =
        glm_redis_client_connect(url, password, prefix, PREFIX_MAX, timeout_ms, &ctx, err);
    if (st != GLM_OK) return st;
    sweep_queue *q = calloc(1, sizeof *q);
    if (!q) {
        redisFree(ctx);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    q->ctx = ctx;
    snprintf(q->prefix, sizeof q->prefix, "%s", prefix);
    q->timeout_ms = timeout_ms;
    *out = q;
    return GLM_OK;
}

void sweep_queue_destroy(sweep_queue *q)
{
    if (!q) return;
    if (q->ctx) redisFree(q->ctx);
    free(q);
}

static void out_key(const sweep_queue *q, const char *job_id, char *key, size_t cap)
{
    snprintf(key, cap, "%s:out:%s", q->prefix, job_id);
}

/* The Result of one stream entry [id, [field, value, ...]], or NULL for a Chunk. An entry that does
 * not decode is reported and treated as missing (the job then runs into its timeout). */
static glm_result *entry_result(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) return NULL;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || strcmp(k->str, "result") != 0) continue;
        glm_result *r = NULL;
        glm_error err = {0};
        if (glm_result_decode(v->str, v->len, &r, &err) == GLM_OK) return r;
        fprintf(stderr, "glm4v-sweep: skipping result entry %s: %s\n", e->element[0]->str, err.msg);
    }
    return NULL;
}

glm_status sweep_queue_lookup(sweep_queue *q, const char *const *job_ids, size_t n,
                              glm_result **results, glm_error *err)
{
    char key[256];
    for (size_t i = 0; i < n; i++)
        results[i] = NULL;
    for (size_t i = 0; i < n; i++) {
        out_key(q, job_ids[i], key, sizeof key);
        const char *argv[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
        if (redisAppendCommandArgv(q->ctx, 6, argv, NULL) != REDIS_OK)
            return glm_fail(err, GLM_ERR_IO, "queueing XREVRANGE: %s", q->ctx->errstr);
    }
    glm_status st = GLM_OK;
    /* read every reply, even after a failure, so the connection stays in step */
    for (size_t i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(q->ctx, &reply) != REDIS_OK) reply = NULL;
        redisReply *r = reply;
        glm_status rs = REDIS_CHECK(q->ctx, r, REDIS_REPLY_ARRAY, "XREVRANGE result", err);
        if (rs == GLM_OK && r && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
            results[i] = entry_result(r->element[0]);
        if (r) freeReplyObject(r);
        if (rs != GLM_OK) {
            st = rs;
            if (!r) break; /* the connection is gone */
        }
    }
    return st;
}

glm_status sweep_queue_submit(sweep_queue *q, const char *job_id, const void *job, size_t len,
                              glm_error *err)
{
    if (!glm_job_id_valid(job_id)) return glm_fail(err, GLM_ERR_INVALID_ARG, "invalid job id");
    char key[128];
    snprintf(key, sizeof key, "%s:jobs", q->prefix);
    const char *argv[] = {"XADD", key, "*", "job", job, "id", job_id};
    size_t lens[] = {4, strlen(key), 1, 3, len, 2, strlen(job_id)};
    redisReply *r = redisCommandArgv(q->ctx, 7, argv, lens);
    glm_status st = REDIS_CHECK(q->ctx, r, REDIS_REPLY_STRING, "XADD job", err);
    if (r) freeReplyObject(r);
    return st;
}

/* The index of the job whose result stream is key, searching from *hint (XREAD answers in the
 * order it was asked, so the next match is usually right after the last one). */
static size_t find_job(const sweep_queue *q, const sweep_flight *jobs, size_t n, const char *key,
                       size_t *hint)
{
    size_t plen = strlen(q->prefix);
    if (strncmp(key, q->prefix, plen) != 0 || strncmp(key + plen, ":out:", 5) != 0) return n;
    const char *id = key + plen + 5;
    for (size_t k = 0; k < n; k++) {
        size_t i = (*hint + k) % n;
        if (strcmp(jobs[i].job_id, id) == 0) {
            *hint = i + 1;
            return i;
        }
    }
    return n;
}

/* Takes one XREAD reply apart: advances cursors, collects Results. */
static void read_streams(const sweep_queue *q, const redisReply *r, sweep_flight *jobs, size_t n,
                         glm_result **results)
{
    size_t hint = 0;
    for (size_t s = 0; s < r->elements; s++) {
        const redisReply *stream = r->element[s];
        if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) continue;
        size_t i = find_job(q, jobs, n, stream->element[0]->str, &hint);
        const redisReply *entries = stream->element[1];
        if (i == n || entries->type != REDIS_REPLY_ARRAY) continue;
        for (size_t e = 0; e < entries->elements; e++) {
            const redisReply *entry = entries->element[e];
            if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 1) continue;
            snprintf(jobs[i].cursor, sizeof jobs[i].cursor, "%s", entry->element[0]->str);
            if (results[i]) continue; /* nothing follows a Result; keep the first */
            results[i] = entry_result(entry);
        }
    }
}

glm_status sweep_queue_poll(sweep_queue *q, sweep_flight *jobs, size_t n, int block_ms,
                            glm_result **results, glm_error *err)
{
    for (size_t i = 0; i < n; i++)
        results[i] = NULL;
    if (n == 0) return GLM_OK;
    size_t argc = 6 + 2 * n;
    const char **argv = malloc(argc * sizeof *argv);
    char *keys = malloc(n * 256);
    if (!argv || !keys) {
        free(argv);
        free(keys);
        return glm_fail(err, GLM_ERR_NOMEM, "XREAD of %zu streams", n);
    }
    char block[24];
    snprintf(block, sizeof block, "%d", block_ms > 0 ? block_ms : 1);
    argv[0] = "XREAD";
    argv[1] = "COUNT";
    argv[2] = ENTRIES_PER_READ;
    argv[3] = "BLOCK";
    argv[4] = block;
    argv[5] = "STREAMS";
    for (size_t i = 0; i < n; i++) {
        out_key(q, jobs[i].job_id, keys + i * 256, 256);
        argv[6 + i] = keys + i * 256;
        argv[6 + n + i] = jobs[i].cursor;
    }
    glm_redis_set_timeout(q->ctx, q->timeout_ms + (block_ms > 0 ? block_ms : 1));
    redisReply *r = redisCommandArgv(q->ctx, (int)argc, argv, NULL);
    glm_redis_set_timeout(q->ctx, q->timeout_ms);
    glm_status st = REDIS_CHECK(q->ctx, r, REDIS_REPLY_ARRAY, "XREAD results", err);
    if (st == GLM_OK && r && r->type == REDIS_REPLY_ARRAY) read_streams(q, r, jobs, n, results);
    if (r) freeReplyObject(r);
    free(argv);
    free(keys);
    return st;
}
