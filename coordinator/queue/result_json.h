/* A Result as one JSON object, the line format of glm4v-submit --json and glm4v-sweep output:
 *   {"id", "text", "token_ids", "finish_reason", "usage": {prompt_tokens, image_tokens,
 *    completion_tokens}, "timings": {queue_ms, vision_ms, prefill_ms, decode_ms, total_ms},
 *    "error": null | {"code": "BAD_IMAGE", "message": "..."}, "server_id", "attempts"
 *    [, "logprobs": [{"token_id", "logprob", "top": [{"token_id", "logprob"}, ...]}, ...]]} */
#ifndef GLM4V_RESULT_JSON_H
#define GLM4V_RESULT_JSON_H

#include "coordinator/queue/job_codec.h"

/* Returns a malloc'd NUL-terminated single-line JSON object (free with free()), or NULL when out of
 * memory. */
char *glm_result_to_json(const glm_result *result);

#endif
