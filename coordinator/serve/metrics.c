/* Prometheus metrics registry and its libmicrohttpd endpoint (see metrics.h). */
#include "coordinator/serve/metrics.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the metric table ------------------------------------------------------------------------ */

/* One series: the family name, an optional label pair, and the family's help text (the first
 * series of a family prints HELP and TYPE; the series of one family are adjacent in the enum). */
typedef struct series_desc {
    const char *family;
    const char *label; /* "outcome=\"ok\"" or NULL */
    const char *help;
} series_desc;

static const series_desc COUNTERS[GLM_COUNTER_COUNT] = {
    [GLM_COUNTER_JOBS_OK] = {"glm4v_jobs_total", "outcome=\"ok\"", "Jobs finished, by outcome."},
    [GLM_COUNTER_JOBS_ERROR] = {"glm4v_jobs_total", "outcome=\"error\"", NULL},
    [GLM_COUNTER_JOBS_DEAD_LETTERED] = {"glm4v_jobs_total", "outcome=\"dead_lettered\"", NULL},
    [GLM_COUNTER_JOBS_CANCELLED] = {"glm4v_jobs_total", "outcome=\"cancelled\"", NULL},
    [GLM_COUNTER_GENERATED_TOKENS] = {"glm4v_generated_tokens_total", NULL,
                                      "Tokens generated (sampled) over all jobs."},
    [GLM_COUNTER_PROMPT_TOKENS] = {"glm4v_prompt_tokens_total", NULL,
                                   "Prompt tokens prefilled over all jobs, image tokens included."},
    [GLM_COUNTER_VISION_CACHE_HITS] = {"glm4v_vision_cache_hits_total", NULL,
                                       "Images whose embeddings were found in the vision cache."},
    [GLM_COUNTER_VISION_CACHE_MISSES] = {"glm4v_vision_cache_misses_total", NULL,
                                         "Images that had to go through the vision tower."},
    [GLM_COUNTER_PREFIX_PROMPT_ROWS] = {"glm4v_prefix_cache_prompt_tokens_total", NULL,
                                        "Prompt rows admitted (again after a preemption), image "
                                        "rows included: the prefix hit rate's denominator."},
    [GLM_COUNTER_PREFIX_HIT_ROWS] = {"glm4v_prefix_cache_hit_tokens_total", NULL,
                                     "Prompt rows whose KV was reused from the prefix cache."},
    [GLM_COUNTER_REDIS_REFUSED_OOM] = {"glm4v_redis_refusals_total", "kind=\"OOM\"",
                                       "Commands Redis refused while connected (not lost "
                                       "connections), by refusal."},
    [GLM_COUNTER_REDIS_REFUSED_READONLY] = {"glm4v_redis_refusals_total", "kind=\"READONLY\"",
                                            NULL},
    [GLM_COUNTER_REDIS_REFUSED_LOADING] = {"glm4v_redis_refusals_total", "kind=\"LOADING\"",
                                           NULL},
    [GLM_COUNTER_REDIS_REFUSED_BUSY] = {"glm4v_redis_refusals_total", "kind=\"BUSY\"", NULL},
    [GLM_COUNTER_REDIS_REFUSED_MISCONF] = {"glm4v_redis_refusals_total", "kind=\"MISCONF\"",
                                           NULL},
    [GLM_COUNTER_REDIS_REFUSED_OTHER] = {"glm4v_redis_refusals_total", "kind=\"other\"", NULL},
    [GLM_COUNTER_PREFIX_EVICTIONS] = {"glm4v_prefix_cache_evictions_total", NULL,
                                      "Cached KV blocks given to other content (no empty one "
                                      "was left)."},
    [GLM_COUNTER_WATCHDOG_ABORTS] = {"glm4v_watchdog_aborts_total", NULL,
                                     "Times the step watchdog ended a replica under this server "
                                     "id, from Redis (<prefix>:watchdog_aborts)."},
};

static const series_desc GAUGES[GLM_GAUGE_COUNT] = {
    [GLM_GAUGE_QUEUE_DEPTH] = {"glm4v_queue_depth", NULL,
                               "Entries waiting in the Redis job stream."},
    [GLM_GAUGE_RUNNING_SEQUENCES] = {"glm4v_running_sequences", NULL,
                                     "Sequences in the running batch."},
    [GLM_GAUGE_WAITING_SEQUENCES] = {"glm4v_waiting_sequences", NULL,
                                     "Sequences admitted but not yet running."},
    [GLM_GAUGE_KV_BLOCKS_USED] = {"glm4v_kv_blocks_used", NULL, "Paged KV cache blocks in use."},
    [GLM_GAUGE_KV_BLOCKS_TOTAL] = {"glm4v_kv_blocks_total", NULL,
                                   "Paged KV cache blocks in the pool."},
    [GLM_GAUGE_VISION_CACHE_ENTRIES] = {"glm4v_vision_cache_entries", NULL,
                                        "Image embeddings held in the vision cache."},
    [GLM_GAUGE_PREFIX_CACHE_BLOCKS] = {"glm4v_prefix_cache_blocks", NULL,
                                       "KV blocks holding reusable prompt content, used or not."},
};

/* Bucket bounds in seconds. A step is milliseconds; a request can be minutes on a long answer. */
static const double STEP_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1,   0.25,   0.5,   1,    2.5,   5};
static const double TTFT_BUCKETS[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double REQUEST_BUCKETS[] = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
                                         10,   30,  60,   120, 300, 600};
#define MAX_BUCKETS 16

typedef struct histogram_desc {
    const char *family;
    const char *help;
    const double *bounds;
    size_t n_bounds;
} histogram_desc;

#define BOUNDS(a) a, sizeof(a) / sizeof((a)[0])
static const histogram_desc HISTOGRAMS[GLM_HISTOGRAM_COUNT] = {
    [GLM_HISTOGRAM_STEP_DURATION] = {"glm4v_step_duration_seconds",
                                     "Wall time of one scheduler step on rank 0.",
                                     BOUNDS(STEP_BUCKETS)},
    [GLM_HISTOGRAM_TIME_TO_FIRST_TOKEN] = {"glm4v_time_to_first_token_seconds",
                                           "From job enqueue to its first generated token.",
                                           BOUNDS(TTFT_BUCKETS)},
    [GLM_HISTOGRAM_REQUEST_DURATION] = {"glm4v_request_duration_seconds",
                                        "From job enqueue to its final Result.",
                                        BOUNDS(REQUEST_BUCKETS)},
};
#undef BOUNDS

/* ---- the registry ---------------------------------------------------------------------------- */

typedef struct histogram {
    uint64_t counts[MAX_BUCKETS]; /* per bucket, not cumulative; the +Inf bucket is count */
    uint64_t count;
    double sum;
} histogram;

/* Generated tokens per whole second of the clock, the last GLM_METRICS_RATE_WINDOW_S seconds. */
typedef struct rate_bin {
    int64_t second;
    uint64_t tokens;
} rate_bin;

struct glm_metrics {
    pthread_mutex_t lock;
    uint64_t counters[GLM_COUNTER_COUNT];
    double gauges[GLM_GAUGE_COUNT];
    histogram histograms[GLM_HISTOGRAM_COUNT];
    rate_bin rate_bins[GLM_METRICS_RATE_WINDOW_S];
    double created_s;
    double (*now_s)(void *ctx);
    void *now_ctx;
    struct MHD_Daemon *daemon; /* the HTTP server, NULL when stopped */
};

static double monotonic_now_s(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

glm_status glm_metrics_create(glm_metrics **out, glm_error *err)
{
    *out = NULL;
    glm_metrics *m = calloc(1, sizeof *m);
    if (!m) return glm_fail(err, GLM_ERR_NOMEM, "metrics: out of memory");
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return glm_fail(err, GLM_ERR_NOMEM, "metrics: cannot create mutex");
    }
    for (size_t i = 0; i < GLM_METRICS_RATE_WINDOW_S; i++)
        m->rate_bins[i].second = -1;
    m->now_s = monotonic_now_s;
    m->created_s = m->now_s(NULL);
    *out = m;
    return GLM_OK;
}

void glm_metrics_destroy(glm_metrics *m)
{
    if (!m) return;
    glm_metrics_stop(m);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void glm_metrics_set_clock(glm_metrics *m, double (*now_s)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&m->lock);
    m->now_s = now_s ? now_s : monotonic_now_s;
    m->now_ctx = now_s ? ctx : NULL;
    m->created_s = m->now_s(m->now_ctx);
    for (size_t i = 0; i < GLM_METRICS_RATE_WINDOW_S; i++) {
        m->rate_bins[i].second = -1;
        m->rate_bins[i].tokens = 0;
    }
    pthread_mutex_unlock(&m->lock);
}

/* Caller holds the lock. A bin is reused when its second has left the window. */
static void rate_add_locked(glm_metrics *m, uint64_t tokens)
{
    int64_t second = (int64_t)floor(m->now_s(m->now_ctx));
    if (second < 0) return;
    rate_bin *bin = &m->rate_bins[second % GLM_METRICS_RATE_WINDOW_S];
    if (bin->second != second) {
        bin->second = second;
        bin->tokens = 0;
    }
    bin->tokens += tokens;
}

/* Caller holds the lock. The window is the current partial second plus the whole seconds before
 * it, back to GLM_METRICS_RATE_WINDOW_S - 1 seconds or the creation time, whichever is later. */
static double rate_locked(glm_metrics *m)
{
    double now = m->now_s(m->now_ctx);
    int64_t current = (int64_t)floor(now);
    int64_t oldest = current - (GLM_METRICS_RATE_WINDOW_S - 1);
    uint64_t tokens = 0;
    for (size_t i = 0; i < GLM_METRICS_RATE_WINDOW_S; i++) {
        const rate_bin *bin = &m->rate_bins[i];
        if (bin->second >= oldest && bin->second <= current) tokens += bin->tokens;
    }
    double start = fmax((double)oldest, m->created_s);
    double span = fmax(now - start, 1.0);
    return (double)tokens / span;
}

void glm_metrics_inc(glm_metrics *m, glm_counter_id id, uint64_t value)
{
    if (!m || (unsigned)id >= GLM_COUNTER_COUNT) return;
    pthread_mutex_lock(&m->lock);
    m->counters[id] += value;
    if (id == GLM_COUNTER_GENERATED_TOKENS) rate_add_locked(m, value);
    pthread_mutex_unlock(&m->lock);
}

void glm_metrics_set(glm_metrics *m, glm_gauge_id id, double value)
{
    if (!m || (unsigned)id >= GLM_GAUGE_COUNT) return;
    pthread_mutex_lock(&m->lock);
    m->gauges[id] = value;
    pthread_mutex_unlock(&m->lock);
}

void glm_metrics_observe(glm_metrics *m, glm_histogram_id id, double seconds)
{
    if (!m || (unsigned)id >= GLM_HISTOGRAM_COUNT || isnan(seconds)) return;
    if (seconds < 0) seconds = 0;
    const histogram_desc *d = &HISTOGRAMS[id];
    pthread_mutex_lock(&m->lock);
    histogram *h = &m->histograms[id];
    for (size_t b = 0; b < d->n_bounds; b++) {
        if (seconds <= d->bounds[b]) {
            h->counts[b]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&m->lock);
}

uint64_t glm_metrics_counter_value(glm_metrics *m, glm_counter_id id)
{
    if (!m || (unsigned)id >= GLM_COUNTER_COUNT) return 0;
    pthread_mutex_lock(&m->lock);
    uint64_t v = m->counters[id];
    pthread_mutex_unlock(&m->lock);
    return v;
}

double glm_metrics_gauge_value(glm_metrics *m, glm_gauge_id id)
{
    if (!m || (unsigned)id >= GLM_GAUGE_COUNT) return 0;
    pthread_mutex_lock(&m->lock);
    double v = m->gauges[id];
    pthread_mutex_unlock(&m->lock);
    return v;
}

double glm_metrics_tokens_per_second(glm_metrics *m)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->lock);
    double v = rate_locked(m);
    pthread_mutex_unlock(&m->lock);
    return v;
}

/* ---- rendering ------------------------------------------------------------------------------- */

/* A growing text buffer; a failed allocation sticks (failed) and is reported once at the end. */
typedef struct text_buf {
    char *data;
    size_t len, cap;
    bool failed;
} text_buf;

static void buf_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(text_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
}

/* Prometheus floats: Go's ParseFloat syntax, with +Inf, -Inf and NaN spelled its way. The shortest
 * of %.15g, %.16g, %.17g that reads back to the same double, so 0.3 prints as 0.3. */
static void format_float(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(out, cap, "%.*g", digits, v);
        if (strtod(out, NULL) == v) return;
    }
}

static void render_header(text_buf *b, const char *family, const char *help, const char *type)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
}

static void render_series_name(text_buf *b, const series_desc *d)
{
    if (d->label)
        buf_printf(b, "%s{%s}", d->family, d->label);
    else
        buf_printf(b, "%s", d->family);
}

static void render_histogram(text_buf *b, const histogram_desc *d, const histogram *h)
{
    char num[64];
    render_header(b, d->family, d->help, "histogram");
    uint64_t cumulative = 0;
    for (size_t i = 0; i < d->n_bounds; i++) {
        cumulative += h->counts[i];
        /* Bounds print in their shortest form ("0.005", "1"), which is how they were written. */
        buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", d->family, d->bounds[i],
                   (unsigned long long)cumulative);
    }
    buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", d->family, (unsigned long long)h->count);
    format_float(num, sizeof num, h->sum);
    buf_printf(b, "%s_sum %s\n", d->family, num);
    buf_printf(b, "%s_count %llu\n", d->family, (unsigned long long)h->count);
}

/* The values are copied under the lock and formatted outside it, so a slow scrape never holds up
 * the serve loop for longer than a memcpy. */
glm_status glm_metrics_render(glm_metrics *m, char **out, size_t *len, glm_error *err)
{
    *out = NULL;
    if (len) *len = 0;
    uint64_t counters[GLM_COUNTER_COUNT];
    double gauges[GLM_GAUGE_COUNT];
    histogram histograms[GLM_HISTOGRAM_COUNT];
    pthread_mutex_lock(&m->lock);
    memcpy(counters, m->counters, sizeof counters);
    memcpy(gauges, m->gauges, sizeof gauges);
    memcpy(histograms, m->histograms, sizeof histograms);
    double tokens_per_s = rate_locked(m);
    pthread_mutex_unlock(&m->lock);

    text_buf b = {.data = malloc(4096), .cap = 4096};
    if (!b.data) return glm_fail(err, GLM_ERR_NOMEM, "metrics: out of memory");
    char num[64];
    for (int i = 0; i < GLM_COUNTER_COUNT; i++) {
        const series_desc *d = &COUNTERS[i];
        if (d->help) render_header(&b, d->family, d->help, "counter");
        render_series_name(&b, d);
        buf_printf(&b, " %llu\n", (unsigned long long)counters[i]);
    }
    for (int i = 0; i < GLM_GAUGE_COUNT; i++) {
        const series_desc *d = &GAUGES[i];
        if (d->help) render_header(&b, d->family, d->help, "gauge");
        render_series_name(&b, d);
        format_float(num, sizeof num, gauges[i]);
        buf_printf(&b, " %s\n", num);
    }
    render_header(&b, "glm4v_generated_tokens_per_second",
                  "Generated tokens per second over the last 10 s (rate() of "
                  "glm4v_generated_tokens_total is the Prometheus-side equivalent).",
                  "gauge");
    format_float(num, sizeof num, tokens_per_s);
    buf_printf(&b, "glm4v_generated_tokens_per_second %s\n", num);
    for (int i = 0; i < GLM_HISTOGRAM_COUNT; i++)
        render_histogram(&b, &HISTOGRAMS[i], &histograms[i]);

    if (b.failed) {
        free(b.data);
        return glm_fail(err, GLM_ERR_NOMEM, "metrics: out of memory while rendering");
    }
    *out = b.data;
    if (len) *len = b.len;
    return GLM_OK;
}

/* ---- the HTTP endpoint ----------------------------------------------------------------------- */

static enum MHD_Result reply_static(struct MHD_Connection *conn, unsigned int code,
                                    const char *body)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_metrics(glm_metrics *m, struct MHD_Connection *conn)
{
    char *text = NULL;
    size_t len = 0;
    if (glm_metrics_render(m, &text, &len, NULL) != GLM_OK)
        return reply_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* libmicrohttpd calls this once per request on its polling thread. Only GET and HEAD of two paths
 * exist; every request body is refused, so there is nothing to accumulate between calls. */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version;
    (void)upload_data;
    glm_metrics *m = cls;
    if (*upload_data_size != 0) return MHD_NO; /* a body on a metrics endpoint: drop the peer */
    (void)req_cls;
    bool is_metrics = strcmp(url, "/metrics") == 0;
    bool is_health = strcmp(url, "/healthz") == 0;
    if (!is_metrics && !is_health) return reply_static(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (is_health) return reply_static(conn, MHD_HTTP_OK, "ok\n");
    return reply_metrics(m, conn);
}

/* Fills an IPv4 or IPv6 socket address from a literal; false when addr is neither. */
static bool parse_bind_addr(const char *addr, int port, struct sockaddr_storage *ss, bool *ipv6)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *ipv6 = false;
        return true;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *ipv6 = true;
        return true;
    }
    return false;
}

glm_status glm_metrics_serve(glm_metrics *m, const char *bind_addr, int port, int *actual_port,
                             glm_error *err)
{
    if (!bind_addr) bind_addr = "127.0.0.1";
    if (port < 0 || port > 65535)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "metrics: port %d out of range", port);
    if (m->daemon) return glm_fail(err, GLM_ERR_INVALID_ARG, "metrics: server already running");
    struct sockaddr_storage ss;
    bool ipv6 = false;
    if (!parse_bind_addr(bind_addr, port, &ss, &ipv6))
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "metrics: bind address '%s' is not an IPv4 or IPv6 literal", bind_addr);

    /* MHD_USE_AUTO picks epoll on Linux, so the server works whatever the process's fd numbers
     * are (MPI and NCCL open many). A few connections and a short timeout are enough for a
     * Prometheus scraper and a health probe, and keep a stuck client from holding a thread. */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ipv6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle_request, m, MHD_OPTION_SOCK_ADDR,
                         (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)32,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (!d)
        return glm_fail(err, GLM_ERR_IO, "metrics: cannot listen on %s port %d (in use?)",
                        bind_addr, port);
    int bound = port;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (info) bound = info->port;
    if (bound == 0) {
        MHD_stop_daemon(d);
        return glm_fail(err, GLM_ERR_IO, "metrics: cannot tell which port was bound");
    }
    m->daemon = d;
    if (actual_port) *actual_port = bound;
    return GLM_OK;
}

void glm_metrics_stop(glm_metrics *m)
{
    if (!m || !m->daemon) return;
    MHD_stop_daemon(m->daemon);
    m->daemon = NULL;
}
