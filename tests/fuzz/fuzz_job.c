/* libFuzzer harness: protobuf Job bytes from the Redis stream -> decode -> validate -> re-encode.
 * Every input must end in a clean accept or a clean error code, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "coordinator/queue/job_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    glm_job *job = NULL;
    glm_job_problem problem = {0};
    if (glm_job_decode(data, size, &job, &problem) != GLM_OK) return 0;
    glm_job_limits limits = glm_job_limits_default();
    limits.vocab_size = 151552;
    if (glm_job_validate(job, &limits, &problem) == GLM_OK) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        glm_error err = {0};
        if (glm_job_encode(job, &bytes, &len, &err) == GLM_OK) free(bytes);
    }
    glm_job_free(job);
    return 0;
}
