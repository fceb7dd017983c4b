/* A stream entry whose "id" field (the address its client reads, glm_queue_job.job_id) differs
 * from the id inside its Job bytes. The queue keys the claim, the done marker, the cancel key and
 * error Results by the entry's id; the serve loop streamed Chunks and wrote a FINISHED Result
 * under the Job's id. So such a job ran to its end, answered under the other id (binding that id
 * to this content) and its own client never got a Result. It must be refused with an error Result
 * addressed to the entry's id instead; a Job whose id matches runs as before. No Redis needed:
 * this is the request's preparation (the serve loop writes what glm_request_result encodes). */
#include <string.h>

#include "coordinator/serve/request.h"
#include "tests/testutil.h"
#include "worker/config.h"

/* An entry with the id field entry_id carrying a one-message Job whose own id is job_id. */
static void make_entry(glm_queue_job *e, const char *entry_id, const char *job_id,
                       const char *prompt)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->entry_id, sizeof(e->entry_id), "1700000000000-0");
    snprintf(e->job_id, sizeof(e->job_id), "%s", entry_id);
    e->deliveries = 1;
    glm_message m = {.role = GLM_ROLE_USER, .content = prompt, .image_format = ""};
    glm_job job = {.version = GLM4V_PROTOCOL_VERSION,
                   .id = job_id,
                   .messages = &m,
                   .n_messages = 1,
                   .sampling = glm_sampling_defaults()};
    job.sampling.max_new_tokens = 4;
    CHECK(glm_job_encode(&job, &e->bytes, &e->len, NULL) == GLM_OK);
}

/* Prepares a request for (entry id, job id); returns its error code, and the id its Result (the
 * error Result when it failed) is addressed to in *result_id. */
static glm_error_code prepare_prompt(const glm_request_env *env, const char *entry_id,
                                     const char *job_id, const char *prompt, char *result_id,
                                     size_t cap)
{
    glm_queue_job e;
    make_entry(&e, entry_id, job_id, prompt);
    glm_request *r = NULL;
    CHECK(glm_request_create(&e, &r, NULL) == GLM_OK && r);
    if (!r) return GLM_EC_INTERNAL;
    bool ok = glm_request_prepare(r, env);
    CHECK(ok == (r->error_code == GLM_EC_OK));
    result_id[0] = '\0';
    if (ok) {
        snprintf(result_id, cap, "%s", r->job->id); /* where Chunks and the Result go */
    } else {
        CHECK(glm_job_transition(&r->seq.state, GLM_JOB_FAILED));
        uint8_t *bytes = NULL;
        size_t len = 0;
        CHECK(glm_request_result(r, env, &bytes, &len, NULL) == GLM_OK);
        glm_result *res = NULL;
        CHECK(bytes && glm_result_decode(bytes, len, &res, NULL) == GLM_OK && res);
        if (res) {
            snprintf(result_id, cap, "%s", res->id);
            CHECK(res->error_code == r->error_code && res->finish_reason == GLM_FINISH_ERROR);
            CHECK_MSG(res->error_code != GLM_EC_INVALID_REQUEST ||
                          strstr(res->error_message, job_id),
                      "%s", res->error_message);
        }
        glm_result_free(res);
        free(bytes);
    }
    glm_error_code code = r->error_code;
    glm_request_destroy(r);
    return code;
}

static glm_error_code prepare(const glm_request_env *env, const char *entry_id, const char *job_id,
                              char *result_id, size_t cap)
{
    return prepare_prompt(env, entry_id, job_id, "Which id am I?", result_id, cap);
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
    if (!tok) return test_finish("test_redis_entry_id");
    glm_request_env env = {.cfg = &cfg,
                           .tok = tok,
                           .image_limits = glm_image_limits_default(),
                           .job_limits = glm_job_limits_default(),
                           .image_rows = 11,
                           .default_max_new_tokens = 8,
                           .server_id = "test"};
    env.job_limits.vocab_size = cfg.padded_vocab_size;
    char to[GLM_JOB_ID_MAX + 1];

    /* the ordinary case: both ids agree, the job runs and answers there */
    CHECK(prepare(&env, "same-id", "same-id", to, sizeof to) == GLM_EC_OK);
    CHECK(strcmp(to, "same-id") == 0);
    /* the ids differ: refused, and the error goes where the entry's client reads */
    CHECK(prepare(&env, "entry-id", "other-job", to, sizeof to) == GLM_EC_INVALID_REQUEST);
    CHECK_MSG(strcmp(to, "entry-id") == 0, "answered at %s", to);
    /* an id that differs in one character only is another id */
    CHECK(prepare(&env, "job-1", "job-10", to, sizeof to) == GLM_EC_INVALID_REQUEST);
    CHECK(strcmp(to, "job-1") == 0);
    /* an entry without an id field (not a glm4v client) is answered at the Job's id */
    CHECK(prepare(&env, "", "bare-job", to, sizeof to) == GLM_EC_OK);
    CHECK(strcmp(to, "bare-job") == 0);
    /* and so is its failure: before, it had no address and went to the dead letters unanswered */
    CHECK(prepare_prompt(&env, "", "bare-bad", "", to, sizeof to) == GLM_EC_EMPTY_PROMPT);
    CHECK_MSG(strcmp(to, "bare-bad") == 0, "error Result addressed to '%s'", to);
    /* a failing job with both ids is answered at them as always */
    CHECK(prepare_prompt(&env, "both-bad", "both-bad", "", to, sizeof to) == GLM_EC_EMPTY_PROMPT);
    CHECK(strcmp(to, "both-bad") == 0);

    glm_tokenizer_destroy(tok);
    return test_finish("test_redis_entry_id");
}
