/* OpenAI response shapes (see gw_openai.h). */
#include "client/gateway/gw_openai.h"

#include "coordinator/queue/result_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *gw_finish_reason(glm_finish_reason r)
{
    return r == GLM_FINISH_LENGTH ? "length" : "stop";
}

static cJSON *token_entry(int32_t id, float logprob)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char name[32];
    snprintf(name, sizeof name, "token_id:%d", id);
    cJSON_AddStringToObject(o, "token", name);
    /* a token the sampler ruled out has a logprob of -inf, which JSON cannot hold: cJSON writes
     * null, which the openai SDKs refuse (a float field). OpenAI writes -9999.0 for those. */
    cJSON_AddNumberToObject(o, "logprob", isfinite(logprob) ? logprob : -9999.0);
    cJSON_AddNullToObject(o, "bytes");
    return o;
}

/* {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]} */
static cJSON *logprobs_object(const glm_token_logprobs *lp, size_t n, int top_n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(o, "content");
    if (!content) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *t = token_entry(lp[i].token_id, lp[i].logprob);
        if (!t) continue;
        cJSON *top = cJSON_AddArrayToObject(t, "top_logprobs");
        for (size_t k = 0; top && k < lp[i].n_top && (int)k < top_n; k++) {
            cJSON *alt = token_entry(lp[i].top[k].token_id, lp[i].top[k].logprob);
            if (alt) cJSON_AddItemToArray(top, alt);
        }
        cJSON_AddItemToArray(content, t);
    }
    return o;
}

static cJSON *envelope(const gw_answer_meta *m, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", m->completion_id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "model", m->model);
    cJSON_AddNullToObject(o, "system_fingerprint");
    return o;
}

static void add_usage(cJSON *o, const glm_usage *u)
{
    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    if (!usage) return;
    cJSON_AddNumberToObject(usage, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(usage, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens",
                            (double)u->prompt_tokens + (double)u->completion_tokens);
}

static char *print_and_delete(cJSON *o)
{
    if (!o) return NULL;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *gw_completion_json(const gw_answer_meta *m, const glm_result *r)
{
    cJSON *o = envelope(m, "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    if (!choices || !c) {
        cJSON_Delete(c);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(c, "message");
    if (msg) {
        cJSON_AddStringToObject(msg, "role", "assistant");
        /* every byte of the text: a NUL is written \u0000 (cJSON's strings end at it) */
        cJSON *content = glm_json_bytes_item(r->text ? r->text : "", glm_result_text_bytes(r));
        if (!content) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(msg, "content", content);
        cJSON_AddNullToObject(msg, "refusal");
    }
    if (m->logprobs)
        cJSON_AddItemToObject(c, "logprobs",
                              logprobs_object(r->logprobs, r->n_logprobs, m->top_logprobs));
    else
        cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", gw_finish_reason(r->finish_reason));
    add_usage(o, &r->usage);
    return print_and_delete(o);
}

static char *sse(char *json)
{
    if (!json) return NULL;
    size_t n = strlen(json);
    char *out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, json, n);
        memcpy(out + 6 + n, "\n\n", 3);
    }
    free(json);
    return out;
}

char *gw_chunk_event(const gw_answer_meta *m, bool role_first, const char *text, size_t text_len,
                     const glm_token_logprobs *lp, size_t n_lp, const char *finish,
                     bool with_usage_null)
{
    cJSON *o = envelope(m, "chat.completion.chunk");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    if (!choices || !c) {
        cJSON_Delete(c);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON *delta = cJSON_AddObjectToObject(c, "delta");
    if (delta && role_first) cJSON_AddStringToObject(delta, "role", "assistant");
    if (delta && text) { /* all text_len bytes, a NUL as \u0000 */
        cJSON *content = glm_json_bytes_item(text, text_len);
        if (!content) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(delta, "content", content);
    }
    if (m->logprobs && n_lp > 0)
        cJSON_AddItemToObject(c, "logprobs", logprobs_object(lp, n_lp, m->top_logprobs));
    else
        cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    if (with_usage_null) cJSON_AddNullToObject(o, "usage");
    return sse(print_and_delete(o));
}

char *gw_usage_event(const gw_answer_meta *m, const glm_usage *u)
{
    cJSON *o = envelope(m, "chat.completion.chunk");
    if (!o || !cJSON_AddArrayToObject(o, "choices")) {
        cJSON_Delete(o);
        return NULL;
    }
    add_usage(o, u);
    return sse(print_and_delete(o));
}

char *gw_error_event(const char *error_json)
{
    return error_json ? sse(strdup(error_json)) : NULL;
}
