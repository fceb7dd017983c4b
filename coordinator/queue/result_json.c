/* glm_result -> one line of JSON, with cJSON. */
#include "coordinator/queue/result_json.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

char *glm_json_quote_bytes(const char *s, size_t n)
{
    /* worst case: every byte a 6-byte \u00XX, plus the quotes and the NUL */
    if (n > (SIZE_MAX - 3) / 6) return NULL;
    char *out = malloc(n * 6 + 3);
    if (!out) return NULL;
    /* the two-character escapes JSON has, then \u00XX for the other control bytes (cJSON's set) */
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *hit = c ? strchr(from, c) : NULL; /* strchr would find the terminator */
        if (hit) {
            out[k++] = '\\';
            out[k++] = to[hit - from];
        } else if (c < 0x20) {
            memcpy(out + k, "\\u00", 4);
            out[k + 4] = hex[c >> 4];
            out[k + 5] = hex[c & 15];
            k += 6;
        } else {
            out[k++] = (char)c;
        }
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}

cJSON *glm_json_bytes_item(const char *s, size_t n)
{
    char *literal = glm_json_quote_bytes(s, n);
    if (!literal) return NULL;
    cJSON *item = cJSON_CreateRaw(literal);
    free(literal);
    return item;
}

static cJSON *logprobs_json(const glm_token_logprobs *lp, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *tok = cJSON_CreateObject();
        cJSON *top = cJSON_CreateArray();
        if (!tok || !top) {
            cJSON_Delete(tok);
            cJSON_Delete(top);
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddNumberToObject(tok, "token_id", lp[i].token_id);
        cJSON_AddNumberToObject(tok, "logprob", lp[i].logprob);
        for (size_t k = 0; k < lp[i].n_top; k++) {
            cJSON *alt = cJSON_CreateObject();
            if (!alt) continue;
            cJSON_AddNumberToObject(alt, "token_id", lp[i].top[k].token_id);
            cJSON_AddNumberToObject(alt, "logprob", lp[i].top[k].logprob);
            cJSON_AddItemToArray(top, alt);
        }
        cJSON_AddItemToObject(tok, "top", top);
        cJSON_AddItemToArray(arr, tok);
    }
    return arr;
}

static cJSON *result_object(const glm_result *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", r->id ? r->id : "");
    cJSON *text_item = glm_json_bytes_item(r->text ? r->text : "", glm_result_text_bytes(r));
    if (!text_item) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "text", text_item);
    cJSON *ids = cJSON_AddArrayToObject(o, "token_ids");
    for (size_t i = 0; ids && i < r->n_tokens; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->token_ids[i]));
    cJSON_AddStringToObject(o, "finish_reason", glm_finish_reason_name(r->finish_reason));

    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    if (usage) {
        cJSON_AddNumberToObject(usage, "prompt_tokens", r->usage.prompt_tokens);
        cJSON_AddNumberToObject(usage, "image_tokens", r->usage.image_tokens);
        cJSON_AddNumberToObject(usage, "completion_tokens", r->usage.completion_tokens);
    }
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    if (t) {
        cJSON_AddNumberToObject(t, "queue_ms", r->timings.queue_ms);
        cJSON_AddNumberToObject(t, "vision_ms", r->timings.vision_ms);
        cJSON_AddNumberToObject(t, "prefill_ms", r->timings.prefill_ms);
        cJSON_AddNumberToObject(t, "decode_ms", r->timings.decode_ms);
        cJSON_AddNumberToObject(t, "total_ms", r->timings.total_ms);
    }
    if (r->error_code == GLM_EC_OK) {
        cJSON_AddNullToObject(o, "error");
    } else {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        if (e) {
            cJSON_AddStringToObject(e, "code", glm_error_code_name(r->error_code));
            cJSON_AddStringToObject(e, "message", r->error_message ? r->error_message : "");
        }
    }
    cJSON_AddStringToObject(o, "server_id", r->server_id ? r->server_id : "");
    cJSON_AddNumberToObject(o, "attempts", r->attempts);
    if (r->n_logprobs > 0) {
        cJSON *lp = logprobs_json(r->logprobs, r->n_logprobs);
        if (lp) cJSON_AddItemToObject(o, "logprobs", lp);
    }
    return o;
}

char *glm_result_to_json(const glm_result *result)
{
    cJSON *o = result_object(result);
    if (!o) return NULL;
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}
