#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

glm_status glm_fail(glm_error *err, glm_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

glm_status glm_error_prefix(glm_error *err, const char *fmt, ...)
{
    if (!err) return GLM_OK;
    char prefix[GLM_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* joined is larger than msg so the compiler can see nothing is cut before the final copy */
    char joined[2 * GLM_ERROR_MSG_LEN + 4];
    snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
    size_t n = strlen(joined);
    if (n >= sizeof(err->msg)) n = sizeof(err->msg) - 1;
    memcpy(err->msg, joined, n);
    err->msg[n] = '\0';
    return err->status;
}

const char *glm_status_name(glm_status status)
{
    switch (status) {
    case GLM_OK:
        return "ok";
    case GLM_ERR_INVALID_ARG:
        return "invalid_argument";
    case GLM_ERR_IO:
        return "io_error";
    case GLM_ERR_FORMAT:
        return "bad_format";
    case GLM_ERR_MISSING:
        return "missing";
    case GLM_ERR_SHAPE:
        return "bad_shape";
    case GLM_ERR_NOMEM:
        return "out_of_memory";
    case GLM_ERR_DEVICE_OOM:
        return "device_out_of_memory";
    case GLM_ERR_BACKEND:
        return "backend_error";
    case GLM_ERR_COMM:
        return "communication_error";
    case GLM_ERR_UNSUPPORTED:
        return "unsupported";
    case GLM_ERR_LIMIT:
        return "limit_exceeded";
    case GLM_ERR_TIMEOUT:
        return "timeout";
    }
    return "unknown";
}
