/* OpenAI-style errors of the gateway: an HTTP status with the error object's type, code, param and
 * message, the mapping from a Result's ErrorCode to them, and their JSON rendering. */
#ifndef GLM4V_GW_ERRORS_H
#define GLM4V_GW_ERRORS_H

#include "coordinator/queue/job_codec.h"

#include <stdarg.h>
#include <stdbool.h>

typedef struct gw_error {
    int http_status;  /* 400, 401, 404, 405, 413, 429, 500, 502, 503, 504 */
    const char *type; /* "invalid_request_error", "server_error", ... (a static string) */
    const char *code; /* "model_not_found", ... or NULL (JSON null) */
    char param[64];   /* the offending request field, "" = null */
    char message[512];
    /* A retry of the same request cannot succeed (a poison job, a server error that is the
     * job's own): answered with x-should-retry: false, which the openai SDKs obey instead of
     * retrying every 5xx twice. Reset by every fill. */
    bool no_retry;
} gw_error;

/* Fills e and returns e->http_status, so a failing path reads
 * `return gw_fail(e, 400, "invalid_request_error", NULL, "messages", "... %s", x);` */
int gw_fail(gw_error *e, int http_status, const char *type, const char *code, const char *param,
            const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Shorthand for the common 400 invalid_request_error naming a field. */
int gw_bad_request(gw_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The error a failed job's Result stands for (code != GLM_EC_OK), or for a Result that finished
 * ABORTED: 400 for what the request got wrong, 413 for an image over the server's limit, 504 for
 * a deadline, 503 for refusals that may pass, 500 for the rest. */
void gw_error_from_result(gw_error *e, glm_error_code code, glm_finish_reason finish,
                          const char *message);

/* {"error":{"message":...,"type":...,"param":...,"code":...}} (malloc'd; NULL without memory). */
char *gw_error_json(const gw_error *e);

#endif
