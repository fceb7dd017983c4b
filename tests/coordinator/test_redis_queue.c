/* Server queue against a real redis-server: read -> finish -> result visible and acked once;
 * finish twice; a consumer that dies and one that claims after the visibility timeout; poison jobs
 * to the dead-letter stream; idempotent re-delivery; hand-back; liveness key with TTL. */
#include "client/redis_client.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_jobs.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <string.h>

static redis_fixture fx;
static redisContext *spy; /* direct connection for inspecting keys */

/* XPENDING summary count of the group. */
static long long pending(const char *prefix)
{
    return redis_fixture_int(spy, "XPENDING %s:jobs %s:servers", prefix, prefix);
}

static glm_queue *make_queue(const char *prefix, const char *server_id, int visibility_ms,
                             int max_deliveries)
{
    glm_queue_config cfg = redis_jobs_config(&fx, prefix, server_id);
    cfg.server_version = "test 1";
    cfg.visibility_timeout_ms = visibility_ms;
    cfg.max_deliveries = max_deliveries;
    cfg.liveness_ttl_s = 7;
    return redis_jobs_queue(&cfg);
}

static void submit(const char *prefix, const char *id)
{
    redis_jobs_submit(&fx, prefix, id, "hello", 0, NULL);
}

/* Reads every entry of <prefix>:out:<id>; counts chunks and results, returns the last Result. */
static glm_result *read_out(const char *prefix, const char *id, int *n_chunks, int *n_results)
{
    return redis_jobs_read_out(&fx, prefix, id, n_chunks, n_results, NULL);
}

static void test_read_finish_once(void)
{
    glm_queue *q = make_queue("t1", "s1", 60000, 3);
    if (!q) return;
    submit("t1", "job-a");
    glm_queue_job jobs[4];
    size_t n = 0;
    glm_error err = {0};
    CHECK_MSG(glm_queue_read(q, 4, 1000, jobs, &n, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 1);
    if (n != 1) goto out;
    CHECK(strcmp(jobs[0].job_id, "job-a") == 0 && jobs[0].deliveries == 1);
    glm_job *job = NULL;
    glm_job_problem pr;
    CHECK(glm_job_decode(jobs[0].bytes, jobs[0].len, &job, &pr) == GLM_OK);
    CHECK(job && strcmp(job->id, "job-a") == 0);
    glm_job_free(job);
    CHECK(pending("t1") == 1);

    CHECK(redis_jobs_write_chunk(q, "job-a", "par", &err) == GLM_OK);
    CHECK(redis_jobs_finish(q, &jobs[0], "partial") == GLM_RESULT_WRITTEN);
    CHECK(pending("t1") == 0);
    CHECK(redis_fixture_int(spy, "XLEN %s", "t1:jobs") == 0); /* finished entries are deleted */
    CHECK(redis_fixture_int(spy, "EXISTS %s", "t1:done:job-a") == 1);
    long long ttl = redis_fixture_int(spy, "TTL %s", "t1:out:job-a");
    CHECK(ttl > 0 && ttl <= 86400);

    /* finishing again (a retry, or a slow replica) writes no second Result */
    CHECK(redis_jobs_finish(q, &jobs[0], "other") == GLM_RESULT_DUPLICATE);
    CHECK(glm_queue_duplicates(q) == 1);
    int n_chunks, n_results;
    glm_result *r = read_out("t1", "job-a", &n_chunks, &n_results);
    CHECK(n_chunks == 1 && n_results == 1);
    CHECK(r && strcmp(r->text, "partial") == 0 && strcmp(r->id, "job-a") == 0);
    glm_result_free(r);

    /* the same id submitted again (a resumed sweep) is acked without recomputation */
    submit("t1", "job-a");
    glm_queue_job_clear(&jobs[0]);
    CHECK(glm_queue_read(q, 4, 1000, jobs, &n, &err) == GLM_OK && n == 1);
    bool done = false;
    CHECK(glm_queue_ack_if_done(q, &jobs[0], &done, &err) == GLM_OK && done);
    CHECK(pending("t1") == 0);
out:
    for (size_t i = 0; i < n; i++)
        glm_queue_job_clear(&jobs[i]);
    glm_queue_destroy(q);
}

static void test_dead_consumer_claimed(void)
{
    glm_queue *a = make_queue("t2", "replica-a", 300, 3);
    glm_queue *b = make_queue("t2", "replica-b", 300, 3);
    if (!a || !b) goto out;
    submit("t2", "job-b");
    glm_queue_job ja, jb;
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(a, 1, 1000, &ja, &n, &err) == GLM_OK && n == 1);
    /* a "dies": never acks. Before the visibility timeout b sees nothing. */
    CHECK(glm_queue_claim(b, 4, &jb, &n, &n_dead, &err) == GLM_OK && n == 0);
    CHECK(glm_queue_read(b, 1, 100, &jb, &n, &err) == GLM_OK && n == 0);
    redis_fixture_sleep_ms(400);
    CHECK_MSG(glm_queue_claim(b, 4, &jb, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 1 && n_dead == 0);
    if (n == 1) {
        CHECK(strcmp(jb.entry_id, ja.entry_id) == 0 && jb.deliveries == 2);
        CHECK(strcmp(jb.job_id, "job-b") == 0 && jb.len == ja.len);
        bool done = true;
        CHECK(glm_queue_ack_if_done(b, &jb, &done, &err) == GLM_OK && !done);
        CHECK(redis_jobs_finish(b, &jb, "from b") == GLM_RESULT_WRITTEN);
        glm_queue_job_clear(&jb);
    }
    /* a comes back to life and finishes too: no second Result, nothing acked twice */
    CHECK(redis_jobs_finish(a, &ja, "from a") == GLM_RESULT_DUPLICATE);
    glm_queue_job_clear(&ja);
    int n_chunks, n_results;
    glm_result *r = read_out("t2", "job-b", &n_chunks, &n_results);
    CHECK(n_results == 1 && r && strcmp(r->text, "from b") == 0 && r->attempts == 2);
    glm_result_free(r);
    CHECK(pending("t2") == 0);

    /* hand-back on drain: b reads, hands back, a claims at once despite a 60 s timeout elsewhere */
    submit("t2", "job-c");
    CHECK(glm_queue_read(b, 1, 1000, &jb, &n, &err) == GLM_OK && n == 1);
    CHECK_MSG(glm_queue_hand_back(b, jb.entry_id, &err) == GLM_OK, "%s", err.msg);
    glm_queue_stop_reading(b);
    CHECK(glm_queue_read(b, 1, 100, &ja, &n, &err) == GLM_OK && n == 0);
    CHECK(glm_queue_claim(a, 4, &ja, &n, &n_dead, &err) == GLM_OK && n == 1);
    if (n == 1) {
        CHECK(strcmp(ja.job_id, "job-c") == 0 && ja.deliveries == 1); /* not blamed on it */
        CHECK(redis_jobs_finish(a, &ja, "c") == GLM_RESULT_WRITTEN);
        glm_queue_job_clear(&ja);
    }
    glm_queue_job_clear(&jb);
out:
    glm_queue_destroy(a);
    glm_queue_destroy(b);
}

/* A long job handed back by one draining replica after another (a rolling restart) is never
 * blamed for it: it keeps delivery 1 (no quarantine) and is not dead-lettered however often it
 * moves, while a real crash still counts. Before the hand-back script each hand-back counted, and
 * with --max-deliveries 2 the third claim dead-lettered the healthy job as POISON. */
static void test_hand_back_not_blamed(void)
{
    glm_queue *q[2] = {make_queue("t5", "roll-a", 60000, 2), make_queue("t5", "roll-b", 60000, 2)};
    glm_queue *crash = make_queue("t5", "roll-c", 60000, 2);
    if (!q[0] || !q[1] || !crash) goto out;
    submit("t5", "job-roll");
    glm_queue_job j = {0};
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(q[0], 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    for (int k = 0; k < 5 && n == 1; k++) {
        glm_queue *from = q[k % 2], *to = q[(k + 1) % 2];
        CHECK_MSG(glm_queue_hand_back(from, j.entry_id, &err) == GLM_OK, "%s", err.msg);
        glm_queue_job_clear(&j);
        CHECK_MSG(glm_queue_claim(to, 4, &j, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
        CHECK_MSG(n == 1 && n_dead == 0, "hand-back %d: %zu claimed, %zu dead", k + 1, n, n_dead);
        CHECK_MSG(n != 1 || j.deliveries == 1, "hand-back %d: delivery %u", k + 1, j.deliveries);
    }
    /* a hand-back of an entry that another replica owns by now leaves it to that one */
    bool held = n == 1;
    if (held) {
        CHECK(glm_queue_hand_back(q[0], j.entry_id, &err) == GLM_OK);
        glm_queue_job other = {0};
        CHECK(glm_queue_claim(crash, 4, &other, &n, &n_dead, &err) == GLM_OK && n == 0);
    }
    /* a crash of its owner (roll-b, no hand-back, no step record) still counts as a delivery */
    if (held) {
        redisReply *c = redisCommand(spy, "XCLAIM t5:jobs t5:servers roll-b 0 %s IDLE 60000 JUSTID",
                                     j.entry_id);
        CHECK(c && c->type == REDIS_REPLY_ARRAY && c->elements == 1);
        if (c) freeReplyObject(c);
        glm_queue_job_clear(&j);
        CHECK(glm_queue_claim(crash, 4, &j, &n, &n_dead, &err) == GLM_OK && n == 1);
        CHECK(n != 1 || j.deliveries == 2);
    }
    if (n == 1) CHECK(redis_jobs_finish(crash, &j, "rolled") == GLM_RESULT_WRITTEN);
    glm_queue_job_clear(&j);
    /* handed back by an owner whose step record does not list it (no added delivery): still
     * delivery 1, never 0 */
    submit("t5", "job-rec");
    CHECK(glm_queue_read(q[0], 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    redis_fixture_do(spy, "SET t5:step:roll-a 1-1 PX 60000");
    if (n == 1) CHECK(glm_queue_hand_back(q[0], j.entry_id, &err) == GLM_OK);
    glm_queue_job_clear(&j);
    CHECK(glm_queue_claim(crash, 4, &j, &n, &n_dead, &err) == GLM_OK && n == 1);
    CHECK_MSG(n != 1 || j.deliveries == 1, "delivery %u", j.deliveries);
    if (n == 1) CHECK(redis_jobs_finish(crash, &j, "rec") == GLM_RESULT_WRITTEN);
    redis_fixture_do(spy, "DEL t5:step:roll-a");
    int n_chunks, n_results;
    glm_result *r = read_out("t5", "job-roll", &n_chunks, &n_results);
    CHECK(n_results == 1 && r && r->error_code == GLM_EC_OK && strcmp(r->text, "rolled") == 0);
    glm_result_free(r);
    CHECK(redis_fixture_int(spy, "XLEN %s", "t5:dead") <= 0 && pending("t5") == 0);
    glm_queue_job_clear(&j);
out:
    glm_queue_destroy(q[0]);
    glm_queue_destroy(q[1]);
    glm_queue_destroy(crash);
}

static void test_poison(void)
{
    glm_queue *a = make_queue("t3", "replica-a", 200, 2);
    if (!a) return;
    submit("t3", "job-p");
    glm_queue_job j;
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(a, 1, 1000, &j, &n, &err) == GLM_OK && n == 1); /* delivery 1 */
    glm_queue_job_clear(&j);
    redis_fixture_sleep_ms(250);
    CHECK(glm_queue_claim(a, 4, &j, &n, &n_dead, &err) == GLM_OK && n == 1); /* delivery 2 */
    CHECK(j.deliveries == 2);
    glm_queue_job_clear(&j);
    redis_fixture_sleep_ms(250);
    CHECK_MSG(glm_queue_claim(a, 4, &j, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 0 && n_dead == 1); /* delivery 3 > 2: dead */
    CHECK(glm_queue_dead_count(a) == 1);
    CHECK(redis_fixture_int(spy, "XLEN %s", "t3:dead") == 1);
    CHECK(pending("t3") == 0);
    int n_chunks, n_results;
    glm_result *r = read_out("t3", "job-p", &n_chunks, &n_results);
    CHECK(n_results == 1 && r);
    if (r) {
        CHECK(r->error_code == GLM_EC_POISON && r->finish_reason == GLM_FINISH_ERROR);
        CHECK(strcmp(r->id, "job-p") == 0 && r->attempts == 3 && r->version == 1);
        CHECK(strstr(r->error_message, "delivered 3 times") != NULL);
        CHECK(strcmp(r->server_id, "replica-a") == 0);
    }
    glm_result_free(r);

    /* an entry without a usable id goes to the dead stream without a Result */
    redis_fixture_do(spy, "XADD t3:jobs * job garbage");
    CHECK(glm_queue_read(a, 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    CHECK(j.job_id[0] == '\0' && j.len == 7);
    CHECK(glm_queue_dead_letter(a, &j, "malformed job without id", &err) == GLM_OK);
    CHECK(redis_fixture_int(spy, "XLEN %s", "t3:dead") == 2 && pending("t3") == 0);
    glm_queue_job_clear(&j);
    glm_queue_destroy(a);
}

static void test_liveness(void)
{
    glm_queue *q = make_queue("t4", "live-1", 60000, 3);
    if (!q) return;
    glm_server_load load = {.running = 3, .waiting = 2, .load = 0.25};
    glm_error err = {0};
    CHECK_MSG(glm_queue_tick(q, &load, &err) == GLM_OK, "%s", err.msg);
    long long ttl = redis_fixture_int(spy, "TTL %s", "t4:server:live-1");
    CHECK_MSG(ttl > 0 && ttl <= 7, "ttl %lld", ttl);
    redisReply *r = redisCommand(spy, "GET t4:server:live-1");
    cJSON *o = r && r->type == REDIS_REPLY_STRING ? cJSON_Parse(r->str) : NULL;
    CHECK(o != NULL);
    if (o) {
        CHECK(cJSON_GetObjectItem(o, "running")->valueint == 3);
        CHECK(cJSON_GetObjectItem(o, "waiting")->valueint == 2);
        CHECK(strcmp(cJSON_GetObjectItem(o, "version")->valuestring, "test 1") == 0);
        CHECK(cJSON_GetObjectItem(o, "time_ms")->valuedouble > 1.6e12);
    }
    cJSON_Delete(o);
    if (r) freeReplyObject(r);
    glm_queue_destroy(q); /* removes the key */
    CHECK(redis_fixture_int(spy, "EXISTS %s", "t4:server:live-1") == 0);
}

int main(void)
{
    static void (*const tests[])(void) = {test_read_finish_once, test_dead_consumer_claimed,
                                          test_hand_back_not_blamed, test_poison, test_liveness};
    return redis_fixture_main(&fx, &spy, "test_redis_queue", tests, sizeof tests / sizeof tests[0]);
}
