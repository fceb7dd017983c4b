#include "coordinator/serve/serve_loop.h"

#include "coordinator/queue/redis_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/serve/server_version.h"
#include "coordinator/serve/abort_record.h"
#include "coordinator/serve/metrics.h"
#include "coordinator/serve/prep_pool.h"
#include "coordinator/serve/request.h"
#include "coordinator/serve/step_driver.h"
#include "worker/step_exec.h"

#define READ_BATCH 16
#define CLAIM_INTERVAL_MS 1000.0
#define IDLE_BLOCK_MS 100

void glm_serve_options_default(glm_serve_options *so)
{
    memset(so, 0, sizeof(*so));
    so->redis_url = "redis://127.0.0.1:6379";
    so->prefix = "glm4v";
    so->max_batch = 64;
    so->max_tokens_per_step = 2048;
    so->prefill_chunk = 512;
    so->max_images_per_step = 4;
    so->max_images_per_prompt = 4; /* four images fill 6.4 K of GLM-4V-9B's 8 K context */
    so->default_max_new_tokens = 256;
    so->vision_cache = 16;
    so->visibility_timeout_ms = 60000;
    so->max_deliveries = 3;
    so->grace_ms = 30000;
    so->prep_threads = 4;
}

/* Where the loop's wall time goes, so an operator (and a benchmark) can tell the model's steps
 * from the host's work around them: logged when the server stops. Steps are told apart by what
 * they carry, since a step that only decodes replays a CUDA graph and the others do not. */
enum { PH_QUEUE, PH_JOBS, PH_SCHEDULE, PH_DECODE, PH_MIXED, PH_VISION, PH_DELIVER, PH_OTHER, PH_N };
static const char *const phase_names[PH_N] = {"redis tick+polls",  "taking jobs (idle waits too)",
                                              "scheduling",        "decode-only steps",
                                              "prefill steps",     "steps with images",
                                              "delivering tokens", "rest"};
typedef struct loop_clock {
    double ms[PH_N];
    uint64_t steps[PH_N];
    uint64_t rows[PH_N];
} loop_clock;

/* Everything the loop owns, in one place, freed in reverse. */
typedef struct server {
    glm_rank_context *ctx;
    const glm_serve_options *so;
    glm_request_env env;
    glm_tokenizer *tok;
    glm_queue *queue;
    glm_image_cache *images;
    glm_scheduler *sched;
    glm_metrics *metrics;
    glm_prep_pool *prep;
    glm_request **requests; /* live requests (added to the scheduler) */
    int n_requests, cap_requests;
    glm_step_driver *driver;
    glm_step_report step; /* the step being run, then the last one run */
    char server_id[128];
    char password[256];
    /* GLM4V_TEST_CRASH_ON_PROMPT (a test hook, inert unless set): abort inside the model step of a
     * job whose prompt holds this text, as a kernel fault would (crash attribution tests) */
    const char *crash_in_step_on;
    /* GLM4V_TEST_SLOW_PROMPT (a test hook, inert unless set): a step holding a job whose prompt has
     * this text lasts at least 5 ms more, so a test can stop a replica in the middle of that job on
     * a tiny model that would otherwise finish it before the signal lands */
    const char *slow_step_on;
    loop_clock clock;
} server;

/* Adds the time since *t0 to a phase and moves *t0 on. */
static void clock_phase(server *s, int phase, double *t0)
{
    double now = glm_now_ms();
    s->clock.ms[phase] += now - *t0;
    *t0 = now;
}

static void log_clock(const server *s, double total_ms)
{
    const loop_clock *c = &s->clock;
    double sum = 0;
    for (int i = 0; i < PH_N; i++)
        sum += c->ms[i];
    fprintf(stderr, "glm4v-serve: %s loop time %.1f s:", s->server_id, total_ms / 1e3);
    for (int i = 0; i < PH_N; i++) {
        fprintf(stderr, " %s %.1f s (%.1f%%", phase_names[i], c->ms[i] / 1e3,
                sum > 0 ? 100 * c->ms[i] / sum : 0.0);
        if (c->steps[i])
            fprintf(stderr, ", %llu steps, %llu rows", (unsigned long long)c->steps[i],
                    (unsigned long long)c->rows[i]);
        fprintf(stderr, ")%s", i + 1 < PH_N ? ";" : "\n");
    }
}

static void log_event(const char *job_id, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void log_event(const char *job_id, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "glm4v-serve: job=%s %s\n", job_id && *job_id ? job_id : "-", msg);
}

static glm_status server_init(server *s, glm_rank_context *ctx, const glm_rank_options *ro,
                              const glm_serve_options *so, volatile sig_atomic_t *stop,
                              glm_error *err)
{
    memset(s, 0, sizeof(*s));
    s->ctx = ctx;
    s->so = so;
    const glm_model_config *cfg = &ctx->cfg;
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    if (so->server_id)
        snprintf(s->server_id, sizeof(s->server_id), "%s", so->server_id);
    else
        snprintf(s->server_id, sizeof(s->server_id), "%s-%d", host, (int)getpid());

    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.model", ro->model_dir);
    glm_status st = glm_tokenizer_load(path, &s->tok, err);
    if (st) return st;
    s->env.cfg = cfg;
    s->env.tok = s->tok;
    s->env.image_limits = glm_image_limits_default();
    s->env.job_limits = glm_job_limits_default();
    s->env.job_limits.vocab_size = cfg->padded_vocab_size;
    s->env.job_limits.max_images = (size_t)so->max_images_per_prompt;
    if (s->env.job_limits.max_new_tokens > (uint32_t)cfg->seq_length)
        s->env.job_limits.max_new_tokens = (uint32_t)cfg->seq_length;
    s->env.image_rows = glm_step_driver_image_rows(ctx->model);
    s->env.default_max_new_tokens = so->default_max_new_tokens;
    s->env.server_id = s->server_id;
    const char *slow_prep = getenv("GLM4V_TEST_SLOW_PREP_MS");
    s->env.test_slow_prepare_ms = slow_prep ? atoi(slow_prep) : 0;

    if ((st = glm_redis_password_read(so->password_file, s->password, sizeof(s->password), err)))
        return st;
    glm_queue_config qc = glm_queue_config_default();
    qc.url = so->redis_url;
    qc.password = s->password[0] ? s->password : NULL;
    qc.prefix = so->prefix;
    qc.server_id = s->server_id;
    qc.server_version = glm4v_version();
    qc.visibility_timeout_ms = so->visibility_timeout_ms;
    qc.max_deliveries = so->max_deliveries;
    qc.stop = stop; /* a Redis that is not up yet is waited for, until SIGTERM */
    s->crash_in_step_on = getenv("GLM4V_TEST_CRASH_ON_PROMPT");
    s->slow_step_on = getenv("GLM4V_TEST_SLOW_PROMPT");
    if ((st = glm_queue_create(&qc, &s->queue, err))) return st;
    if ((st = glm_queue_ensure_group(s->queue, err))) return st;

    if ((st = glm_image_cache_create(so->vision_cache, &s->images, err))) return st;
    glm_image_cache_set_reuse(s->images, !so->no_vision_reuse);
    glm_scheduler_config sc = glm_step_driver_model_limits(ctx->model);
    sc.max_batch = so->max_batch;
    sc.max_tokens_per_step = so->max_tokens_per_step;
    sc.prefill_chunk = so->prefill_chunk;
    sc.max_images_per_step = so->max_images_per_step;
    sc.no_prefix_cache = so->no_prefix_cache;
    if ((st = glm_scheduler_create(&sc, s->images, &s->sched, err))) return st;
    if ((st = glm_metrics_create(&s->metrics, err))) return st;
    if ((st = glm_prep_pool_create(so->prep_threads > 0 ? so->prep_threads : 1, &s->env, &s->prep,
                                   err)))
        return st;
    if (so->metrics_port > 0) {
        int port = 0;
        if ((st = glm_metrics_serve(s->metrics, so->metrics_bind, so->metrics_port, &port, err)))
            return st;
        fprintf(stderr, "glm4v-serve: metrics on %s:%d/metrics\n",
                so->metrics_bind ? so->metrics_bind : "127.0.0.1", port);
    }
    glm_metrics_set(s->metrics, GLM_GAUGE_KV_BLOCKS_TOTAL, sc.n_blocks);
    glm_abort_target at = {so->redis_url, s->password, so->prefix, s->server_id};
    glm_abort_record_seed(&at, s->metrics); /* earlier runs' watchdog aborts */
    return glm_step_driver_create(ctx->model, s->sched, &s->driver, err);
}

static void server_free(server *s)
{
    glm_prep_pool_destroy(s->prep); /* first: its threads read the tokenizer and env */
    for (int i = 0; i < s->n_requests; i++)
        glm_request_destroy(s->requests[i]);
    free(s->requests);
    glm_step_driver_destroy(s->driver);
    glm_metrics_destroy(s->metrics);
    glm_scheduler_destroy(s->sched);
    glm_image_cache_destroy(s->images);
    glm_queue_destroy(s->queue);
    glm_tokenizer_destroy(s->tok);
    memset(s->password, 0, sizeof(s->password));
}

static glm_server_load current_load(server *s)
{
    glm_scheduler_stats st = glm_scheduler_stats_get(s->sched);
    glm_image_cache_stats is = glm_image_cache_stats_get(s->images);
    return (glm_server_load){
        .running = st.running,
        .waiting = st.waiting,
        .load = st.blocks_total ? (double)st.blocks_used / st.blocks_total : 0,
        .vision_cache_hits = is.hits,
        .vision_cache_misses = is.misses,
        .prefix_hit_rate = st.prompt_rows ? (double)st.reused_rows / (double)st.prompt_rows : 0,
        .prefix_cached_blocks = st.cached_blocks};
}

/* Writes a Result and acks its job; a Result that cannot be written now stays in the queue's
 * outbox and is written after reconnecting (the job stays pending until then). */
static void finish_job(server *s, const char *entry_id, const char *job_id, const uint8_t *bytes,
                       size_t len)
{
    glm_error err = {0};
    glm_finish_outcome outcome;
    if (glm_queue_finish(s->queue, entry_id, job_id, bytes, len, &outcome, &err))
        log_event(job_id, "finish failed: %s", err.msg);
    else if (outcome == GLM_RESULT_DUPLICATE)
        log_event(job_id, "result already existed: acknowledged only");
    else if (outcome == GLM_RESULT_QUEUED)
        log_event(job_id, "result held in the outbox (Redis unreachable or refusing writes)");
}

static glm_status track(server *s, glm_request *r, glm_error *err)
{
    if (s->n_requests == s->cap_requests) {
        int cap = s->cap_requests ? 2 * s->cap_requests : 64;
        glm_request **a = realloc(s->requests, (size_t)cap * sizeof(*a));
        if (!a) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
        s->requests = a;
        s->cap_requests = cap;
    }
    s->requests[s->n_requests++] = r;
    return GLM_OK;
}

static void untrack(server *s, glm_request *r)
{
    for (int i = 0; i < s->n_requests; i++)
        if (s->requests[i] == r) {
            s->requests[i] = s->requests[--s->n_requests];
            return;
        }
}

static const char *finish_name(glm_seq_finish f)
{
    switch (f) {
    case GLM_SEQ_FINISHED_STOP_STRING:
        return "stop string";
    case GLM_SEQ_FINISHED_STOP:
        return "stop";
    case GLM_SEQ_FINISHED_ERROR:
        return "error";
    case GLM_SEQ_CANCELLED:
        return "cancelled";
    default:
        return "length";
    }
}

static void write_result(server *s, glm_request *r, const char *job_id)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    glm_error err = {0};
    if (glm_request_result(r, &s->env, &bytes, &len, &err) == GLM_OK)
        finish_job(s, r->entry.entry_id, job_id, bytes, len);
    else
        log_event(job_id, "result encoding failed: %s", err.msg);
    free(bytes);
}

/* The one place a job ends, whatever ended it (the scheduler at eos or a length limit, a stop
 * string, a bad job, a failed preparation, non-finite logits, its deadline, a drain). The request
 * moves to its final state, leaving the scheduler if it is still there; then FINISHED and FAILED
 * write the Result and acknowledge the entry in one step (an entry with no job id to address a
 * Result to goes to the dead letters), and CANCELLED hands the entry back to the queue for
 * another replica. The request is destroyed: nothing refers to it afterwards. */
static void end_job(server *s, glm_request *r, glm_seq_finish why)
{
    glm_error err = {0};
    if (!glm_job_state_is_final(r->seq.state)) {
        if (glm_job_state_is_scheduled(r->seq.state)) {
            glm_scheduler_finish(s->sched, &r->seq, why);
        } else if (glm_job_transition(&r->seq.state, glm_seq_finish_state(why))) {
            r->seq.finish = why;
        }
    }
    const char *job_id = r->entry.job_id;
    switch (r->seq.state) {
    case GLM_JOB_FINISHED:
        write_result(s, r, r->job->id);
        glm_metrics_inc(s->metrics, GLM_COUNTER_JOBS_OK, 1);
        glm_metrics_observe(s->metrics, GLM_HISTOGRAM_REQUEST_DURATION,
                            (r->queue_ms + r->t_done - r->t_received) / 1e3);
        log_event(r->job->id, "done: %d tokens, %s", r->seq.n_generated,
                  finish_name(r->seq.finish));
        break;
    case GLM_JOB_FAILED:
        if (r->error_code == GLM_EC_OK)
            glm_request_set_error(r, GLM_EC_INTERNAL, "the job ended (%s) after %d tokens",
                                  finish_name(why), r->seq.n_generated);
        log_event(job_id, "rejected: %s: %s", glm_error_code_name(r->error_code), r->error_msg);
        glm_metrics_inc(s->metrics,
                        r->error_code == GLM_EC_CANCELLED ? GLM_COUNTER_JOBS_CANCELLED
                                                          : GLM_COUNTER_JOBS_ERROR,
                        1);
        if (!job_id[0]) /* nothing to address a Result to */
            glm_queue_dead_letter(s->queue, &r->entry, r->error_msg, &err);
        else
            write_result(s, r, job_id);
        break;
    case GLM_JOB_CANCELLED:
        if (glm_queue_entry_state(s->queue, r->entry.entry_id) == GLM_ENTRY_ANSWERED) {
            glm_queue_forget(s->queue, r->entry.entry_id); /* answered elsewhere: nothing to do */
            log_event(job_id, "stopped: its Result was written by another replica");
        } else if (glm_queue_entry_state(s->queue, r->entry.entry_id) == GLM_ENTRY_LOST) {
            glm_queue_forget(s->queue, r->entry.entry_id); /* its new owner computes it */
            log_event(job_id, "stopped: another replica reclaimed it (this one was paused past "
                              "its lease)");
        } else if (glm_queue_hand_back(s->queue, r->entry.entry_id, &err))
            log_event(job_id, "hand back failed (it will be reclaimed): %s", err.msg);
        else
            log_event(job_id, "handed back for another replica");
        break;
    default: /* a transition refused: a bug; the entry stays pending and is reclaimed */
        log_event(job_id, "cannot end a %s job", glm_job_state_name(r->seq.state));
        break;
    }
    untrack(s, r);
    glm_request_destroy(r);
}

static void crash_if_poisoned(server *s, const glm_request *r)
{
    if (!s->so->crash_on_prompt) return;
    for (size_t i = 0; i < r->job->n_messages; i++)
        if (strstr(r->job->messages[i].content, s->so->crash_on_prompt)) {
            log_event(r->job->id, "fault injection: aborting on a poisoned prompt");
            abort();
        }
}

/* The stream entry ids of the requests still in the preparation pool (malloc'd, *n of them;
 * NULL when there are none or no memory for them). */
static char (*preparing_entries(server *s, size_t *n))[GLM_PREP_ENTRY_ID_LEN]
{
    /* only this thread submits, so the count cannot grow between the two calls */
    size_t cap = glm_prep_pool_in_flight(s->prep);
    char(*ids)[GLM_PREP_ENTRY_ID_LEN] = cap ? malloc(cap * sizeof *ids) : NULL;
    *n = ids ? glm_prep_pool_entry_ids(s->prep, ids, cap) : 0;
    if (*n > cap) *n = cap;
    return ids;
}

/* Whether entry_id is this replica's work already: running, waiting, or still in preparation. */
static bool tracked_entry(server *s, const char *entry_id)
{
    for (int i = 0; i < s->n_requests; i++)
        if (strcmp(s->requests[i]->entry.entry_id, entry_id) == 0) return true;
    size_t n = 0;
    char(*ids)[GLM_PREP_ENTRY_ID_LEN] = preparing_entries(s, &n);
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(ids[i], entry_id) == 0;
    free(ids);
    return found;
}

/* Keeps this server's in-flight entries fresh so live work is never reclaimed by another
 * replica (or by this one) just because it runs longer than the visibility timeout. Entries
 * still in the preparation pool count: a preparation that outlasted the lease (a huge image on
 * a loaded host, many jobs queued behind each other) had its entry reclaimed and computed twice. */
static void touch_in_flight(server *s, double *last_touch)
{
    double period = s->so->visibility_timeout_ms / 3.0;
    if (glm_now_ms() - *last_touch < period) return;
    size_t n_prep = 0;
    char(*prep)[GLM_PREP_ENTRY_ID_LEN] = preparing_entries(s, &n_prep);
    size_t total = (size_t)s->n_requests + n_prep;
    if (total == 0) {
        free(prep);
        return;
    }
    *last_touch = glm_now_ms();
    const char *ids[256];
    glm_error err = {0};
    for (size_t i = 0; i < total;) {
        size_t n = 0;
        for (; i < total && n < 256; i++)
            ids[n++] = i < (size_t)s->n_requests ? s->requests[i]->entry.entry_id
                                                 : prep[i - (size_t)s->n_requests];
        if (glm_queue_touch(s->queue, ids, n, &err))
            fprintf(stderr, "glm4v-serve: refreshing in-flight jobs failed: %s\n", err.msg);
    }
    free(prep);
}

/* A job from the stream: acknowledged at once when its Result already exists (re-delivery is
 * idempotent), otherwise it becomes a request (QUEUED), handed to the preparation threads. */
static void accept_job(server *s, glm_queue_job *job)
{
    glm_error err = {0};
    bool done = false;
    if (tracked_entry(s, job->entry_id)) { /* a claim of our own work: already running here */
        glm_queue_job_clear(job);
        return;
    }
    glm_begin_outcome begun = GLM_BEGIN_RUN; /* binds the id to the job's fingerprint */
    done = job->job_id[0] && glm_queue_begin(s->queue, job, &begun, &err) == GLM_OK &&
           begun != GLM_BEGIN_RUN;
    if (done) { /* JOINED and CONFLICT are logged by the queue */
        if (begun == GLM_BEGIN_DONE)
            log_event(job->job_id, "already answered: acknowledged without recomputation");
        glm_queue_job_clear(job);
        return;
    }
    glm_request *r = NULL;
    if (glm_request_create(job, &r, &err)) { /* out of memory: another replica may have room */
        glm_error hb = {0};
        if (glm_queue_hand_back(s->queue, job->entry_id, &hb))
            log_event(job->job_id, "%s; hand back failed (it will be reclaimed): %s", err.msg,
                      hb.msg);
        else
            log_event(job->job_id, "%s: handed back for another replica", err.msg);
        glm_queue_job_clear(job);
        return;
    }
    if (glm_prep_pool_submit(s->prep, r, &err)) {
        glm_request_set_error(r, GLM_EC_INTERNAL, "%s", err.msg);
        end_job(s, r, GLM_SEQ_FINISHED_ERROR);
    }
}

/* Ends r when the queue learnt that it must stop (see end_cancelled_and_stale); returns whether
 * it did (r is destroyed then). */
static bool end_if_stopped(server *s, glm_request *r)
{
    glm_entry_state st = glm_queue_entry_state(s->queue, r->entry.entry_id);
    if (st == GLM_ENTRY_ACTIVE) return false;
    if (st == GLM_ENTRY_CANCELLED)
        glm_request_set_error(r, GLM_EC_CANCELLED, "cancelled by its client after %d tokens",
                              r->seq.n_generated);
    end_job(s, r, st == GLM_ENTRY_CANCELLED ? GLM_SEQ_FINISHED_ERROR : GLM_SEQ_CANCELLED);
    return true;
}

/* Prepared requests join the scheduler (WAITING); failed preparations get their error Result;
 * those cancelled, answered elsewhere or lost while they were prepared end here, before a step. */
static void collect_prepared(server *s)
{
    glm_request *done[32];
    glm_error err = {0};
    size_t n = glm_prep_pool_collect(s->prep, done, 32);
    for (size_t i = 0; i < n; i++) {
        glm_request *r = done[i];
        /* a job now owned elsewhere ends without a Result even when it failed here (its new
         * owner's answer must not lose to an error of this replica's making) */
        if (end_if_stopped(s, r)) continue;
        if (r->error_code != GLM_EC_OK) {
            end_job(s, r, GLM_SEQ_FINISHED_ERROR);
            continue;
        }
        crash_if_poisoned(s, r);
        /* delivered before: maybe it crashed a replica; it runs alone in its steps so that a
         * crash is blamed on it only (docs/DEPLOY.md, crash attribution) */
        r->seq.isolated = r->entry.deliveries > 1;
        if (track(s, r, &err) || glm_scheduler_add(s->sched, &r->seq, &err)) {
            glm_request_set_error(r, GLM_EC_INTERNAL, "%s", err.msg);
            end_job(s, r, GLM_SEQ_FINISHED_ERROR);
            continue;
        }
        glm_metrics_inc(s->metrics, GLM_COUNTER_PROMPT_TOKENS, (uint64_t)r->seq.layout.n_rows);
        log_event(r->job->id, "accepted: %d prompt rows, %d images, attempt %u%s",
                  r->seq.layout.n_rows, r->seq.layout.n_images, r->entry.deliveries,
                  r->seq.isolated ? " (quarantined: runs alone in its steps)" : "");
    }
}

/* New jobs (and stale ones reclaimed from dead replicas), while there is room. */
static void take_jobs(server *s, bool idle, double *last_claim)
{
    if (!glm_queue_reading(s->queue)) return;
    int held = s->n_requests + (int)glm_prep_pool_in_flight(s->prep);
    if (held >= 2 * s->so->max_batch) return; /* enough queued here: leave the rest */
    glm_queue_job jobs[READ_BATCH];
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    /* Jobs returned with an error status (out of memory part way through a batch; the queue
     * handed back the ones it could not return) are this replica's all the same: each is
     * accepted. Dropped, they waited out their lease unanswered and came back blamed. */
    if (glm_now_ms() - *last_claim > CLAIM_INTERVAL_MS) {
        *last_claim = glm_now_ms();
        glm_queue_claim(s->queue, READ_BATCH, jobs, &n, &n_dead, &err); /* the queue logs */
        if (n_dead) glm_metrics_inc(s->metrics, GLM_COUNTER_JOBS_DEAD_LETTERED, n_dead);
        for (size_t i = 0; i < n; i++) {
            log_event(jobs[i].job_id, "reclaimed (delivery %u)", jobs[i].deliveries);
            accept_job(s, &jobs[i]);
        }
    }
    n = 0;
    size_t room = (size_t)(2 * s->so->max_batch - held);
    if (room > READ_BATCH) room = READ_BATCH;
    if (room == 0) return;
    glm_status st = glm_queue_read(s->queue, room, idle ? IDLE_BLOCK_MS : 0, jobs, &n, &err);
    for (size_t i = 0; i < n; i++)
        accept_job(s, &jobs[i]);
    if (st && n == 0 && idle) usleep(IDLE_BLOCK_MS * 1000); /* Redis away: tick reconnects */
}

/* Sampled tokens -> requests: one Chunk each, all of a step's chunks written to Redis in one
 * pipelined round trip; then the requests that ended get their Result. */
static void deliver_tokens(server *s, int n_rows)
{
    glm_bytes delta = {0};
    glm_error err = {0};
    const char **ids = calloc((size_t)(n_rows > 0 ? n_rows : 1), sizeof(*ids));
    uint8_t **chunks = calloc((size_t)(n_rows > 0 ? n_rows : 1), sizeof(*chunks));
    size_t *lens = calloc((size_t)(n_rows > 0 ? n_rows : 1), sizeof(*lens));
    size_t n_chunks = 0;
    const glm_step_report *rep = &s->step;
    for (int i = 0; i < n_rows; i++) {
        /* rows that drew nothing were failed and dropped by fail_undrawn */
        if (!rep->rows[i].draw || rep->sampled[i] < 0) continue;
        glm_request *r = rep->rows[i].seq->request;
        if (r->seq.n_generated == 0) continue;
        int32_t id = r->seq.generated[r->seq.n_generated - 1];
        if (r->seq.n_generated == 1)
            glm_metrics_observe(s->metrics, GLM_HISTOGRAM_TIME_TO_FIRST_TOKEN,
                                (r->queue_ms + glm_now_ms() - r->t_received) / 1e3);
        bool stop_string = false;
        if (glm_request_on_token(r, &s->env, id,
                                 rep->logprobs + (size_t)i * GLM_SAMPLE_LOGPROBS_STRIDE,
                                 &stop_string, &delta, &err))
            log_event(r->job->id, "detokenize: %s", err.msg);
        if (stop_string) glm_scheduler_finish(s->sched, &r->seq, GLM_SEQ_FINISHED_STOP_STRING);
        if (ids && chunks && lens &&
            glm_request_chunk(r, &delta, &chunks[n_chunks], &lens[n_chunks], &err) == GLM_OK)
            ids[n_chunks++] = r->job->id;
    }
    if (n_chunks) /* best effort: a lost chunk is covered by the Result's full text */
        glm_queue_write_chunks(s->queue, n_chunks, ids, (const void *const *)chunks, lens, &err);
    for (size_t i = 0; i < n_chunks; i++)
        free(chunks[i]);
    free(ids);
    free(chunks);
    free(lens);
    glm_bytes_free(&delta);
    uint64_t drawn = 0;
    for (int i = 0; i < n_rows; i++)
        drawn += rep->rows[i].draw && rep->sampled[i] >= 0;
    glm_metrics_inc(s->metrics, GLM_COUNTER_GENERATED_TOKENS, drawn);
    for (int i = 0; i < s->n_requests;) {
        glm_request *r = s->requests[i];
        if (glm_job_state_is_final(r->seq.state))
            end_job(s, r, r->seq.finish); /* untracks r: the same index holds the next one */
        else
            i++;
    }
}

/* Rows the sampler could not draw from (id -1: no finite logit, an activation overflowed its
 * 16-bit storage on the way; glm_scheduler_commit has ended their sequences) end their job with
 * an INTERNAL error Result; the rest of the batch goes on. */
static void fail_undrawn(server *s, int n_rows)
{
    const glm_step_report *rep = &s->step;
    for (int i = 0; i < n_rows; i++) {
        if (!rep->rows[i].draw || rep->sampled[i] >= 0) continue;
        glm_request *r = rep->rows[i].seq->request;
        glm_request_set_error(r, GLM_EC_INTERNAL,
                              "the model's logits were not finite at generated token %d: an "
                              "activation overflowed (with --dtype f16 storage, serve this model "
                              "with bf16)",
                              r->seq.n_generated);
        end_job(s, r, GLM_SEQ_FINISHED_ERROR);
    }
}

/* Crash attribution: a step that holds a quarantined job is recorded in Redis while it runs
 * (glm_queue_step_begin), so that if this replica dies in it, only that job is blamed. Returns
 * whether a record was written (the caller clears it after the step). */
static bool record_isolated_step(server *s)
{
    const char *ids[1];
    size_t n = 0;
    for (int i = 0; i < s->n_requests; i++) {
        const glm_request *r = s->requests[i];
        if (r->seq.scheduled && r->seq.isolated && n < 1) ids[n++] = r->entry.entry_id;
    }
    glm_error err = {0};
    if (n == 0) return false;
    if (glm_queue_step_begin(s->queue, ids, n, &err))
        fprintf(stderr,
                "glm4v-serve: step record not written (a crash now blames every job "
                "held here): %s\n",
                err.msg);
    return true;
}

/* Whether a job scheduled in this step has TEXT in one of its messages (the test hooks). */
static const glm_request *scheduled_job_with(const server *s, const char *text)
{
    if (!text || !*text) return NULL;
    for (int i = 0; i < s->n_requests; i++) {
        const glm_request *r = s->requests[i];
        if (!r->seq.scheduled) continue;
        for (size_t k = 0; k < r->job->n_messages; k++)
            if (strstr(r->job->messages[k].content, text)) return r;
    }
    return NULL;
}

/* The test hooks GLM4V_TEST_CRASH_ON_PROMPT (dies inside the step, like a kernel fault) and
 * GLM4V_TEST_SLOW_PROMPT (paces the step). */
static void test_hooks_in_step(const server *s)
{
    const glm_request *r = scheduled_job_with(s, s->crash_in_step_on);
    if (r) {
        log_event(r->job->id, "test hook GLM4V_TEST_CRASH_ON_PROMPT: aborting in a step");
        abort();
    }
    if (scheduled_job_with(s, s->slow_step_on)) nanosleep(&(struct timespec){0, 5000000}, NULL);
}

/* Jobs the queue's poll found answered elsewhere (this replica was paused past its lease and
 * another one finished them) or its touch found owned by another replica (reclaimed meanwhile)
 * stop without a Result; jobs whose client set the cancel key end with a CANCELLED Result. */
static void end_cancelled_and_stale(server *s)
{
    for (int i = 0; i < s->n_requests;)
        if (!end_if_stopped(s, s->requests[i])) i++; /* an ended one is untracked */
}

/* One continuous-batching step across every rank, through the step driver (schedule -> run the
 * plan on every rank -> draw on the device -> commit), then the tokens to their jobs. */
static glm_status run_batch_step(server *s, glm_error *err)
{
    glm_step_report *rep = &s->step;
    double tc = glm_now_ms();
    glm_status st = glm_step_driver_schedule(s->driver, rep, err);
    clock_phase(s, PH_SCHEDULE, &tc);
    if (st) return st;
    if (rep->n_tokens == 0 && rep->n_images == 0) return GLM_OK;
    double t0 = glm_now_ms();
    /* a request's queue wait ends the first time it is in a step */
    for (int i = 0; i < rep->n_seqs; i++)
        if (rep->seqs[i]->request->t_scheduled == 0) rep->seqs[i]->request->t_scheduled = t0;
    bool recorded = record_isolated_step(s);
    test_hooks_in_step(s);
    st = glm_step_driver_run(s->driver, rep, err);
    if (recorded) {
        glm_error record_err = {0};
        glm_queue_step_end(s->queue, &record_err); /* retried at reconnect when it fails */
    }
    int kind = rep->n_images > 0 ? PH_VISION : rep->n_tokens > rep->n_seqs ? PH_MIXED : PH_DECODE;
    clock_phase(s, kind, &tc);
    s->clock.steps[kind]++;
    s->clock.rows[kind] += (uint64_t)rep->n_tokens;
    if (st) return st;
    for (int i = 0; i < rep->n_seqs; i++) {
        glm_request *r = rep->seqs[i]->request;
        if (rep->n_images > 0 && r->seq.layout.n_images > 0 && r->vision_ms == 0)
            r->vision_ms = rep->vision_ms;
    }
    fail_undrawn(s, rep->n_rows);
    glm_metrics_observe(s->metrics, GLM_HISTOGRAM_STEP_DURATION, rep->step_ms / 1e3);
    deliver_tokens(s, rep->n_rows);
    clock_phase(s, PH_DELIVER, &tc);
    return GLM_OK;
}

static void update_gauges(server *s)
{
    glm_scheduler_stats st = glm_scheduler_stats_get(s->sched);
    glm_image_cache_stats is = glm_image_cache_stats_get(s->images);
    glm_metrics_set(s->metrics, GLM_GAUGE_RUNNING_SEQUENCES, st.running);
    glm_metrics_set(s->metrics, GLM_GAUGE_WAITING_SEQUENCES, st.waiting);
    glm_metrics_set(s->metrics, GLM_GAUGE_KV_BLOCKS_USED, st.blocks_used);
    glm_metrics_set(s->metrics, GLM_GAUGE_VISION_CACHE_ENTRIES, is.filled);
    uint64_t hits = glm_metrics_counter_value(s->metrics, GLM_COUNTER_VISION_CACHE_HITS);
    uint64_t misses = glm_metrics_counter_value(s->metrics, GLM_COUNTER_VISION_CACHE_MISSES);
    if (is.hits > hits) glm_metrics_inc(s->metrics, GLM_COUNTER_VISION_CACHE_HITS, is.hits - hits);
    if (is.misses > misses)
        glm_metrics_inc(s->metrics, GLM_COUNTER_VISION_CACHE_MISSES, is.misses - misses);
    glm_metrics_set(s->metrics, GLM_GAUGE_PREFIX_CACHE_BLOCKS, st.cached_blocks);
    uint64_t rows = glm_metrics_counter_value(s->metrics, GLM_COUNTER_PREFIX_PROMPT_ROWS);
    uint64_t reused = glm_metrics_counter_value(s->metrics, GLM_COUNTER_PREFIX_HIT_ROWS);
    if (st.prompt_rows > rows)
        glm_metrics_inc(s->metrics, GLM_COUNTER_PREFIX_PROMPT_ROWS, st.prompt_rows - rows);
    if (st.reused_rows > reused)
        glm_metrics_inc(s->metrics, GLM_COUNTER_PREFIX_HIT_ROWS, st.reused_rows - reused);
    uint64_t evicted = glm_metrics_counter_value(s->metrics, GLM_COUNTER_PREFIX_EVICTIONS);
    if (st.cache_evictions > evicted)
        glm_metrics_inc(s->metrics, GLM_COUNTER_PREFIX_EVICTIONS, st.cache_evictions - evicted);
    /* Redis refusals, counted by the queue: the counters follow its totals */
    glm_queue_stats qs = glm_queue_stats_get(s->queue);
    const uint64_t *by = qs.refusals_by_kind;
    const uint64_t refused[] = {
        by[GLM_REDIS_OOM],     by[GLM_REDIS_READONLY],
        by[GLM_REDIS_LOADING], by[GLM_REDIS_BUSY],
        by[GLM_REDIS_MISCONF], by[GLM_REDIS_MASTERDOWN] + by[GLM_REDIS_NOREPLICAS]};
    for (int k = 0; k < 6; k++) {
        glm_counter_id id = (glm_counter_id)(GLM_COUNTER_REDIS_REFUSED_OOM + k);
        uint64_t seen = glm_metrics_counter_value(s->metrics, id);
        if (refused[k] > seen) glm_metrics_inc(s->metrics, id, refused[k] - seen);
    }
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Jobs whose deadline passed, waiting or running, end with a DEADLINE_EXCEEDED error Result:
 * nobody is waiting for them any more, and their batch slot and KV blocks go to live work. */
static void expire_deadlines(server *s)
{
    double now = wall_ms();
    for (int i = 0; i < s->n_requests;) {
        glm_request *r = s->requests[i];
        if (!r->job->deadline_unix_ms || (double)r->job->deadline_unix_ms > now) {
            i++;
            continue;
        }
        glm_request_set_error(r, GLM_EC_DEADLINE_EXCEEDED,
                              "deadline passed after %d generated tokens", r->seq.n_generated);
        end_job(s, r, GLM_SEQ_FINISHED_ERROR);
    }
}

/* SIGTERM: stop reading; after the grace period hand every unfinished job back. */
static void hand_back_all(server *s)
{
    /* preparations still running come back first, so they are handed back too */
    for (int k = 0; k < 500 && glm_prep_pool_in_flight(s->prep) > 0; k++) {
        collect_prepared(s);
        usleep(10 * 1000);
    }
    collect_prepared(s);
    while (s->n_requests > 0)
        end_job(s, s->requests[0], GLM_SEQ_CANCELLED);
}

glm_status glm_serve_run(glm_rank_context *ctx, const glm_rank_options *ro,
                         const glm_serve_options *so, volatile sig_atomic_t *stop, glm_error *err)
{
    server s;
    glm_status st = server_init(&s, ctx, ro, so, stop, err);
    if (st) {
        server_free(&s);
        return st;
    }
    char line[512];
    glm_model_describe_memory(ctx->model, line, sizeof(line));
    fprintf(stderr, "glm4v-serve: %s ready (%s, tp=%d); %s\n", s.server_id, ro->device, ctx->size,
            line);
    double last_claim = 0, last_touch = glm_now_ms(), drain_deadline = 0, started = glm_now_ms();
    while (!st) {
        if (*stop && glm_queue_reading(s.queue)) {
            glm_queue_stop_reading(s.queue);
            drain_deadline = glm_now_ms() + so->grace_ms;
            fprintf(stderr, "glm4v-serve: draining (%d jobs in flight, %d ms grace)\n",
                    s.n_requests, so->grace_ms);
        }
        double tc = glm_now_ms();
        glm_server_load load = current_load(&s);
        glm_error tick_err = {0};
        glm_queue_tick(s.queue, &load, &tick_err);
        bool preparing = glm_prep_pool_in_flight(s.prep) > 0;
        bool idle = !glm_scheduler_has_work(s.sched) && !preparing;
        touch_in_flight(&s, &last_touch);
        end_cancelled_and_stale(&s);
        expire_deadlines(&s);
        clock_phase(&s, PH_QUEUE, &tc);
        take_jobs(&s, idle, &last_claim);
        collect_prepared(&s);
        if (!glm_scheduler_has_work(s.sched) && preparing) usleep(500); /* images decoding */
        clock_phase(&s, PH_JOBS, &tc);
        if (glm_scheduler_has_work(s.sched)) st = run_batch_step(&s, err);
        tc = glm_now_ms();
        /* no plan for a while (idle): the other ranks' step watchdog must hear from rank 0 */
        if (!st) st = glm_step_plan_keepalive(ctx->comm, err);
        update_gauges(&s);
        clock_phase(&s, PH_OTHER, &tc);
        if (!glm_queue_reading(s.queue)) {
            if (s.n_requests == 0 && glm_prep_pool_in_flight(s.prep) == 0 &&
                glm_queue_outbox_size(s.queue) == 0)
                break;
            if (glm_now_ms() > drain_deadline) {
                hand_back_all(&s);
                if (glm_queue_outbox_size(s.queue) == 0 || glm_now_ms() > drain_deadline + 5000)
                    break;
            }
        }
    }
    if (st && !glm_rank_group_ok(ctx)) { /* main ends the replica next: count it first */
        glm_abort_target at = {so->redis_url, s.password, so->prefix, s.server_id};
        glm_abort_record_now(&at, s.metrics, err->msg, 1000);
    }
    log_clock(&s, glm_now_ms() - started);
    fprintf(stderr, "glm4v-serve: %s stopped\n", s.server_id);
    server_free(&s);
    return st;
}
