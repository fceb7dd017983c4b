/* The preparation pool: requests go in on one thread, come out prepared (or with their error
 * code) from several, none lost or duplicated, each the same object that went in (ownership moves
 * by pointer); the pool can be destroyed with work in flight; it lists the entries it holds. */
#include <string.h>
#include <unistd.h>

#include "coordinator/serve/prep_pool.h"
#include "tests/testutil.h"
#include "worker/config.h"

static void make_entry(glm_queue_job *e, int i, bool valid)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->entry_id, sizeof(e->entry_id), "1700000000000-%d", i);
    snprintf(e->job_id, sizeof(e->job_id), "job-%d", i);
    e->deliveries = 1;
    if (valid) {
        char text[64];
        snprintf(text, sizeof(text), "Question number %d?", i);
        glm_message m = {.role = GLM_ROLE_USER, .content = text, .image_format = ""};
        glm_job job = {.version = GLM4V_PROTOCOL_VERSION,
                       .id = e->job_id,
                       .messages = &m,
                       .n_messages = 1,
                       .sampling = glm_sampling_defaults()};
        job.sampling.max_new_tokens = 4;
        glm_job_encode(&job, &e->bytes, &e->len, NULL);
    } else {
        e->len = 17;
        e->bytes = malloc(e->len);
        memset(e->bytes, 0xff, e->len);
    }
}

/* Every request submitted and not yet collected is listed by its entry id, whether it waits for
 * a thread, is being prepared or is prepared (the serve loop refreshes their leases): one
 * thread, preparations slowed to 150 ms each, three requests. */
static void test_entry_ids(const glm_request_env *base)
{
    glm_request_env env = *base;
    env.test_slow_prepare_ms = 150;
    glm_prep_pool *pool = NULL;
    CHECK(glm_prep_pool_create(1, &env, &pool, NULL) == GLM_OK);
    if (!pool) return;
    for (int i = 0; i < 3; i++) {
        glm_queue_job e;
        make_entry(&e, 900 + i, true);
        glm_request *r = NULL;
        CHECK(glm_request_create(&e, &r, NULL) == GLM_OK && r);
        if (r && glm_prep_pool_submit(pool, r, NULL)) glm_request_destroy(r);
    }
    char ids[4][GLM_PREP_ENTRY_ID_LEN];
    /* the first is being prepared for the whole of this: all three are listed throughout */
    for (int k = 0; k < 10; k++) {
        size_t n = glm_prep_pool_entry_ids(pool, ids, 4);
        CHECK_MSG(n == 3, "%zu listed", n);
        int seen = 0;
        for (size_t i = 0; i < n && i < 4; i++)
            for (int j = 0; j < 3; j++) {
                char want[GLM_PREP_ENTRY_ID_LEN];
                snprintf(want, sizeof want, "1700000000000-%d", 900 + j);
                seen += strcmp(ids[i], want) == 0;
            }
        CHECK(seen == 3);
        usleep(10 * 1000);
    }
    CHECK(glm_prep_pool_entry_ids(pool, ids, 1) == 3); /* the count, even past max */
    /* prepared but not collected: still listed; collected: gone */
    size_t collected = 0;
    for (int spins = 0; collected < 3 && spins < 2000; spins++) {
        glm_request *done[4];
        size_t k = glm_prep_pool_collect(pool, done, 1);
        if (k == 0) usleep(1000);
        for (size_t j = 0; j < k; j++) {
            collected++;
            CHECK(glm_prep_pool_entry_ids(pool, ids, 4) == 3 - collected);
            glm_request_destroy(done[j]);
        }
    }
    CHECK(collected == 3);
    glm_prep_pool_destroy(pool);
}

int main(void)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/glm4v-tiny-b", test_testdata_dir());
    glm_model_config cfg;
    CHECK(glm_config_load(dir, &cfg, NULL) == GLM_OK);
    snprintf(path, sizeof(path), "%s/tokenizer.model", dir);
    glm_tokenizer *tok = NULL;
    CHECK(glm_tokenizer_load(path, &tok, NULL) == GLM_OK);
    glm_request_env env = {.cfg = &cfg,
                           .tok = tok,
                           .image_limits = glm_image_limits_default(),
                           .job_limits = glm_job_limits_default(),
                           .image_rows = 11,
                           .default_max_new_tokens = 8,
                           .server_id = "test"};
    env.job_limits.vocab_size = cfg.padded_vocab_size;

    glm_prep_pool *pool = NULL;
    CHECK(glm_prep_pool_create(3, &env, &pool, NULL) == GLM_OK);
    const int n = 200;
    for (int i = 0; i < n; i++) {
        glm_queue_job e;
        make_entry(&e, i, i % 5 != 0);
        glm_request *r = NULL;
        CHECK(glm_request_create(&e, &r, NULL) == GLM_OK && r);
        CHECK(e.bytes == NULL); /* ownership moved into the request */
        CHECK(r->seq.state == GLM_JOB_QUEUED && r->seq.request == r);
        CHECK(glm_prep_pool_submit(pool, r, NULL) == GLM_OK);
        /* a request already handed over cannot be submitted again */
        CHECK(i != 0 || glm_prep_pool_submit(pool, r, NULL) == GLM_ERR_INVALID_ARG);
    }
    int seen[200] = {0}, ok = 0, bad = 0;
    glm_request *done[16];
    for (int spins = 0; (ok + bad < n) && spins < 20000; spins++) {
        size_t k = glm_prep_pool_collect(pool, done, 16);
        if (k == 0) usleep(200);
        for (size_t j = 0; j < k; j++) {
            glm_request *r = done[j];
            int id = -1;
            sscanf(r->entry.job_id, "job-%d", &id);
            CHECK(r->seq.state == GLM_JOB_PREPARING);
            CHECK(strcmp(r->entry.entry_id, "") != 0); /* the entry travels with the request */
            if (r->error_code == GLM_EC_OK) {
                CHECK(r->job && strcmp(r->job->id, r->entry.job_id) == 0);
                CHECK(r->seq.layout.n_rows > 0);
                ok++;
            } else {
                CHECK(r->error_code == GLM_EC_MALFORMED_JOB && r->error_msg[0]);
                bad++;
            }
            /* the request ends once: FAILED, and no state after that */
            CHECK(glm_job_transition(&r->seq.state, GLM_JOB_FAILED));
            CHECK(!glm_job_transition(&r->seq.state, GLM_JOB_FINISHED));
            CHECK(!glm_job_transition(&r->seq.state, GLM_JOB_WAITING));
            glm_request_destroy(r);
            CHECK(id >= 0 && id < n);
            if (id >= 0 && id < n) seen[id]++;
        }
    }
    CHECK(ok == n - n / 5 && bad == n / 5);
    for (int i = 0; i < n; i++)
        CHECK(seen[i] == 1);
    CHECK(glm_prep_pool_in_flight(pool) == 0);
    /* destroyed with work queued: nothing leaks, nothing hangs */
    for (int i = 0; i < 50; i++) {
        glm_queue_job e;
        make_entry(&e, i, true);
        glm_request *r = NULL;
        if (glm_request_create(&e, &r, NULL) == GLM_OK && glm_prep_pool_submit(pool, r, NULL))
            glm_request_destroy(r);
    }
    glm_prep_pool_destroy(pool);
    test_entry_ids(&env);
    glm_tokenizer_destroy(tok);
    return test_finish("prep_pool");
}
