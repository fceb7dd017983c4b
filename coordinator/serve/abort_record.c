/* Watchdog aborts recorded in Redis (see abort_record.h). */
#include "coordinator/serve/abort_record.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/queue/redis_conn.h"
#include "coordinator/serve/metrics.h"

#define KEY_LEN 512
#define REASON_LEN 1024

/* What the writing thread needs, owned jointly by it and the caller: the last one to let go
 * frees it, so a caller that stopped waiting never frees memory the thread still uses. */
typedef struct job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    glm_status st;
    glm_error err;
    glm_redis_url url;
    char password[256];
    char counts_key[KEY_LEN], last_key[KEY_LEN], server_id[256];
    char reason[REASON_LEN];
    char unix_ms[32];
    int timeout_ms;
} job;

static glm_status connect_to(const glm_redis_url *url, const char *password, int timeout_ms,
                             redisContext **c, glm_error *err)
{
    return glm_redis_connect(url, password && *password ? password : NULL, timeout_ms, timeout_ms,
                             c, err);
}

static glm_status write_record(job *j)
{
    redisContext *c = NULL;
    glm_status st = connect_to(&j->url, j->password, j->timeout_ms, &c, &j->err);
    if (st) return st;
    redisReply *r = redisCommand(c, "HINCRBY %s %s 1", j->counts_key, j->server_id);
    st = REDIS_CHECK(c, r, REDIS_REPLY_INTEGER, "HINCRBY watchdog_aborts", &j->err);
    if (r) freeReplyObject(r);
    if (!st) {
        r = redisCommand(c, "HSET %s reason %s unix_ms %s", j->last_key, j->reason, j->unix_ms);
        st = REDIS_CHECK(c, r, REDIS_REPLY_INTEGER, "HSET watchdog_abort", &j->err);
        if (r) freeReplyObject(r);
    }
    redisFree(c);
    return st;
}

static void release(job *j)
{
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    memset(j->password, 0, sizeof(j->password));
    memset(&j->url, 0, sizeof(j->url));
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void *writer(void *arg)
{
    job *j = arg;
    glm_status st = write_record(j);
    pthread_mutex_lock(&j->mu);
    j->st = st;
    j->done = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    release(j);
    return NULL;
}

static glm_status keys_for(const glm_abort_target *t, char *counts, char *last, glm_error *err)
{
    if (!t->prefix || !t->server_id || !t->redis_url)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "abort record: no Redis, prefix or server id");
    int a = snprintf(counts, KEY_LEN, "%s:watchdog_aborts", t->prefix);
    int b = snprintf(last, KEY_LEN, "%s:watchdog_abort:%s", t->prefix, t->server_id);
    if (a < 0 || a >= KEY_LEN || b < 0 || b >= KEY_LEN)
        return glm_fail(err, GLM_ERR_LIMIT, "abort record: prefix or server id too long");
    return GLM_OK;
}

glm_status glm_abort_record_write(const glm_abort_target *t, const char *reason, int budget_ms,
                                  glm_error *err)
{
    job *j = calloc(1, sizeof(*j));
    if (!j) return glm_fail(err, GLM_ERR_NOMEM, "abort record: out of host memory");
    glm_status st = keys_for(t, j->counts_key, j->last_key, err);
    if (!st) st = glm_redis_url_parse(t->redis_url, &j->url, err);
    if (st) {
        free(j);
        return st;
    }
    snprintf(j->server_id, sizeof(j->server_id), "%s", t->server_id);
    snprintf(j->password, sizeof(j->password), "%s", t->password ? t->password : "");
    snprintf(j->reason, sizeof(j->reason), "%s", reason ? reason : "");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(j->unix_ms, sizeof(j->unix_ms), "%lld",
             (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    /* each Redis step gets the budget's share; the wait below bounds the sum, and name
     * resolution, which has no timeout of its own */
    j->timeout_ms = budget_ms / 4 > 50 ? budget_ms / 4 : 50;
    j->refs = 2;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&j->mu, NULL);

    pthread_t th;
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &ta, writer, j);
    pthread_attr_destroy(&ta);
    if (rc != 0) {
        j->refs = 1;
        release(j);
        return glm_fail(err, GLM_ERR_NOMEM, "abort record: cannot start a thread");
    }

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += budget_ms / 1000;
    until.tv_nsec += (long)(budget_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &until) != 0) break;
    if (j->done) {
        st = j->st;
        if (st && err) *err = j->err;
    } else {
        st = glm_fail(err, GLM_ERR_TIMEOUT, "abort record: Redis did not answer in %d ms",
                      budget_ms);
    }
    pthread_mutex_unlock(&j->mu);
    release(j);
    return st;
}

glm_status glm_abort_record_read(const glm_abort_target *t, int timeout_ms, uint64_t *count,
                                 glm_error *err)
{
    *count = 0;
    char counts[KEY_LEN], last[KEY_LEN];
    glm_status st = keys_for(t, counts, last, err);
    glm_redis_url url;
    if (!st) st = glm_redis_url_parse(t->redis_url, &url, err);
    if (st) return st;
    redisContext *c = NULL;
    st = connect_to(&url, t->password, timeout_ms, &c, err);
    memset(&url, 0, sizeof(url));
    if (st) return st;
    redisReply *r = redisCommand(c, "HGET %s %s", counts, t->server_id);
    st = REDIS_CHECK(c, r, REDIS_REPLY_STRING, "HGET watchdog_aborts", err);
    if (!st && r->type == REDIS_REPLY_STRING) {
        char *end = NULL;
        unsigned long long v = strtoull(r->str, &end, 10);
        if (end == r->str || *end)
            st = glm_fail(err, GLM_ERR_FORMAT, "%s %s: not a count", counts, t->server_id);
        else
            *count = v;
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return st;
}

void glm_abort_record_seed(const glm_abort_target *t, glm_metrics *m)
{
    uint64_t n = 0;
    glm_error err = {0};
    if (glm_abort_record_read(t, 1000, &n, &err)) {
        fprintf(stderr, "glm4v-serve: %s: watchdog aborts of earlier runs not read: %s\n",
                t->server_id, err.msg);
        return;
    }
    if (n) glm_metrics_inc(m, GLM_COUNTER_WATCHDOG_ABORTS, n);
}

void glm_abort_record_now(const glm_abort_target *t, glm_metrics *m, const char *reason,
                          int budget_ms)
{
    glm_metrics_inc(m, GLM_COUNTER_WATCHDOG_ABORTS, 1);
    glm_error err = {0};
    if (glm_abort_record_write(t, reason, budget_ms, &err))
        fprintf(stderr, "glm4v-serve: %s: watchdog abort not recorded in Redis: %s\n", t->server_id,
                err.msg);
    else
        fprintf(stderr, "glm4v-serve: %s: watchdog abort recorded (%s:watchdog_aborts)\n",
                t->server_id, t->prefix);
}
