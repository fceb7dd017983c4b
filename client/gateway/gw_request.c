/* Request JSON -> glm_job (see gw_request.h). */
#include "client/gateway/gw_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Images one request may carry, in any user messages (the protocol's ceiling, GLM_SEQ_MAX_IMAGES);
 * the job limits (max_images, the servers' --max-images-per-prompt) refuse fewer with
 * TOO_MANY_IMAGES. Several images are an extension: GLM-4V was trained with one per conversation.
 */
#define GW_MAX_IMAGES_PER_JOB 8
#define GW_MAX_STOPS 16

typedef struct image_part {
    size_t message; /* index into the job's messages */
    uint8_t *bytes;
    size_t len;
} image_part;

typedef struct parse_state {
    gw_request *r;
    const gw_request_limits *lim;
    gw_error *e;
    image_part images[GW_MAX_IMAGES_PER_JOB];
    size_t n_images;
} parse_state;

void gw_request_free(gw_request *r)
{
    for (size_t i = 0; i < r->n_storage; i++)
        if (r->texts) free(r->texts[i]);
    for (size_t i = 0; i < r->n_image_parts; i++)
        free((void *)r->image_parts[i].data);
    free(r->image_parts);
    for (size_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->texts);
    free(r->messages);
    free(r->stops);
    memset(r, 0, sizeof *r);
}

static bool is_absent(const cJSON *v)
{
    return v == NULL || cJSON_IsNull(v);
}

/* A JSON number that is a whole number in [lo, hi]. */
static bool whole_number(const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return false;
    *out = d;
    return true;
}

static int parse_role(const cJSON *m, size_t i, glm_role *role, gw_error *e)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
    const char *s = cJSON_IsString(r) ? r->valuestring : "";
    if (strcmp(s, "system") == 0 || strcmp(s, "developer") == 0)
        *role = GLM_ROLE_SYSTEM;
    else if (strcmp(s, "user") == 0)
        *role = GLM_ROLE_USER;
    else if (strcmp(s, "assistant") == 0)
        *role = GLM_ROLE_ASSISTANT;
    else if (strcmp(s, "tool") == 0 || strcmp(s, "function") == 0)
        return gw_bad_request(e, "messages", "messages[%zu]: role '%s' is not supported (no tools)",
                              i, s);
    else
        return gw_bad_request(e, "messages",
                              "messages[%zu].role must be system, developer, user or assistant", i);
    /* tool_calls [] is no call (other OpenAI-compatible servers return it, clients echo it) */
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (!(is_absent(tc) || (cJSON_IsArray(tc) && cJSON_GetArraySize(tc) == 0)) ||
        !is_absent(cJSON_GetObjectItemCaseSensitive(m, "function_call")))
        return gw_bad_request(e, "messages", "messages[%zu]: tool calls are not supported", i);
    return 0;
}

/* Appends s to the growing text *buf, a "\n" between parts. */
static bool append_text(char **buf, size_t *n, const char *s)
{
    size_t add = strlen(s) + (*n ? 1 : 0);
    char *g = realloc(*buf, *n + add + 1);
    if (!g) return false;
    if (*n) g[(*n)++] = '\n';
    memcpy(g + *n, s, strlen(s) + 1);
    *n += strlen(s);
    *buf = g;
    return true;
}

static int parse_image_part(parse_state *ps, const cJSON *part, size_t i, glm_role role)
{
    gw_error *e = ps->e;
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const cJSON *url = cJSON_IsObject(iu) ? cJSON_GetObjectItemCaseSensitive(iu, "url") : iu;
    if (!cJSON_IsString(url))
        return gw_bad_request(e, "messages", "messages[%zu]: image_url needs a url string", i);
    if (role != GLM_ROLE_USER)
        return gw_bad_request(e, "messages", "messages[%zu]: images belong in user messages", i);
    if (ps->n_images == GW_MAX_IMAGES_PER_JOB)
        return gw_bad_request(e, "messages", "more than %d images in the request",
                              GW_MAX_IMAGES_PER_JOB);
    image_part *img = &ps->images[ps->n_images];
    int rc = gw_image_load(url->valuestring, &ps->lim->image, &img->bytes, &img->len, e);
    if (rc) return rc;
    img->message = i;
    ps->n_images++;
    return 0;
}

/* content: a string, null (assistant), or an array of {type: text|image_url} parts. */
static int parse_content(parse_state *ps, const cJSON *m, size_t i, glm_role role, char **text)
{
    gw_error *e = ps->e;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    size_t n = 0;
    *text = NULL;
    if (cJSON_IsString(c)) {
        if (!append_text(text, &n, c->valuestring)) goto nomem;
    } else if (cJSON_IsArray(c)) {
        const cJSON *part;
        cJSON_ArrayForEach(part, c)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            const char *t = cJSON_IsString(type) ? type->valuestring : "";
            if (strcmp(t, "text") == 0) {
                const cJSON *s = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(s))
                    return gw_bad_request(e, "messages", "messages[%zu]: a text part needs text",
                                          i);
                if (!append_text(text, &n, s->valuestring)) goto nomem;
            } else if (strcmp(t, "image_url") == 0) {
                int rc = parse_image_part(ps, part, i, role);
                if (rc) return rc;
            } else {
                return gw_bad_request(e, "messages",
                                      "messages[%zu]: content part type '%s' is not supported "
                                      "(text, image_url)",
                                      i, t);
            }
        }
    } else if (!(is_absent(c) && role == GLM_ROLE_ASSISTANT)) {
        return gw_bad_request(e, "messages", "messages[%zu].content must be a string or an array",
                              i);
    }
    if (!*text && !(*text = calloc(1, 1))) goto nomem;
    return 0;
nomem:
    return gw_fail(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* Counts the image_url parts of all messages first: a request over the per-prompt limit is
 * refused before any image is fetched or decoded (the servers would refuse it with
 * TOO_MANY_IMAGES after the gateway had fetched up to 8 remote images for nothing). */
static int count_images(parse_state *ps, const cJSON *msgs)
{
    size_t n = 0;
    const cJSON *m, *part;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *c = cJSON_IsObject(m) ? cJSON_GetObjectItemCaseSensitive(m, "content") : NULL;
        if (!cJSON_IsArray(c)) continue;
        cJSON_ArrayForEach(part, c)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            n += cJSON_IsString(type) && strcmp(type->valuestring, "image_url") == 0;
        }
    }
    if (n > GW_MAX_IMAGES_PER_JOB)
        return gw_bad_request(ps->e, "messages", "more than %d images in the request",
                              GW_MAX_IMAGES_PER_JOB);
    if (n > ps->lim->job.max_images) {
        char msg[128];
        snprintf(msg, sizeof msg, "%zu images > the limit of %zu per prompt", n,
                 ps->lim->job.max_images);
        gw_error_from_result(ps->e, GLM_EC_TOO_MANY_IMAGES, GLM_FINISH_ERROR, msg);
        return ps->e->http_status;
    }
    return 0;
}

static int parse_messages(parse_state *ps, const cJSON *root)
{
    gw_request *r = ps->r;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return gw_bad_request(ps->e, "messages", "messages must be a non-empty array");
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (n > ps->lim->job.max_messages)
        return gw_bad_request(ps->e, "messages", "at most %zu messages", ps->lim->job.max_messages);
    int rc = count_images(ps, msgs);
    if (rc) return rc;
    r->messages = calloc(n, sizeof *r->messages);
    r->texts = calloc(n, sizeof *r->texts);
    r->image_parts = calloc(GW_MAX_IMAGES_PER_JOB, sizeof *r->image_parts);
    if (!r->messages || !r->texts || !r->image_parts)
        return gw_fail(ps->e, 500, "server_error", NULL, NULL, "out of memory");
    r->n_storage = n;
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        if (!cJSON_IsObject(m))
            return gw_bad_request(ps->e, "messages", "messages[%zu] must be an object", i);
        glm_role role = GLM_ROLE_UNSPECIFIED;
        rc = parse_role(m, i, &role, ps->e);
        if (!rc) rc = parse_content(ps, m, i, role, &r->texts[i]);
        if (rc) return rc;
        r->messages[i] = (glm_message){.role = role, .content = r->texts[i], .image_format = ""};
        i++;
    }
    /* The attach loop: images were collected in prompt order, so a message's images are
     * consecutive; the first becomes its image, the others its more_images. */
    for (size_t k = 0; k < ps->n_images; k++) {
        image_part *img = &ps->images[k];
        r->image_parts[k] = (glm_image_part){.data = img->bytes, .bytes = img->len, .format = ""};
        r->n_image_parts = k + 1; /* owned by r from here on */
        img->bytes = NULL;
        glm_message *msg = &r->messages[img->message];
        if (!msg->image) {
            msg->image = r->image_parts[k].data;
            msg->image_bytes = r->image_parts[k].bytes;
            msg->more_images = &r->image_parts[k + 1];
        } else {
            msg->n_more_images++;
        }
    }
    for (size_t k = 0; k < n; k++)
        if (r->messages[k].n_more_images == 0) r->messages[k].more_images = NULL;
    ps->n_images = 0;
    r->job.messages = r->messages;
    r->job.n_messages = n;
    return 0;
}

static int parse_stop(parse_state *ps, const cJSON *stop)
{
    gw_request *r = ps->r;
    if (is_absent(stop)) return 0;
    const cJSON *one = cJSON_IsString(stop) ? stop : NULL;
    size_t n = one ? 1 : cJSON_IsArray(stop) ? (size_t)cJSON_GetArraySize(stop) : SIZE_MAX;
    if (n == SIZE_MAX) return gw_bad_request(ps->e, "stop", "stop must be a string or an array");
    if (n > GW_MAX_STOPS)
        return gw_bad_request(ps->e, "stop", "at most %d stop strings", GW_MAX_STOPS);
    r->stops = calloc(n ? n : 1, sizeof *r->stops);
    if (!r->stops) return gw_fail(ps->e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t k = 0; k < n; k++) {
        const cJSON *s = one ? one : cJSON_GetArrayItem(stop, (int)k);
        if (!cJSON_IsString(s) || !s->valuestring[0])
            return gw_bad_request(ps->e, "stop", "stop strings must be non-empty strings");
        if (!(r->stops[k] = strdup(s->valuestring)))
            return gw_fail(ps->e, 500, "server_error", NULL, NULL, "out of memory");
        r->n_stops++;
    }
    r->job.sampling.stop = (const char *const *)r->stops;
    r->job.sampling.n_stop = r->n_stops;
    return 0;
}

/* Options that would change the answer and that the cluster does not implement: refused. */
static int refuse_unsupported(const cJSON *root, gw_error *e)
{
    static const char *const zero_ok[] = {"frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < sizeof zero_ok / sizeof *zero_ok; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, zero_ok[i]);
        if (!is_absent(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
            return gw_bad_request(e, zero_ok[i], "%s is not supported (only 0)", zero_ok[i]);
    }
    static const char *const absent_only[] = {"tools",         "functions", "tool_choice",
                                              "function_call", "audio",     "prediction"};
    for (size_t i = 0; i < sizeof absent_only / sizeof *absent_only; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, absent_only[i]);
        /* tool_choice / function_call "none": call no tool, which is what the cluster does */
        bool none = cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0 &&
                    (strcmp(absent_only[i], "tool_choice") == 0 ||
                     strcmp(absent_only[i], "function_call") == 0);
        if (!is_absent(v) && !none && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0))
            return gw_bad_request(e, absent_only[i], "%s is not supported", absent_only[i]);
    }
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (!is_absent(lb) && cJSON_GetArraySize(lb) > 0)
        return gw_bad_request(e, "logit_bias", "logit_bias is not supported");
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    const cJSON *rft = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (!is_absent(rf) && !(cJSON_IsString(rft) && strcmp(rft->valuestring, "text") == 0))
        return gw_bad_request(e, "response_format", "only response_format {\"type\": \"text\"}");
    return 0;
}

static int parse_sampling(parse_state *ps, const cJSON *root)
{
    gw_request *r = ps->r;
    gw_error *e = ps->e;
    glm_sampling *s = &r->job.sampling;
    double d;
    const cJSON *v;

    v = cJSON_GetObjectItemCaseSensitive(root, "n");
    if (!is_absent(v) && !(whole_number(v, 1, 1, &d)))
        return gw_bad_request(e, "n", "only n = 1 is supported");
    v = cJSON_GetObjectItemCaseSensitive(root, "temperature");
    if (!is_absent(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 2))
            return gw_bad_request(e, "temperature", "temperature must be a number in [0, 2]");
        s->temperature = (float)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "top_p");
    if (!is_absent(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
            return gw_bad_request(e, "top_p", "top_p must be a number in (0, 1]");
        s->top_p = (float)v->valuedouble;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "top_k"); /* vLLM's extension */
    if (!is_absent(v)) {
        if (!whole_number(v, -1, 1 << 20, &d))
            return gw_bad_request(e, "top_k", "top_k must be a whole number >= -1");
        s->top_k = d < 0 ? 0 : (uint32_t)d;
    }
    const char *mt_name = "max_completion_tokens"; /* named as the caller spelled it */
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, mt_name);
    if (is_absent(mt)) mt = cJSON_GetObjectItemCaseSensitive(root, mt_name = "max_tokens");
    if (!is_absent(mt)) {
        if (!whole_number(mt, 1, ps->lim->job.max_new_tokens, &d))
            return gw_bad_request(e, mt_name, "%s must be a whole number in [1, %u]", mt_name,
                                  ps->lim->job.max_new_tokens);
        s->max_new_tokens = (uint32_t)d;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (!is_absent(v)) { /* any 64-bit integer, as OpenAI's reference says; a negative one
                          * keeps its two's-complement bits (JSON numbers: exact to 2^53) */
        if (!whole_number(v, -9007199254740991.0, 9007199254740991.0, &d))
            return gw_bad_request(e, "seed", "seed must be a whole number within +-(2^53 - 1)");
        s->has_seed = true;
        s->seed = (uint64_t)(int64_t)d;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "ignore_eos"); /* vLLM's extension */
    if (!is_absent(v)) {
        if (!cJSON_IsBool(v)) return gw_bad_request(e, "ignore_eos", "ignore_eos must be a bool");
        s->ignore_eos = cJSON_IsTrue(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (!is_absent(v)) {
        if (!cJSON_IsBool(v)) return gw_bad_request(e, "logprobs", "logprobs must be a bool");
        r->logprobs = cJSON_IsTrue(v);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "top_logprobs");
    if (!is_absent(v)) {
        if (!whole_number(v, 0, 20, &d))
            return gw_bad_request(e, "top_logprobs",
                                  "top_logprobs must be a whole number in [0, 20]");
        if (!r->logprobs)
            return gw_bad_request(e, "top_logprobs", "top_logprobs needs logprobs: true");
        r->top_logprobs = (int)d;
    }
    if (r->logprobs) {
        s->has_logprobs = true;
        s->logprobs = (uint32_t)r->top_logprobs;
    }
    return parse_stop(ps, cJSON_GetObjectItemCaseSensitive(root, "stop"));
}

static int parse_stream(parse_state *ps, const cJSON *root)
{
    gw_request *r = ps->r;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!is_absent(v)) {
        if (!cJSON_IsBool(v)) return gw_bad_request(ps->e, "stream", "stream must be a bool");
        r->stream = cJSON_IsTrue(v);
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (is_absent(so)) return 0;
    if (!r->stream)
        return gw_bad_request(ps->e, "stream_options", "stream_options needs stream: true");
    if (!cJSON_IsObject(so))
        return gw_bad_request(ps->e, "stream_options", "stream_options must be an object");
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
    if (!is_absent(iu)) {
        if (!cJSON_IsBool(iu))
            return gw_bad_request(ps->e, "stream_options", "include_usage must be a bool");
        r->include_usage = cJSON_IsTrue(iu);
    }
    return 0;
}

static int parse_root(parse_state *ps, const cJSON *root)
{
    gw_request *r = ps->r;
    if (!cJSON_IsObject(root)) return gw_bad_request(ps->e, NULL, "the body must be a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model)) return gw_bad_request(ps->e, "model", "model must be a string");
    if (strcmp(model->valuestring, ps->lim->model_name) != 0)
        return gw_fail(ps->e, 404, "invalid_request_error", "model_not_found", "model",
                       "The model '%.64s' does not exist; this gateway serves '%s'",
                       model->valuestring, ps->lim->model_name);
    snprintf(r->model, sizeof r->model, "%s", model->valuestring);
    int rc = refuse_unsupported(root, ps->e);
    if (!rc) rc = parse_stream(ps, root);
    if (!rc) rc = parse_sampling(ps, root);
    if (!rc) rc = parse_messages(ps, root);
    return rc;
}

int gw_request_parse(const char *body, size_t len, const gw_request_limits *limits, gw_request *r,
                     gw_error *e)
{
    memset(r, 0, sizeof *r);
    r->job.version = GLM4V_PROTOCOL_VERSION;
    r->job.sampling = glm_sampling_defaults();
    parse_state ps = {.r = r, .lim = limits, .e = e};
    cJSON *root = cJSON_ParseWithLength(body, len);
    int rc = root ? parse_root(&ps, root) : gw_bad_request(e, NULL, "the body is not valid JSON");
    cJSON_Delete(root);
    for (size_t k = 0; k < ps.n_images; k++)
        free(ps.images[k].bytes);
    if (rc) gw_request_free(r);
    return rc;
}
