/* HTTP routing and limits over libmicrohttpd (see gw_http.h). */
#include "client/gateway/gw_http.h"

#include "client/gateway/gw_chat.h"
#include "coordinator/queue/redis_conn.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define STREAM_BLOCK_BYTES 16384
#define IDLE_TIMEOUT_S 60

struct gw_http {
    struct MHD_Daemon *daemon;
    gw_context *g;
};

/* One request's state between libmicrohttpd's calls. */
typedef struct exchange {
    char *body;
    size_t len, cap;
    bool too_large, answered;
    const char *cors_origin; /* Access-Control-Allow-Origin to send, or NULL (cors_allowed) */
    int status;
    long long t0_us;
} exchange;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- CORS (--cors-origin) ------------------------------------------------------------------ */

/* What a browser's preflight may ask to send: the headers the openai SDKs set (the X-Stainless-*
 * ones describe the client, OpenAI-* select an account, which this gateway ignores). */
#define CORS_ALLOW_HEADERS                                                                         \
    "Authorization, Content-Type, Accept, OpenAI-Organization, OpenAI-Project, OpenAI-Beta, "      \
    "X-Stainless-Arch, X-Stainless-Lang, X-Stainless-OS, X-Stainless-Package-Version, "            \
    "X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, "                  \
    "X-Stainless-Timeout, X-Stainless-Helper-Method, X-Stainless-Poll-Helper, X-Stainless-Async"
#define CORS_MAX_AGE_S "3600"

/* The Access-Control-Allow-Origin this request gets: "*" when any origin is allowed, its own
 * Origin when that is on the list, NULL otherwise (no Origin: not a browser's cross-origin call;
 * an origin not on the list gets no CORS header, so the browser keeps the answer from its page). */
static const char *cors_allowed(const gw_context *g, struct MHD_Connection *conn)
{
    if (g->settings.n_cors_origins == 0) return NULL;
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!origin) return NULL;
    for (int i = 0; i < g->settings.n_cors_origins; i++) {
        if (strcmp(g->settings.cors_origins[i], "*") == 0) return "*";
        /* scheme and host are case-insensitive; echo what the browser sent, which it compares */
        if (strcasecmp(g->settings.cors_origins[i], origin) == 0) return origin;
    }
    return NULL;
}

static void add_cors_headers(struct MHD_Response *resp, const exchange *x)
{
    if (!x->cors_origin) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", x->cors_origin);
    /* the answer depends on the Origin: a shared cache must not hand it to another origin */
    if (strcmp(x->cors_origin, "*") != 0) MHD_add_response_header(resp, "Vary", "Origin");
    /* the SDKs read these to decide on retries; a page's script sees only what is listed */
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After, x-should-retry");
}

static enum MHD_Result queue_body(struct MHD_Connection *conn, exchange *x, int status,
                                  const char *content_type, char *body, int retry_after_s,
                                  bool no_retry)
{
    const char *text = body ? body : "{\"error\":{\"message\":\"out of memory\"}}";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    free(body);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after_s > 0) {
        char s[16];
        snprintf(s, sizeof s, "%d", retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, s);
    }
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (no_retry) MHD_add_response_header(resp, "x-should-retry", "false");
    add_cors_headers(resp, x);
    x->status = status;
    x->answered = true;
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, exchange *x, const gw_error *e)
{
    return queue_body(conn, x, e->http_status, "application/json", gw_error_json(e), 0,
                      e->no_retry);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ssize_t n = gw_chat_read(cls, buf, max);
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void stream_free(void *cls)
{
    gw_chat_finish(cls);
}

static int client_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static enum MHD_Result chat(gw_context *g, struct MHD_Connection *conn, exchange *x)
{
    /* libmicrohttpd counts a request that blocks on its job as idle: this connection's limit
     * must outlast the longest wait */
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)g->settings.timeout_s + IDLE_TIMEOUT_S);
    gw_reply reply;
    gw_chat_start(g, x->body ? x->body : "", x->len, client_fd(conn), &reply);
    if (reply.status == 0) { /* the client is gone: close without a response */
        x->status = 499;     /* nginx's "client closed request", for the metrics */
        x->answered = true;
        return MHD_NO;
    }
    if (!reply.stream)
        return queue_body(conn, x, reply.status, "application/json", reply.body,
                          reply.retry_after_s, reply.no_retry);
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK_BYTES, stream_reader, reply.stream, stream_free);
    if (!resp) {
        gw_chat_finish(reply.stream);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx: do not buffer events */
    add_cors_headers(resp, x);
    x->status = 200;
    x->answered = true;
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

/* GET /v1/models (the list) or, with id set, GET /v1/models/<id> (the SDKs' models.retrieve). */
static enum MHD_Result models(gw_context *g, struct MHD_Connection *conn, exchange *x,
                              const char *id)
{
    if (id && strcmp(id, g->settings.model_name) != 0) {
        gw_error e;
        gw_fail(&e, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%.64s' does not exist; this gateway serves '%s'", id,
                g->settings.model_name);
        return queue_error(conn, x, &e);
    }
    char *body = NULL;
    if (asprintf(&body,
                 "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":0,\"owned_by\":"
                 "\"glm4v-cluster\"}%s",
                 id ? "" : "{\"object\":\"list\",\"data\":[", g->settings.model_name,
                 id ? "" : "]}") < 0)
        body = NULL;
    return queue_body(conn, x, 200, "application/json", body, 0, false);
}

/* Paths under /v1/ need the key when keys are configured. Checked from the headers, before the body
 * is read: a caller without a key must not make the gateway buffer up to --max-body-bytes. */
static bool key_missing(gw_context *g, struct MHD_Connection *conn, const char *url)
{
    return g->auth && strncmp(url, "/v1/", 4) == 0 &&
           !gw_auth_check(g->auth,
                          MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"));
}

static enum MHD_Result refuse_key(struct MHD_Connection *conn, exchange *x)
{
    gw_error e;
    gw_fail(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
            "a valid API key is needed (Authorization: Bearer <key>)");
    return queue_error(conn, x, &e);
}

static enum MHD_Result health(gw_context *g, struct MHD_Connection *conn, exchange *x)
{
    redisContext *ctx = NULL;
    glm_error err = {0};
    bool ok = gw_queue_acquire(g->queue, &ctx, &err) == GLM_OK;
    if (ok) {
        redisReply *r = redisCommand(ctx, "PING");
        ok = REDIS_CHECK(ctx, r, REDIS_REPLY_STATUS, "PING", &err) == GLM_OK;
        if (r) freeReplyObject(r);
        gw_queue_release(g->queue, ctx, ok);
    }
    bool draining = atomic_load(&g->draining);
    char *body = NULL;
    if (asprintf(&body, "{\"status\":\"%s\",\"redis\":%s}",
                 draining ? "draining"
                 : ok     ? "ok"
                          : "redis_unavailable",
                 ok ? "true" : "false") < 0)
        body = NULL;
    return queue_body(conn, x, ok && !draining ? 200 : 503, "application/json", body, 0, false);
}

static bool served_path(const char *url)
{
    return strcmp(url, "/v1/chat/completions") == 0 || strcmp(url, "/v1/models") == 0 ||
           (strncmp(url, "/v1/models/", 11) == 0 && url[11]) || strcmp(url, "/health") == 0 ||
           strcmp(url, "/metrics") == 0;
}

/* A browser's preflight (OPTIONS before a cross-origin POST with an Authorization header) from an
 * allowed origin: 204 with what may follow. It carries no key by design, so it is answered before
 * the key check; it reveals nothing the CORS headers of a real answer would not. */
static enum MHD_Result preflight(struct MHD_Connection *conn, exchange *x)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    add_cors_headers(resp, x);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
    MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE_S);
    x->status = 204;
    x->answered = true;
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result route(gw_context *g, struct MHD_Connection *conn, exchange *x,
                             const char *url, const char *method)
{
    gw_error e;
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/health") == 0) {
        if (!get) goto not_allowed;
        return health(g, conn, x);
    }
    if (strcmp(url, "/metrics") == 0) {
        if (!get) goto not_allowed;
        return queue_body(conn, x, 200, "text/plain; version=0.0.4", gw_metrics_render(&g->metrics),
                          0, false);
    }
    bool is_chat = strcmp(url, "/v1/chat/completions") == 0;
    bool is_models = strcmp(url, "/v1/models") == 0;
    const char *model_id = strncmp(url, "/v1/models/", 11) == 0 && url[11] ? url + 11 : NULL;
    if (!is_chat && !is_models && !model_id) {
        gw_fail(&e, 404, "invalid_request_error", "unknown_url", NULL, "no route %s %s", method,
                url);
        return queue_error(conn, x, &e);
    }
    if (key_missing(g, conn, url)) return refuse_key(conn, x);
    if (is_models || model_id) {
        if (!get) goto not_allowed;
        return models(g, conn, x, model_id);
    }
    if (!post) goto not_allowed;
    if (x->too_large) {
        gw_fail(&e, 413, "invalid_request_error", "request_too_large", NULL,
                "request body over the limit of %zu bytes", g->settings.max_body_bytes);
        return queue_error(conn, x, &e);
    }
    if (atomic_load(&g->draining)) {
        gw_fail(&e, 503, "server_error", "shutting_down", NULL, "the gateway is shutting down");
        return queue_error(conn, x, &e);
    }
    return chat(g, conn, x);
not_allowed:
    gw_fail(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%s is not allowed on %s",
            method, url);
    return queue_error(conn, x, &e);
}

/* Keeps up to max_body_bytes of the body; the rest is dropped and the request answered 413. */
static void take_body(gw_context *g, exchange *x, const char *data, size_t n)
{
    if (x->too_large || x->len + n > g->settings.max_body_bytes) {
        x->too_large = true;
        return;
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = (x->len + n + 1) * 2;
        if (cap > g->settings.max_body_bytes + 1) cap = g->settings.max_body_bytes + 1;
        char *b = realloc(x->body, cap);
        if (!b) {
            x->too_large = true;
            return;
        }
        x->body = b;
        x->cap = cap;
    }
    memcpy(x->body + x->len, data, n);
    x->len += n;
    x->body[x->len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    (void)version;
    gw_context *g = cls;
    exchange *x = *state;
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x) return MHD_NO;
        x->t0_us = now_us();
        *state = x;
        atomic_fetch_add(&g->metrics.in_flight, 1);
        x->cors_origin = cors_allowed(g, conn);
        if (x->cors_origin && strcmp(method, "OPTIONS") == 0 && served_path(url))
            return preflight(conn, x);
        if (key_missing(g, conn, url)) return refuse_key(conn, x);
        /* a declared length over the limit is answered before its body is read */
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > g->settings.max_body_bytes) {
            gw_error e;
            gw_fail(&e, 413, "invalid_request_error", "request_too_large", NULL,
                    "request body over the limit of %zu bytes", g->settings.max_body_bytes);
            return queue_error(conn, x, &e);
        }
        return MHD_YES;
    }
    if (x->answered) { /* answered early (413): drop what still comes */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        take_body(g, x, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    return route(g, conn, x, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **state,
                         enum MHD_RequestTerminationCode why)
{
    (void)conn;
    (void)why;
    gw_context *g = cls;
    exchange *x = *state;
    if (!x) return;
    gw_metrics_observe(&g->metrics, x->status, (double)(now_us() - x->t0_us) / 1e6);
    atomic_fetch_sub(&g->metrics.in_flight, 1);
    free(x->body);
    free(x);
    *state = NULL;
}

glm_status gw_http_start(gw_context *g, gw_http **out, int *bound_port, glm_error *err)
{
    *out = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", g->settings.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(g->settings.host, port, &hints, &ai);
    if (gai != 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--host %s: %s", g->settings.host,
                        gai_strerror(gai));
    gw_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    }
    h->g = g;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* idle keep-alive connections and slow uploads; a request waiting on its job gets its own,
     * longer limit (chat()) */
    unsigned idle_timeout_s = IDLE_TIMEOUT_S;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, g, MHD_OPTION_SOCK_ADDR,
                                 ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, g,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)g->settings.max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, idle_timeout_s,
                                 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        free(h);
        return glm_fail(err, GLM_ERR_IO, "cannot listen on %s:%d (in use or not allowed)",
                        g->settings.host, g->settings.port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : g->settings.port;
    *out = h;
    return GLM_OK;
}

void gw_http_quiesce(gw_http *h)
{
    if (h && h->daemon) MHD_quiesce_daemon(h->daemon);
}

void gw_http_stop(gw_http *h)
{
    if (!h) return;
    if (h->daemon) MHD_stop_daemon(h->daemon);
    free(h);
}
