/* Redis side of the gateway (see gw_queue.h). */
#include "client/gateway/gw_queue.h"

#include "coordinator/queue/redis_conn.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX_IDLE 64
#define SERVERS_CACHE_MS 1000

struct gw_queue {
    char url[512], password[512], prefix[64];
    int timeout_ms;
    pthread_mutex_t lock; /* guards idle[] and the servers cache */
    redisContext *idle[POOL_MAX_IDLE];
    int n_idle;
    long long servers_checked_ms;
    bool servers_live;
};

glm_status gw_queue_create(const char *url, const char *password, const char *prefix,
                           int timeout_ms, gw_queue **out, glm_error *err)
{
    *out = NULL;
    gw_queue *q = calloc(1, sizeof *q);
    if (!q) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    if (strlen(url) >= sizeof q->url || (password && strlen(password) >= sizeof q->password)) {
        free(q);
        return glm_fail(err, GLM_ERR_INVALID_ARG, "Redis URL or password too long");
    }
    snprintf(q->url, sizeof q->url, "%s", url);
    snprintf(q->password, sizeof q->password, "%s", password ? password : "");
    snprintf(q->prefix, sizeof q->prefix, "%s", prefix);
    q->timeout_ms = timeout_ms;
    q->servers_checked_ms = -SERVERS_CACHE_MS;
    pthread_mutex_init(&q->lock, NULL);
    redisContext *ctx = NULL;
    glm_status st = glm_redis_client_connect(url, q->password[0] ? q->password : NULL, prefix,
                                             sizeof q->prefix, timeout_ms, &ctx, err);
    if (st == GLM_ERR_IO || st == GLM_ERR_LIMIT) {
        /* Redis down or still loading: start anyway (requests get 502, /health 503, until it
         * answers), as a replica does; a bad URL or password stays fatal */
        fprintf(stderr, "glm4v-gateway: warning: %s; serving anyway, retrying per request\n",
                err->msg);
        *out = q;
        return GLM_OK;
    }
    if (st != GLM_OK) {
        gw_queue_destroy(q);
        return st;
    }
    gw_queue_release(q, ctx, true);
    *out = q;
    return GLM_OK;
}

void gw_queue_destroy(gw_queue *q)
{
    if (!q) return;
    for (int i = 0; i < q->n_idle; i++)
        redisFree(q->idle[i]);
    memset(q->password, 0, sizeof q->password);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

/* An idle connection has nothing to read: readable, hung up or in error means Redis closed it
 * (a restart, a timeout, CLIENT KILL) while it sat in the pool. One poll, no round trip. */
static bool stale(const redisContext *ctx)
{
    struct pollfd p = {.fd = ctx->fd, .events = POLLIN | POLLRDHUP};
    return ctx->err || poll(&p, 1, 0) != 0;
}

glm_status gw_queue_acquire(gw_queue *q, redisContext **ctx, glm_error *err)
{
    for (;;) { /* after a Redis restart every pooled connection is dead: each drew a 502 */
        pthread_mutex_lock(&q->lock);
        *ctx = q->n_idle > 0 ? q->idle[--q->n_idle] : NULL;
        pthread_mutex_unlock(&q->lock);
        if (!*ctx || !stale(*ctx)) break;
        redisFree(*ctx);
    }
    if (*ctx) return GLM_OK;
    return glm_redis_client_connect(q->url, q->password[0] ? q->password : NULL, q->prefix,
                                    sizeof q->prefix, q->timeout_ms, ctx, err);
}

void gw_queue_release(gw_queue *q, redisContext *ctx, bool healthy)
{
    if (!ctx) return;
    if (healthy && !ctx->err) {
        glm_redis_set_timeout(ctx, q->timeout_ms);
        pthread_mutex_lock(&q->lock);
        if (q->n_idle < POOL_MAX_IDLE) {
            q->idle[q->n_idle++] = ctx;
            ctx = NULL;
        }
        pthread_mutex_unlock(&q->lock);
    }
    if (ctx) redisFree(ctx);
}

glm_status gw_queue_depth(gw_queue *q, redisContext *ctx, long long *depth, glm_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s:jobs", q->prefix);
    redisReply *r = redisCommandArgv(ctx, 2, (const char *[]){"XLEN", key}, NULL);
    glm_status st = REDIS_CHECK(ctx, r, REDIS_REPLY_INTEGER, "XLEN jobs", err);
    *depth = st == GLM_OK && r ? r->integer : 0;
    if (r) freeReplyObject(r);
    return st;
}

static glm_status scan_servers(gw_queue *q, redisContext *ctx, bool *live, glm_error *err)
{
    char match[128], cursor[32] = "0";
    snprintf(match, sizeof match, "%s:server:*", q->prefix);
    *live = false;
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", match, "COUNT", "1000"};
        redisReply *r = redisCommandArgv(ctx, 6, argv, NULL);
        glm_status st = REDIS_CHECK(ctx, r, REDIS_REPLY_ARRAY, "SCAN servers", err);
        if (st != GLM_OK || r->elements != 2) {
            if (r) freeReplyObject(r);
            return st != GLM_OK ? st : glm_fail(err, GLM_ERR_FORMAT, "SCAN: odd reply");
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        *live = r->element[1]->elements > 0;
        freeReplyObject(r);
    } while (!*live && strcmp(cursor, "0") != 0);
    return GLM_OK;
}

glm_status gw_queue_servers_live(gw_queue *q, redisContext *ctx, bool *live, glm_error *err)
{
    long long now = glm_now_mono_ms();
    pthread_mutex_lock(&q->lock);
    bool fresh = now - q->servers_checked_ms < SERVERS_CACHE_MS;
    *live = q->servers_live;
    pthread_mutex_unlock(&q->lock);
    if (fresh) return GLM_OK;
    glm_status st = scan_servers(q, ctx, live, err);
    if (st != GLM_OK) return st;
    pthread_mutex_lock(&q->lock);
    q->servers_live = *live;
    q->servers_checked_ms = now;
    pthread_mutex_unlock(&q->lock);
    return GLM_OK;
}

glm_status gw_queue_submit(gw_queue *q, redisContext *ctx, const char *job_id, const void *job,
                           size_t len, bool *drop, glm_error *err)
{
    *drop = false;
    if (!glm_job_id_valid(job_id)) return glm_fail(err, GLM_ERR_INVALID_ARG, "invalid job id");
    char key[128];
    snprintf(key, sizeof key, "%s:jobs", q->prefix);
    const char *argv[] = {"XADD", key, "*", "job", job, "id", job_id};
    size_t lens[] = {4, strlen(key), 1, 3, len, 2, strlen(job_id)};
    redisReply *r = redisCommandArgv(ctx, 7, argv, lens);
    glm_status st = REDIS_CHECK(ctx, r, REDIS_REPLY_STRING, "XADD job", err);
    glm_redis_refusal why =
        st == GLM_ERR_LIMIT && r ? glm_redis_refusal_of(r) : GLM_REDIS_NOT_REFUSED;
    *drop = why == GLM_REDIS_READONLY || why == GLM_REDIS_MASTERDOWN;
    if (r) freeReplyObject(r);
    return st;
}

glm_status gw_queue_cancel(gw_queue *q, redisContext *ctx, const char *job_id, int ttl_s,
                           glm_error *err)
{
    char key[256], ttl[24];
    snprintf(key, sizeof key, "%s:cancel:%s", q->prefix, job_id);
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    redisReply *r = redisCommandArgv(ctx, 5, (const char *[]){"SET", key, "1", "EX", ttl}, NULL);
    glm_status st = REDIS_CHECK(ctx, r, REDIS_REPLY_STATUS, "SET cancel", err);
    if (r) freeReplyObject(r);
    return st;
}

void gw_events_free(gw_event *events, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (events[i].chunk) glm_chunk_free(events[i].chunk);
        if (events[i].result) glm_result_free(events[i].result);
        events[i] = (gw_event){0};
    }
}

/* One out-stream entry [id, [field, value]] -> event; false when it does not decode. */
static bool decode_entry(const redisReply *e, gw_event *ev)
{
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return false;
    glm_error err = {0};
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        if (strcmp(k->str, "chunk") == 0)
            return glm_chunk_decode(v->str, v->len, &ev->chunk, &err) == GLM_OK;
        if (strcmp(k->str, "result") == 0)
            return glm_result_decode(v->str, v->len, &ev->result, &err) == GLM_OK;
    }
    return false;
}

glm_status gw_queue_read(gw_queue *q, redisContext *ctx, const char *job_id, char cursor[48],
                         int block_ms, gw_event *events, size_t *n, glm_error *err)
{
    *n = 0;
    char key[256], block[24], count[8];
    snprintf(key, sizeof key, "%s:out:%s", q->prefix, job_id);
    snprintf(block, sizeof block, "%d", block_ms > 0 ? block_ms : 1);
    snprintf(count, sizeof count, "%d", GW_MAX_EVENTS);
    const char *argv[] = {"XREAD", "COUNT", count, "BLOCK", block, "STREAMS", key, cursor};
    glm_redis_set_timeout(ctx, q->timeout_ms + (block_ms > 0 ? block_ms : 1));
    redisReply *r = redisCommandArgv(ctx, 8, argv, NULL);
    glm_status st = REDIS_CHECK(ctx, r, REDIS_REPLY_ARRAY, "XREAD results", err);
    if (st != GLM_OK || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        if (r) freeReplyObject(r);
        return st; /* error, or nothing within block_ms */
    }
    const redisReply *entries = r->element[0]->element[1];
    for (size_t i = 0; i < entries->elements && *n < GW_MAX_EVENTS; i++) {
        const redisReply *e = entries->element[i];
        snprintf(cursor, 48, "%s", e->element[0]->str);
        events[*n] = (gw_event){0};
        if (decode_entry(e, &events[*n]))
            (*n)++;
        else
            fprintf(stderr, "glm4v-gateway: job %s: skipping undecodable entry %s\n", job_id,
                    e->element[0]->str);
    }
    freeReplyObject(r);
    return GLM_OK;
}
