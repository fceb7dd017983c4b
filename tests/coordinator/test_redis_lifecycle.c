/* A held entry's lifecycle against a real redis-server, where a replica may lose it or hold it
 * without knowing: a stale replica's lease refresh must not take an entry back from the replica
 * that reclaimed it, and must tell the stale one to stop. Time is not waited out: the spy
 * connection sets an entry's idle time (XCLAIM ... IDLE) as a paused replica would leave it. */
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_jobs.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static redis_fixture fx;
static redisContext *spy;

/* Out of memory on demand: this test links with -Wl,--wrap=malloc (redis_tests.cmake), so the
 * queue's own allocations come through here; the next one of exactly fail_size bytes fails. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static size_t fail_size;
void *__wrap_malloc(size_t size)
{
    if (fail_size && size == fail_size) {
        fail_size = 0;
        return NULL;
    }
    return __real_malloc(size);
}

static glm_queue *make_queue(const char *prefix, const char *server_id)
{
    glm_queue_config cfg = redis_jobs_config(&fx, prefix, server_id);
    cfg.visibility_timeout_ms = 60000;
    cfg.job_check_interval_ms = 0; /* the tests poll when they mean to */
    return redis_jobs_queue(&cfg);
}

/* The consumer that owns a pending entry ("" when it is not pending) and its idle time. */
static long long pending_owner(const char *prefix, const char *entry_id, char owner[128])
{
    owner[0] = '\0';
    long long idle = -1;
    redisReply *r = redisCommand(spy, "XPENDING %s:jobs %s:servers %s %s 1", prefix, prefix,
                                 entry_id, entry_id);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 4) {
        snprintf(owner, 128, "%s", r->element[0]->element[1]->str);
        idle = r->element[0]->element[2]->integer;
    }
    if (r) freeReplyObject(r);
    return idle;
}

/* Leaves entry_id with consumer as if it had not been touched for idle_ms (a paused replica). */
static void age_entry(const char *prefix, const char *consumer, const char *entry_id, int idle_ms)
{
    redisReply *r = redisCommand(spy, "XCLAIM %s:jobs %s:servers %s 0 %s IDLE %d JUSTID", prefix,
                                 prefix, consumer, entry_id, idle_ms);
    CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    if (r) freeReplyObject(r);
}

/* Bug: the touch was XCLAIM <me> 0 <ids> JUSTID, which succeeds whoever owns the entry. A replica
 * paused past its lease (SIGSTOP, a swap storm) took every entry back from the replicas that had
 * reclaimed them when it woke, and kept computing them: wasted work on two replicas, a second
 * client-visible stream restart. The touch now extends only what this replica still owns, and an
 * entry owned by another consumer is LOST here: the serve loop stops working on it. */
static void test_touch_extends_only_own(void)
{
    glm_queue *a = make_queue("l4", "stale-a"), *b = make_queue("l4", "fresh-b");
    glm_queue_job ja = {0}, jb = {0};
    if (!a || !b) goto out;
    redis_jobs_submit(&fx, "l4", "job-t", "touch me", 0, NULL);
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    glm_begin_outcome o;
    CHECK(glm_queue_read(a, 1, 1000, &ja, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    CHECK(glm_queue_begin(a, &ja, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
    const char *ids[] = {ja.entry_id};
    char owner[128];

    /* a replica that still owns its entry keeps it: idle back to ~0, the claim refreshed */
    age_entry("l4", "stale-a", ja.entry_id, 50000);
    redis_fixture_do(spy, "PEXPIRE l4:claim:job-t 1000");
    CHECK_MSG(glm_queue_touch(a, ids, 1, &err) == GLM_OK, "%s", err.msg);
    long long idle = pending_owner("l4", ja.entry_id, owner);
    CHECK_MSG(idle >= 0 && idle < 5000 && strcmp(owner, "stale-a") == 0, "%s idle %lld", owner,
              idle);
    CHECK(redis_fixture_int(spy, "PTTL l4:claim:job-t") > 50000);
    CHECK(glm_queue_entry_state(a, ja.entry_id) == GLM_ENTRY_ACTIVE);

    /* a is paused past its lease; b reclaims the entry and begins it */
    age_entry("l4", "stale-a", ja.entry_id, 60000);
    CHECK_MSG(glm_queue_claim(b, 4, &jb, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK(n == 1 && n_dead == 0);
    if (n != 1) goto out;
    CHECK(jb.deliveries == 2 && strcmp(jb.entry_id, ja.entry_id) == 0);
    CHECK(glm_queue_begin(b, &jb, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);

    /* a wakes and refreshes its lease: b keeps the entry, a learns it lost it */
    CHECK_MSG(glm_queue_touch(a, ids, 1, &err) == GLM_OK, "%s", err.msg);
    pending_owner("l4", ja.entry_id, owner);
    CHECK_MSG(strcmp(owner, "fresh-b") == 0, "the stale touch took the entry back: owner %s",
              owner);
    CHECK(glm_queue_entry_state(a, ja.entry_id) == GLM_ENTRY_LOST);
    /* b's own touch still works, and b answers once */
    CHECK(glm_queue_touch(b, ids, 1, &err) == GLM_OK);
    CHECK(glm_queue_entry_state(b, jb.entry_id) == GLM_ENTRY_ACTIVE);
    pending_owner("l4", ja.entry_id, owner);
    CHECK(strcmp(owner, "fresh-b") == 0);
    CHECK(redis_jobs_finish(b, &jb, "from b") == GLM_RESULT_WRITTEN);
    int n_results = 0;
    glm_result *r = redis_jobs_read_out(&fx, "l4", "job-t", NULL, &n_results, NULL);
    CHECK(n_results == 1 && r && strcmp(r->text, "from b") == 0 && r->attempts == 2);
    glm_result_free(r);
out:
    glm_queue_job_clear(&ja);
    glm_queue_job_clear(&jb);
    glm_queue_destroy(a);
    glm_queue_destroy(b);
}

/* Adds a stream entry without the id field (not a glm4v client) whose Job's own id is job_id. */
static void submit_idless(const char *prefix, const char *job_id)
{
    glm_message m = {.role = GLM_ROLE_USER, .content = "no id field"};
    glm_job job = {
        .id = job_id, .messages = &m, .n_messages = 1, .sampling = glm_sampling_defaults()};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    redisReply *r = redisCommand(spy, "XADD %s:jobs * job %b", prefix, bytes, len);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    if (r) freeReplyObject(r);
    free(bytes);
}

/* Bug: an entry without the id field is answered at its Job's id (since aa9bc01), but the queue
 * held it under no id, so nothing polled its done marker or cancel key, its id was never bound
 * (begin) nor its claim refreshed: a cancelled one ran to its end, and one answered elsewhere
 * (its replica paused past its lease) was computed to its end for nothing. The queue now
 * addresses such an entry by its Job's id from delivery on, read or reclaimed. */
static void test_idless_addressed_by_job_id(void)
{
    glm_queue *q = make_queue("l3", "idless-a"), *b = make_queue("l3", "idless-b");
    glm_queue_job j[2] = {0}, c = {0};
    if (!q || !b) goto out;
    submit_idless("l3", "bare-1");
    submit_idless("l3", "bare-2");
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    glm_begin_outcome o;
    CHECK(glm_queue_read(q, 2, 1000, j, &n, &err) == GLM_OK && n == 2);
    if (n != 2) goto out;
    CHECK_MSG(strcmp(j[0].job_id, "bare-1") == 0 && strcmp(j[1].job_id, "bare-2") == 0,
              "read as '%s' and '%s'", j[0].job_id, j[1].job_id);
    /* bound like any job: its claim names the entry */
    CHECK(glm_queue_begin(q, &j[0], &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
    CHECK(redis_fixture_int(spy, "EXISTS l3:claim:bare-1") == 1);
    CHECK(glm_queue_begin(q, &j[1], &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
    /* its client cancels it under the id it reads its answer at */
    redis_fixture_do(spy, "SET l3:cancel:bare-1 1 EX 60");
    CHECK_MSG(glm_queue_check_jobs(q, &err) == GLM_OK, "%s", err.msg);
    CHECK(glm_queue_entry_state(q, j[0].entry_id) == GLM_ENTRY_CANCELLED);
    /* stale: another replica reclaimed bare-2 while this one was paused, and answered it */
    age_entry("l3", "idless-a", j[1].entry_id, 60000);
    CHECK(glm_queue_claim(b, 4, &c, &n, &n_dead, &err) == GLM_OK && n == 1);
    CHECK(n != 1 || strcmp(c.job_id, "bare-2") == 0); /* reclaimed: addressed the same */
    if (n == 1) {
        CHECK(glm_queue_begin(b, &c, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
        CHECK(redis_jobs_finish(b, &c, "from b") == GLM_RESULT_WRITTEN);
    }
    CHECK(glm_queue_check_jobs(q, &err) == GLM_OK);
    CHECK(glm_queue_entry_state(q, j[1].entry_id) == GLM_ENTRY_ANSWERED);
    /* the cancelled one is answered at its Job's id, once */
    glm_result res = {.id = "bare-1",
                      .finish_reason = GLM_FINISH_ERROR,
                      .error_code = GLM_EC_CANCELLED,
                      .error_message = "cancelled",
                      .attempts = 1};
    uint8_t *bytes = NULL;
    size_t len = 0;
    glm_finish_outcome fo;
    CHECK(glm_result_encode(&res, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_queue_finish(q, j[0].entry_id, j[0].job_id, bytes, len, &fo, &err) == GLM_OK &&
          fo == GLM_RESULT_WRITTEN);
    free(bytes);
    int n_results = 0;
    glm_result *r = redis_jobs_read_out(&fx, "l3", "bare-1", NULL, &n_results, NULL);
    CHECK(n_results == 1 && r && r->error_code == GLM_EC_CANCELLED);
    glm_result_free(r);
    CHECK(redis_fixture_int(spy, "EXISTS l3:claim:bare-1") == 0);
    /* undecodable bytes have no id to adopt: still id-less (the serve loop dead-letters them) */
    redis_fixture_do(spy, "XADD l3:jobs * job garbage");
    glm_queue_job_clear(&c);
    CHECK(glm_queue_read(q, 1, 1000, &c, &n, &err) == GLM_OK && n == 1);
    CHECK(n != 1 || c.job_id[0] == '\0');
    if (n == 1) CHECK(glm_queue_dead_letter(q, &c, "undecodable", &err) == GLM_OK);
out:
    glm_queue_job_clear(&j[0]);
    glm_queue_job_clear(&j[1]);
    glm_queue_job_clear(&c);
    glm_queue_destroy(q);
    glm_queue_destroy(b);
}

/* Adds an entry with the id field id and len bytes of job (not a decodable Job: the queue hands
 * the bytes on as they are; their length picks the allocation that fails). */
static void submit_sized(const char *prefix, const char *id, size_t len)
{
    char *bytes = malloc(len);
    if (!bytes) return;
    memset(bytes, 'j', len);
    redisReply *r = redisCommand(spy, "XADD %s:jobs * id %s job %b", prefix, id, bytes, len);
    CHECK(r && r->type == REDIS_REPLY_STRING);
    if (r) freeReplyObject(r);
    free(bytes);
}

/* Bug: a read or claim that ran out of memory in the middle of a batch returned the jobs taken
 * before with an error status, and take_jobs (serve_loop.c) dropped them all; the entry that
 * failed and those after it were delivered to this consumer too (XREADGROUP, the claim's
 * XCLAIM) and returned to nobody. Each waited out the lease and came back blamed (one delivery
 * more: quarantine, nearer the dead letters). The queue now returns what it took whatever the
 * status (take_jobs handles those) and hands the rest back at once, unblamed. */
static void test_untaken_entries_handed_back(void)
{
    glm_queue *a = make_queue("l2", "short-a"), *b = make_queue("l2", "short-b"),
              *c = make_queue("l2", "other-c");
    glm_queue_job j[4] = {0};
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    if (!a || !b || !c) goto out;
    /* a read: the second of three entries cannot be copied */
    submit_sized("l2", "read-0", 100);
    submit_sized("l2", "read-1", 3001);
    submit_sized("l2", "read-2", 120);
    fail_size = 3001;
    glm_status st = glm_queue_read(a, 4, 1000, j, &n, &err);
    CHECK(fail_size == 0); /* the allocation did fail */
    CHECK_MSG(st == GLM_ERR_NOMEM && n == 1, "status %d, %zu jobs", st, n);
    CHECK(n < 1 || strcmp(j[0].job_id, "read-0") == 0);
    for (size_t i = 0; i < n; i++)
        glm_queue_job_clear(&j[i]);
    /* the two it could not take are another replica's at once, not blamed on them */
    CHECK_MSG(glm_queue_claim(c, 4, j, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK_MSG(n == 2 && n_dead == 0, "%zu handed back", n);
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(j[i].deliveries == 1, "%s: delivery %u", j[i].job_id, j[i].deliveries);
        CHECK(strcmp(j[i].job_id, i ? "read-2" : "read-1") == 0);
        glm_queue_job_clear(&j[i]);
    }

    /* a claim: a died holding three entries; b's claim cannot copy the second */
    submit_sized("l2", "claim-0", 200);
    submit_sized("l2", "claim-1", 3002);
    submit_sized("l2", "claim-2", 210);
    CHECK(glm_queue_read(a, 4, 1000, j, &n, &err) == GLM_OK && n == 3);
    for (size_t i = 0; i < n; i++) {
        age_entry("l2", "short-a", j[i].entry_id, 60000);
        glm_queue_job_clear(&j[i]);
    }
    fail_size = 3002;
    st = glm_queue_claim(b, 4, j, &n, &n_dead, &err);
    CHECK(fail_size == 0);
    CHECK_MSG(st == GLM_ERR_NOMEM && n == 1, "status %d, %zu jobs", st, n);
    CHECK(n < 1 || (strcmp(j[0].job_id, "claim-0") == 0 && j[0].deliveries == 2));
    for (size_t i = 0; i < n; i++)
        glm_queue_job_clear(&j[i]);
    /* the rest go on at once with the count a's death gave them (2), not one more */
    CHECK_MSG(glm_queue_claim(c, 4, j, &n, &n_dead, &err) == GLM_OK, "%s", err.msg);
    CHECK_MSG(n == 2 && n_dead == 0, "%zu handed back", n);
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(j[i].deliveries == 2, "%s: delivery %u", j[i].job_id, j[i].deliveries);
        glm_queue_job_clear(&j[i]);
    }
out:
    fail_size = 0;
    glm_queue_destroy(a);
    glm_queue_destroy(b);
    glm_queue_destroy(c);
}

int main(void)
{
    static void (*const tests[])(void) = {test_touch_extends_only_own,
                                          test_idless_addressed_by_job_id,
                                          test_untaken_entries_handed_back};
    return redis_fixture_main(&fx, &spy, "test_redis_lifecycle", tests,
                              sizeof tests / sizeof tests[0]);
}
