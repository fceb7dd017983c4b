/* Job identity and crash attribution against a real redis-server: fingerprints; a reused id with
 * other content is a conflict that never receives or overwrites the first job's Result; two
 * entries of one job are computed once; chunks are stamped and never follow the Result; a replica
 * dying inside a recorded step is blamed on that step's entries only; cancel keys are seen. */
#include "client/redis_client.h"
#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_jobs.h"
#include "tests/testutil.h"

#include <string.h>

static redis_fixture fx;
static redisContext *spy;

static glm_queue *make_queue(const char *prefix, const char *server_id, int visibility_ms,
                             int max_deliveries)
{
    glm_queue_config cfg = redis_jobs_config(&fx, prefix, server_id);
    cfg.visibility_timeout_ms = visibility_ms;
    cfg.max_deliveries = max_deliveries;
    cfg.startup_wait_ms = 0;
    return redis_jobs_queue(&cfg);
}

/* Encodes a one-message job; returns its fingerprint as a client computes it. */
static void encode(const char *id, const char *prompt, uint8_t **bytes, size_t *len,
                   char fp[GLM_FINGERPRINT_LEN + 1])
{
    glm_message m = {.role = GLM_ROLE_USER, .content = prompt};
    glm_job job = {.id = id, .messages = &m, .n_messages = 1, .sampling = glm_sampling_defaults()};
    CHECK(glm_job_encode(&job, bytes, len, NULL) == GLM_OK);
    glm_job_fingerprint_bytes(*bytes, *len, fp);
}

/* fp (may be NULL) receives the submitted job's fingerprint. */
static void submit(const char *prefix, const char *id, const char *prompt,
                   char fp[GLM_FINGERPRINT_LEN + 1])
{
    redis_jobs_submit(&fx, prefix, id, prompt, 0, fp);
}

static void write_chunk(glm_queue *q, const char *job_id, const char *text)
{
    glm_error err = {0};
    CHECK_MSG(redis_jobs_write_chunk(q, job_id, text, &err) == GLM_OK, "%s", err.msg);
}

static void test_fingerprint(void)
{
    char a[33], b[33], c[33], d[33], e[33];
    uint8_t *bytes;
    size_t len;
    encode("x", "what is this?", &bytes, &len, a);
    free(bytes);
    CHECK(glm_fingerprint_valid(a));
    encode("another-id", "what is this?", &bytes, &len, b); /* the id is not the content */
    free(bytes);
    CHECK(strcmp(a, b) == 0);
    encode("x", "what is that?", &bytes, &len, c);
    free(bytes);
    CHECK(strcmp(a, c) != 0);
    /* priority and deadline change when a job runs, not its answer; sampling changes the answer */
    glm_message m = {.role = GLM_ROLE_USER, .content = "what is this?"};
    glm_job job = {.id = "x", .messages = &m, .n_messages = 1, .sampling = glm_sampling_defaults()};
    job.priority = 7;
    job.deadline_unix_ms = 123456;
    glm_job_fingerprint(&job, d);
    CHECK(strcmp(a, d) == 0);
    job.sampling.temperature = 0;
    glm_job_fingerprint(&job, e);
    CHECK(strcmp(a, e) != 0);
    /* the same image bytes matter, their format hint does not */
    uint8_t img1[] = {1, 2, 3}, img2[] = {1, 2, 4};
    glm_message mi = {.role = GLM_ROLE_USER, .content = "q", .image = img1, .image_bytes = 3};
    glm_job ji = {.id = "i", .messages = &mi, .n_messages = 1, .sampling = glm_sampling_defaults()};
    glm_job_fingerprint(&ji, d);
    mi.image_format = "png";
    glm_job_fingerprint(&ji, e);
    CHECK(strcmp(d, e) == 0);
    mi.image = img2;
    glm_job_fingerprint(&ji, e);
    CHECK(strcmp(d, e) != 0);
    /* undecodable bytes still get a fingerprint, distinct per content */
    glm_job_fingerprint_bytes("\xff\xff", 2, d);
    glm_job_fingerprint_bytes("\xff\xfe", 2, e);
    CHECK(glm_fingerprint_valid(d) && strcmp(d, e) != 0);
    CHECK(glm_fingerprint_matches("", a) && glm_fingerprint_matches(a, a) &&
          !glm_fingerprint_matches(a, c));
}

/* A second job reusing an id after the first was answered: not run, and the first job's Result
 * stays the only one in the stream; its client can tell by the fingerprint. */
static void test_reused_id(void)
{
    glm_queue *q = make_queue("id1", "s1", 60000, 3);
    if (!q) return;
    char fp_a[33], fp_b[33], fp_chunk[33];
    submit("id1", "q1", "first prompt", fp_a);
    glm_queue_job jobs[2];
    size_t n = 0;
    glm_error err = {0};
    glm_begin_outcome outcome;
    CHECK(glm_queue_read(q, 2, 1000, jobs, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    CHECK(strcmp(jobs[0].fingerprint, fp_a) == 0); /* server and client agree */
    CHECK(glm_queue_begin(q, &jobs[0], &outcome, &err) == GLM_OK && outcome == GLM_BEGIN_RUN);
    write_chunk(q, "q1", "first ");
    CHECK(redis_jobs_finish(q, &jobs[0], "first answer") == GLM_RESULT_WRITTEN);
    glm_queue_job_clear(&jobs[0]);

    submit("id1", "q1", "second prompt", fp_b);
    CHECK(strcmp(fp_a, fp_b) != 0);
    CHECK(glm_queue_read(q, 2, 1000, jobs, &n, &err) == GLM_OK && n == 1);
    if (n != 1) goto out;
    CHECK(glm_queue_begin(q, &jobs[0], &outcome, &err) == GLM_OK && outcome == GLM_BEGIN_CONFLICT);
    CHECK(redis_fixture_int(spy, "XLEN %s", "id1:jobs") == 0); /* acked and removed: never runs */
    glm_queue_job_clear(&jobs[0]);
    int n_chunks, n_results;
    glm_result *r = redis_jobs_read_out(&fx, "id1", "q1", &n_chunks, &n_results, fp_chunk);
    CHECK(n_results == 1 && n_chunks == 1);
    CHECK(r && strcmp(r->text, "first answer") == 0);
    CHECK(r && strcmp(r->job_fingerprint, fp_a) == 0 &&
          !glm_fingerprint_matches(r->job_fingerprint, fp_b));
    CHECK(strcmp(fp_chunk, fp_a) == 0);
    glm_result_free(r);

    /* the same job again (a retry, a resumed sweep) is still idempotent */
    submit("id1", "q1", "first prompt", fp_b);
    CHECK(glm_queue_read(q, 2, 1000, jobs, &n, &err) == GLM_OK && n == 1);
    if (n == 1) {
        CHECK(glm_queue_begin(q, &jobs[0], &outcome, &err) == GLM_OK && outcome == GLM_BEGIN_DONE);
        glm_queue_job_clear(&jobs[0]);
    }
    CHECK(glm_queue_stats_get(q).conflicts == 1);
out:
    glm_queue_destroy(q);
}

/* Two entries of one id in flight on two replicas: one computes, the other joins; a third entry
 * with other content conflicts with the claim. */
static void test_concurrent_duplicates(void)
{
    glm_queue *a = make_queue("id2", "ra", 60000, 3);
    glm_queue *b = make_queue("id2", "rb", 60000, 3);
    if (!a || !b) goto out;
    char fp1[33], fp2[33], fp3[33];
    submit("id2", "dup", "same prompt", fp1);
    submit("id2", "dup", "same prompt", fp2);
    glm_queue_job ja, jb, jc;
    size_t n = 0;
    glm_error err = {0};
    glm_begin_outcome oa, ob, oc;
    CHECK(glm_queue_read(a, 1, 1000, &ja, &n, &err) == GLM_OK && n == 1);
    CHECK(glm_queue_read(b, 1, 1000, &jb, &n, &err) == GLM_OK && n == 1);
    CHECK(strcmp(ja.entry_id, jb.entry_id) != 0);
    CHECK(glm_queue_begin(a, &ja, &oa, &err) == GLM_OK && oa == GLM_BEGIN_RUN);
    CHECK(glm_queue_begin(b, &jb, &ob, &err) == GLM_OK && ob == GLM_BEGIN_JOINED);
    submit("id2", "dup", "other prompt", fp3);
    CHECK(glm_queue_read(b, 1, 1000, &jc, &n, &err) == GLM_OK && n == 1);
    CHECK(glm_queue_begin(b, &jc, &oc, &err) == GLM_OK && oc == GLM_BEGIN_CONFLICT);
    /* a's re-delivery of its own entry (a claim of its own work) keeps running */
    CHECK(glm_queue_begin(a, &ja, &oa, &err) == GLM_OK && oa == GLM_BEGIN_RUN);
    write_chunk(a, "dup", "one ");
    CHECK(redis_jobs_finish(a, &ja, "one answer") == GLM_RESULT_WRITTEN);
    CHECK(redis_fixture_int(spy, "XLEN %s", "id2:jobs") == 0);
    CHECK(redis_fixture_int(spy, "EXISTS %s", "id2:claim:dup") == 0); /* released by the finish */
    int n_chunks, n_results;
    glm_result *r = redis_jobs_read_out(&fx, "id2", "dup", &n_chunks, &n_results, NULL);
    CHECK(n_results == 1 && n_chunks == 1 && r && strcmp(r->text, "one answer") == 0);
    CHECK(r && strcmp(r->job_fingerprint, fp1) == 0);
    glm_result_free(r);
    glm_queue_job_clear(&ja);
    glm_queue_job_clear(&jb);
    glm_queue_job_clear(&jc);
out:
    glm_queue_destroy(a);
    glm_queue_destroy(b);
}

/* A chunk for a job whose Result exists is not written, and the job reads ANSWERED; a cancel key
 * reads CANCELLED after a poll. */
static void test_stale_and_cancel(void)
{
    glm_queue *stale = make_queue("id3", "stale", 300, 3);
    glm_queue *fresh = make_queue("id3", "fresh", 300, 3);
    if (!stale || !fresh) goto out;
    submit("id3", "slow", "long job", NULL);
    glm_queue_job js, jf;
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    glm_begin_outcome o;
    CHECK(glm_queue_read(stale, 1, 1000, &js, &n, &err) == GLM_OK && n == 1);
    CHECK(glm_queue_begin(stale, &js, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
    write_chunk(stale, "slow", "a");
    /* "stale" is stopped past its lease; "fresh" reclaims and answers */
    redis_fixture_sleep_ms(400);
    CHECK(glm_queue_claim(fresh, 4, &jf, &n, &n_dead, &err) == GLM_OK && n == 1);
    if (n == 1) {
        CHECK(glm_queue_begin(fresh, &jf, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
        CHECK(redis_jobs_finish(fresh, &jf, "fresh answer") == GLM_RESULT_WRITTEN);
        glm_queue_job_clear(&jf);
    }
    CHECK(glm_queue_entry_state(stale, js.entry_id) == GLM_ENTRY_ACTIVE);
    write_chunk(stale, "slow", "b"); /* resumed: must not land after the Result */
    CHECK(glm_queue_entry_state(stale, js.entry_id) == GLM_ENTRY_ANSWERED);
    CHECK(glm_queue_stats_get(stale).chunks_suppressed == 1);
    /* the poll a resumed replica runs first must not forget it before the loop ends the job (it
     * once did: marked without a time, the entry looked a minute old and was pruned, and the stale
     * job ran on to its end) */
    CHECK(glm_queue_check_jobs(stale, &err) == GLM_OK);
    CHECK(glm_queue_entry_state(stale, js.entry_id) == GLM_ENTRY_ANSWERED);
    int n_chunks, n_results;
    glm_result *r = redis_jobs_read_out(&fx, "id3", "slow", &n_chunks, &n_results, NULL);
    CHECK(n_chunks == 1 && n_results == 1 && r && strcmp(r->text, "fresh answer") == 0);
    glm_result_free(r);
    glm_queue_forget(stale, js.entry_id);
    glm_queue_job_clear(&js);

    submit("id3", "gone", "nobody waits", NULL);
    CHECK(glm_queue_read(fresh, 1, 1000, &jf, &n, &err) == GLM_OK && n == 1);
    if (n == 1) {
        CHECK(glm_queue_begin(fresh, &jf, &o, &err) == GLM_OK && o == GLM_BEGIN_RUN);
        CHECK(glm_queue_check_jobs(fresh, &err) == GLM_OK);
        CHECK(glm_queue_entry_state(fresh, jf.entry_id) == GLM_ENTRY_ACTIVE);
        redis_fixture_do(spy, "SET id3:cancel:gone 1 EX 3600");
        CHECK(glm_queue_check_jobs(fresh, &err) == GLM_OK);
        CHECK(glm_queue_entry_state(fresh, jf.entry_id) == GLM_ENTRY_CANCELLED);
        glm_queue_job_clear(&jf);
    }
out:
    glm_queue_destroy(stale);
    glm_queue_destroy(fresh);
}

/* A replica dies: with a step record, only the entries in that step gain a delivery; without
 * one, all of them do. */
static void test_crash_attribution(void)
{
    glm_queue *a = make_queue("id4", "crashy", 300, 3);
    glm_queue *b = make_queue("id4", "rescuer", 300, 3);
    if (!a || !b) goto out;
    submit("id4", "innocent-1", "fine", NULL);
    submit("id4", "culprit", "crash here", NULL);
    submit("id4", "innocent-2", "fine too", NULL);
    glm_queue_job ja[3], jb[4];
    size_t n = 0, n_dead = 0;
    glm_error err = {0};
    CHECK(glm_queue_read(a, 3, 1000, ja, &n, &err) == GLM_OK && n == 3);
    if (n != 3) goto out;
    const char *step[] = {ja[1].entry_id};
    CHECK(glm_queue_step_begin(a, step, 1, &err) == GLM_OK);
    CHECK(redis_fixture_int(spy, "EXISTS %s", "id4:step:crashy") == 1);
    /* "crashy" dies inside the step: the record stays */
    redis_fixture_sleep_ms(400);
    CHECK(glm_queue_claim(b, 4, jb, &n, &n_dead, &err) == GLM_OK && n == 3 && n_dead == 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t want = strcmp(jb[i].job_id, "culprit") == 0 ? 2 : 1;
        CHECK_MSG(jb[i].deliveries == want, "%s delivered %u times", jb[i].job_id,
                  jb[i].deliveries);
    }
    /* "rescuer" dies too, outside any recorded step: everyone it held is blamed */
    redis_fixture_sleep_ms(400);
    glm_queue_job jc[4];
    glm_queue *c = make_queue("id4", "third", 300, 3);
    if (c) {
        CHECK(glm_queue_claim(c, 4, jc, &n, &n_dead, &err) == GLM_OK && n == 3);
        for (size_t i = 0; i < n; i++) {
            uint32_t want = strcmp(jc[i].job_id, "culprit") == 0 ? 3 : 2;
            CHECK_MSG(jc[i].deliveries == want, "%s delivered %u times", jc[i].job_id,
                      jc[i].deliveries);
            glm_queue_job_clear(&jc[i]);
        }
        glm_queue_destroy(c);
    }
    for (size_t i = 0; i < 3; i++) {
        glm_queue_job_clear(&ja[i]);
        glm_queue_job_clear(&jb[i]);
    }
    CHECK(glm_queue_step_end(a, &err) == GLM_OK);
    CHECK(redis_fixture_int(spy, "EXISTS %s", "id4:step:crashy") == 0);
out:
    glm_queue_destroy(a);
    glm_queue_destroy(b);
}

int main(void)
{
    static void (*const tests[])(void) = {test_reused_id, test_concurrent_duplicates,
                                          test_stale_and_cancel, test_crash_attribution};
    test_fingerprint(); /* needs no server */
    return redis_fixture_main(&fx, &spy, "test_redis_identity", tests,
                              sizeof tests / sizeof tests[0]);
}
