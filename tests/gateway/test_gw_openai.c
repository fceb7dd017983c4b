/* OpenAI shapes and metrics text: a Result becomes a chat.completion with usage, finish_reason and
 * "token_id:<id>" logprobs (top alternatives cut to top_logprobs); chunk events are framed as SSE
 * "data: {...}\n\n" with role only on the first; the usage event has empty choices; the metrics
 * text counts requests by code and fills the histogram cumulatively. */
#include "client/gateway/gw_metrics.h"
#include "client/gateway/gw_openai.h"
#include "tests/testutil.h"

#include <math.h>

#include <cjson/cJSON.h>
#include <string.h>

static cJSON *parse_event(const char *ev)
{
    size_t n = strlen(ev);
    if (n < 8 || strncmp(ev, "data: ", 6) != 0 || strcmp(ev + n - 2, "\n\n") != 0) return NULL;
    return cJSON_ParseWithLength(ev + 6, n - 8);
}

static void test_completion(void)
{
    glm_top_logprob tops[3] = {{5, -0.1f}, {9, -INFINITY}, {7, -3.0f}};
    glm_token_logprobs lp[2] = {{5, -0.1f, tops, 3}, {6, -0.5f, NULL, 0}};
    int32_t ids[2] = {5, 6};
    glm_result r = {.text = "hi \"there\"",
                    .token_ids = ids,
                    .n_tokens = 2,
                    .finish_reason = GLM_FINISH_LENGTH,
                    .usage = {12, 4, 2},
                    .logprobs = lp,
                    .n_logprobs = 2};
    gw_answer_meta m = {.completion_id = "chatcmpl-x",
                        .model = "glm-4v-9b",
                        .created = 7,
                        .logprobs = true,
                        .top_logprobs = 2};
    char *s = gw_completion_json(&m, &r);
    cJSON *o = s ? cJSON_Parse(s) : NULL;
    CHECK(o != NULL);
    if (o) {
        CHECK(strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion") == 0);
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
        CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content")->valuestring,
                     "hi \"there\"") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "length") == 0);
        cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
        CHECK(cJSON_GetArraySize(content) == 2);
        cJSON *t0 = cJSON_GetArrayItem(content, 0);
        CHECK(strcmp(cJSON_GetObjectItem(t0, "token")->valuestring, "token_id:5") == 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(t0, "top_logprobs")) == 2);
        /* -inf (a token ruled out) as OpenAI writes it, a number: null fails the SDKs' parsing */
        cJSON *ruled_out = cJSON_GetObjectItem(
            cJSON_GetArrayItem(cJSON_GetObjectItem(t0, "top_logprobs"), 1), "logprob");
        CHECK(cJSON_IsNumber(ruled_out) && ruled_out->valuedouble == -9999.0);
        cJSON *u = cJSON_GetObjectItem(o, "usage");
        CHECK(cJSON_GetObjectItem(u, "prompt_tokens")->valueint == 12 &&
              cJSON_GetObjectItem(u, "completion_tokens")->valueint == 2 &&
              cJSON_GetObjectItem(u, "total_tokens")->valueint == 14);
    }
    cJSON_Delete(o);
    free(s);
    m.logprobs = false;
    s = gw_completion_json(&m, &r);
    CHECK(s && strstr(s, "\"logprobs\":null"));
    free(s);
}

static void test_events(void)
{
    gw_answer_meta m = {.completion_id = "chatcmpl-y", .model = "glm-4v-9b", .created = 1};
    char *first = gw_chunk_event(&m, true, "", 0, NULL, 0, NULL, true);
    cJSON *o = first ? parse_event(first) : NULL;
    CHECK(o != NULL);
    if (o) {
        cJSON *d =
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "delta");
        CHECK(strcmp(cJSON_GetObjectItem(d, "role")->valuestring, "assistant") == 0);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "usage")));
    }
    cJSON_Delete(o);
    free(first);
    char *mid = gw_chunk_event(&m, false, "abcdef", 3, NULL, 0, NULL, false);
    o = mid ? parse_event(mid) : NULL;
    CHECK(o && strstr(mid, "\"content\":\"abc\"") && !strstr(mid, "role") &&
          !cJSON_GetObjectItem(o, "usage"));
    cJSON_Delete(o);
    free(mid);
    char *fin = gw_chunk_event(&m, false, NULL, 0, NULL, 0, "stop", false);
    CHECK(fin && strstr(fin, "\"delta\":{}") && strstr(fin, "\"finish_reason\":\"stop\""));
    free(fin);
    glm_usage u = {3, 0, 4};
    char *ue = gw_usage_event(&m, &u);
    o = ue ? parse_event(ue) : NULL;
    CHECK(o && cJSON_GetArraySize(cJSON_GetObjectItem(o, "choices")) == 0 &&
          cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "total_tokens")->valueint == 7);
    cJSON_Delete(o);
    free(ue);
}

static void test_metrics(void)
{
    gw_metrics m;
    gw_metrics_init(&m);
    gw_metrics_observe(&m, 200, 0.003);
    gw_metrics_observe(&m, 200, 0.2);
    gw_metrics_observe(&m, 429, 400);
    gw_metrics_observe(&m, 418, 0.001);
    char *t = gw_metrics_render(&m);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(strstr(t, "glm4v_gateway_requests_total{code=\"200\"} 2\n"));
    CHECK(strstr(t, "glm4v_gateway_requests_total{code=\"429\"} 1\n"));
    CHECK(strstr(t, "glm4v_gateway_requests_total{code=\"other\"} 1\n"));
    CHECK(strstr(t, "glm4v_gateway_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
    CHECK(strstr(t, "glm4v_gateway_request_duration_seconds_bucket{le=\"0.25\"} 3\n"));
    CHECK(strstr(t, "glm4v_gateway_request_duration_seconds_bucket{le=\"300\"} 3\n"));
    CHECK(strstr(t, "glm4v_gateway_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
    CHECK(strstr(t, "glm4v_gateway_request_duration_seconds_count 4\n"));
    CHECK(strstr(t, "# TYPE glm4v_gateway_in_flight gauge\n"));
    free(t);
}

int main(void)
{
    test_completion();
    test_events();
    test_metrics();
    return test_finish("test_gw_openai");
}
