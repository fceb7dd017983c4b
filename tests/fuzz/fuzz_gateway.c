/* libFuzzer harness: a /v1/chat/completions body from an HTTP client -> glm4v-gateway's request
 * parser (JSON, content parts, base64 data URIs, sampling fields) -> job validation -> encoding.
 * No host is allow-listed, so http(s) image URLs are refused before any fetch. Every input must
 * end in a clean request or an error status, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "client/gateway/gw_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gw_request_limits limits = {.job = glm_job_limits_default(), .model_name = "glm-4v-9b"};
    limits.image = (gw_image_policy){.max_image_bytes = 1 << 16, .fetch_timeout_ms = 1};
    gw_request r;
    gw_error e;
    if (gw_request_parse((const char *)data, size, &limits, &r, &e) != 0) return 0;
    r.job.id = "fuzz-1";
    glm_job_problem problem;
    if (glm_job_validate(&r.job, &limits.job, &problem) == GLM_OK) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        glm_error err = {0};
        if (glm_job_encode(&r.job, &bytes, &len, &err) == GLM_OK) free(bytes);
    }
    gw_request_free(&r);
    return 0;
}
