/* One job inside glm4v-serve, from its queue entry to its final Result.
 *
 * job bytes -> decode + validate -> chat template + tokenize -> image decode/resize/normalize ->
 * prompt layout -> a scheduler sequence; then, as tokens arrive, streamed Chunks (text cut at
 * UTF-8 boundaries and held back while it could still become a stop string) and one Result. */
#ifndef GLM4V_REQUEST_H
#define GLM4V_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

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
} glm_request_env;

typedef struct glm_request {
    glm_queue_job entry; /* stream entry id, job id, deliveries */
    glm_job *job;
    glm_sequence seq;
    float *pixels; /* [C, S, S] */
    glm_detokenizer detok;
    glm_bytes text;      /* decoded so far */
    size_t text_emitted; /* bytes of text already streamed */
    uint32_t chunk_index;
    float *logprobs; /* per generated token, GLM_SAMPLE_LOGPROBS_STRIDE floats */
    int n_logprobs_wanted;
    double t_received, t_scheduled, t_first_token, t_done; /* ms, CLOCK_MONOTONIC */
    double vision_ms;
    double queue_ms; /* from the entry's Redis timestamp to receipt */
} glm_request;

/* Builds a request from a queue entry (takes ownership of entry's bytes). On a bad job returns
 * non-OK with *code and msg set: the caller writes an error Result for it. */
glm_status glm_request_create(const glm_request_env *env, glm_queue_job *entry, glm_request **out,
                              glm_error_code *code, char *msg, size_t msg_len);
void glm_request_destroy(glm_request *r);

/* After the sequence got its newest token(s): returns the text that may be streamed now (a
 * chunk's delta, possibly empty) and whether a stop string ended the request. */
glm_status glm_request_on_token(glm_request *r, const glm_request_env *env, int32_t id,
                                const float *logprobs, bool *stop_string, glm_bytes *delta,
                                glm_error *err);
/* Encodes the Chunk for the last token and delta. */
glm_status glm_request_chunk(glm_request *r, const glm_bytes *delta, uint8_t **bytes, size_t *len,
                             glm_error *err);
/* Encodes the final Result from the sequence's finish state. */
glm_status glm_request_result(glm_request *r, const glm_request_env *env, uint8_t **bytes,
                              size_t *len, glm_error *err);
/* Encodes an error Result for a job that never became a request. */
glm_status glm_request_error_result(const char *job_id, glm_error_code code, const char *msg,
                                    const char *server_id, uint32_t attempts, uint8_t **bytes,
                                    size_t *len, glm_error *err);

double glm_now_ms(void);

#endif
