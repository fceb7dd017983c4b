/* Chunks, final Results and the outbox that keeps finished Results through Redis outages and
 * refusals (see redis_queue.h). */
#include "coordinator/queue/redis_queue_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Protobuf tags (field number << 3 | length-delimited) of job_fingerprint in glm4v.Chunk (7) and
 * glm4v.Result (12); keep in step with proto/glm4v.proto. */
#define CHUNK_FINGERPRINT_TAG 0x3A
#define RESULT_FINGERPRINT_TAG 0x62

/* Returns msg with the job's fingerprint appended as one more field (malloc'd, *out_len set), or
 * NULL when out of memory. Protobuf parsers merge concatenated messages and keep the last value of
 * a singular field, so this stamps encoded Chunks and Results without decoding them. */
static uint8_t *stamp(const void *msg, size_t len, uint8_t tag, const char *fingerprint,
                      size_t *out_len)
{
    size_t n = strlen(fingerprint); /* GLM_FINGERPRINT_LEN < 128: a one-byte length */
    uint8_t *out = malloc(len + 2 + n);
    if (!out) return NULL;
    if (len) memcpy(out, msg, len);
    out[len] = tag;
    out[len + 1] = (uint8_t)n;
    memcpy(out + len + 2, fingerprint, n);
    *out_len = len + 2 + n;
    return out;
}

/* ---- chunks ---------------------------------------------------------------------------------- */

glm_status glm_queue_write_chunk(glm_queue *q, const char *job_id, const void *chunk, size_t len,
                                 glm_error *err)
{
    return glm_queue_write_chunks(q, 1, &job_id, &chunk, &len, err);
}

glm_status glm_queue_write_chunks(glm_queue *q, size_t n, const char *const *job_ids,
                                  const void *const *chunks, const size_t *lens, glm_error *err)
{
    if (n == 0) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    const char *sha = glm_redis_script_sha(q->ctx, &q->scripts, GLM_SCRIPT_CHUNK);
    if (!sha) {
        if (q->ctx->err) {
            glm_fail(err, GLM_ERR_IO, "chunks: redis connection lost: %s", q->ctx->errstr);
            queue_drop_connection(q);
            return GLM_ERR_IO;
        }
        return glm_fail(err, GLM_ERR_LIMIT, "chunks: redis refused to load the chunk script");
    }
    char ttl[24], out_key[KEY_MAX], done_key[KEY_MAX];
    snprintf(ttl, sizeof ttl, "%d", q->cfg.result_ttl_s);
    held_entry **owners = calloc(n, sizeof *owners);
    if (!owners) return glm_fail(err, GLM_ERR_NOMEM, "chunks");
    size_t queued = 0;
    for (size_t i = 0; i < n; i++) {
        if (!glm_job_id_valid(job_ids[i])) continue;
        held_entry *h = held_find_job(q, job_ids[i]);
        if (h && h->state == GLM_ENTRY_ANSWERED) continue; /* known stale: not even asked */
        size_t stamped_len = lens[i];
        uint8_t *stamped =
            h ? stamp(chunks[i], lens[i], CHUNK_FINGERPRINT_TAG, h->fingerprint, &stamped_len)
              : NULL;
        if (h && !stamped) continue; /* out of memory: a dropped chunk is allowed */
        snprintf(out_key, sizeof out_key, "%s:out:%s", q->prefix, job_ids[i]);
        snprintf(done_key, sizeof done_key, "%s:done:%s", q->prefix, job_ids[i]);
        const char *argv[] = {"EVALSHA", sha,      "2",
                              out_key,   done_key, stamped ? (const char *)stamped : chunks[i],
                              ttl};
        size_t argl[] = {7, 40, 1, strlen(out_key), strlen(done_key), stamped_len, strlen(ttl)};
        /* hiredis copies the arguments into its output buffer, so the keys can be reused */
        redisAppendCommandArgv(q->ctx, 7, argv, argl);
        free(stamped);
        owners[queued++] = h;
    }
    /* one round trip for the whole step's chunks; every reply is read to keep the connection in
     * step, the first problem is reported */
    for (size_t k = 0; k < queued && q->ctx; k++) {
        redisReply *r = NULL;
        if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK) r = NULL;
        if (glm_redis_is_error(r, "NOSCRIPT")) q->scripts.sha[GLM_SCRIPT_CHUNK][0] = '\0';
        glm_status one = queue_check(q, r, REDIS_REPLY_INTEGER, "chunk script", err);
        if (one == GLM_OK && r && r->integer == 0) {
            q->stats.chunks_suppressed++;
            /* with its time: an entry marked without one was pruned as a minute old at the next
             * poll, before the caller saw it, and the stale job ran on to its end */
            held_mark_answered(q, owners[k], ", chunk not written");
        } else if (one == GLM_OK) {
            queue_writes_accepted(q);
        }
        if (st == GLM_OK) st = one;
        if (r) freeReplyObject(r);
    }
    free(owners);
    return st;
}

/* ---- final Results --------------------------------------------------------------------------- */

/* Runs the finish script once. GLM_ERR_IO: connection lost; GLM_ERR_LIMIT: Redis refused;
 * GLM_ERR_FORMAT: another error reply. */
static glm_status run_finish(glm_queue *q, const char *entry_id, const char *job_id,
                             const char *fingerprint, const void *result, size_t len,
                             glm_finish_outcome *outcome, glm_error *err)
{
    char out_key[KEY_MAX], done_key[KEY_MAX], claim_key[KEY_MAX], rttl[24], dttl[24];
    snprintf(out_key, sizeof out_key, "%s:out:%s", q->prefix, job_id);
    snprintf(done_key, sizeof done_key, "%s:done:%s", q->prefix, job_id);
    snprintf(claim_key, sizeof claim_key, "%s:claim:%s", q->prefix, job_id);
    snprintf(rttl, sizeof rttl, "%d", q->cfg.result_ttl_s);
    snprintf(dttl, sizeof dttl, "%d", q->cfg.done_ttl_s);
    const char *args[] = {q->key_jobs, out_key, done_key, claim_key, q->key_group,
                          entry_id,    result,  rttl,     dttl,      fingerprint};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = i == 6 ? len : strlen(args[i]);
    redisReply *r = glm_redis_eval(q->ctx, &q->scripts, GLM_SCRIPT_FINISH, 4, 10, args, lens);
    glm_status st = queue_check(q, r, REDIS_REPLY_ARRAY, "finish script", err);
    if (st == GLM_OK && (r->elements != 3 || r->element[0]->type != REDIS_REPLY_INTEGER))
        st = glm_fail(err, GLM_ERR_FORMAT, "finish script: unexpected reply shape");
    if (st == GLM_OK) {
        queue_writes_accepted(q);
        *outcome = r->element[0]->integer == 1 ? GLM_RESULT_WRITTEN : GLM_RESULT_DUPLICATE;
        if (*outcome == GLM_RESULT_DUPLICATE) q->stats.duplicates++;
    }
    if (r) freeReplyObject(r);
    return st;
}

/* The small Result that replaces an answer Redis would not take in time: it names the cause, so
 * the client learns that the job ran and why its answer is missing. */
static void replace_with_error(glm_queue *q, outbox_item *it)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "the answer was computed by %s but Redis refused to store it for %.0f s (%s); "
             "gave up at the job's deadline or the server's outbox limit",
             q->server_id, (glm_now_unix_ms() - it->first_fail_unix_ms) / 1e3, it->cause);
    uint8_t *plain = NULL, *stamped = NULL;
    size_t plain_len = 0, stamped_len = 0;
    glm_error err = {0};
    const held_entry *h = held_find(q, it->entry_id);
    if (glm_result_encode_error(it->job_id, GLM_EC_REDIS_REFUSED, msg, q->server_id, 0, &plain,
                                &plain_len, &err) == GLM_OK)
        stamped = h ? stamp(plain, plain_len, RESULT_FINGERPRINT_TAG, h->fingerprint, &stamped_len)
                    : NULL;
    if (stamped) {
        free(plain);
        plain = stamped;
        plain_len = stamped_len;
    }
    fprintf(stderr, "glm_queue %s: job=%s giving up on its answer: %s\n", q->server_id, it->job_id,
            msg);
    q->stats.results_abandoned++;
    if (!plain) return; /* keep the answer: nothing better to send */
    free(it->bytes);
    it->bytes = plain;
    it->len = plain_len;
    it->is_error_stand_in = true;
    it->give_up_unix_ms = glm_now_unix_ms() + q->cfg.outbox_hold_ms;
    it->next_try_ms = 0;
}

/* One attempt at an outbox item. Returns true when the item is settled (written, or dropped). */
static bool try_item(glm_queue *q, outbox_item *it)
{
    glm_finish_outcome outcome;
    glm_error err = {0};
    const held_entry *h = held_find(q, it->entry_id);
    glm_status st = q->ctx ? run_finish(q, it->entry_id, it->job_id, h ? h->fingerprint : "",
                                        it->bytes, it->len, &outcome, &err)
                           : glm_fail(&err, GLM_ERR_IO, "redis unreachable");
    if (st == GLM_OK) {
        held_remove(q, it->entry_id);
        return true;
    }
    long long now_unix = glm_now_unix_ms();
    if (!it->first_fail_unix_ms) it->first_fail_unix_ms = now_unix;
    snprintf(it->cause, sizeof it->cause, "%s", err.msg);
    it->next_try_ms = glm_now_mono_ms() + it->backoff_ms;
    it->backoff_ms =
        it->backoff_ms * 2 > q->cfg.backoff_max_ms ? q->cfg.backoff_max_ms : it->backoff_ms * 2;
    if (now_unix < it->give_up_unix_ms) return false;
    if (!it->is_error_stand_in) {
        replace_with_error(q, it);
        return false;
    }
    fprintf(stderr,
            "glm_queue %s: job=%s dropping its REDIS_REFUSED Result after %.0f s more (%s); the "
            "entry stays pending and is reclaimed or dead-lettered\n",
            q->server_id, it->job_id, q->cfg.outbox_hold_ms / 1e3, it->cause);
    held_remove(q, it->entry_id);
    return true;
}

void outbox_flush(glm_queue *q, bool all)
{
    size_t kept = 0;
    long long now = glm_now_mono_ms();
    for (size_t i = 0; i < q->n_outbox; i++) {
        outbox_item *it = &q->outbox[i];
        bool due = (all || now >= it->next_try_ms) && q->ctx;
        if (due && try_item(q, it)) {
            free(it->bytes);
            continue;
        }
        q->outbox[kept++] = *it;
    }
    q->n_outbox = kept;
    /* Results waiting here belong to entries nobody else should recompute: keep them claimed */
    if (q->ctx && q->n_outbox &&
        now - q->last_outbox_touch_ms >= q->cfg.visibility_timeout_ms / 3) {
        q->last_outbox_touch_ms = now;
        const char **ids = malloc(q->n_outbox * sizeof *ids);
        size_t n = 0;
        for (size_t i = 0; ids && i < q->n_outbox; i++)
            if (q->outbox[i].entry_id[0]) ids[n++] = q->outbox[i].entry_id;
        glm_error ignored = {0};
        if (ids && n) glm_queue_touch(q, ids, n, &ignored);
        free(ids);
    }
}

void outbox_free(glm_queue *q)
{
    for (size_t i = 0; i < q->n_outbox; i++)
        free(q->outbox[i].bytes);
    free(q->outbox);
    q->outbox = NULL;
    q->n_outbox = q->cap_outbox = 0;
}

/* Keeps a Result that could not be written now. */
static glm_status hold(glm_queue *q, const char *entry_id, const char *job_id, const uint8_t *bytes,
                       size_t len, const char *cause, glm_error *err)
{
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
    memcpy(it->bytes, bytes, len);
    it->len = len;
    snprintf(it->entry_id, sizeof it->entry_id, "%s", entry_id);
    snprintf(it->job_id, sizeof it->job_id, "%s", job_id);
    snprintf(it->cause, sizeof it->cause, "%s", cause);
    long long now_unix = glm_now_unix_ms();
    it->first_fail_unix_ms = now_unix;
    held_entry *h = held_find(q, entry_id);
    it->give_up_unix_ms = h && h->deadline_unix_ms ? (long long)h->deadline_unix_ms
                                                   : now_unix + q->cfg.outbox_hold_ms;
    if (it->give_up_unix_ms < now_unix + 1000) it->give_up_unix_ms = now_unix + 1000;
    it->backoff_ms = q->cfg.backoff_initial_ms > 0 ? q->cfg.backoff_initial_ms : 100;
    it->next_try_ms = glm_now_mono_ms() + it->backoff_ms;
    if (h) h->in_outbox = true;
    q->n_outbox++;
    return GLM_OK;
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
    if (q->ctx && q->n_outbox) outbox_flush(q, false);
    const held_entry *h = entry_id[0] ? held_find(q, entry_id) : NULL;
    const char *fingerprint = h ? h->fingerprint : "";
    size_t stamped_len = len;
    uint8_t *stamped =
        h ? stamp(result, len, RESULT_FINGERPRINT_TAG, fingerprint, &stamped_len) : NULL;
    if (h && !stamped) return glm_fail(err, GLM_ERR_NOMEM, "finish: %zu bytes", len);
    const uint8_t *bytes = stamped ? stamped : result;
    glm_status st = queue_conn(q, err);
    if (st == GLM_OK)
        st = run_finish(q, entry_id, job_id, fingerprint, bytes, stamped_len, outcome, err);
    if (st == GLM_OK) {
        held_remove(q, entry_id);
    } else if ((st = hold(q, entry_id, job_id, bytes, stamped_len, err ? err->msg : "", err)) ==
               GLM_OK) {
        *outcome = GLM_RESULT_QUEUED;
    }
    free(stamped);
    return st;
}
