/* Server side of the Redis job protocol: connection, reading, claiming, beginning a job, liveness
 * (see redis_queue.h; Results and chunks are in redis_outbox.c, held entries in redis_held.c). */
#include "coordinator/queue/redis_queue_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(GLM_REDIS_REFUSAL_KINDS <= 8, "glm_queue_stats.refusals_by_kind is too small");

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
        .outbox_hold_ms = 600000,
        .job_check_interval_ms = 250,
        .dead_max_len = 10000,
        .dead_payload_max = 65536,
        .startup_wait_ms = -1,
        .stop = NULL,
    };
    return c;
}

void glm_queue_job_clear(glm_queue_job *job)
{
    free(job->bytes);
    memset(job, 0, sizeof *job);
}

/* ---- connection ------------------------------------------------------------------------------ */

void queue_drop_connection(glm_queue *q)
{
    if (q->ctx) redisFree(q->ctx);
    q->ctx = NULL;
    q->next_connect_ms = glm_now_mono_ms() + q->backoff_ms;
    q->backoff_ms =
        q->backoff_ms * 2 > q->cfg.backoff_max_ms ? q->cfg.backoff_max_ms : q->backoff_ms * 2;
}

glm_status queue_check(glm_queue *q, redisReply *r, int type, const char *what, glm_error *err)
{
    glm_status st = REDIS_CHECK(q->ctx, r, type, what, err);
    if (!r) queue_drop_connection(q);
    glm_redis_refusal kind = glm_redis_refusal_of(r);
    /* READONLY and MASTERDOWN come from a replica: the primary failed over (Sentinel, a managed
     * Redis) and this connection still goes to the demoted one, which keeps it open. The URL's
     * name or address leads to the new primary only on a new connection; kept, like one refused
     * for OOM, this connection was refused for ever, and so was every Result in the outbox. */
    bool replica = kind == GLM_REDIS_READONLY || kind == GLM_REDIS_MASTERDOWN;
    if (r && kind != GLM_REDIS_NOT_REFUSED) {
        q->stats.refusals++;
        q->stats.refusals_by_kind[kind]++;
        if (!q->refusing) {
            q->refusing = true;
            q->refusing_since_ms = glm_now_unix_ms();
            fprintf(stderr,
                    "glm_queue %s: redis %s:%d refuses commands (%s: %.*s); %s: finished Results "
                    "wait in the outbox, chunks may be dropped\n",
                    q->server_id, q->url.host, q->url.port, glm_redis_refusal_name(kind),
                    (int)(r->len > 160 ? 160 : r->len), r->str,
                    replica ? "a replica: reconnecting to find the primary"
                            : "the connection is fine");
        }
    }
    if (r && replica && q->ctx) {
        q->on_replica = true;
        queue_drop_connection(q);
    }
    return st;
}

void queue_writes_accepted(glm_queue *q)
{
    q->on_replica = false;
    if (!q->refusing) return;
    q->refusing = false;
    fprintf(stderr, "glm_queue %s: redis accepts writes again after %.1f s of refusals\n",
            q->server_id, (glm_now_unix_ms() - q->refusing_since_ms) / 1e3);
}

static glm_status create_group(glm_queue *q, glm_error *err)
{
    const char *argv[] = {"XGROUP", "CREATE", q->key_jobs, q->key_group, "0", "MKSTREAM"};
    redisReply *r = redisCommandArgv(q->ctx, 6, argv, NULL);
    glm_status st = glm_redis_is_error(r, "BUSYGROUP")
                        ? GLM_OK
                        : queue_check(q, r, REDIS_REPLY_STATUS, "XGROUP CREATE", err);
    if (r) freeReplyObject(r);
    return st;
}

glm_status queue_conn(glm_queue *q, glm_error *err)
{
    if (q->ctx) return GLM_OK;
    long long now = glm_now_mono_ms();
    if (now < q->next_connect_ms)
        return glm_fail(err, GLM_ERR_IO, "redis %s:%d unreachable; next reconnect in %lld ms",
                        q->url.host, q->url.port, q->next_connect_ms - now);
    glm_status st = glm_redis_connect(&q->url, q->password, q->cfg.connect_timeout_ms,
                                      q->cfg.command_timeout_ms, &q->ctx, err);
    if (st != GLM_OK) {
        queue_drop_connection(q);
        return st; /* IO: not reachable; LIMIT: LOADING; FORMAT: AUTH or SELECT refused */
    }
    /* a replica answers PING like a primary: only an accepted write ends the backoff then */
    if (!q->on_replica) q->backoff_ms = q->cfg.backoff_initial_ms;
    memset(&q->scripts, 0, sizeof q->scripts);
    if (q->group_wanted && (st = create_group(q, err)) != GLM_OK) {
        if (q->ctx) queue_drop_connection(q);
        return GLM_ERR_IO;
    }
    if (q->step_recorded) { /* a record the lost connection kept us from clearing */
        redisReply *r = redisCommandArgv(q->ctx, 2, (const char *[]){"DEL", q->key_step}, NULL);
        if (r && r->type == REDIS_REPLY_INTEGER) q->step_recorded = false;
        if (r) freeReplyObject(r);
    }
    outbox_flush(q, true);
    return q->ctx ? GLM_OK : glm_fail(err, GLM_ERR_IO, "redis connection lost after reconnect");
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The first connection: a Redis that is not up yet (the usual start order under systemd or
 * Kubernetes starts both at once) is waited for; a wrong password or URL is not. */
static glm_status first_connect(glm_queue *q, glm_error *err)
{
    long long start = glm_now_mono_ms();
    for (int attempt = 1;; attempt++) {
        q->next_connect_ms = 0;
        glm_status st = queue_conn(q, err);
        if (st == GLM_OK) {
            if (attempt > 1)
                fprintf(stderr, "glm_queue %s: connected to redis %s:%d after %.1f s\n",
                        q->server_id, q->url.host, q->url.port, (glm_now_mono_ms() - start) / 1e3);
            return GLM_OK;
        }
        if (st != GLM_ERR_IO && st != GLM_ERR_LIMIT) return st; /* AUTH, bad db: misconfigured */
        long long waited = glm_now_mono_ms() - start;
        bool stopped = q->cfg.stop && *q->cfg.stop;
        if (stopped || (q->cfg.startup_wait_ms >= 0 && waited >= q->cfg.startup_wait_ms))
            return glm_error_prefix(err, "gave up waiting for redis after %.1f s", waited / 1e3);
        long long delay = q->next_connect_ms - glm_now_mono_ms();
        if (delay < 10) delay = 10;
        fprintf(stderr, "glm_queue %s: redis not reachable yet (%s); retrying in %lld ms\n",
                q->server_id, err ? err->msg : "", delay);
        /* sleep in slices so a stop request is seen promptly */
        for (long long slept = 0; slept < delay && !(q->cfg.stop && *q->cfg.stop); slept += 50)
            sleep_ms(delay - slept < 50 ? delay - slept : 50);
    }
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
    if (q->cfg.backoff_max_ms <= 0) q->cfg.backoff_max_ms = 5000;
    if (q->cfg.dead_max_len <= 0) q->cfg.dead_max_len = 10000;
    if (q->cfg.dead_payload_max == 0) q->cfg.dead_payload_max = 65536;
    if (q->cfg.outbox_hold_ms <= 0) q->cfg.outbox_hold_ms = 600000;
    snprintf(q->prefix, sizeof q->prefix, "%s", cfg->prefix);
    snprintf(q->server_id, sizeof q->server_id, "%s", cfg->server_id);
    snprintf(q->version, sizeof q->version, "%s", cfg->server_version ? cfg->server_version : "");
    snprintf(q->key_jobs, KEY_MAX, "%s:jobs", q->prefix);
    snprintf(q->key_group, KEY_MAX, "%s:servers", q->prefix);
    snprintf(q->key_dead, KEY_MAX, "%s:dead", q->prefix);
    snprintf(q->key_server, KEY_MAX, "%s:server:%s", q->prefix, q->server_id);
    snprintf(q->key_step, KEY_MAX, "%s:step:%s", q->prefix, q->server_id);
    q->backoff_ms = cfg->backoff_initial_ms > 0 ? cfg->backoff_initial_ms : 100;
    q->reading = true;
    q->started_unix_ms = glm_now_unix_ms();
    st = first_connect(q, err);
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
        outbox_flush(q, true);
        if (q->ctx) {
            redisReply *r = redisCommand(q->ctx, "DEL %s %s", q->key_server, q->key_step);
            if (r) freeReplyObject(r);
        }
    }
    if (q->n_outbox)
        fprintf(stderr, "glm_queue %s: %zu finished results could not be written to Redis\n",
                q->server_id, q->n_outbox);
    outbox_free(q);
    free(q->held);
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
    return (size_t)q->stats.duplicates;
}

size_t glm_queue_dead_count(const glm_queue *q)
{
    return (size_t)q->stats.dead;
}

glm_queue_stats glm_queue_stats_get(const glm_queue *q)
{
    return q->stats;
}

void glm_queue_stop_reading(glm_queue *q)
{
    q->reading = false;
}

bool glm_queue_reading(const glm_queue *q)
{
    return q->reading;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* The fingerprint and deadline of a delivered job, from one decode of its bytes; and the address
 * of an entry without a usable id field: its Job's id. Such an entry is answered there (the serve
 * loop writes its Result at the Job's id), so it is bound, polled for its done marker and cancel
 * key, and refreshed under that id from delivery on, like any other (held under no id, nothing
 * stopped it when it was cancelled or answered elsewhere). */
static void describe_job(glm_queue_job *job)
{
    glm_job *decoded = NULL;
    glm_job_problem problem;
    if (job->bytes && glm_job_decode(job->bytes, job->len, &decoded, &problem) == GLM_OK) {
        glm_job_fingerprint(decoded, job->fingerprint);
        job->deadline_unix_ms = decoded->deadline_unix_ms;
        if (!job->job_id[0] && decoded->id && strlen(decoded->id) < sizeof job->job_id &&
            glm_job_id_valid(decoded->id))
            snprintf(job->job_id, sizeof job->job_id, "%s", decoded->id);
        glm_job_free(decoded);
    } else {
        glm_job_fingerprint_bytes(job->bytes, job->bytes ? job->len : 0, job->fingerprint);
    }
}

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
    describe_job(job);
    return GLM_OK;
}

/* Entries of a read or claim reply from index `from` on were delivered to this consumer but not
 * returned to the caller (out of memory copying them): they are handed back at once, unblamed,
 * instead of waiting out the lease with nobody working on them and coming back one delivery
 * nearer the dead letters. Entries this queue holds already (its own work, claimed again) stay. */
static void hand_back_untaken(glm_queue *q, const redisReply *list, size_t from, const char *what)
{
    size_t handed = 0, kept = 0;
    for (size_t i = from; list && i < list->elements; i++) {
        const redisReply *e = list->element[i];
        char entry_id[48];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= sizeof entry_id)
            continue;
        memcpy(entry_id, e->element[0]->str, e->element[0]->len);
        entry_id[e->element[0]->len] = '\0';
        if (held_find(q, entry_id)) continue;
        glm_error ignored = {0};
        if (q->ctx && glm_queue_hand_back(q, entry_id, &ignored) == GLM_OK)
            handed++;
        else
            kept++;
    }
    if (handed || kept)
        fprintf(stderr,
                "glm_queue %s: %zu entries delivered by %s could not be taken (out of memory): "
                "%zu handed back, %zu left to their lease\n",
                q->server_id, handed + kept, what, handed, kept);
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
    st = queue_check(q, r, REDIS_REPLY_ARRAY, "XREADGROUP", err);
    if (st == GLM_OK && r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        const redisReply *stream = r->element[0];
        const redisReply *entries = stream->elements == 2 ? stream->element[1] : NULL;
        size_t i = 0;
        for (; entries && i < entries->elements && *n_jobs < max_jobs; i++) {
            st = parse_entry(entries->element[i], &jobs[*n_jobs], err);
            if (st == GLM_OK) st = held_add(q, &jobs[*n_jobs], err);
            if (st != GLM_OK) {
                glm_queue_job_clear(&jobs[*n_jobs]);
                break;
            }
            (*n_jobs)++;
        }
        hand_back_untaken(q, entries, i, "XREADGROUP");
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
    char idle[24], count[24], maxd[24], rttl[24], dttl[24], maxlen[24], cap[24];
    snprintf(idle, sizeof idle, "%d", q->cfg.visibility_timeout_ms);
    snprintf(count, sizeof count, "%zu", max_jobs);
    snprintf(maxd, sizeof maxd, "%d", q->cfg.max_deliveries);
    snprintf(rttl, sizeof rttl, "%d", q->cfg.result_ttl_s);
    snprintf(dttl, sizeof dttl, "%d", q->cfg.done_ttl_s);
    snprintf(maxlen, sizeof maxlen, "%ld", q->cfg.dead_max_len);
    snprintf(cap, sizeof cap, "%zu", q->cfg.dead_payload_max);
    const char *args[] = {q->key_jobs, q->key_dead, q->key_group, q->server_id, idle,
                          "0-0",       count,       maxd,         q->prefix,    rttl,
                          dttl,        maxlen,      cap};
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_CLAIM, 2, 13, args, NULL);
    if (glm_redis_is_error(r, "NOGROUP")) {
        freeReplyObject(r);
        q->group_wanted = true;
        return create_group(q, err);
    }
    st = queue_check(q, r, REDIS_REPLY_ARRAY, "claim script", err);
    if (st == GLM_OK && (r->elements != 3 || r->element[1]->type != REDIS_REPLY_INTEGER ||
                         r->element[2]->type != REDIS_REPLY_ARRAY))
        st = glm_fail(err, GLM_ERR_FORMAT, "claim script: unexpected reply shape");
    if (st == GLM_OK) {
        size_t dead = (size_t)r->element[1]->integer;
        q->stats.dead += dead;
        if (n_dead) *n_dead = dead;
        const redisReply *list = r->element[2];
        size_t i = 0;
        for (; i < list->elements && *n_jobs < max_jobs; i++) {
            const redisReply *e = list->element[i]; /* {entry id, job id, job bytes, deliveries} */
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
                e->element[0]->len >= sizeof jobs[0].entry_id)
                continue;
            const held_entry *mine = held_find(q, e->element[0]->str);
            if (mine && mine->in_outbox) continue; /* finished here; its Result is on its way */
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
            describe_job(job);
            if ((st = held_add(q, job, err)) != GLM_OK) {
                glm_queue_job_clear(job);
                break;
            }
            (*n_jobs)++;
        }
        hand_back_untaken(q, list, i, "the claim");
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_begin(glm_queue *q, const glm_queue_job *job, glm_begin_outcome *outcome,
                           glm_error *err)
{
    *outcome = GLM_BEGIN_RUN;
    if (!job->job_id[0]) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char done_key[KEY_MAX], claim_key[KEY_MAX], ttl[24];
    snprintf(done_key, sizeof done_key, "%s:done:%s", q->prefix, job->job_id);
    snprintf(claim_key, sizeof claim_key, "%s:claim:%s", q->prefix, job->job_id);
    snprintf(ttl, sizeof ttl, "%d", q->cfg.visibility_timeout_ms);
    const char *args[] = {q->key_jobs,   done_key,         claim_key,    q->key_group,
                          job->entry_id, job->fingerprint, q->server_id, ttl};
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_BEGIN, 3, 8, args, NULL);
    st = queue_check(q, r, REDIS_REPLY_ARRAY, "begin script", err);
    if (st == GLM_OK && (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
                         r->element[1]->type != REDIS_REPLY_STRING))
        st = glm_fail(err, GLM_ERR_FORMAT, "begin script: unexpected reply shape");
    if (st == GLM_OK) {
        const char *what = r->element[0]->str, *other = r->element[1]->str;
        if (strcmp(what, "done") == 0) {
            *outcome = GLM_BEGIN_DONE;
        } else if (strcmp(what, "joined") == 0) {
            *outcome = GLM_BEGIN_JOINED;
            q->stats.joined++;
            fprintf(stderr,
                    "glm_queue %s: job=%s entry %s is a duplicate of the same job running on %s: "
                    "acknowledged, that run's Result answers both\n",
                    q->server_id, job->job_id, job->entry_id, other);
        } else if (strcmp(what, "conflict") == 0) {
            *outcome = GLM_BEGIN_CONFLICT;
            q->stats.conflicts++;
            fprintf(stderr,
                    "glm_queue %s: job=%s ID_CONFLICT: entry %s (fingerprint %s) reuses the id "
                    "of another job (fingerprint %s): acknowledged without running; its client "
                    "sees the fingerprints differ\n",
                    q->server_id, job->job_id, job->entry_id, job->fingerprint, other);
        }
        if (*outcome != GLM_BEGIN_RUN) held_remove(q, job->entry_id);
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_ack_if_done(glm_queue *q, const glm_queue_job *job, bool *done, glm_error *err)
{
    glm_begin_outcome outcome = GLM_BEGIN_RUN;
    glm_status st = glm_queue_begin(q, job, &outcome, err);
    *done = st == GLM_OK && outcome != GLM_BEGIN_RUN;
    return st;
}

glm_status glm_queue_dead_letter(glm_queue *q, const glm_queue_job *job, const char *reason,
                                 glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char maxlen[24], cap[24];
    snprintf(maxlen, sizeof maxlen, "%ld", q->cfg.dead_max_len);
    snprintf(cap, sizeof cap, "%zu", q->cfg.dead_payload_max);
    const char *args[] = {q->key_jobs,
                          q->key_dead,
                          q->key_group,
                          job->entry_id,
                          job->bytes ? (const char *)job->bytes : "",
                          reason ? reason : "",
                          q->server_id,
                          maxlen,
                          cap};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = i == 4 ? (job->bytes ? job->len : 0) : strlen(args[i]);
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_DEAD_LETTER, 2, 9, args, lens);
    st = queue_check(q, r, REDIS_REPLY_INTEGER, "dead-letter script", err);
    if (st == GLM_OK) {
        q->stats.dead++;
        held_remove(q, job->entry_id);
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_hand_back(glm_queue *q, const char *entry_id, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char idle[24];
    snprintf(idle, sizeof idle, "%d", q->cfg.visibility_timeout_ms);
    /* a plain XCLAIM ... JUSTID kept the count, and the next claim added one (a drained replica
     * leaves no step record): each hand-back counted as a delivery blamed on the job, so a long
     * job went into quarantine after one rolling restart and was dead-lettered as POISON after
     * --max-deliveries of them */
    const char *args[] = {q->key_jobs, q->key_group, q->server_id, entry_id, idle};
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_HAND_BACK, 1, 5, args, NULL);
    st = queue_check(q, r, REDIS_REPLY_INTEGER, "hand back script", err);
    if (r) freeReplyObject(r);
    if (st == GLM_OK) held_remove(q, entry_id); /* its claim expires; the next owner takes it */
    return st;
}

glm_status glm_queue_touch(glm_queue *q, const char *const *entry_ids, size_t n, glm_error *err)
{
    if (n == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    size_t n_args = 4 + 2 * n;
    const char **args = malloc(n_args * sizeof *args);
    char(*claim_keys)[KEY_MAX] = malloc(n * sizeof *claim_keys);
    if (!args || !claim_keys) {
        free(args);
        free(claim_keys);
        return glm_fail(err, GLM_ERR_NOMEM, "touch: out of memory");
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", q->cfg.visibility_timeout_ms);
    args[0] = q->key_jobs;
    args[1] = q->key_group;
    args[2] = q->server_id;
    args[3] = ttl;
    for (size_t i = 0; i < n; i++) {
        const held_entry *h = held_find(q, entry_ids[i]);
        claim_keys[i][0] = '\0';
        if (h && h->job_id[0])
            snprintf(claim_keys[i], KEY_MAX, "%s:claim:%s", q->prefix, h->job_id);
        args[4 + 2 * i] = entry_ids[i];
        args[5 + 2 * i] = claim_keys[i];
    }
    /* XPENDING, XCLAIM and PEXPIRE are not refused under maxmemory (they do not grow memory), so
     * a replica holding Results through an OOM episode keeps its jobs */
    redisReply *r =
        glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_TOUCH, 1, (int)n_args, args, NULL);
    free(args);
    free(claim_keys);
    st = queue_check(q, r, REDIS_REPLY_ARRAY, "touch script", err);
    if (st == GLM_OK && r->elements != n)
        st = glm_fail(err, GLM_ERR_FORMAT, "touch script: %zu replies for %zu entries", r->elements,
                      n);
    for (size_t i = 0; st == GLM_OK && i < n; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_INTEGER || e->integer != 0) continue;
        held_entry *h = held_find(q, entry_ids[i]);
        /* a Result in the outbox is written whoever owns the entry: the first Result wins */
        if (h && !h->in_outbox) held_mark_lost(q, h);
    }
    if (r) freeReplyObject(r);
    return st;
}

/* ---- liveness -------------------------------------------------------------------------------- */

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
    cJSON_AddNumberToObject(o, "refusals", (double)q->stats.refusals);
    cJSON_AddNumberToObject(o, "vision_cache_hits", (double)q->last_load.vision_cache_hits);
    cJSON_AddNumberToObject(o, "vision_cache_misses", (double)q->last_load.vision_cache_misses);
    cJSON_AddNumberToObject(o, "prefix_hit_rate", q->last_load.prefix_hit_rate);
    cJSON_AddNumberToObject(o, "prefix_cached_blocks", q->last_load.prefix_cached_blocks);
    cJSON_AddBoolToObject(o, "reading", q->reading);
    cJSON_AddNumberToObject(o, "started_ms", (double)q->started_unix_ms);
    cJSON_AddNumberToObject(o, "time_ms", (double)glm_now_unix_ms());
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!json) return glm_fail(err, GLM_ERR_NOMEM, "liveness json");
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%d", q->cfg.liveness_ttl_s);
    /* GET returns the old value: nil after the first write means the key had expired (refreshes
     * failed for longer than its TTL) or was deleted, and `glm4v-submit --status` missed us */
    const char *argv[] = {"SET", q->key_server, json, "EX", ttl, "GET"};
    redisReply *r = redisCommandArgv(q->ctx, 6, argv, NULL);
    free(json);
    st = queue_check(q, r, REDIS_REPLY_STRING, "SET liveness", err);
    if (st == GLM_OK) {
        if (r->type == REDIS_REPLY_NIL && q->last_heartbeat_ms > 0) {
            q->stats.liveness_lost++;
            fprintf(stderr,
                    "glm_queue %s: liveness key %s was gone (expired after %.1f s without a "
                    "refresh, or deleted); written again\n",
                    q->server_id, q->key_server, (glm_now_mono_ms() - q->last_heartbeat_ms) / 1e3);
        }
        q->last_heartbeat_ms = glm_now_mono_ms();
        q->heartbeat_failing = false;
    } else if (!q->heartbeat_failing) {
        q->heartbeat_failing = true;
        fprintf(stderr, "glm_queue %s: liveness key not refreshed (%s); it expires within %d s\n",
                q->server_id, err ? err->msg : "", q->cfg.liveness_ttl_s);
    }
    if (r) freeReplyObject(r);
    return st;
}

glm_status glm_queue_tick(glm_queue *q, const glm_server_load *load, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    if (q->n_outbox) outbox_flush(q, false);
    if (load) q->last_load = *load;
    long long now = glm_now_mono_ms();
    if (q->ctx && q->cfg.job_check_interval_ms > 0 &&
        now - q->last_job_check_ms >= q->cfg.job_check_interval_ms) {
        q->last_job_check_ms = now;
        glm_error ignored = {0};
        glm_queue_check_jobs(q, &ignored);
    }
    if (q->ctx && now - q->last_heartbeat_ms >= q->cfg.liveness_interval_ms) {
        /* a failing refresh is retried on the next tick, not only after another interval */
        st = glm_queue_heartbeat(q, NULL, err);
        if (st != GLM_OK && q->last_heartbeat_ms > 0)
            q->last_heartbeat_ms = now - q->cfg.liveness_interval_ms + 1000;
    }
    if (st == GLM_OK && !q->ctx) st = glm_fail(err, GLM_ERR_IO, "redis connection lost");
    return st;
}
