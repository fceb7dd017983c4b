/* One chat completion through the queue (see gw_chat.h). */
#include "client/gateway/gw_chat.h"

#include "client/gateway/gw_follow.h"
#include "client/gateway/gw_openai.h"
#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/redis_conn.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define WAIT_SLICE_MS 250 /* how often a waiting request looks at its client and the clock */

struct gw_chat {
    gw_context *g;
    gw_request req;
    char job_id[48], completion_id[64];
    char fingerprint[GLM_FINGERPRINT_LEN + 1]; /* of the Job we queued */
    /* of its bytes as such: how a server older than this gateway, which cannot decode the Job,
     * stamps its UNKNOWN_FIELD / UNSUPPORTED_VERSION answer (glm_fingerprint_answers) */
    char raw_fingerprint[GLM_FINGERPRINT_LEN + 1];
    gw_answer_meta meta;
    redisContext *ctx;
    bool redis_healthy;
    int client_fd;
    char cursor[48];
    long long deadline_ms, last_output_ms;
    long long redis_lost_ms; /* when the connection broke; 0 while it works */
    gw_follower follow;
    bool result_seen; /* the job is over on the server's side: nothing to cancel */
    bool ended;       /* the last event is in out */
    char *out;        /* bytes not yet handed to the HTTP layer */
    size_t out_len, out_pos, out_cap;
};

static void make_job_id(char out[48])
{
    unsigned char b[16] = {0};
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) { /* never expected; stay unique-ish */
        long long t = glm_now_unix_ms() ^ (long long)(uintptr_t)out;
        for (int i = 0; i < 16; i++)
            b[i] = (unsigned char)(t >> (i % 8 * 8)) ^ (unsigned char)(i * 131);
    }
    char *p = out + snprintf(out, 48, "gw-");
    for (int i = 0; i < 16; i++)
        p += sprintf(p, "%02x", b[i]);
}

static bool client_gone(int fd)
{
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void reply_error(gw_reply *out, const gw_error *e)
{
    out->status = e->http_status;
    out->no_retry = e->no_retry;
    out->body = gw_error_json(e);
    out->stream = NULL;
}

/* True when Result r does not carry an answer for this request (fills e): an error Result, an
 * aborted job, or the Result of another job that used our id (its fingerprint differs; with
 * random ids this is a defence, not an expected case). */
static bool result_failed(const gw_chat *c, const glm_result *r, gw_error *e)
{
    if (!glm_fingerprint_answers(r->job_fingerprint, c->fingerprint, c->raw_fingerprint)) {
        gw_fail(e, 500, "server_error", "ID_CONFLICT", NULL,
                "the job id was used by another job; this is not our answer");
        return true;
    }
    if (r->error_code == GLM_EC_OK && r->finish_reason != GLM_FINISH_ERROR &&
        r->finish_reason != GLM_FINISH_ABORTED)
        return false;
    gw_error_from_result(e, r->error_code, r->finish_reason, r->error_message);
    return true;
}

/* SETs the job's cancel key: on the held connection first, unless it is known broken, then once
 * more on a fresh one (from the pool, which drops connections Redis closed, or a new one). The
 * held connection may have died silently since its last command (a Redis restart, an idle
 * timeout, a proxy in between), and a cancel that does not reach Redis leaves the job running to
 * its end for nobody. False when neither try reached Redis; err says why. */
static bool send_cancel(gw_chat *c, glm_error *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!c->redis_healthy || !c->ctx) {
            gw_queue_release(c->g->queue, c->ctx, false);
            c->ctx = NULL;
            if (gw_queue_acquire(c->g->queue, &c->ctx, err) != GLM_OK) {
                c->redis_healthy = false;
                continue;
            }
            c->redis_healthy = true;
        }
        if (gw_queue_cancel(c->g->queue, c->ctx, c->job_id, c->g->settings.cancel_ttl_s, err) ==
            GLM_OK)
            return true;
        c->redis_healthy = false;
        if (attempt == 0)
            fprintf(stderr, "glm4v-gateway: job %s: cancel: %s; once more on a fresh connection\n",
                    c->job_id, err->msg);
    }
    return false;
}

/* Cancels the job unless its Result was seen or it was never queued; once. False when the cancel
 * could not reach Redis (logged: the job may run on for nobody). */
static bool cancel_job(gw_chat *c)
{
    if (c->result_seen || !c->job_id[0]) return true;
    c->result_seen = true; /* once */
    glm_error err = {0};
    bool sent = send_cancel(c, &err);
    if (sent)
        atomic_fetch_add(&c->g->metrics.cancels, 1);
    else {
        atomic_fetch_add(&c->g->metrics.cancel_failures, 1);
        fprintf(stderr, "glm4v-gateway: job %s: cancel failed, the job may run on: %s\n", c->job_id,
                err.msg);
    }
    return sent;
}

void gw_chat_finish(gw_chat *c)
{
    if (!c) return;
    cancel_job(c);
    gw_queue_release(c->g->queue, c->ctx, c->redis_healthy);
    gw_follower_free(&c->follow);
    gw_request_free(&c->req);
    free(c->out);
    free(c);
}

typedef enum wait_outcome {
    WAIT_EVENTS,      /* n > 0 events */
    WAIT_NOTHING,     /* a slice passed quietly */
    WAIT_CLIENT_GONE, /* the client closed its connection */
    WAIT_TIMEOUT,     /* the request's time is up */
    WAIT_ABORTED,     /* the gateway is stopping and drain time is up */
    WAIT_REDIS_ERROR, /* err says why */
} wait_outcome;

/* A lost Redis connection is replaced: the job's out stream and our cursor in it survive a
 * reconnect (and a Redis restart with AOF), so the request fails only after this long without
 * Redis. */
#define REDIS_GRACE_MS 10000

static wait_outcome wait_slice(gw_chat *c, gw_event *ev, size_t *n, glm_error *err)
{
    *n = 0;
    if (client_gone(c->client_fd)) return WAIT_CLIENT_GONE;
    if (atomic_load(&c->g->aborting)) return WAIT_ABORTED;
    long long now = glm_now_mono_ms(), left = c->deadline_ms - now;
    if (left <= 0) return WAIT_TIMEOUT;
    int block = left < WAIT_SLICE_MS ? (int)left : WAIT_SLICE_MS;
    if (!c->redis_healthy) { /* reconnect, one try per slice */
        gw_queue_release(c->g->queue, c->ctx, false);
        c->ctx = NULL;
        if (!c->redis_lost_ms) c->redis_lost_ms = now;
        if (gw_queue_acquire(c->g->queue, &c->ctx, err) == GLM_OK) {
            c->redis_healthy = true;
            c->redis_lost_ms = 0;
        } else {
            if (now - c->redis_lost_ms > REDIS_GRACE_MS) return WAIT_REDIS_ERROR;
            struct timespec ts = {0, (long)block * 1000000L};
            nanosleep(&ts, NULL);
            return WAIT_NOTHING;
        }
    }
    if (gw_queue_read(c->g->queue, c->ctx, c->job_id, c->cursor, block, ev, n, err) != GLM_OK) {
        c->redis_healthy = false;
        if (!c->redis_lost_ms) c->redis_lost_ms = now;
        fprintf(stderr, "glm4v-gateway: job %s: %s; reconnecting\n", c->job_id, err->msg);
        return WAIT_NOTHING;
    }
    return *n > 0 ? WAIT_EVENTS : WAIT_NOTHING;
}

/* The error a wait that ended without an answer stands for. */
static void wait_error(wait_outcome w, const gw_chat *c, const glm_error *err, gw_error *e)
{
    if (w == WAIT_TIMEOUT)
        gw_fail(e, 504, "timeout", "timeout", NULL, "no answer within %g s; the job was cancelled",
                c->g->settings.timeout_s);
    else if (w == WAIT_ABORTED)
        gw_fail(e, 503, "server_error", "shutting_down", NULL,
                "the gateway is shutting down; the job was cancelled");
    else
        gw_fail(e, 502, "server_error", "redis_unavailable", NULL, "lost the job queue: %s",
                err->msg);
}

/* ---- the stream's output buffer ------------------------------------------------------------ */

static void push(gw_chat *c, char *event)
{
    if (!event) return; /* out of memory: this event is lost, the stream goes on */
    size_t n = strlen(event);
    if (c->out_len + n > c->out_cap) {
        size_t cap = (c->out_len + n) * 2;
        char *g = realloc(c->out, cap);
        if (!g) {
            free(event);
            return;
        }
        c->out = g;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, event, n);
    c->out_len += n;
    free(event);
    c->last_output_ms = glm_now_mono_ms();
}

static void push_literal(gw_chat *c, const char *s)
{
    push(c, strdup(s));
}

static void end_with_error(gw_chat *c, const gw_error *e)
{
    char *json = gw_error_json(e);
    push(c, gw_error_event(json));
    free(json);
    push_literal(c, "data: [DONE]\n\n");
    c->ended = true;
}

static void push_delta(gw_chat *c, const gw_delta *d, const glm_token_logprobs *lp, size_t n_lp)
{
    bool want_lp = c->meta.logprobs && d->n_tokens > 0 && lp && d->first + d->n_tokens <= n_lp;
    if (d->text_len == 0 && !want_lp) return;
    push(c, gw_chunk_event(&c->meta, false, d->text ? d->text : "", d->text_len,
                           want_lp ? lp + d->first : NULL, want_lp ? d->n_tokens : 0, NULL,
                           c->req.include_usage));
}

static void on_stream_event(gw_chat *c, const gw_event *ev)
{
    if (c->ended) return;
    gw_delta d;
    gw_error e;
    uint32_t restarts = c->follow.restarts;
    gw_follow_outcome o;
    if (ev->chunk) {
        if (!glm_fingerprint_answers(ev->chunk->job_fingerprint, c->fingerprint,
                                     c->raw_fingerprint))
            return;
        o = gw_follower_on_chunk(&c->follow, ev->chunk, &d);
        if (c->follow.restarts != restarts) atomic_fetch_add(&c->g->metrics.failovers, 1);
        if (o == GW_FOLLOW_OK) push_delta(c, &d, ev->chunk->logprobs, ev->chunk->n_logprobs);
    } else {
        const glm_result *r = ev->result;
        c->result_seen = true;
        if (result_failed(c, r, &e)) {
            end_with_error(c, &e);
            return;
        }
        o = gw_follower_on_result(&c->follow, r, &d);
        if (o == GW_FOLLOW_OK) {
            push_delta(c, &d, r->logprobs, r->n_logprobs);
            push(c, gw_chunk_event(&c->meta, false, NULL, 0, NULL, 0,
                                   gw_finish_reason(r->finish_reason), c->req.include_usage));
            if (c->req.include_usage) push(c, gw_usage_event(&c->meta, &r->usage));
            push_literal(c, "data: [DONE]\n\n");
            c->ended = true;
            return;
        }
    }
    if (o == GW_FOLLOW_DIVERGED) {
        atomic_fetch_add(&c->g->metrics.divergences, 1);
        fprintf(stderr,
                "glm4v-gateway: job %s: attempt %u diverged from what was sent (%zu tokens, "
                "%zu bytes of text, on %s)\n",
                c->job_id, c->follow.attempt, c->follow.n_sent_ids, c->follow.n_sent_text,
                ev->chunk ? "a chunk" : "the result");
        gw_fail(&e, 502, "server_error", "attempt_diverged", NULL,
                "the job was taken over by another replica whose answer differs from the text "
                "already sent; the stream ends here");
        cancel_job(c);
        end_with_error(c, &e);
    } else if (o == GW_FOLLOW_NOMEM) {
        gw_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
        cancel_job(c);
        end_with_error(c, &e);
    }
}

ssize_t gw_chat_read(gw_chat *c, char *buf, size_t max)
{
    while (c->out_pos == c->out_len) {
        c->out_pos = c->out_len = 0;
        if (c->ended) return -1;
        gw_event ev[GW_MAX_EVENTS];
        size_t n = 0;
        glm_error err = {0};
        wait_outcome w = wait_slice(c, ev, &n, &err);
        if (w == WAIT_EVENTS) {
            for (size_t i = 0; i < n; i++)
                on_stream_event(c, &ev[i]);
            gw_events_free(ev, n);
        } else if (w == WAIT_CLIENT_GONE) {
            cancel_job(c);
            return -1;
        } else if (w == WAIT_NOTHING) {
            /* a comment line now and then keeps proxies from closing a quiet stream */
            if (glm_now_mono_ms() - c->last_output_ms > c->g->settings.keepalive_s * 1000)
                push_literal(c, ": keep-alive\n\n");
        } else {
            gw_error e;
            wait_error(w, c, &err, &e);
            cancel_job(c);
            end_with_error(c, &e);
        }
    }
    size_t n = c->out_len - c->out_pos < max ? c->out_len - c->out_pos : max;
    memcpy(buf, c->out + c->out_pos, n);
    c->out_pos += n;
    return (ssize_t)n;
}

/* ---- the request up to its first event ----------------------------------------------------- */

/* The XADD went out but its reply never came (the connection dropped after sending): the job may be
 * in the queue or not. Its id is cancelled before the answer (a cancel of an id never queued is
 * harmless), so the openai SDKs' automatic retry of a 502, a new request with a new id, cannot
 * run the job twice. When even the cancel reaches no Redis, the answer says not to retry. */
static int submit_lost(gw_chat *c, const glm_error *xadd_err, gw_error *e)
{
    fprintf(stderr, "glm4v-gateway: job %s: %s; the job may be queued: cancelling it\n", c->job_id,
            xadd_err->msg);
    if (cancel_job(c))
        return gw_fail(e, 502, "server_error", "redis_unavailable", NULL,
                       "lost the job queue before it confirmed the job (%s); the job was "
                       "cancelled, so a retry is safe",
                       xadd_err->msg);
    gw_fail(e, 502, "server_error", "redis_unavailable", NULL,
            "lost the job queue before it confirmed the job (%s) and could not cancel it: it may "
            "still run, so do not retry at once",
            xadd_err->msg);
    e->no_retry = true;
    return e->http_status;
}

/* Validates, encodes and queues the job; returns 0 or an HTTP error status with e filled. */
static int submit(gw_chat *c, gw_error *e)
{
    gw_context *g = c->g;
    c->req.job.id = c->job_id;
    glm_job_problem problem;
    if (glm_job_validate(&c->req.job, &g->limits.job, &problem) != GLM_OK) {
        gw_error_from_result(e, problem.code, GLM_FINISH_ERROR, problem.message);
        return e->http_status;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    glm_error err = {0};
    if (glm_job_encode(&c->req.job, &bytes, &len, &err) != GLM_OK)
        return gw_fail(e, 500, "server_error", NULL, NULL, "encoding the job: %s", err.msg);
    glm_job_fingerprint_bytes(bytes, len, c->fingerprint); /* as the server computes it */
    glm_job_fingerprint_raw(bytes, len, c->raw_fingerprint);
    glm_status st = gw_queue_acquire(g->queue, &c->ctx, &err);
    if (st != GLM_OK) {
        free(bytes);
        return gw_fail(e, 502, "server_error", "redis_unavailable", NULL,
                       "cannot reach the job queue: %s", err.msg);
    }
    c->redis_healthy = true;
    bool live = true;
    long long depth = 0;
    if (g->settings.require_server) st = gw_queue_servers_live(g->queue, c->ctx, &live, &err);
    if (st == GLM_OK && g->settings.max_queue_depth > 0)
        st = gw_queue_depth(g->queue, c->ctx, &depth, &err);
    int rc = 0;
    if (st == GLM_OK && !live)
        rc = gw_fail(e, 502, "server_error", "no_server", NULL,
                     "no glm4v-serve replica is serving the queue");
    else if (st == GLM_OK && g->settings.max_queue_depth > 0 &&
             depth >= g->settings.max_queue_depth)
        rc = gw_fail(e, 429, "rate_limit_error", "queue_full", NULL,
                     "the queue holds %lld jobs (limit %lld); retry later", depth,
                     g->settings.max_queue_depth);
    bool drop = false, xadd_sent = false;
    if (st == GLM_OK && !rc) {
        st = gw_queue_submit(g->queue, c->ctx, c->job_id, bytes, len, &drop, &err);
        xadd_sent = true;
    }
    free(bytes);
    if (rc) return rc;
    if (drop) c->redis_healthy = false; /* a demoted primary: not back into the pool */
    if (st == GLM_ERR_LIMIT)
        return gw_fail(e, 503, "server_error", "queue_refused", NULL,
                       "the job queue refused the job for now: %s", err.msg);
    if (st != GLM_OK) {
        c->redis_healthy = false;
        /* an error reply means the XADD did not run; a lost connection leaves it unknown */
        if (xadd_sent && st == GLM_ERR_IO) return submit_lost(c, &err, e);
        return gw_fail(e, 502, "server_error", "redis_unavailable", NULL, "job queue: %s", err.msg);
    }
    atomic_fetch_add(&g->metrics.jobs_submitted, 1);
    return 0;
}

/* Non-streaming: waits for the Result and answers with it. */
static void answer_whole(gw_chat *c, gw_event *ev, size_t n, gw_reply *out)
{
    gw_error e;
    glm_error err = {0};
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            const glm_result *r = ev[i].result;
            if (!r) continue;
            c->result_seen = true;
            if (result_failed(c, r, &e)) {
                reply_error(out, &e);
            } else {
                out->status = 200;
                out->body = gw_completion_json(&c->meta, r);
                if (!out->body) {
                    gw_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
                    reply_error(out, &e);
                }
            }
            gw_events_free(ev, n);
            return;
        }
        gw_events_free(ev, n);
        wait_outcome w;
        do
            w = wait_slice(c, ev, &n, &err);
        while (w == WAIT_NOTHING);
        if (w == WAIT_EVENTS) continue;
        cancel_job(c);
        if (w == WAIT_CLIENT_GONE) {
            out->status = 0;
            return;
        }
        wait_error(w, c, &err, &e);
        reply_error(out, &e);
        return;
    }
}

void gw_chat_start(gw_context *g, const char *body, size_t len, int client_fd, gw_reply *out)
{
    memset(out, 0, sizeof *out);
    gw_error e;
    gw_chat *c = calloc(1, sizeof *c);
    if (!c) {
        gw_fail(&e, 500, "server_error", NULL, NULL, "out of memory");
        reply_error(out, &e);
        return;
    }
    c->g = g;
    c->client_fd = client_fd;
    snprintf(c->cursor, sizeof c->cursor, "0-0");
    gw_follower_init(&c->follow);
    c->deadline_ms = glm_now_mono_ms() + (long long)(g->settings.timeout_s * 1000.0);
    c->last_output_ms = glm_now_mono_ms();
    int rc = gw_request_parse(body, len, &g->limits, &c->req, &e);
    if (rc == 0) {
        make_job_id(c->job_id);
        rc = submit(c, &e);
    }
    if (rc) {
        if (rc == 429) out->retry_after_s = 1;
        c->result_seen = true; /* nothing queued, nothing to cancel */
        reply_error(out, &e);
        gw_chat_finish(c);
        return;
    }
    snprintf(c->completion_id, sizeof c->completion_id, "chatcmpl-%s", c->job_id);
    c->meta = (gw_answer_meta){.completion_id = c->completion_id,
                               .model = c->req.model,
                               .created = (long long)time(NULL),
                               .logprobs = c->req.logprobs,
                               .top_logprobs = c->req.top_logprobs};
    gw_event ev[GW_MAX_EVENTS];
    size_t n = 0;
    if (!c->req.stream) {
        answer_whole(c, ev, 0, out);
        gw_chat_finish(c);
        return;
    }
    /* Streaming: hold the headers until the first event, so a job the server refuses at once
     * (bad image, prompt too long) still gets its HTTP status instead of a 200 with an error; but
     * no longer than the keep-alive interval: a job waiting in a long queue would otherwise send
     * nothing at all, and a proxy in front (nginx reads for 60 s by default) cuts the request.
     * Past that the stream starts, keep-alive comments hold it open, and a later refusal is an
     * error event. */
    glm_error err = {0};
    wait_outcome w;
    long long headers_by = glm_now_mono_ms() + (long long)(g->settings.keepalive_s * 1000.0);
    do
        w = wait_slice(c, ev, &n, &err);
    while (w == WAIT_NOTHING && glm_now_mono_ms() < headers_by);
    if (w == WAIT_NOTHING) {
        push(c, gw_chunk_event(&c->meta, true, "", 0, NULL, 0, NULL, c->req.include_usage));
        out->status = 200;
        out->stream = c;
        return;
    }
    if (w != WAIT_EVENTS) {
        cancel_job(c);
        if (w == WAIT_CLIENT_GONE) {
            out->status = 0;
        } else {
            wait_error(w, c, &err, &e);
            reply_error(out, &e);
        }
        gw_chat_finish(c);
        return;
    }
    const glm_result *r0 = ev[0].result;
    if (r0 && result_failed(c, r0, &e)) {
        c->result_seen = true;
        reply_error(out, &e);
        gw_events_free(ev, n);
        gw_chat_finish(c);
        return;
    }
    push(c, gw_chunk_event(&c->meta, true, "", 0, NULL, 0, NULL, c->req.include_usage));
    for (size_t i = 0; i < n; i++)
        on_stream_event(c, &ev[i]);
    gw_events_free(ev, n);
    out->status = 200;
    out->stream = c;
}
