/* redis-server (appendonly yes) killed between reading a job and finishing it: the queue reports
 * the lost connection, keeps the Result in its outbox, reconnects with backoff once Redis is back,
 * writes the Result and acks the job, exactly once. */
#include "client/redis_client.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_jobs.h"
#include "tests/testutil.h"

#include <string.h>

static redis_fixture fx;

int main(void)
{
    if (redis_fixture_start(&fx, true) != 0) {
        CHECK_MSG(0, "redis-server did not start");
        return test_finish("test_redis_restart");
    }
    glm_queue_config cfg = redis_jobs_config(&fx, "rs", "replica-1");
    cfg.backoff_initial_ms = 50;
    cfg.backoff_max_ms = 400;
    cfg.command_timeout_ms = 1000;
    cfg.connect_timeout_ms = 500;
    glm_queue *q = redis_jobs_queue(&cfg);
    redisContext *spy = NULL;
    glm_error err = {0};
    if (!q) goto out;
    redis_jobs_submit(&fx, "rs", "job-r", "survive a restart", 0, NULL);

    glm_queue_job j;
    size_t n = 0;
    CHECK(glm_queue_read(q, 1, 1000, &j, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;

    redis_fixture_kill(&fx); /* SIGKILL: only the AOF (fsync always) survives */

    CHECK(redis_jobs_write_chunk(q, "job-r", "lost", &err) == GLM_ERR_IO); /* best effort */
    CHECK(!glm_queue_connected(q));

    glm_result r = {.id = "job-r",
                    .text = "done after restart",
                    .finish_reason = GLM_FINISH_STOP,
                    .attempts = 1};
    uint8_t *bytes;
    size_t len;
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
    spy = redis_fixture_connect(&fx);
    CHECK(spy && !spy->err);
    /* the job and its pending entry survived in the AOF */
    CHECK(redis_fixture_int(spy, "XPENDING rs:jobs rs:servers") == 1);

    int ticks = 0;
    while ((glm_queue_outbox_size(q) > 0 || !glm_queue_connected(q)) && ticks++ < 200) {
        glm_queue_tick(q, NULL, &err);
        redis_fixture_sleep_ms(25);
    }
    CHECK_MSG(glm_queue_outbox_size(q) == 0 && glm_queue_connected(q), "after %d ticks: %s", ticks,
              err.msg);
    CHECK(glm_queue_duplicates(q) == 1); /* the second held Result found the first one's marker */
    CHECK(redis_fixture_int(spy, "XPENDING rs:jobs rs:servers") == 0);
    CHECK(redis_fixture_int(spy, "XLEN rs:out:job-r") == 1);
    CHECK(redis_fixture_int(spy, "EXISTS rs:done:job-r") == 1);
    CHECK(redis_fixture_int(spy, "EXISTS rs:server:replica-1") == 1); /* tick refreshed liveness */
    glm_queue_job_clear(&j);
out:
    if (spy) redisFree(spy);
    glm_queue_destroy(q);
    redis_fixture_destroy(&fx);
    return test_finish("test_redis_restart");
}
