/* A /v1/chat/completions request body -> one glm_job, the way glm4v-submit builds one: each
 * message becomes a Message with its text parts joined by "\n" and its image, if any; sampling
 * fields map onto SamplingParams. Refuses what the cluster cannot honour (n > 1, tools, penalties)
 * with a 400 instead of ignoring it. */
#ifndef GLM4V_GW_REQUEST_H
#define GLM4V_GW_REQUEST_H

#include "client/gateway/gw_errors.h"
#include "client/gateway/gw_image.h"
#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct gw_request_limits {
    gw_image_policy image;
    glm_job_limits job; /* checked with glm_job_validate before the job is queued */
    const char *model_name;
} gw_request_limits;

typedef struct gw_request {
    glm_job job; /* job.id is set by the caller before encoding */
    bool stream, include_usage;
    bool logprobs;    /* return logprobs in the response */
    int top_logprobs; /* 0..20 */
    char model[128];
    /* storage behind job's pointers */
    glm_message *messages;
    char **texts;
    size_t n_storage;
    /* every image of the request in prompt order (owns the bytes); a message's first image is
     * its `image`, the rest its more_images, pointing here */
    glm_image_part *image_parts;
    size_t n_image_parts;
    char **stops;
    size_t n_stops;
} gw_request;

/* Parses body (len bytes, not NUL-terminated) into r. Returns 0, or the HTTP status of the error
 * (400, 404 for an unknown model, 413 for an image over the limit) with e filled; r is freed on
 * failure. */
int gw_request_parse(const char *body, size_t len, const gw_request_limits *limits, gw_request *r,
                     gw_error *e);
void gw_request_free(gw_request *r);

#endif
