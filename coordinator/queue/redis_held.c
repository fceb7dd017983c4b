/* The entries a replica holds (delivered, not yet finished, acked or handed back): their job ids,
 * fingerprints, deadlines and what Redis says about them (answered elsewhere, cancelled), plus the
 * crash-attribution step record. See redis_queue.h. */
#include "coordinator/queue/redis_queue_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

held_entry *held_find(glm_queue *q, const char *entry_id)
{
    for (size_t i = 0; entry_id && i < q->n_held; i++)
        if (strcmp(q->held[i].entry_id, entry_id) == 0) return &q->held[i];
    return NULL;
}

held_entry *held_find_job(glm_queue *q, const char *job_id)
{
    for (size_t i = 0; job_id && i < q->n_held; i++)
        if (strcmp(q->held[i].job_id, job_id) == 0 && !q->held[i].in_outbox) return &q->held[i];
    return NULL;
}

glm_status held_add(glm_queue *q, const glm_queue_job *job, glm_error *err)
{
    held_entry *h = held_find(q, job->entry_id);
    if (h) return GLM_OK; /* delivered again to us (a claim of our own work): keep what we know */
    if (q->n_held == q->cap_held) {
        size_t cap = q->cap_held ? 2 * q->cap_held : 64;
        held_entry *grown = realloc(q->held, cap * sizeof *grown);
        if (!grown) return glm_fail(err, GLM_ERR_NOMEM, "held entries");
        q->held = grown;
        q->cap_held = cap;
    }
    h = &q->held[q->n_held++];
    memset(h, 0, sizeof *h);
    snprintf(h->entry_id, sizeof h->entry_id, "%s", job->entry_id);
    snprintf(h->job_id, sizeof h->job_id, "%s", job->job_id);
    snprintf(h->fingerprint, sizeof h->fingerprint, "%s", job->fingerprint);
    h->deadline_unix_ms = job->deadline_unix_ms;
    h->state = GLM_ENTRY_ACTIVE;
    return GLM_OK;
}

void held_remove(glm_queue *q, const char *entry_id)
{
    held_entry *h = held_find(q, entry_id);
    if (h) *h = q->held[--q->n_held];
}

void held_mark_answered(glm_queue *q, held_entry *h, const char *how)
{
    if (!h || h->state == GLM_ENTRY_ANSWERED) return;
    h->state = GLM_ENTRY_ANSWERED;
    h->answered_ms = glm_now_mono_ms();
    fprintf(stderr, "glm_queue %s: job=%s its Result exists (written elsewhere)%s: stop\n",
            q->server_id, h->job_id, how);
}

void held_mark_lost(glm_queue *q, held_entry *h)
{
    if (!h || h->state != GLM_ENTRY_ACTIVE) return;
    h->state = GLM_ENTRY_LOST;
    h->answered_ms = glm_now_mono_ms();
    fprintf(stderr,
            "glm_queue %s: job=%s entry %s is no longer this replica's (reclaimed by another "
            "while this one was paused past its lease, or acknowledged): stop\n",
            q->server_id, h->job_id[0] ? h->job_id : "-", h->entry_id);
}

glm_entry_state glm_queue_entry_state(const glm_queue *q, const char *entry_id)
{
    for (size_t i = 0; entry_id && i < q->n_held; i++)
        if (strcmp(q->held[i].entry_id, entry_id) == 0) return q->held[i].state;
    return GLM_ENTRY_ACTIVE;
}

void glm_queue_forget(glm_queue *q, const char *entry_id)
{
    held_remove(q, entry_id);
}

glm_status glm_queue_check_jobs(glm_queue *q, glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    char key[KEY_MAX];
    size_t asked = 0;
    for (size_t i = 0; i < q->n_held; i++) {
        const held_entry *h = &q->held[i];
        if (h->in_outbox || !h->job_id[0] || h->state == GLM_ENTRY_LOST) continue;
        snprintf(key, sizeof key, "%s:done:%s", q->prefix, h->job_id);
        redisAppendCommandArgv(q->ctx, 2, (const char *[]){"EXISTS", key}, NULL);
        snprintf(key, sizeof key, "%s:cancel:%s", q->prefix, h->job_id);
        redisAppendCommandArgv(q->ctx, 2, (const char *[]){"EXISTS", key}, NULL);
        asked++;
    }
    /* replies come back in the order asked: walk the same entries again */
    size_t k = 0;
    for (size_t i = 0; i < q->n_held && k < asked && q->ctx; i++) {
        held_entry *h = &q->held[i];
        if (h->in_outbox || !h->job_id[0] || h->state == GLM_ENTRY_LOST) continue;
        k++;
        long long exists[2] = {0, 0};
        for (int j = 0; j < 2 && q->ctx; j++) {
            redisReply *r = NULL;
            if (redisGetReply(q->ctx, (void **)&r) != REDIS_OK) r = NULL;
            glm_status one = queue_check(q, r, REDIS_REPLY_INTEGER, "EXISTS job state", err);
            if (one == GLM_OK && r) exists[j] = r->integer;
            if (st == GLM_OK) st = one;
            if (r) freeReplyObject(r);
        }
        if (exists[0] && h->state != GLM_ENTRY_ANSWERED) {
            held_mark_answered(q, h, "");
        } else if (exists[1] && h->state == GLM_ENTRY_ACTIVE) {
            h->state = GLM_ENTRY_CANCELLED;
        }
    }
    /* the caller forgets an answered or lost entry at its next step; one still here a minute
     * later was dropped by the caller without a word (a job it could not even start): stop
     * polling it */
    long long now = glm_now_mono_ms();
    size_t kept = 0;
    for (size_t i = 0; i < q->n_held; i++) {
        const held_entry *h = &q->held[i];
        bool stopped = h->state == GLM_ENTRY_ANSWERED || h->state == GLM_ENTRY_LOST;
        if (stopped && !h->in_outbox && now - h->answered_ms > 60000) continue;
        q->held[kept++] = *h;
    }
    q->n_held = kept;
    return st;
}

/* ---- crash attribution ----------------------------------------------------------------------- */

glm_status glm_queue_step_begin(glm_queue *q, const char *const *entry_ids, size_t n,
                                glm_error *err)
{
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    size_t bytes = 1;
    for (size_t i = 0; i < n; i++)
        bytes += strlen(entry_ids[i]) + 1;
    char *record = malloc(bytes);
    if (!record) return glm_fail(err, GLM_ERR_NOMEM, "step record");
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        at += (size_t)sprintf(record + at, "%s%s", i ? " " : "", entry_ids[i]);
    record[at] = '\0';
    /* the record must outlive the time other replicas take to notice our death: the visibility
     * timeout after our last refresh, plus their claim period */
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", 2LL * q->cfg.visibility_timeout_ms + 10000);
    const char *argv[] = {"SET", q->key_step, record, "PX", ttl};
    redisReply *r = redisCommandArgv(q->ctx, 5, argv, NULL);
    free(record);
    st = queue_check(q, r, REDIS_REPLY_STATUS, "SET step record", err);
    if (r) freeReplyObject(r);
    q->step_recorded = true;
    if (st != GLM_OK && q->ctx) {
        /* an old record must not stand for this step: without one, a crash blames everyone */
        glm_error ignored = {0};
        glm_queue_step_end(q, &ignored);
    }
    return st;
}

glm_status glm_queue_step_end(glm_queue *q, glm_error *err)
{
    if (!q->step_recorded) return GLM_OK;
    glm_status st = queue_conn(q, err);
    if (st != GLM_OK) return st;
    redisReply *r = redisCommandArgv(q->ctx, 2, (const char *[]){"DEL", q->key_step}, NULL);
    st = queue_check(q, r, REDIS_REPLY_INTEGER, "DEL step record", err);
    if (r) freeReplyObject(r);
    if (st == GLM_OK) q->step_recorded = false;
    return st;
}
