/* Job, Chunk and Result: protobuf bytes <-> plain C structs, and the checks on a decoded Job that
 * need no tokenizer or image decoder (sizes, sampling ranges, unknown fields, version).
 *
 * The structs are views: their pointers point into memory owned by someone else. A struct filled by
 * a *_decode function owns that memory through its `owner` field and is released with the matching
 * *_free; a struct the caller fills by hand (to encode it) owns nothing and needs no *_free. */
#ifndef GLM4V_JOB_CODEC_H
#define GLM4V_JOB_CODEC_H

#include "common/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Written into Job.version and Result.version; a server accepts versions 1..this. */
#define GLM4V_PROTOCOL_VERSION 1u
/* Job ids become part of Redis keys: 1..128 bytes of [A-Za-z0-9._:@/-]. */
#define GLM_JOB_ID_MAX 128

/* These mirror the enums of proto/glm4v.proto value for value. */
typedef enum glm_role {
    GLM_ROLE_UNSPECIFIED = 0,
    GLM_ROLE_SYSTEM = 1,
    GLM_ROLE_USER = 2,
    GLM_ROLE_ASSISTANT = 3,
    GLM_ROLE_OBSERVATION = 4,
} glm_role;

typedef enum glm_finish_reason {
    GLM_FINISH_UNSPECIFIED = 0,
    GLM_FINISH_STOP = 1,
    GLM_FINISH_LENGTH = 2,
    GLM_FINISH_STOP_STRING = 3,
    GLM_FINISH_ERROR = 4,
    GLM_FINISH_ABORTED = 5,
} glm_finish_reason;

typedef enum glm_error_code {
    GLM_EC_OK = 0,
    GLM_EC_INVALID_REQUEST = 1,
    GLM_EC_PROMPT_TOO_LONG = 2,
    GLM_EC_BAD_IMAGE = 3,
    GLM_EC_UNSUPPORTED_IMAGE = 4,
    GLM_EC_IMAGE_TOO_LARGE = 5,
    GLM_EC_BAD_SAMPLING = 6,
    GLM_EC_MALFORMED_JOB = 7,
    GLM_EC_UNKNOWN_FIELD = 8,
    GLM_EC_DEADLINE_EXCEEDED = 9,
    GLM_EC_INTERNAL = 10,
    GLM_EC_POISON = 11,
    GLM_EC_EMPTY_PROMPT = 12,
    GLM_EC_UNSUPPORTED_VERSION = 13,
    GLM_EC_TOO_MANY_IMAGES = 14,
    GLM_EC_ID_CONFLICT = 15,
    GLM_EC_CANCELLED = 16,
    GLM_EC_REDIS_REFUSED = 17,
} glm_error_code;

const char *glm_role_name(glm_role role);                /* "system", "user", ... */
const char *glm_finish_reason_name(glm_finish_reason r); /* "stop", "length", ... */
const char *glm_error_code_name(glm_error_code code);    /* "BAD_IMAGE", ... */

typedef struct glm_sampling {
    uint32_t max_new_tokens; /* 0 = server default */
    float temperature;       /* 0 = greedy */
    float top_p;
    uint32_t top_k; /* 0 = off */
    bool has_seed;
    uint64_t seed;
    const char *const *stop;
    size_t n_stop;
    const int32_t *stop_ids;
    size_t n_stop_ids;
    bool has_logprobs; /* when true: chosen-token logprob plus `logprobs` alternatives */
    uint32_t logprobs;
    bool ignore_eos;
} glm_sampling;

/* The defaults an unset SamplingParams field takes (temperature 1, top_p 1, rest 0/off). */
glm_sampling glm_sampling_defaults(void);

/* An image after a message's first one (Message.more_images). */
typedef struct glm_image_part {
    const uint8_t *data;
    size_t bytes;
    const char *format; /* hint, "" when unset */
} glm_image_part;

typedef struct glm_message {
    glm_role role;
    const char *content;  /* NUL-terminated UTF-8, never NULL after decode ("" if unset) */
    const uint8_t *image; /* its first image; NULL when the message has none */
    size_t image_bytes;
    const char *image_format; /* hint, "" when unset */
    /* its second, third, ... image, in prompt order (only with image set) */
    const glm_image_part *more_images;
    size_t n_more_images;
} glm_message;

/* Images a message carries: image plus more_images. */
size_t glm_message_n_images(const glm_message *m);
/* Its k-th image (0: image, then more_images). */
glm_image_part glm_message_image(const glm_message *m, size_t k);

typedef struct glm_job {
    uint32_t version;
    const char *id;
    const glm_message *messages;
    size_t n_messages;
    glm_sampling sampling;
    int32_t priority;
    uint64_t deadline_unix_ms; /* 0 = none */
    void *owner;
} glm_job;

typedef struct glm_top_logprob {
    int32_t token_id;
    float logprob;
} glm_top_logprob;

typedef struct glm_token_logprobs {
    int32_t token_id;
    float logprob;
    const glm_top_logprob *top;
    size_t n_top;
} glm_token_logprobs;

/* Chunk and Result text is UTF-8 that may hold NUL bytes (U+0000 is a token like any other), so it
 * travels with its length: text_bytes. Decoders set both and keep a NUL after the last byte (text
 * stays printable with %s, cut at a first NUL). Encoders send text_bytes bytes of text; a
 * hand-built struct that leaves text_bytes 0 with a non-empty text sends strlen(text) bytes. */
typedef struct glm_chunk {
    const char *id;
    uint32_t index;
    uint32_t attempt;
    const char *text;
    size_t text_bytes;
    const int32_t *token_ids;
    size_t n_tokens;
    const glm_token_logprobs *logprobs; /* NULL or n_tokens entries */
    size_t n_logprobs;
    const char *job_fingerprint; /* NULL/"" when absent (job_fingerprint.h) */
    void *owner;
} glm_chunk;

typedef struct glm_usage {
    /* prompt_tokens: positions prefilled (text ids + every image's rows); image_tokens: the image
     * rows among them (proto/glm4v.proto, Usage) */
    uint32_t prompt_tokens, image_tokens, completion_tokens;
} glm_usage;

typedef struct glm_timings {
    double queue_ms, vision_ms, prefill_ms, decode_ms, total_ms;
} glm_timings;

typedef struct glm_result {
    uint32_t version;
    const char *id;
    const char *text;
    size_t text_bytes; /* see glm_chunk */
    const int32_t *token_ids;
    size_t n_tokens;
    glm_finish_reason finish_reason;
    glm_usage usage;
    glm_timings timings;
    glm_error_code error_code; /* GLM_EC_OK on success */
    const char *error_message; /* "" when none */
    const char *server_id;
    uint32_t attempts;
    const glm_token_logprobs *logprobs;
    size_t n_logprobs;
    const char *job_fingerprint; /* NULL/"" when absent: written by servers that know it */
    void *owner;
} glm_result;

/* Limits applied by glm_job_validate; glm_job_limits_default() gives the server's defaults. */
typedef struct glm_job_limits {
    size_t max_messages;
    size_t max_content_bytes; /* per message */
    size_t max_image_bytes;
    size_t max_images;       /* images in the whole job (--max-images-per-prompt, default 4) */
    uint32_t max_new_tokens; /* upper bound on SamplingParams.max_new_tokens */
    size_t max_stop;         /* stop strings */
    size_t max_stop_bytes;   /* per stop string */
    size_t max_stop_ids;
    int32_t vocab_size; /* stop_ids must lie in [0, vocab_size) */
    uint32_t max_logprobs;
} glm_job_limits;

glm_job_limits glm_job_limits_default(void);

/* Why a Job was refused: the protocol code for its error Result, the job id when it could be read
 * ("" otherwise, e.g. for bytes that do not parse) and a one-line message. */
typedef struct glm_job_problem {
    glm_error_code code;
    char job_id[GLM_JOB_ID_MAX + 1];
    char message[GLM_ERROR_MSG_LEN];
} glm_job_problem;

/* Parses Job bytes. Refuses bytes that do not parse (MALFORMED_JOB), any unknown field at any depth
 * (UNKNOWN_FIELD) and versions outside 1..GLM4V_PROTOCOL_VERSION (UNSUPPORTED_VERSION). On success
 * *out is a new job (glm_job_free); on failure *out is NULL and problem says why. */
glm_status glm_job_decode(const void *bytes, size_t len, glm_job **out, glm_job_problem *problem);

/* Checks a decoded job against limits: id syntax, messages and roles, UTF-8, sizes, image count,
 * sampling ranges. Does not tokenize, so PROMPT_TOO_LONG is the scheduler's to decide. */
glm_status glm_job_validate(const glm_job *job, const glm_job_limits *limits,
                            glm_job_problem *problem);

/* True when id is 1..GLM_JOB_ID_MAX bytes of [A-Za-z0-9._:@/-]. */
bool glm_job_id_valid(const char *id);

void glm_job_free(glm_job *job);

/* Encoders return malloc'd bytes in *bytes (free with free()). */
glm_status glm_job_encode(const glm_job *job, uint8_t **bytes, size_t *len, glm_error *err);
glm_status glm_chunk_encode(const glm_chunk *chunk, uint8_t **bytes, size_t *len, glm_error *err);
glm_status glm_result_encode(const glm_result *result, uint8_t **bytes, size_t *len,
                             glm_error *err);

/* Chunk and Result decoders ignore unknown fields (old clients must read new servers). */
glm_status glm_chunk_decode(const void *bytes, size_t len, glm_chunk **out, glm_error *err);
glm_status glm_result_decode(const void *bytes, size_t len, glm_result **out, glm_error *err);
void glm_chunk_free(glm_chunk *chunk);
void glm_result_free(glm_result *result);

/* The length of a chunk's or result's text: text_bytes, or strlen(text) for a hand-built struct
 * that left it 0 (0 when text is NULL). Read text with these, never with strlen. */
size_t glm_chunk_text_bytes(const glm_chunk *chunk);
size_t glm_result_text_bytes(const glm_result *result);

/* Convenience for error Results: a Result with finish_reason ERROR and the given code/message. */
glm_status glm_result_encode_error(const char *job_id, glm_error_code code, const char *message,
                                   const char *server_id, uint32_t attempts, uint8_t **bytes,
                                   size_t *len, glm_error *err);

#endif
