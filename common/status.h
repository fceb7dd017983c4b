/* Project-wide status codes and the error-message buffer that travels with them.
 *
 * Every function that can fail returns a glm_status and, on failure, fills a glm_error with one
 * line of context (file, tensor, job id). Only main() decides to exit. */
#ifndef GLM4V_STATUS_H
#define GLM4V_STATUS_H

#include <stddef.h>

typedef enum glm_status {
    GLM_OK = 0,
    GLM_ERR_INVALID_ARG, /* caller passed something impossible (bad flag, id out of range) */
    GLM_ERR_IO,          /* open/read/mmap failed */
    GLM_ERR_FORMAT,      /* malformed file or message (safetensors, JSON, protobuf, image) */
    GLM_ERR_MISSING,     /* a required tensor, key or file is absent */
    GLM_ERR_SHAPE,       /* shapes disagree with the config or with each other */
    GLM_ERR_NOMEM,       /* host allocation failed */
    GLM_ERR_DEVICE_OOM,  /* device allocation failed */
    GLM_ERR_BACKEND,     /* a CUDA / cuBLAS / kernel launch error */
    GLM_ERR_COMM,        /* MPI / NCCL failure or a peer that died */
    GLM_ERR_UNSUPPORTED, /* valid input we do not handle (dtype, image format) */
    GLM_ERR_LIMIT,       /* input exceeds a configured limit (prompt length, pixels, bytes) */
    GLM_ERR_TIMEOUT,
} glm_status;

#define GLM_ERROR_MSG_LEN 512

typedef struct glm_error {
    glm_status status;
    char msg[GLM_ERROR_MSG_LEN];
} glm_error;

/* Records status and a printf-style message in err (err may be NULL) and returns status, so a
 * failing path reads: return glm_fail(err, GLM_ERR_FORMAT, "%s: bad header", path); */
glm_status glm_fail(glm_error *err, glm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to an existing message, for callers that add where a failure happened. */
glm_status glm_error_prefix(glm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *glm_status_name(glm_status status);

#endif
