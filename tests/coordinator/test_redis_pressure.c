/* Redis under pressure, against a real redis-server: a Redis that refuses writes (maxmemory with
 * noeviction) is told apart from a lost connection, the finished Result waits in the outbox and
 * arrives once writes are accepted again (attempts unchanged, entry kept claimed meanwhile); past
 * the job's deadline it becomes a REDIS_REFUSED Result naming the cause; <prefix>:dead is trimmed
 * and its payloads capped; the liveness key's loss is noticed; a replica's READONLY (a failover)
 * drops the connection; a queue created before its Redis waits for it. */
#include "client/redis_client.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_jobs.h"
#include "tests/testutil.h"

#include <pthread.h>
#include <string.h>

static redis_fixture fx;
static redisContext *spy;

static glm_queue *make_queue(const char *prefix, const char *server_id, int visibility_ms)
{
    glm_queue_config cfg = redis_jobs_config(&fx, prefix, server_id);
    cfg.visibility_timeout_ms = visibility_ms;
    cfg.max_deliveries = 0; /* every claim dead-letters (the dead-stream test) */
    cfg.backoff_initial_ms = 50;
    cfg.backoff_max_ms = 200;
    cfg.dead_max_len = 8;
    cfg.dead_payload_max = 1000;
    cfg.liveness_ttl_s = 30;
    cfg.startup_wait_ms = 0;
    return redis_jobs_queue(&cfg);
}

static void submit(const char *prefix, const char *id, const char *prompt, uint64_t deadline)
{
    redis_jobs_submit(&fx, prefix, id, prompt, deadline, NULL);
}

static glm_result *last_result(const char *prefix, const char *id, int *n_results)
{
    return redis_jobs_read_out(&fx, prefix, id, NULL, n_results, NULL);
}

static void refuse_writes(bool on)
{
    if (on) {
        redis_fixture_do(spy, "CONFIG SET maxmemory-policy noeviction");
        redis_fixture_do(spy, "CONFIG SET maxmemory 1");
    } else {
        redis_fixture_do(spy, "CONFIG SET maxmemory 0");
    }
}

static void test_refused_then_accepted(void)
{
    glm_queue *q = make_queue("p1", "s1", 600);
    if (!q) return;
    submit("p1", "held", "keep me", 0);
    glm_queue_job job;
    size_t n = 0;
    glm_error err = {0};
    glm_begin_outcome o;
    CHECK(glm_queue_read(q, 1, 1000, &job, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    CHECK(glm_queue_begin(q, &job, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
    refuse_writes(true);
    CHECK(redis_jobs_write_chunk(q, "held", "x", &err) == GLM_ERR_LIMIT); /* dropped, not lost */
    CHECK(glm_queue_connected(q)); /* a refusal is not a lost connection */
    CHECK(redis_jobs_finish(q, &job, "kept through OOM") == GLM_RESULT_QUEUED);
    CHECK(glm_queue_outbox_size(q) == 1);
    glm_queue_stats st = glm_queue_stats_get(q);
    CHECK(st.refusals >= 2 && st.refusals_by_kind[GLM_REDIS_OOM] >= 2);
    /* longer than the visibility timeout: the outbox keeps the entry claimed */
    for (int i = 0; i < 15; i++) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(100);
    }
    CHECK(glm_queue_outbox_size(q) == 1);
    redisReply *p = redisCommand(spy, "XPENDING p1:jobs p1:servers IDLE 600 - + 10");
    CHECK(p && p->type == REDIS_REPLY_ARRAY && p->elements == 0); /* not reclaimable */
    if (p) freeReplyObject(p);
    refuse_writes(false);
    for (int i = 0; i < 20 && glm_queue_outbox_size(q); i++) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(50);
    }
    CHECK(glm_queue_outbox_size(q) == 0);
    int n_results;
    glm_result *r = last_result("p1", "held", &n_results);
    CHECK(n_results == 1 && r && strcmp(r->text, "kept through OOM") == 0 && r->attempts == 1);
    CHECK(r && strcmp(r->job_fingerprint, job.fingerprint) == 0);
    glm_result_free(r);
    CHECK(redis_fixture_int(spy, "XLEN %s", "p1:jobs") == 0);
    glm_queue_job_clear(&job);
out:
    refuse_writes(false);
    glm_queue_destroy(q);
}

static void test_refused_past_deadline(void)
{
    glm_queue *q = make_queue("p2", "s2", 60000);
    if (!q) return;
    long long deadline = glm_now_unix_ms() + 1200;
    submit("p2", "late", "deadline soon", (uint64_t)deadline);
    glm_queue_job job;
    size_t n = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(q, 1, 1000, &job, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    CHECK(job.deadline_unix_ms == (uint64_t)deadline);
    refuse_writes(true);
    CHECK(redis_jobs_finish(q, &job, "too late") == GLM_RESULT_QUEUED);
    while (glm_now_unix_ms() < deadline + 300) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(50);
    }
    CHECK(glm_queue_stats_get(q).results_abandoned == 1);
    refuse_writes(false);
    for (int i = 0; i < 20 && glm_queue_outbox_size(q); i++) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(50);
    }
    int n_results;
    glm_result *r = last_result("p2", "late", &n_results);
    CHECK(n_results == 1 && r && r->error_code == GLM_EC_REDIS_REFUSED);
    CHECK_MSG(r && strstr(r->error_message, "OOM"), "%s", r ? r->error_message : "none");
    glm_result_free(r);
    glm_queue_job_clear(&job);
out:
    refuse_writes(false);
    glm_queue_destroy(q);
}

static void test_dead_bounded(void)
{
    /* lets MAXLEN ~ trim at small sizes */
    redis_fixture_do(spy, "CONFIG SET stream-node-max-entries 4");
    glm_queue *q = make_queue("p3", "s3", 50);
    if (!q) return;
    char big[5001];
    memset(big, 'z', 5000);
    big[5000] = '\0';
    char id[32];
    for (int i = 0; i < 24; i++) {
        snprintf(id, sizeof id, "big-%d", i);
        submit("p3", id, big, 0);
    }
    glm_queue_job jobs[24];
    size_t n = 0, n_dead = 0, total_dead = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(q, 24, 1000, jobs, &n, &err) == GLM_OK && n == 24);
    for (size_t i = 0; i < n; i++)
        glm_queue_job_clear(&jobs[i]);
    redis_fixture_sleep_ms(100);
    for (int k = 0; k < 5 && total_dead < 24; k++) {
        CHECK(glm_queue_claim(q, 24, jobs, &n, &n_dead, &err) == GLM_OK);
        total_dead += n_dead;
    }
    CHECK(total_dead == 24);
    long long len = redis_fixture_int(spy, "XLEN %s", "p3:dead");
    CHECK_MSG(len >= 8 && len <= 12, "dead stream holds %lld entries", len);
    redisReply *r = redisCommand(spy, "XREVRANGE p3:dead + - COUNT 1");
    bool capped = false;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *f = r->element[0]->element[1];
        bool job_ok = false, bytes_ok = false, trunc_ok = false;
        for (size_t i = 0; i + 1 < f->elements; i += 2) {
            if (!strcmp(f->element[i]->str, "job")) job_ok = f->element[i + 1]->len == 1000;
            if (!strcmp(f->element[i]->str, "job_bytes"))
                bytes_ok = atoi(f->element[i + 1]->str) > 5000;
            if (!strcmp(f->element[i]->str, "truncated"))
                trunc_ok = !strcmp(f->element[i + 1]->str, "1");
        }
        capped = job_ok && bytes_ok && trunc_ok;
    }
    CHECK(capped);
    if (r) freeReplyObject(r);
    glm_queue_destroy(q);
}

static void test_liveness_loss(void)
{
    glm_queue *q = make_queue("p4", "s4", 60000);
    if (!q) return;
    glm_error err = {0};
    CHECK(glm_queue_heartbeat(q, NULL, &err) == GLM_OK);
    CHECK(glm_queue_heartbeat(q, NULL, &err) == GLM_OK);
    CHECK(glm_queue_stats_get(q).liveness_lost == 0);
    redis_fixture_do(spy, "DEL p4:server:s4");
    CHECK(glm_queue_heartbeat(q, NULL, &err) == GLM_OK);
    CHECK(glm_queue_stats_get(q).liveness_lost == 1);
    glm_queue_destroy(q);
}

typedef struct early_start {
    glm_queue_config cfg;
    glm_queue *q;
    glm_status st;
    long long ms;
    glm_error err;
} early_start;

/* In a thread: the fixture's server must be started by the main thread (it dies with the thread
 * that forked it). */
static void *create_early(void *arg)
{
    early_start *e = arg;
    long long t0 = glm_now_mono_ms();
    e->st = glm_queue_create(&e->cfg, &e->q, &e->err);
    e->ms = glm_now_mono_ms() - t0;
    return NULL;
}

static void test_waits_for_redis(void)
{
    redisFree(spy);
    spy = NULL;
    redis_fixture_kill(&fx);
    glm_queue_config cfg = redis_jobs_config(&fx, "p5", "early");
    cfg.backoff_initial_ms = 50;
    cfg.backoff_max_ms = 200;
    cfg.startup_wait_ms = 300;
    glm_queue *q = NULL;
    glm_error err = {0};
    long long t0 = glm_now_mono_ms();
    CHECK(glm_queue_create(&cfg, &q, &err) == GLM_ERR_IO && !q);
    CHECK(glm_now_mono_ms() - t0 >= 300 && strstr(err.msg, "gave up waiting"));
    early_start e = {.cfg = cfg};
    e.cfg.startup_wait_ms = -1; /* for ever: until Redis comes */
    pthread_t th;
    CHECK(pthread_create(&th, NULL, create_early, &e) == 0);
    redis_fixture_sleep_ms(700);
    CHECK(redis_fixture_restart(&fx) == 0);
    pthread_join(th, NULL);
    CHECK_MSG(e.st == GLM_OK && e.q, "%s", e.err.msg);
    CHECK(e.ms >= 600);
    glm_queue_destroy(e.q);
    /* a wrong password is a misconfiguration: no waiting */
    cfg.password = "wrong";
    t0 = glm_now_mono_ms();
    CHECK(glm_queue_create(&cfg, &q, &err) != GLM_OK && !q);
    CHECK(glm_now_mono_ms() - t0 < 1000);
}

/* A primary that failed over (Sentinel, a managed Redis) goes on as a read-only replica and keeps
 * its clients' connections open; the URL leads to the new primary only on a new connection. The
 * queue kept its connection through READONLY refusals as through OOM ones, so after a failover it
 * was refused for ever: no job read, every Result held until it was given up. It must drop the
 * connection on READONLY (counted as a refusal), keep the Result, and deliver it once a
 * reconnection reaches a primary. Played on the one server with REPLICAOF (a real failover moves
 * the name to another server; nothing kept on the old connection could reach it). */
static void test_readonly_reconnects(void)
{
    glm_queue *q = make_queue("p6", "ro-1", 60000);
    if (!q) return;
    submit("p6", "job-ro", "after the failover", 0);
    glm_queue_job job;
    size_t n = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(q, 1, 1000, &job, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    redis_fixture_do(spy, "REPLICAOF 127.0.0.1 1"); /* demoted; its master never answers */
    CHECK(redis_jobs_finish(q, &job, "written to the primary") == GLM_RESULT_QUEUED);
    CHECK(glm_queue_outbox_size(q) == 1);
    CHECK_MSG(!glm_queue_connected(q), "the connection to a replica was kept");
    glm_queue_stats st = glm_queue_stats_get(q);
    CHECK(st.refusals_by_kind[GLM_REDIS_READONLY] >= 1);
    /* while it is a replica, reconnecting finds it read-only again: still held */
    for (int i = 0; i < 10; i++) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(50);
    }
    CHECK(glm_queue_outbox_size(q) == 1);
    redis_fixture_do(spy, "REPLICAOF NO ONE"); /* the name leads to a primary again */
    for (int i = 0; i < 40 && glm_queue_outbox_size(q); i++) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(50);
    }
    CHECK(glm_queue_outbox_size(q) == 0 && glm_queue_connected(q));
    int n_results;
    glm_result *r = last_result("p6", "job-ro", &n_results);
    CHECK(n_results == 1 && r && strcmp(r->text, "written to the primary") == 0);
    glm_result_free(r);
    glm_queue_job_clear(&job);
out:
    redis_fixture_do(spy, "REPLICAOF NO ONE");
    glm_queue_destroy(q);
}

int main(void)
{
    static void (*const tests[])(void) = {test_refused_then_accepted, test_refused_past_deadline,
                                          test_dead_bounded,          test_liveness_loss,
                                          test_readonly_reconnects,   test_waits_for_redis};
    return redis_fixture_main(&fx, &spy, "test_redis_pressure", tests,
                              sizeof tests / sizeof tests[0]);
}
