/* OpenAI-style error objects (see gw_errors.h). */
#include "client/gateway/gw_errors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static int vfail(gw_error *e, int http_status, const char *type, const char *code,
                 const char *param, const char *fmt, va_list ap)
{
    e->http_status = http_status;
    e->no_retry = false;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    return http_status;
}

int gw_fail(gw_error *e, int http_status, const char *type, const char *code, const char *param,
            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(e, http_status, type, code, param, fmt, ap);
    va_end(ap);
    return http_status;
}

int gw_bad_request(gw_error *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(e, 400, "invalid_request_error", NULL, param, fmt, ap);
    va_end(ap);
    return 400;
}

void gw_error_from_result(gw_error *e, glm_error_code code, glm_finish_reason finish,
                          const char *message)
{
    const char *name = glm_error_code_name(code);
    const char *msg = message && message[0] ? message : "the job failed";
    switch (code) {
    case GLM_EC_INVALID_REQUEST:
    case GLM_EC_PROMPT_TOO_LONG:
    case GLM_EC_BAD_IMAGE:
    case GLM_EC_UNSUPPORTED_IMAGE:
    case GLM_EC_BAD_SAMPLING:
    case GLM_EC_EMPTY_PROMPT:
    case GLM_EC_TOO_MANY_IMAGES:
        gw_fail(e, 400, "invalid_request_error", name, NULL, "%s", msg);
        return;
    case GLM_EC_IMAGE_TOO_LARGE:
        gw_fail(e, 413, "invalid_request_error", name, NULL, "%s", msg);
        return;
    case GLM_EC_DEADLINE_EXCEEDED:
        gw_fail(e, 504, "timeout", name, NULL, "%s", msg);
        return;
    case GLM_EC_REDIS_REFUSED:
    case GLM_EC_CANCELLED:
        gw_fail(e, 503, "server_error", name, NULL, "%s", msg);
        return;
    case GLM_EC_OK:
        if (finish == GLM_FINISH_ABORTED) {
            gw_fail(e, 503, "server_error", "ABORTED", NULL, "the server gave up on the job");
            return;
        }
        gw_fail(e, 500, "server_error", "INTERNAL", NULL, "the job ended without an answer");
        return;
    default: /* MALFORMED_JOB, UNKNOWN_FIELD, UNSUPPORTED_VERSION, INTERNAL, POISON, ID_CONFLICT */
        gw_fail(e, 500, "server_error", name, NULL, "%s", msg);
        /* the same job fails the same way (a POISON one crashed replicas --max-deliveries times:
         * an SDK's automatic retry would crash them again); an ID_CONFLICT retry gets a new id */
        e->no_retry = code != GLM_EC_ID_CONFLICT;
        return;
    }
}

char *gw_error_json(const gw_error *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    if (!o) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "server_error");
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    if (e->code)
        cJSON_AddStringToObject(o, "code", e->code);
    else
        cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}
