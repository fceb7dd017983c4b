/* Prometheus text exposition of the gateway's counters (see gw_metrics.h). */
#include "client/gateway/gw_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 204: CORS preflights (--cors-origin) */
static const int codes[GW_METRIC_CODES] = {200, 204, 400, 401, 404, 405, 413,
                                           429, 500, 502, 503, 504, 0 /* other */};
static const double bounds[GW_METRIC_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                 1,     2.5,  5,     10,   30,  60,   300};

void gw_metrics_init(gw_metrics *m)
{
    memset(m, 0, sizeof *m);
}

void gw_metrics_observe(gw_metrics *m, int http_status, double seconds)
{
    size_t slot = GW_METRIC_CODES - 1;
    for (size_t i = 0; i + 1 < GW_METRIC_CODES; i++)
        if (codes[i] == http_status) slot = i;
    atomic_fetch_add(&m->requests[slot], 1);
    size_t b = 0;
    while (b < GW_METRIC_BUCKETS && seconds > bounds[b])
        b++;
    atomic_fetch_add(&m->buckets[b], 1);
    atomic_fetch_add(&m->duration_us_sum, (unsigned long long)(seconds * 1e6));
}

char *gw_metrics_render(gw_metrics *m)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fprintf(f, "# HELP glm4v_gateway_requests_total HTTP requests answered, by status code.\n"
               "# TYPE glm4v_gateway_requests_total counter\n");
    for (size_t i = 0; i < GW_METRIC_CODES; i++) {
        char code[16];
        snprintf(code, sizeof code, codes[i] ? "%d" : "other", codes[i]);
        fprintf(f, "glm4v_gateway_requests_total{code=\"%s\"} %llu\n", code,
                (unsigned long long)atomic_load(&m->requests[i]));
    }
    fprintf(f, "# HELP glm4v_gateway_request_duration_seconds From the request to the last byte "
               "of its answer.\n"
               "# TYPE glm4v_gateway_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (size_t b = 0; b <= GW_METRIC_BUCKETS; b++) {
        cum += atomic_load(&m->buckets[b]);
        if (b < GW_METRIC_BUCKETS)
            fprintf(f, "glm4v_gateway_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bounds[b],
                    cum);
        else
            fprintf(f, "glm4v_gateway_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    fprintf(f, "glm4v_gateway_request_duration_seconds_sum %.6f\n",
            (double)atomic_load(&m->duration_us_sum) / 1e6);
    fprintf(f, "glm4v_gateway_request_duration_seconds_count %llu\n", cum);
    fprintf(f,
            "# HELP glm4v_gateway_in_flight Requests being answered now.\n"
            "# TYPE glm4v_gateway_in_flight gauge\n"
            "glm4v_gateway_in_flight %lld\n",
            (long long)atomic_load(&m->in_flight));
    fprintf(f,
            "# HELP glm4v_gateway_jobs_submitted_total Jobs added to the queue.\n"
            "# TYPE glm4v_gateway_jobs_submitted_total counter\n"
            "glm4v_gateway_jobs_submitted_total %llu\n",
            (unsigned long long)atomic_load(&m->jobs_submitted));
    fprintf(f,
            "# HELP glm4v_gateway_failovers_total Streams that followed a newer attempt of "
            "their job (another replica took it over).\n"
            "# TYPE glm4v_gateway_failovers_total counter\n"
            "glm4v_gateway_failovers_total %llu\n",
            (unsigned long long)atomic_load(&m->failovers));
    fprintf(f,
            "# HELP glm4v_gateway_divergences_total Streams ended with an error because a "
            "newer attempt contradicted text already sent.\n"
            "# TYPE glm4v_gateway_divergences_total counter\n"
            "glm4v_gateway_divergences_total %llu\n",
            (unsigned long long)atomic_load(&m->divergences));
    fprintf(f,
            "# HELP glm4v_gateway_cancels_total Jobs cancelled because their client went "
            "away, they timed out or their queuing was not confirmed.\n"
            "# TYPE glm4v_gateway_cancels_total counter\n"
            "glm4v_gateway_cancels_total %llu\n",
            (unsigned long long)atomic_load(&m->cancels));
    fprintf(f,
            "# HELP glm4v_gateway_cancel_failures_total Cancels that reached no Redis "
            "connection, even a fresh one: those jobs ran on for nobody.\n"
            "# TYPE glm4v_gateway_cancel_failures_total counter\n"
            "glm4v_gateway_cancel_failures_total %llu\n",
            (unsigned long long)atomic_load(&m->cancel_failures));
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
