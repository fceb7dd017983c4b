/* Gateway metrics in the Prometheus text format: requests by HTTP code, a request-duration
 * histogram, requests in flight, and the stream events worth alerting on (failovers followed,
 * divergences, cancellations, cancels that failed). Updated with atomics from every request
 * thread. */
#ifndef GLM4V_GW_METRICS_H
#define GLM4V_GW_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#define GW_METRIC_CODES 13
#define GW_METRIC_BUCKETS 14

typedef struct gw_metrics {
    atomic_ullong requests[GW_METRIC_CODES];      /* by gw_metric_code_slot */
    atomic_ullong buckets[GW_METRIC_BUCKETS + 1]; /* last: +Inf */
    atomic_ullong duration_us_sum;
    atomic_llong in_flight;
    atomic_ullong failovers, divergences, cancels, cancel_failures, jobs_submitted;
} gw_metrics;

void gw_metrics_init(gw_metrics *m);
void gw_metrics_observe(gw_metrics *m, int http_status, double seconds);

/* The exposition text (malloc'd). */
char *gw_metrics_render(gw_metrics *m);

#endif
