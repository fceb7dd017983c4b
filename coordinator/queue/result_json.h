/* A Result as one JSON object, the line format of glm4v-submit --json and glm4v-sweep output:
 *   {"id", "text" (every byte, \u0000 included), "token_ids", "finish_reason",
 *    "usage": {prompt_tokens, image_tokens, completion_tokens},
 *    "timings": {queue_ms, vision_ms, prefill_ms, decode_ms, total_ms},
 *    "error": null | {"code": "BAD_IMAGE", "message": "..."}, "server_id", "attempts"
 *    [, "logprobs": [{"token_id", "logprob", "top": [{"token_id", "logprob"}, ...]}, ...]]} */
#ifndef GLM4V_RESULT_JSON_H
#define GLM4V_RESULT_JSON_H

#include "coordinator/queue/job_codec.h"

#include <cjson/cJSON.h>

/* Returns a malloc'd NUL-terminated single-line JSON object (free with free()), or NULL when out of
 * memory. "text" carries the whole text_bytes of the Result: a NUL byte in it is written \u0000. */
char *glm_result_to_json(const glm_result *result);

/* A JSON string literal (quotes included) for n bytes of UTF-8 that may hold NUL bytes: '"', '\\'
 * and control bytes escaped (\n, \t, ..., \u0000 for NUL), other bytes as they are (the caller
 * passes valid UTF-8: Chunk and Result text is). The escapes are cJSON's, so text without NULs
 * prints exactly as cJSON_AddStringToObject prints it. malloc'd; NULL when out of memory. */
char *glm_json_quote_bytes(const char *s, size_t n);

/* The same literal as a cJSON item (a raw item: cJSON's own strings end at a NUL), to add to an
 * object or array; NULL when out of memory. */
cJSON *glm_json_bytes_item(const char *s, size_t n);

#endif
