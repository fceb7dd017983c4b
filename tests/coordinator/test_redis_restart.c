/* redis-server (appendonly yes) killed between reading a job and finishing it: the queue reports
 * the lost connection, keeps the Result in its outbox, reconnects with backoff once Redis is back,
 * writes the Result and acks the job, exactly once. */
#include "client/redis_client.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_fixture.h"
#include "tests/testutil.h"

#include <hiredis/hiredis.h>
#include <string.h>
#include <time.h>

static redis_fixture fx;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long query_int(const char *cmd)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", fx.port, tv);
    long long v = -1;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, cmd);
        if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
            r->element[0]->type == REDIS_REPLY_INTEGER)
            v = r->element[0]->integer;
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return v;
}

int main(void)
{
    if (redis_fixture_start(&fx, true) != 0) {
        CHECK_MSG(0, "redis-server did not start");
        return test_finish("test_redis_restart");
    }
    glm_queue_config cfg = glm_queue_config_default();
    cfg.url = fx.url;
    cfg.prefix = "rs";
    cfg.server_id = "replica-1";
    cfg.backoff_initial_ms = 50;
    cfg.backoff_max_ms = 400;
    cfg.command_timeout_ms = 1000;
    cfg.connect_timeout_ms = 500;
    glm_queue *q = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_queue_create(&cfg, &q, &err) == GLM_OK, "%s", err.msg);
    if (!q) goto out;
    CHECK(glm_queue_ensure_group(q, &err) == GLM_OK);

    glm_client *c = NULL;
    CHECK(glm_client_connect(fx.url, NULL, "rs", 2000, &c, &err) == GLM_OK);
    glm_message m = {.role = GLM_ROLE_USER, .content = "survive a restart"};
    glm_job job = {
        .id = "job-r", .messages = &m, .n_messages = 1, .sampling = glm_sampling_defaults()};
    uint8_t *bytes;
    size_t len;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    CHECK(c && glm_client_submit(c, "job-r", bytes, len, &err) == GLM_OK);
    free(bytes);
    glm_client_destroy(c);

    glm_queue_job j;
    size_t n = 0;
    CHECK(glm_queue_read(q, 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;

    redis_fixture_kill(&fx); /* SIGKILL: only the AOF (fsync always) survives */

    glm_chunk ch = {.id = "job-r", .text = "lost"};
    CHECK(glm_chunk_encode(&ch, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_queue_write_chunk(q, "job-r", bytes, len, &err) == GLM_ERR_IO); /* best effort */
    free(bytes);
    CHECK(!glm_queue_connected(q));

    glm_result r = {.id = "job-r",
                    .text = "done after restart",
                    .finish_reason = GLM_FINISH_STOP,
                    .attempts = 1};
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    glm_finish_outcome outcome = GLM_RESULT_WRITTEN;
    CHECK_MSG(glm_queue_finish(q, j.entry_id, "job-r", bytes, len, &outcome, &err) == GLM_OK, "%s",
              err.msg);
    CHECK(outcome == GLM_RESULT_QUEUED && glm_queue_outbox_size(q) == 1);
    /* a second finish of the same job while down (a retry) is held too; the marker dedups it */
    CHECK(glm_queue_finish(q, j.entry_id, "job-r", bytes, len, &outcome, &err) == GLM_OK);
    free(bytes);
    /* ticks while Redis is down fail fast (backoff), they do not block */
    CHECK(glm_queue_tick(q, NULL, &err) == GLM_ERR_IO);

    CHECK(redis_fixture_restart(&fx) == 0);
    /* the job and its pending entry survived in the AOF */
    CHECK(query_int("XPENDING rs:jobs rs:servers") == 1);

    int ticks = 0;
    while ((glm_queue_outbox_size(q) > 0 || !glm_queue_connected(q)) && ticks++ < 200) {
        glm_queue_tick(q, NULL, &err);
        sleep_ms(25);
    }
    CHECK_MSG(glm_queue_outbox_size(q) == 0 && glm_queue_connected(q), "after %d ticks: %s", ticks,
              err.msg);
    CHECK(glm_queue_duplicates(q) == 1); /* the second held Result found the first one's marker */
    CHECK(query_int("XPENDING rs:jobs rs:servers") == 0);
    CHECK(query_int("XLEN rs:out:job-r") == 1);
    CHECK(query_int("EXISTS rs:done:job-r") == 1);
    CHECK(query_int("EXISTS rs:server:replica-1") == 1); /* tick refreshed liveness */
    glm_queue_job_clear(&j);
out:
    glm_queue_destroy(q);
    redis_fixture_destroy(&fx);
    return test_finish("test_redis_restart");
}
