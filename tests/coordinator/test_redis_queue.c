/* Server queue against a real redis-server: read -> finish -> result visible and acked once;
 * finish twice; a consumer that dies and one that claims after the visibility timeout; poison jobs
 * to the dead-letter stream; idempotent re-delivery; hand-back; liveness key with TTL. */
#include "client/redis_client.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_fixture.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

static redis_fixture fx;
static redisContext *spy; /* direct connection for inspecting keys */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long spy_int(const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(spy, fmt, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r) freeReplyObject(r);
    return v;
}

/* XPENDING summary count of the group. */
static long long pending(const char *prefix)
{
    redisReply *r = redisCommand(spy, "XPENDING %s:jobs %s:servers", prefix, prefix);
    long long v = r && r->type == REDIS_REPLY_ARRAY ? r->element[0]->integer : -1;
    if (r) freeReplyObject(r);
    return v;
}

static glm_queue *make_queue(const char *prefix, const char *server_id, int visibility_ms,
                             int max_deliveries)
{
    glm_queue_config cfg = glm_queue_config_default();
    cfg.url = fx.url;
    cfg.prefix = prefix;
    cfg.server_id = server_id;
    cfg.server_version = "test 1";
    cfg.visibility_timeout_ms = visibility_ms;
    cfg.max_deliveries = max_deliveries;
    cfg.liveness_ttl_s = 7;
    glm_queue *q = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_queue_create(&cfg, &q, &err) == GLM_OK, "%s", err.msg);
    if (q) CHECK_MSG(glm_queue_ensure_group(q, &err) == GLM_OK, "%s", err.msg);
    return q;
}

static void submit(const char *prefix, const char *id)
{
    glm_client *c = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_client_connect(fx.url, NULL, prefix, 2000, &c, &err) == GLM_OK, "%s", err.msg);
    if (!c) return;
    glm_message m = {.role = GLM_ROLE_USER, .content = "hello"};
    glm_job job = {.id = id, .messages = &m, .n_messages = 1, .sampling = glm_sampling_defaults()};
    uint8_t *bytes;
    size_t len;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    CHECK_MSG(glm_client_submit(c, id, bytes, len, &err) == GLM_OK, "%s", err.msg);
    free(bytes);
    glm_client_destroy(c);
}

static glm_finish_outcome finish(glm_queue *q, const glm_queue_job *job, const char *text)
{
    glm_result r = {.id = job->job_id,
                    .text = text,
                    .finish_reason = GLM_FINISH_STOP,
                    .attempts = job->deliveries};
    uint8_t *bytes;
    size_t len;
    glm_finish_outcome out = GLM_RESULT_QUEUED;
    glm_error err = {0};
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    CHECK_MSG(glm_queue_finish(q, job->entry_id, job->job_id, bytes, len, &out, &err) == GLM_OK,
              "%s", err.msg);
    free(bytes);
    return out;
}

/* Reads every entry of <prefix>:out:<id>; counts chunks and results, returns the last Result. */
static glm_result *read_out(const char *prefix, const char *id, int *n_chunks, int *n_results)
{
    glm_client *c = NULL;
    glm_error err = {0};
    *n_chunks = *n_results = 0;
    glm_result *last = NULL;
    if (glm_client_connect(fx.url, NULL, prefix, 2000, &c, &err) != GLM_OK) return NULL;
    char cursor[48] = "0-0";
    for (;;) {
        glm_client_event ev;
        if (glm_client_next(c, id, cursor, 50, &ev, &err) != GLM_OK || ev.kind == GLM_EVENT_NONE)
            break;
        if (ev.kind == GLM_EVENT_CHUNK) {
            (*n_chunks)++;
            glm_chunk_free(ev.chunk);
        } else {
            (*n_results)++;
            glm_result_free(last);
            last = ev.result;
        }
    }
    glm_client_destroy(c);
    return last;
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

    glm_chunk ch = {.id = "job-a", .index = 0, .text = "par", .attempt = 1};
    uint8_t *cb;
    size_t cl;
    CHECK(glm_chunk_encode(&ch, &cb, &cl, NULL) == GLM_OK);
    CHECK(glm_queue_write_chunk(q, "job-a", cb, cl, &err) == GLM_OK);
    free(cb);
    CHECK(finish(q, &jobs[0], "partial") == GLM_RESULT_WRITTEN);
    CHECK(pending("t1") == 0);
    CHECK(spy_int("XLEN %s", "t1:jobs") == 0); /* finished entries are deleted */
    CHECK(spy_int("EXISTS %s", "t1:done:job-a") == 1);
    long long ttl = spy_int("TTL %s", "t1:out:job-a");
    CHECK(ttl > 0 && ttl <= 86400);

    /* finishing again (a retry, or a slow replica) writes no second Result */
    CHECK(finish(q, &jobs[0], "other") == GLM_RESULT_DUPLICATE);
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
    sleep_ms(400);
    CHECK_MSG(glm_queue_claim(b, 4, &jb, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 1 && n_dead == 0);
    if (n == 1) {
        CHECK(strcmp(jb.entry_id, ja.entry_id) == 0 && jb.deliveries == 2);
        CHECK(strcmp(jb.job_id, "job-b") == 0 && jb.len == ja.len);
        bool done = true;
        CHECK(glm_queue_ack_if_done(b, &jb, &done, &err) == GLM_OK && !done);
        CHECK(finish(b, &jb, "from b") == GLM_RESULT_WRITTEN);
        glm_queue_job_clear(&jb);
    }
    /* a comes back to life and finishes too: no second Result, nothing acked twice */
    CHECK(finish(a, &ja, "from a") == GLM_RESULT_DUPLICATE);
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
        CHECK(strcmp(ja.job_id, "job-c") == 0 && ja.deliveries == 2);
        CHECK(finish(a, &ja, "c") == GLM_RESULT_WRITTEN);
        glm_queue_job_clear(&ja);
    }
    glm_queue_job_clear(&jb);
out:
    glm_queue_destroy(a);
    glm_queue_destroy(b);
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
    sleep_ms(250);
    CHECK(glm_queue_claim(a, 4, &j, &n, &n_dead, &err) == GLM_OK && n == 1); /* delivery 2 */
    CHECK(j.deliveries == 2);
    glm_queue_job_clear(&j);
    sleep_ms(250);
    CHECK_MSG(glm_queue_claim(a, 4, &j, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 0 && n_dead == 1); /* delivery 3 > 2: dead */
    CHECK(glm_queue_dead_count(a) == 1);
    CHECK(spy_int("XLEN %s", "t3:dead") == 1);
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
    redisReply *x = redisCommand(spy, "XADD t3:jobs * job garbage");
    if (x) freeReplyObject(x);
    CHECK(glm_queue_read(a, 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    CHECK(j.job_id[0] == '\0' && j.len == 7);
    CHECK(glm_queue_dead_letter(a, &j, "malformed job without id", &err) == GLM_OK);
    CHECK(spy_int("XLEN %s", "t3:dead") == 2 && pending("t3") == 0);
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
    long long ttl = spy_int("TTL %s", "t4:server:live-1");
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
    CHECK(spy_int("EXISTS %s", "t4:server:live-1") == 0);
}

int main(void)
{
    if (redis_fixture_start(&fx, false) != 0) {
        CHECK_MSG(0, "redis-server did not start");
        return test_finish("test_redis_queue");
    }
    struct timeval tv = {2, 0};
    spy = redisConnectWithTimeout("127.0.0.1", fx.port, tv);
    CHECK(spy && !spy->err);
    test_read_finish_once();
    test_dead_consumer_claimed();
    test_poison();
    test_liveness();
    redisFree(spy);
    redis_fixture_destroy(&fx);
    return test_finish("test_redis_queue");
}
