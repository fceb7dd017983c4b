/* Server side of the Redis job protocol (see redis_queue.h). */
#include "coordinator/queue/redis_queue.h"

#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_scripts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_MAX 256
/* A Result the server keeps rejecting (not a lost connection) is given up after this many tries;
 * the job then stays pending and is re-delivered or dead-lettered by the claim path. */
#define OUTBOX_MAX_REPLY_FAILURES 16

typedef struct outbox_item {
    char entry_id[48];
    char job_id[GLM_JOB_ID_MAX + 1];
    uint8_t *bytes;
    size_t len;
    int reply_failures;
} outbox_item;

struct glm_queue {
    glm_queue_config cfg;
    char prefix[64];
    char server_id[128];
    char version[128];
    char *password; /* NULL: the URL's */
    glm_redis_url url;
    char key_jobs[KEY_MAX], key_group[KEY_MAX], key_dead[KEY_MAX], key_server[KEY_MAX];

    redisContext *ctx; /* NULL while disconnected */
    glm_redis_scripts scripts;
    long long next_connect_ms;
    int backoff_ms;
    bool group_wanted;
    bool reading;
    char claim_cursor[48];

    outbox_item *outbox;
    size_t n_outbox, cap_outbox;

    long long last_heartbeat_ms;
    long long started_unix_ms;
    glm_server_load last_load;
    size_t duplicates, dead;
};

glm_queue_config glm_queue_config_default(void)
{
    glm_queue_config c = {
        .url = "redis://127.0.0.1:6379",
        .prefix = "glm4v",
        .server_id = "glm4v-serve",
        .server_version = "",
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 5000,
        .visibility_timeout_ms = 60000,
        .max_deliveries = 3,
        .result_ttl_s = 86400,
        .done_ttl_s = 86400,
        .liveness_ttl_s = 15,
        .liveness_interval_ms = 5000,
        .backoff_initial_ms = 100,
        .backoff_max_ms = 5000,
        .outbox_max = 4096,
    };
    return c;
}

void glm_queue_job_clear(glm_queue_job *job)
{
    free(job->bytes);
    memset(job, 0, sizeof *job);
}

/* ---- connection
 * ---------------------------------------------------------------------------------- */

static void drop_connection(glm_queue *q)
{
    if (q->ctx) redisFree(q->ctx);
    q->ctx = NULL;
    q->next_connect_ms = glm_now_mono_ms() + q->backoff_ms;
    q->backoff_ms =
        q->backoff_ms * 2 > q->cfg.backoff_max_ms ? q->cfg.backoff_max_ms : q->backoff_ms * 2;
}

/* Checks a reply; a lost connection (NULL reply) drops the context so a later call reconnects. */
static glm_status check(glm_queue *q, redisReply *r, int type, const char *what, glm_error *err)
{
    glm_status st = REDIS_CHECK(q->ctx, r, type, what, err);
    if (!r) drop_connection(q);
    return st;
}

static glm_status create_group(glm_queue *q, glm_error *err)
{
    const char *argv[] = {"XGROUP", "CREATE", q->key_jobs, q->key_group, "0", "MKSTREAM"};
    redisReply *r = redisCommandArgv(q->ctx, 6, argv, NULL);
    glm_status st = glm_redis_is_error(r, "BUSYGROUP")
                        ? GLM_OK
                        : check(q, r, REDIS_REPLY_STATUS, "XGROUP CREATE", err);
    if (r) freeReplyObject(r);
    return st;
}

static void flush_outbox(glm_queue *q);

/* Makes sure q->ctx is usable: connects when disconnected and the backoff delay has passed. */
static glm_status queue_conn(glm_queue *q, glm_error *err)
{
    if (q->ctx) return GLM_OK;
    long long now = glm_now_mono_ms();
    if (now < q->next_connect_ms)
        return glm_fail(err, GLM_ERR_IO, "redis %s:%d unreachable; next reconnect in %lld ms",
                        q->url.host, q->url.port, q->next_connect_ms - now);
    glm_status st = glm_redis_connect(&q->url, q->password, q->cfg.connect_timeout_ms,
                                      q->cfg.command_timeout_ms, &q->ctx, err);
    if (st != GLM_OK) {
        drop_connection(q);
        return GLM_ERR_IO;
    }
    q->backoff_ms = q->cfg.backoff_initial_ms;
    memset(&q->scripts, 0, sizeof q->scripts);
    if (q->group_wanted && (st = create_group(q, err)) != GLM_OK) {
        if (q->ctx) drop_connection(q);
        return GLM_ERR_IO;
    }
    flush_outbox(q);
    return q->ctx ? GLM_OK : glm_fail(err, GLM_ERR_IO, "redis connection lost after reconnect");
}

glm_status glm_queue_create(const glm_queue_config *cfg, glm_queue **out, glm_error *err)
{
    *out = NULL;
    glm_queue *q = calloc(1, sizeof *q);
    if (!q) return glm_fail(err, GLM_ERR_NOMEM, "glm_queue_create");
    q->cfg = *cfg;
    glm_status st = glm_redis_url_parse(cfg->url, &q->url, err);
    if (st == GLM_OK && (!cfg->prefix || !*cfg->prefix || strlen(cfg->prefix) >= sizeof q->prefix))
        st = glm_fail(err, GLM_ERR_INVALID_ARG, "queue prefix must be 1..%zu bytes",
                      sizeof q->prefix - 1);
    if (st == GLM_OK &&
        (!glm_job_id_valid(cfg->server_id) || strlen(cfg->server_id) >= sizeof q->server_id))
        st = glm_fail(err, GLM_ERR_INVALID_ARG,
                      "server id must be 1..127 bytes of [A-Za-z0-9._:@/-]");
    if (st == GLM_OK && cfg->password && !(q->password = strdup(cfg->password)))
        st = glm_fail(err, GLM_ERR_NOMEM, "glm_queue_create");
    if (st != GLM_OK) {
        free(q);
        return st;
    }
    snprintf(q->prefix, sizeof q->prefix, "%s", cfg->prefix);
    snprintf(q->server_id, sizeof q->server_id, "%s", cfg->server_id);
    snprintf(q->version, sizeof q->version, "%s", cfg->server_version ? cfg->server_version : "");
    snprintf(q->key_jobs, KEY_MAX, "%s:jobs", q->prefix);
    snprintf(q->key_group, KEY_MAX, "%s:servers", q->prefix);
    snprintf(q->key_dead, KEY_MAX, "%s:dead", q->prefix);
    snprintf(q->key_server, KEY_MAX, "%s:server:%s", q->prefix, q->server_id);
    q->backoff_ms = cfg->backoff_initial_ms > 0 ? cfg->backoff_initial_ms : 100;
    q->reading = true;
    q->started_unix_ms = glm_now_unix_ms();
    strcpy(q->claim_cursor, "0-0");
    st = queue_conn(q, err);
    if (st != GLM_OK) {
        glm_queue_destroy(q);
        return st;
    }
    *out = q;
    return GLM_OK;
}

void glm_queue_destroy(glm_queue *q)
{
    if (!q) return;
    if (q->ctx) {
        flush_outbox(q);
        if (q->ctx) {
            redisReply *r = redisCommand(q->ctx, "DEL %s", q->key_server);
            if (r) freeReplyObject(r);
        }
    }
    if (q->n_outbox)
        fprintf(stderr, "glm_queue %s: %zu finished results could not be written to Redis\n",
                q->server_id, q->n_outbox);
    for (size_t i = 0; i < q->n_outbox; i++)
        free(q->outbox[i].bytes);
    free(q->outbox);
    if (q->ctx) redisFree(q->ctx);
    if (q->password) {
        memset(q->password, 0, strlen(q->password));
        free(q->password);
    }
    memset(&q->url, 0, sizeof q->url);
    free(q);
}

glm_status glm_queue_ensure_group(glm_queue *q, glm_error *err)
{
    q->group_wanted = true;
    glm_status st = queue_conn(q, err);
    return st != GLM_OK ? st : create_group(q, err);
}

bool glm_queue_connected(const glm_queue *q)
{
    return q->ctx != NULL;
}

size_t glm_queue_outbox_size(const glm_queue *q)
{
    return q->n_outbox;
}

size_t glm_queue_duplicates(const glm_queue *q)
{
    return q->duplicates;
}

size_t glm_queue_dead_count(const glm_queue *q)
{
    return q->dead;
}

void glm_queue_stop_reading(glm_queue *q)
{
    q->reading = false;
}

bool glm_queue_reading(const glm_queue *q)
{
    return q->reading;
}

/* ---- reading
 * ------------------------------------------------------------------------------------- */

/* Fills job from one stream entry reply: [id, [field, value, ...]]. */
static glm_status parse_entry(const redisReply *e, glm_queue_job *job, glm_error *err)
{
    memset(job, 0, sizeof *job);
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= sizeof job->entry_id)
        return glm_fail(err, GLM_ERR_FORMAT, "unexpected stream entry shape");
    memcpy(job->entry_id, e->element[0]->str, e->element[0]->len);
    job->deliveries = 1;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return GLM_OK; /* entry deleted meanwhile: no fields */
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        if (k->len == 3 && memcmp(k->str, "job", 3) == 0 && !job->bytes) {
            job->bytes = malloc(v->len ? v->len : 1);
            if (!job->bytes) return glm_fail(err, GLM_ERR_NOMEM, "job of %zu bytes", v->len);
            memcpy(job->bytes, v->str, v->len);
            job->len = v->len;
        } else if (k->len == 2 && memcmp(k->str, "id", 2) == 0 && v->len <= GLM_JOB_ID_MAX) {
            memcpy(job->job_id, v->str, v->len);
            job->job_id[v->len] = '\0';
            if (!glm_job_id_valid(job->job_id)) job->job_id[0] = '\0';
        }
    }
    return GLM_OK;
}

glm_status glm_queue_read(glm_queue *q, size_t max_jobs, int block_ms, glm_queue_job *jobs,
                          size_t *n_jobs, glm_error *err)
{
    *n_jobs = 0;
    if (!q->reading || max_jobs == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char count[24], block[24];
    snprintf(count, sizeof count, "%zu", max_jobs);
    snprintf(block, sizeof block, "%d", block_ms > 0 ? block_ms : 0);
    /* With work running the read must not block at all: BLOCK 0 waits forever, and even BLOCK 1
     * waits up to a Redis cron tick (100 ms at hz 10), so a busy server polls without BLOCK. */
    const char *blocking[] = {"XREADGROUP", "GROUP", q->key_group, q->server_id, "COUNT", count,
                              "BLOCK",      block,   "STREAMS",    q->key_jobs,  ">"};
    const char *polling[] = {"XREADGROUP", "GROUP",   q->key_group, q->server_id, "COUNT",
                             count,        "STREAMS", q->key_jobs,  ">"};
    glm_redis_set_timeout(q->ctx, q->cfg.command_timeout_ms + (block_ms > 0 ? block_ms : 0));
    redisReply *r = block_ms > 0 ? redisCommandArgv(q->ctx, 11, blocking, NULL)
                                 : redisCommandArgv(q->ctx, 9, polling, NULL);
    if (q->ctx) glm_redis_set_timeout(q->ctx, q->cfg.command_timeout_ms);
    if (glm_redis_is_error(r, "NOGROUP")) { /* Redis lost its data (no persistence): recreate */
        freeReplyObject(r);
        q->group_wanted = true;
        return create_group(q, err);
    }
    st = check(q, r, REDIS_REPLY_ARRAY, "XREADGROUP", err);
    if (st == GLM_OK && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        const redisReply *stream = r->element[0];
        const redisReply *entries = stream->elements == 2 ? stream->element[1] : NULL;
        for (size_t i = 0; entries && i < entries->elements && *n_jobs < max_jobs; i++) {
            st = parse_entry(entries->element[i], &jobs[*n_jobs], err);
            if (st != GLM_OK) break;
            (*n_jobs)++;
        }
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_claim(glm_queue *q, size_t max_jobs, glm_queue_job *jobs, size_t *n_jobs,
                           size_t *n_dead, glm_error *err)
{
    *n_jobs = 0;
    if (n_dead) *n_dead = 0;
    if (!q->reading || max_jobs == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char idle[24], count[24], maxd[24], rttl[24], dttl[24];
    snprintf(idle, sizeof idle, "%d", q->cfg.visibility_timeout_ms);
    snprintf(count, sizeof count, "%zu", max_jobs);
    snprintf(maxd, sizeof maxd, "%d", q->cfg.max_deliveries);
    snprintf(rttl, sizeof rttl, "%d", q->cfg.result_ttl_s);
    snprintf(dttl, sizeof dttl, "%d", q->cfg.done_ttl_s);
    const char *args[] = {
        q->key_jobs, q->key_dead, q->key_group, q->server_id, idle, q->claim_cursor,
        count,       maxd,        q->prefix,    rttl,         dttl};
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_CLAIM, 2, 11, args, NULL);
    if (glm_redis_is_error(r, "NOGROUP")) {
        freeReplyObject(r);
        q->group_wanted = true;
        return create_group(q, err);
    }
    st = check(q, r, REDIS_REPLY_ARRAY, "claim script", err);
    if (st == GLM_OK && (r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING ||
                         r->element[2]->type != REDIS_REPLY_ARRAY))
        st = glm_fail(err, GLM_ERR_FORMAT, "claim script: unexpected reply shape");
    if (st == GLM_OK) {
        snprintf(q->claim_cursor, sizeof q->claim_cursor, "%s", r->element[0]->str);
        size_t dead = (size_t)r->element[1]->integer;
        q->dead += dead;
        if (n_dead) *n_dead = dead;
        const redisReply *list = r->element[2];
        for (size_t i = 0; i < list->elements && *n_jobs < max_jobs; i++) {
            const redisReply *e = list->element[i]; /* {entry id, job id, job bytes, deliveries} */
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 4) continue;
            glm_queue_job *job = &jobs[*n_jobs];
            memset(job, 0, sizeof *job);
            snprintf(job->entry_id, sizeof job->entry_id, "%s", e->element[0]->str);
            snprintf(job->job_id, sizeof job->job_id, "%s", e->element[1]->str);
            job->len = e->element[2]->len;
            job->bytes = malloc(job->len ? job->len : 1);
            if (!job->bytes) {
                st = glm_fail(err, GLM_ERR_NOMEM, "claimed job of %zu bytes", job->len);
                break;
            }
            memcpy(job->bytes, e->element[2]->str, job->len);
            job->deliveries = (uint32_t)e->element[3]->integer;
            (*n_jobs)++;
        }
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_ack_if_done(glm_queue *q, const glm_queue_job *job, bool *done, glm_error *err)
{
    *done = false;
    if (!job->job_id[0]) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char done_key[KEY_MAX];
    snprintf(done_key, sizeof done_key, "%s:done:%s", q->prefix, job->job_id);
    const char *args[] = {q->key_jobs, done_key, q->key_group, job->entry_id};
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_ACK_IF_DONE, 2, 4, args, NULL);
    st = check(q, r, REDIS_REPLY_INTEGER, "ack-if-done script", err);
    if (st == GLM_OK) *done = r->integer == 1;
    if (r) freeReplyObject(r);
    return st;
}

/* ---- writing
 * ------------------------------------------------------------------------------------- */

glm_status glm_queue_write_chunk(glm_queue *q, const char *job_id, const void *chunk, size_t len,
                                 glm_error *err)
{
    if (!glm_job_id_valid(job_id)) return glm_fail(err, GLM_ERR_INVALID_ARG, "chunk: bad job id");
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char key[KEY_MAX], ttl[24];
    snprintf(key, sizeof key, "%s:out:%s", q->prefix, job_id);
    snprintf(ttl, sizeof ttl, "%d", q->cfg.result_ttl_s);
    const char *xadd[] = {"XADD", key, "*", "chunk", chunk};
    size_t xadd_len[] = {4, strlen(key), 1, 5, len};
    const char *expire[] = {"EXPIRE", key, ttl};
    /* Pipelined: one round trip for both. */
    redisAppendCommandArgv(q->ctx, 5, xadd, xadd_len);
    redisAppendCommandArgv(q->ctx, 3, expire, NULL);
    redisReply *r1 = NULL, *r2 = NULL;
    if (redisGetReply(q->ctx, (void **)&r1) == REDIS_OK) redisGetReply(q->ctx, (void **)&r2);
    st = check(q, r1, REDIS_REPLY_STRING, "XADD chunk", err);
    if (st == GLM_OK) st = check(q, r2, REDIS_REPLY_INTEGER, "EXPIRE chunk", err);
    if (r1) freeReplyObject(r1);
    if (r2) freeReplyObject(r2);
    return st;
}

glm_status glm_queue_write_chunks(glm_queue *q, size_t n, const char *const *job_ids,
                                  const void *const *chunks, const size_t *lens, glm_error *err)
{
    if (n == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char ttl[24], key[KEY_MAX];
    snprintf(ttl, sizeof ttl, "%d", q->cfg.result_ttl_s);
    size_t queued = 0;
    for (size_t i = 0; i < n; i++) {
        if (!glm_job_id_valid(job_ids[i])) continue;
        snprintf(key, sizeof key, "%s:out:%s", q->prefix, job_ids[i]);
        const char *xadd[] = {"XADD", key, "*", "chunk", chunks[i]};
        size_t xadd_len[] = {4, strlen(key), 1, 5, lens[i]};
        const char *expire[] = {"EXPIRE", key, ttl};
        /* hiredis copies the arguments into its output buffer, so key can be reused */
        redisAppendCommandArgv(q->ctx, 5, xadd, xadd_len);
        redisAppendCommandArgv(q->ctx, 3, expire, NULL);
        queued += 2;
    }
    /* one round trip for the whole step's chunks; every reply is read to keep the stream in
     * sync, the first problem is reported */
    for (size_t k = 0; k < queued; k++) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK) {
            if (st == GLM_OK) st = check(q, NULL, REDIS_REPLY_STRING, "XADD chunks", err);
            break;
        }
        glm_status one =
            check(q, r, k % 2 ? REDIS_REPLY_INTEGER : REDIS_REPLY_STRING, "XADD chunks", err);
        if (st == GLM_OK) st = one;
        if (r) freeReplyObject(r);
    }
    return st;
}

/* Runs the finish script once. GLM_ERR_IO: connection lost; GLM_ERR_FORMAT: Redis refused. */
static glm_status run_finish(glm_queue *q, const char *entry_id, const char *job_id,
                             const void *result, size_t len, glm_finish_outcome *outcome,
                             glm_error *err)
{
    char out_key[KEY_MAX], done_key[KEY_MAX], rttl[24], dttl[24];
    snprintf(out_key, sizeof out_key, "%s:out:%s", q->prefix, job_id);
    snprintf(done_key, sizeof done_key, "%s:done:%s", q->prefix, job_id);
    snprintf(rttl, sizeof rttl, "%d", q->cfg.result_ttl_s);
    snprintf(dttl, sizeof dttl, "%d", q->cfg.done_ttl_s);
    const char *args[] = {q->key_jobs, out_key, done_key, q->key_group,
                          entry_id,    result,  rttl,     dttl};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = i == 5 ? len : strlen(args[i]);
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_FINISH, 3, 8, args, lens);
    glm_status st = check(q, r, REDIS_REPLY_ARRAY, "finish script", err);
    if (st == GLM_OK && (r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER))
        st = glm_fail(err, GLM_ERR_FORMAT, "finish script: unexpected reply shape");
    if (st == GLM_OK) {
        *outcome = r->element[0]->integer == 1 ? GLM_RESULT_WRITTEN : GLM_RESULT_DUPLICATE;
        if (*outcome == GLM_RESULT_DUPLICATE) q->duplicates++;
    }
    if (r) freeReplyObject(r);
    return st;
}

/* Writes held Results, oldest first, until the outbox is empty or the connection drops. */
static void flush_outbox(glm_queue *q)
{
    size_t kept = 0;
    for (size_t i = 0; i < q->n_outbox; i++) {
        outbox_item *it = &q->outbox[i];
        glm_finish_outcome outcome;
        glm_error err = {0};
        glm_status st =
            q->ctx ? run_finish(q, it->entry_id, it->job_id, it->bytes, it->len, &outcome, &err)
                   : GLM_ERR_IO;
        if (st == GLM_OK) {
            free(it->bytes);
            continue;
        }
        if (st != GLM_ERR_IO && ++it->reply_failures >= OUTBOX_MAX_REPLY_FAILURES) {
            fprintf(stderr, "glm_queue %s: giving up on the result of job %s: %s\n", q->server_id,
                    it->job_id, err.msg);
            free(it->bytes);
            continue;
        }
        q->outbox[kept++] = *it;
    }
    q->n_outbox = kept;
}

glm_status glm_queue_finish(glm_queue *q, const char *entry_id, const char *job_id,
                            const void *result, size_t len, glm_finish_outcome *outcome,
                            glm_error *err)
{
    if (!glm_job_id_valid(job_id))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "finish: invalid job id");
    if (!entry_id) entry_id = "";
    if (strlen(entry_id) >= sizeof q->outbox[0].entry_id)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "finish: entry id too long");
    if (q->ctx && q->n_outbox) flush_outbox(q);
    glm_status st = queue_conn(q, err);
    if (st == GLM_OK) st = run_finish(q, entry_id, job_id, result, len, outcome, err);
    if (st == GLM_OK) return GLM_OK;

    if (q->n_outbox >= q->cfg.outbox_max)
        return glm_fail(err, GLM_ERR_LIMIT, "result outbox full (%zu) while Redis is away",
                        q->n_outbox);
    if (q->n_outbox == q->cap_outbox) {
        size_t cap = q->cap_outbox ? 2 * q->cap_outbox : 16;
        outbox_item *grown = realloc(q->outbox, cap * sizeof *grown);
        if (!grown) return glm_fail(err, GLM_ERR_NOMEM, "result outbox");
        q->outbox = grown;
        q->cap_outbox = cap;
    }
    outbox_item *it = &q->outbox[q->n_outbox];
    memset(it, 0, sizeof *it);
    it->bytes = malloc(len ? len : 1);
    if (!it->bytes) return glm_fail(err, GLM_ERR_NOMEM, "result outbox: %zu bytes", len);
    memcpy(it->bytes, result, len);
    it->len = len;
    snprintf(it->entry_id, sizeof it->entry_id, "%s", entry_id);
    snprintf(it->job_id, sizeof it->job_id, "%s", job_id);
    it->reply_failures = st == GLM_ERR_IO ? 0 : 1;
    q->n_outbox++;
    *outcome = GLM_RESULT_QUEUED;
    return GLM_OK;
}

glm_status glm_queue_dead_letter(glm_queue *q, const glm_queue_job *job, const char *reason,
                                 glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    const char *args[] = {q->key_jobs,
                          q->key_dead,
                          q->key_group,
                          job->entry_id,
                          job->bytes ? (const char *)job->bytes : "",
                          reason ? reason : "",
                          q->server_id};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = i == 4 ? (job->bytes ? job->len : 0) : strlen(args[i]);
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_DEAD_LETTER, 2, 7, args, lens);
    st = check(q, r, REDIS_REPLY_INTEGER, "dead-letter script", err);
    if (st == GLM_OK) q->dead++;
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_hand_back(glm_queue *q, const char *entry_id, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char idle[24];
    snprintf(idle, sizeof idle, "%d", q->cfg.visibility_timeout_ms);
    const char *argv[] = {"XCLAIM", q->key_jobs, q->key_group, q->server_id, "0",
                          entry_id, "IDLE",      idle,         "JUSTID"};
    redisReply *r = redisCommandArgv(q->ctx, 9, argv, NULL);
    st = check(q, r, REDIS_REPLY_ARRAY, "XCLAIM hand back", err);
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_touch(glm_queue *q, const char *const *entry_ids, size_t n, glm_error *err)
{
    if (n == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    const char **argv = malloc((n + 6) * sizeof(*argv));
    if (!argv) return glm_fail(err, GLM_ERR_NOMEM, "touch: out of memory");
    size_t k = 0;
    argv[k++] = "XCLAIM";
    argv[k++] = q->key_jobs;
    argv[k++] = q->key_group;
    argv[k++] = q->server_id;
    argv[k++] = "0";
    for (size_t i = 0; i < n; i++)
        argv[k++] = entry_ids[i];
    argv[k++] = "JUSTID"; /* idle back to 0; the delivery count is not touched */
    redisReply *r = redisCommandArgv(q->ctx, (int)k, argv, NULL);
    free(argv);
    st = check(q, r, REDIS_REPLY_ARRAY, "XCLAIM touch", err);
    if (r) freeReplyObject(r);
    return st;
}

/* ---- liveness
 * ------------------------------------------------------------------------------------ */

glm_status glm_queue_heartbeat(glm_queue *q, const glm_server_load *load, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    if (load) q->last_load = *load;
    char host[128] = "";
    gethostname(host, sizeof host - 1);
    cJSON *o = cJSON_CreateObject();
    if (!o) return glm_fail(err, GLM_ERR_NOMEM, "liveness json");
    cJSON_AddStringToObject(o, "id", q->server_id);
    cJSON_AddStringToObject(o, "version", q->version);
    cJSON_AddStringToObject(o, "host", host);
    cJSON_AddNumberToObject(o, "pid", (double)getpid());
    cJSON_AddNumberToObject(o, "running", q->last_load.running);
    cJSON_AddNumberToObject(o, "waiting", q->last_load.waiting);
    cJSON_AddNumberToObject(o, "load", q->last_load.load);
    cJSON_AddNumberToObject(o, "outbox", (double)q->n_outbox);
    cJSON_AddNumberToObject(o, "vision_cache_hits", (double)q->last_load.vision_cache_hits);
    cJSON_AddNumberToObject(o, "vision_cache_misses", (double)q->last_load.vision_cache_misses);
    cJSON_AddBoolToObject(o, "reading", q->reading);
    cJSON_AddNumberToObject(o, "started_ms", (double)q->started_unix_ms);
    cJSON_AddNumberToObject(o, "time_ms", (double)glm_now_unix_ms());
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json) return glm_fail(err, GLM_ERR_NOMEM, "liveness json");
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", q->cfg.liveness_ttl_s);
    const char *argv[] = {"SET", q->key_server, json, "EX", ttl};
    redisReply *r = redisCommandArgv(q->ctx, 5, argv, NULL);
    free(json);
    st = check(q, r, REDIS_REPLY_STATUS, "SET liveness", err);
    if (r) freeReplyObject(r);
    if (st == GLM_OK) q->last_heartbeat_ms = glm_now_mono_ms();
    return st;
}

glm_status glm_queue_tick(glm_queue *q, const glm_server_load *load, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    if (q->n_outbox) flush_outbox(q);
    if (load) q->last_load = *load;
    if (q->ctx && glm_now_mono_ms() - q->last_heartbeat_ms >= q->cfg.liveness_interval_ms)
        st = glm_queue_heartbeat(q, NULL, err);
    if (st == GLM_OK && !q->ctx) st = glm_fail(err, GLM_ERR_IO, "redis connection lost");
    return st;
}
