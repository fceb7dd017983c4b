/* Metrics registry: the exposition text line by line, the tokens/s window on a fake clock, and the
 * HTTP endpoint scraped over a real TCP socket (two registries, two servers, one process). */
#include "coordinator/serve/metrics.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------------- */

/* True when text holds exactly this line (between newlines). */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        bool starts = p == text || p[-1] == '\n';
        if (starts && p[n] == '\n') return true;
    }
    return false;
}

/* Index of the line in text, or -1; used to check the order of lines. */
static long line_pos(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return p - text;
    return -1;
}

/* Every line is a comment (# HELP / # TYPE) or "name[{labels}] value" with a parseable value. */
static void check_every_line_well_formed(const char *text)
{
    const char *p = text;
    int n_lines = 0;
    while (*p) {
        const char *end = strchr(p, '\n');
        CHECK_MSG(end != NULL, "the text ends without a newline");
        if (!end) return;
        char line[512];
        size_t len = (size_t)(end - p);
        CHECK(len > 0 && len < sizeof line);
        if (len == 0 || len >= sizeof line) return;
        memcpy(line, p, len);
        line[len] = 0;
        if (line[0] == '#') {
            CHECK_MSG(strncmp(line, "# HELP glm4v_", 13) == 0 ||
                          strncmp(line, "# TYPE glm4v_", 13) == 0,
                      "bad comment line '%s'", line);
        } else {
            CHECK_MSG(strncmp(line, "glm4v_", 6) == 0, "bad metric name in '%s'", line);
            const char *space = strrchr(line, ' ');
            CHECK_MSG(space != NULL, "no value in '%s'", line);
            if (space) {
                char *num_end = NULL;
                const char *v = space + 1;
                if (strcmp(v, "+Inf") && strcmp(v, "-Inf") && strcmp(v, "NaN")) {
                    strtod(v, &num_end);
                    CHECK_MSG(num_end && *num_end == 0 && num_end != v, "bad value in '%s'", line);
                }
            }
        }
        n_lines++;
        p = end + 1;
    }
    CHECK(n_lines > 20);
}

static char *render(glm_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    glm_error err = {0};
    glm_status st = glm_metrics_render(m, &text, &len, &err);
    CHECK_MSG(st == GLM_OK, "render: %s", err.msg);
    CHECK(text && strlen(text) == len);
    return text;
}

/* ---- exposition format ----------------------------------------------------------------------- */

static void test_render_fresh_registry(void)
{
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, NULL) == GLM_OK);
    char *text = render(m);
    check_every_line_well_formed(text);
    CHECK(has_line(text, "# TYPE glm4v_jobs_total counter"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"ok\"} 0"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"cancelled\"} 0"));
    CHECK(has_line(text, "glm4v_queue_depth 0"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"+Inf\"} 0"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_count 0"));
    CHECK(has_line(text, "glm4v_generated_tokens_per_second 0"));
    free(text);
    glm_metrics_destroy(m);
}

static void test_render_counters_and_gauges(void)
{
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, NULL) == GLM_OK);
    glm_metrics_inc(m, GLM_COUNTER_JOBS_OK, 3);
    glm_metrics_inc(m, GLM_COUNTER_JOBS_OK, 2);
    glm_metrics_inc(m, GLM_COUNTER_JOBS_ERROR, 1);
    glm_metrics_inc(m, GLM_COUNTER_JOBS_DEAD_LETTERED, 7);
    glm_metrics_inc(m, GLM_COUNTER_PROMPT_TOKENS, 1234567890123ull);
    glm_metrics_inc(m, GLM_COUNTER_VISION_CACHE_HITS, 4);
    glm_metrics_inc(m, GLM_COUNTER_VISION_CACHE_MISSES, 6);
    glm_metrics_inc(m, GLM_COUNTER_COUNT, 99); /* out of range: ignored, must not crash */
    glm_metrics_set(m, GLM_GAUGE_QUEUE_DEPTH, 17);
    glm_metrics_set(m, GLM_GAUGE_KV_BLOCKS_USED, 96);
    glm_metrics_set(m, GLM_GAUGE_KV_BLOCKS_TOTAL, 128);
    glm_metrics_set(m, GLM_GAUGE_RUNNING_SEQUENCES, 5);
    glm_metrics_set(m, GLM_GAUGE_RUNNING_SEQUENCES, 4); /* a gauge keeps the last value */
    glm_metrics_set(m, GLM_GAUGE_WAITING_SEQUENCES, 0.5);
    glm_metrics_set(m, GLM_GAUGE_VISION_CACHE_ENTRIES, INFINITY);
    CHECK(glm_metrics_counter_value(m, GLM_COUNTER_JOBS_OK) == 5);
    CHECK(glm_metrics_gauge_value(m, GLM_GAUGE_RUNNING_SEQUENCES) == 4);

    char *text = render(m);
    check_every_line_well_formed(text);
    CHECK(has_line(text, "# HELP glm4v_jobs_total Jobs finished, by outcome."));
    CHECK(has_line(text, "# TYPE glm4v_jobs_total counter"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"ok\"} 5"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"error\"} 1"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"dead_lettered\"} 7"));
    CHECK(has_line(text, "glm4v_jobs_total{outcome=\"cancelled\"} 0"));
    CHECK(has_line(text, "glm4v_prompt_tokens_total 1234567890123"));
    CHECK(has_line(text, "# TYPE glm4v_vision_cache_hits_total counter"));
    CHECK(has_line(text, "glm4v_vision_cache_hits_total 4"));
    CHECK(has_line(text, "glm4v_vision_cache_misses_total 6"));
    CHECK(has_line(text, "# TYPE glm4v_queue_depth gauge"));
    CHECK(has_line(text, "glm4v_queue_depth 17"));
    CHECK(has_line(text, "glm4v_kv_blocks_used 96"));
    CHECK(has_line(text, "glm4v_kv_blocks_total 128"));
    CHECK(has_line(text, "glm4v_running_sequences 4"));
    CHECK(has_line(text, "glm4v_waiting_sequences 0.5"));
    CHECK(has_line(text, "glm4v_vision_cache_entries +Inf"));
    /* HELP and TYPE appear once per family, before its first series */
    long type_pos = line_pos(text, "# TYPE glm4v_jobs_total counter");
    CHECK(type_pos >= 0 && type_pos < line_pos(text, "glm4v_jobs_total{outcome=\"ok\"} 5"));
    CHECK(strstr(text + type_pos + 1, "# TYPE glm4v_jobs_total") == NULL);
    free(text);
    glm_metrics_destroy(m);
}

static void test_render_histogram(void)
{
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, NULL) == GLM_OK);
    /* step buckets: 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 */
    const double obs[] = {0.0005, 0.001, 0.003, 0.02, 0.02, 0.7, 7.0, -1.0};
    double sum = 0;
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) {
        glm_metrics_observe(m, GLM_HISTOGRAM_STEP_DURATION, obs[i]);
        sum += obs[i] < 0 ? 0 : obs[i];
    }
    glm_metrics_observe(m, GLM_HISTOGRAM_STEP_DURATION, NAN); /* ignored */
    glm_metrics_observe(m, GLM_HISTOGRAM_TIME_TO_FIRST_TOKEN, 0.3);

    char *text = render(m);
    check_every_line_well_formed(text);
    CHECK(has_line(text, "# TYPE glm4v_step_duration_seconds histogram"));
    /* cumulative: -1 (as 0), 0.0005 and 0.001 fall in le=0.001 (a bound is inclusive) */
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.001\"} 3"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.0025\"} 3"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.005\"} 4"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.01\"} 4"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.025\"} 6"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"0.5\"} 6"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"1\"} 7"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"5\"} 7"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_bucket{le=\"+Inf\"} 8"));
    CHECK(has_line(text, "glm4v_step_duration_seconds_count 8"));
    /* buckets are in increasing order, +Inf last, then _sum and _count */
    long p1 = line_pos(text, "glm4v_step_duration_seconds_bucket{le=\"0.001\"} 3");
    long p2 = line_pos(text, "glm4v_step_duration_seconds_bucket{le=\"5\"} 7");
    long p3 = line_pos(text, "glm4v_step_duration_seconds_bucket{le=\"+Inf\"} 8");
    long p4 = line_pos(text, "glm4v_step_duration_seconds_count 8");
    CHECK(p1 >= 0 && p1 < p2 && p2 < p3 && p3 < p4);
    const char *sum_line = strstr(text, "\nglm4v_step_duration_seconds_sum ");
    CHECK(sum_line != NULL);
    if (sum_line) {
        double got = strtod(sum_line + strlen("\nglm4v_step_duration_seconds_sum "), NULL);
        CHECK_MSG(fabs(got - sum) < 1e-12, "sum %.17g, expected %.17g", got, sum);
    }
    CHECK(has_line(text, "glm4v_time_to_first_token_seconds_bucket{le=\"0.25\"} 0"));
    CHECK(has_line(text, "glm4v_time_to_first_token_seconds_bucket{le=\"0.5\"} 1"));
    CHECK(has_line(text, "glm4v_time_to_first_token_seconds_sum 0.3"));
    CHECK(has_line(text, "glm4v_request_duration_seconds_count 0"));
    free(text);
    glm_metrics_destroy(m);
}

/* ---- tokens/s window ------------------------------------------------------------------------- */

static double fake_now(void *ctx)
{
    return *(double *)ctx;
}

static void test_tokens_per_second(void)
{
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, NULL) == GLM_OK);
    double now = 100.0;
    glm_metrics_set_clock(m, fake_now, &now);
    now = 100.5;
    glm_metrics_inc(m, GLM_COUNTER_GENERATED_TOKENS, 100);
    now = 105.2;
    glm_metrics_inc(m, GLM_COUNTER_GENERATED_TOKENS, 100);
    now = 105.5; /* 200 tokens since creation 5.5 s ago */
    double r = glm_metrics_tokens_per_second(m);
    CHECK_MSG(fabs(r - 200 / 5.5) < 1e-9, "rate %g", r);
    now = 112.0; /* window 103..112: only the 100 at 105 */
    r = glm_metrics_tokens_per_second(m);
    CHECK_MSG(fabs(r - 100 / 9.0) < 1e-9, "rate %g", r);
    char *text = render(m);
    const char *key = "\nglm4v_generated_tokens_per_second ";
    const char *line = strstr(text, key);
    CHECK(line != NULL);
    if (line) CHECK(strtod(line + strlen(key), NULL) == 100 / 9.0); /* printed to round-trip */
    free(text);
    now = 100.7; /* a burst right after start is divided by at least one second */
    glm_metrics_set_clock(m, fake_now, &now);
    glm_metrics_inc(m, GLM_COUNTER_GENERATED_TOKENS, 50);
    CHECK(fabs(glm_metrics_tokens_per_second(m) - 50) < 1e-9);
    now = 300.0; /* everything has left the window; the counter keeps it all */
    CHECK(glm_metrics_tokens_per_second(m) == 0);
    CHECK(glm_metrics_counter_value(m, GLM_COUNTER_GENERATED_TOKENS) == 250);
    glm_metrics_set_clock(m, NULL, NULL);
    glm_metrics_destroy(m);
}

/* ---- HTTP over a real socket ----------------------------------------------------------------- */

/* One HTTP/1.0 request to 127.0.0.1:port; returns the whole response (headers + body) malloc'd,
 * and the status code in *status. NULL when the connection fails. */
static char *http_request(int port, const char *method, const char *path, int *status)
{
    *status = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return NULL;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *resp = malloc(cap);
    if (!resp) {
        close(fd);
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *bigger = realloc(resp, cap * 2);
            if (!bigger) break;
            resp = bigger;
            cap *= 2;
        }
        ssize_t got = read(fd, resp + len, cap - len - 1);
        if (got <= 0) break;
        len += (size_t)got;
    }
    close(fd);
    resp[len] = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", status) != 1) *status = -1;
    return resp;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p ? p + 4 : "";
}

static void test_http_two_servers(void)
{
    glm_metrics *a = NULL, *b = NULL;
    glm_error err = {0};
    CHECK(glm_metrics_create(&a, NULL) == GLM_OK);
    CHECK(glm_metrics_create(&b, NULL) == GLM_OK);
    int port_a = 0, port_b = 0;
    glm_status st = glm_metrics_serve(a, NULL, 0, &port_a, &err);
    CHECK_MSG(st == GLM_OK, "serve a: %s", err.msg);
    st = glm_metrics_serve(b, "127.0.0.1", 0, &port_b, &err);
    CHECK_MSG(st == GLM_OK, "serve b: %s", err.msg);
    CHECK(port_a > 0 && port_b > 0 && port_a != port_b);
    /* one server per registry; the port of a running server is refused to another registry */
    CHECK(glm_metrics_serve(a, NULL, 0, NULL, &err) == GLM_ERR_INVALID_ARG);
    glm_metrics *c = NULL;
    CHECK(glm_metrics_create(&c, NULL) == GLM_OK);
    CHECK(glm_metrics_serve(c, "127.0.0.1", port_a, NULL, &err) == GLM_ERR_IO);
    CHECK(glm_metrics_serve(c, "not-an-address", 0, NULL, &err) == GLM_ERR_INVALID_ARG);
    CHECK(glm_metrics_serve(c, NULL, 70000, NULL, &err) == GLM_ERR_INVALID_ARG);
    glm_metrics_destroy(c);

    glm_metrics_inc(a, GLM_COUNTER_JOBS_OK, 11);
    glm_metrics_inc(b, GLM_COUNTER_JOBS_OK, 22);
    glm_metrics_observe(a, GLM_HISTOGRAM_REQUEST_DURATION, 1.5);

    int status = 0;
    char *resp = http_request(port_a, "GET", "/metrics", &status);
    CHECK(resp != NULL && status == 200);
    if (resp) {
        CHECK(strstr(resp, "Content-Type: text/plain; version=0.0.4") != NULL);
        const char *body = body_of(resp);
        check_every_line_well_formed(body);
        CHECK(has_line(body, "glm4v_jobs_total{outcome=\"ok\"} 11"));
        CHECK(has_line(body, "glm4v_request_duration_seconds_bucket{le=\"2.5\"} 1"));
        CHECK(has_line(body, "glm4v_request_duration_seconds_count 1"));
        free(resp);
    }
    resp = http_request(port_b, "GET", "/metrics", &status);
    CHECK(resp != NULL && status == 200);
    if (resp) {
        CHECK(has_line(body_of(resp), "glm4v_jobs_total{outcome=\"ok\"} 22"));
        CHECK(has_line(body_of(resp), "glm4v_request_duration_seconds_count 0"));
        free(resp);
    }
    resp = http_request(port_a, "GET", "/healthz", &status);
    CHECK(resp != NULL && status == 200 && strcmp(body_of(resp), "ok\n") == 0);
    free(resp);
    resp = http_request(port_a, "GET", "/nope", &status);
    CHECK(resp != NULL && status == 404);
    free(resp);
    resp = http_request(port_a, "GET", "/metrics/extra", &status);
    CHECK(resp != NULL && status == 404);
    free(resp);
    resp = http_request(port_a, "POST", "/metrics", &status);
    CHECK(resp != NULL && status == 405);
    free(resp);

    /* stop frees the port; the other server keeps serving */
    glm_metrics_stop(a);
    glm_metrics_stop(a); /* idempotent */
    resp = http_request(port_a, "GET", "/metrics", &status);
    CHECK(resp == NULL);
    free(resp);
    resp = http_request(port_b, "GET", "/healthz", &status);
    CHECK(resp != NULL && status == 200);
    free(resp);
    /* a stopped registry can serve again */
    int port_a2 = 0;
    CHECK(glm_metrics_serve(a, NULL, 0, &port_a2, &err) == GLM_OK && port_a2 > 0);
    glm_metrics_destroy(a); /* destroy stops a running server */
    glm_metrics_destroy(b);
}

/* Updates from several threads while scrapes run: totals must come out exact. */
typedef struct writer_arg {
    glm_metrics *m;
    int n;
} writer_arg;

static void *writer_thread(void *p)
{
    writer_arg *w = p;
    for (int i = 0; i < w->n; i++) {
        glm_metrics_inc(w->m, GLM_COUNTER_GENERATED_TOKENS, 1);
        glm_metrics_observe(w->m, GLM_HISTOGRAM_STEP_DURATION, 0.002);
        glm_metrics_set(w->m, GLM_GAUGE_QUEUE_DEPTH, i);
    }
    return NULL;
}

static void test_concurrent_updates_while_scraping(void)
{
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, NULL) == GLM_OK);
    int port = 0;
    CHECK(glm_metrics_serve(m, NULL, 0, &port, NULL) == GLM_OK);
    enum { N_THREADS = 4, N_EACH = 20000 };
    pthread_t threads[N_THREADS];
    writer_arg arg = {m, N_EACH};
    for (int i = 0; i < N_THREADS; i++)
        pthread_create(&threads[i], NULL, writer_thread, &arg);
    for (int i = 0; i < 20; i++) {
        int status = 0;
        char *resp = http_request(port, "GET", "/metrics", &status);
        CHECK(resp != NULL && status == 200);
        free(resp);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(threads[i], NULL);
    CHECK(glm_metrics_counter_value(m, GLM_COUNTER_GENERATED_TOKENS) == N_THREADS * N_EACH);
    int status = 0;
    char *resp = http_request(port, "GET", "/metrics", &status);
    CHECK(resp && has_line(body_of(resp), "glm4v_step_duration_seconds_count 80000"));
    CHECK(resp &&
          has_line(body_of(resp), "glm4v_step_duration_seconds_bucket{le=\"0.0025\"} 80000"));
    free(resp);
    glm_metrics_destroy(m);
}

int main(void)
{
    test_render_fresh_registry();
    test_render_counters_and_gauges();
    test_render_histogram();
    test_tokens_per_second();
    test_http_two_servers();
    test_concurrent_updates_while_scraping();
    return test_finish("metrics");
}
