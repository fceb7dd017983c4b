/* One job inside glm4v-serve, from its queue entry to its final Result.
 *
 * job bytes -> decode + validate -> chat template + tokenize -> image decode/resize/normalize ->
 * prompt layout -> a scheduler sequence; then, as tokens arrive, streamed Chunks (text cut at
 * UTF-8 boundaries and held back while it could still become a stop string) and one Result. */
#ifndef GLM4V_REQUEST_H
#define GLM4V_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/text/chat_template.h"
#include "coordinator/text/detokenizer.h"
#include "coordinator/image/image.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/redis_queue.h"
#include "coordinator/serve/scheduler.h"
#include "coordinator/text/tokenizer.h"
#include "worker/config.h"

typedef struct glm_request_env {
    const glm_model_config *cfg;
    const glm_tokenizer *tok;
    glm_image_limits image_limits;
    glm_job_limits job_limits;
    int image_rows;
    int default_max_new_tokens;
    const char *server_id;
    /* GLM4V_TEST_SLOW_PREP_MS (a test hook, 0 unless set): every preparation lasts this much
     * longer, as a huge image on a loaded host does, so a test can hold jobs in preparation past
     * their lease */
    int test_slow_prepare_ms;
} glm_request_env;

/* A job on this replica from the moment it is read to its Result. The request owns every piece
 * of it (queue entry, decoded job, pixels, text) and embeds its scheduler sequence, whose state
 * field is the job's state (job_state.h). Whoever holds the pointer owns the request: the serve
 * loop, then a preparation thread, then the serve loop again. */
typedef struct glm_request {
    glm_queue_job entry; /* stream entry id, job id, deliveries, and the job's bytes */
    glm_job *job;        /* decoded in glm_request_prepare; NULL before, or when undecodable */
    glm_sequence seq;    /* seq.request points back here; seq.state is the job's state */
    float *pixels;       /* [n_images, C, S, S], prompt order */
    glm_detokenizer detok;
    glm_bytes text;      /* decoded so far */
    size_t text_emitted; /* bytes of text already streamed */
    uint32_t chunk_index;
    float *logprobs; /* per generated token, GLM_SAMPLE_LOGPROBS_STRIDE floats */
    int n_logprobs_wanted;
    glm_error_code error_code; /* why it failed (GLM_EC_OK while it has not) */
    char error_msg[GLM_ERROR_MSG_LEN];
    double t_received, t_scheduled, t_first_token, t_done; /* ms, CLOCK_MONOTONIC */
    double vision_ms;
    double queue_ms; /* from the entry's Redis timestamp to receipt */
} glm_request;

/* A request for a queue entry, state QUEUED; it takes the entry (entry is cleared). */
glm_status glm_request_create(glm_queue_job *entry, glm_request **out, glm_error *err);
/* On a preparation thread, state PREPARING: job bytes -> decode + validate -> chat template +
 * tokenize -> image -> prompt layout and sampling. A bad job sets r->error_code and
 * r->error_msg (the state stays PREPARING: the serve loop ends it) and returns false. */
bool glm_request_prepare(glm_request *r, const glm_request_env *env);
/* Records why the request fails (the first reason given wins). */
void glm_request_set_error(glm_request *r, glm_error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void glm_request_destroy(glm_request *r);

/* After the sequence got its newest token(s): returns the text that may be streamed now (a
 * chunk's delta, possibly empty) and whether a stop string ended the request. */
glm_status glm_request_on_token(glm_request *r, const glm_request_env *env, int32_t id,
                                const float *logprobs, bool *stop_string, glm_bytes *delta,
                                glm_error *err);
/* Encodes the Chunk for the last token and delta. */
glm_status glm_request_chunk(glm_request *r, const glm_bytes *delta, uint8_t **bytes, size_t *len,
                             glm_error *err);
/* Encodes the final Result of a FINISHED request (text, ids, usage, timings) or a FAILED one
 * (error_code and error_msg, addressed by the entry's job id). */
glm_status glm_request_result(glm_request *r, const glm_request_env *env, uint8_t **bytes,
                              size_t *len, glm_error *err);

/* The chat template's role for a Job message's role (glm4v-run's --messages uses it too). */
glm_chat_role glm_chat_role_of(glm_role r);

double glm_now_ms(void);

#endif
