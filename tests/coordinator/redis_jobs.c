/* Shared steps of the Redis queue tests (see redis_jobs.h). */
#include "tests/coordinator/redis_jobs.h"

#include "client/redis_client.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <stdlib.h>

glm_queue_config redis_jobs_config(const redis_fixture *f, const char *prefix,
                                   const char *server_id)
{
    glm_queue_config cfg = glm_queue_config_default();
    cfg.url = f->url;
    cfg.prefix = prefix;
    cfg.server_id = server_id;
    return cfg;
}

glm_queue *redis_jobs_queue(const glm_queue_config *cfg)
{
    glm_queue *q = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_queue_create(cfg, &q, &err) == GLM_OK, "%s", err.msg);
    if (q) CHECK_MSG(glm_queue_ensure_group(q, &err) == GLM_OK, "%s", err.msg);
    return q;
}

void redis_jobs_submit(const redis_fixture *f, const char *prefix, const char *id,
                       const char *prompt, uint64_t deadline_unix_ms,
                       char fingerprint[GLM_FINGERPRINT_LEN + 1])
{
    glm_message m = {.role = GLM_ROLE_USER, .content = prompt};
    glm_job job = {.id = id,
                   .messages = &m,
                   .n_messages = 1,
                   .sampling = glm_sampling_defaults(),
                   .deadline_unix_ms = deadline_unix_ms};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    if (!bytes) return;
    if (fingerprint) glm_job_fingerprint_bytes(bytes, len, fingerprint);
    glm_client *c = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_client_connect(f->url, NULL, prefix, 2000, &c, &err) == GLM_OK, "%s", err.msg);
    if (c) CHECK_MSG(glm_client_submit(c, id, bytes, len, &err) == GLM_OK, "%s", err.msg);
    free(bytes);
    glm_client_destroy(c);
}

glm_status redis_jobs_write_chunk(glm_queue *q, const char *job_id, const char *text,
                                  glm_error *err)
{
    glm_chunk ch = {.id = job_id, .index = 0, .text = text, .attempt = 1};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_chunk_encode(&ch, &bytes, &len, NULL) == GLM_OK);
    glm_status st = glm_queue_write_chunk(q, job_id, bytes, len, err);
    free(bytes);
    return st;
}

glm_finish_outcome redis_jobs_finish(glm_queue *q, const glm_queue_job *job, const char *text)
{
    glm_result r = {.id = job->job_id,
                    .text = text,
                    .finish_reason = GLM_FINISH_STOP,
                    .attempts = job->deliveries};
    uint8_t *bytes = NULL;
    size_t len = 0;
    /* Set on every GLM_OK; a failed finish is already a failed CHECK below. */
    glm_finish_outcome out = GLM_RESULT_QUEUED;
    glm_error err = {0};
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    CHECK_MSG(glm_queue_finish(q, job->entry_id, job->job_id, bytes, len, &out, &err) == GLM_OK,
              "%s", err.msg);
    free(bytes);
    return out;
}

glm_result *redis_jobs_read_out(const redis_fixture *f, const char *prefix, const char *id,
                                int *n_chunks, int *n_results,
                                char chunk_fingerprint[GLM_FINGERPRINT_LEN + 1])
{
    int chunks = 0;
    *n_results = 0;
    if (chunk_fingerprint) chunk_fingerprint[0] = '\0';
    glm_result *last = NULL;
    glm_client *c = NULL;
    glm_error err = {0};
    if (glm_client_connect(f->url, NULL, prefix, 2000, &c, &err) == GLM_OK) {
        char cursor[48] = "0-0";
        for (;;) {
            glm_client_event ev;
            if (glm_client_next(c, id, cursor, 50, &ev, &err) != GLM_OK ||
                ev.kind == GLM_EVENT_NONE)
                break;
            if (ev.kind == GLM_EVENT_CHUNK) {
                if (chunk_fingerprint && chunks == 0)
                    snprintf(chunk_fingerprint, GLM_FINGERPRINT_LEN + 1, "%s",
                             ev.chunk->job_fingerprint);
                chunks++;
                glm_chunk_free(ev.chunk);
            } else {
                (*n_results)++;
                glm_result_free(last);
                last = ev.result;
            }
        }
        glm_client_destroy(c);
    }
    if (n_chunks) *n_chunks = chunks;
    return last;
}
