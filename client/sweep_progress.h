/* glm4v-sweep bookkeeping: counts, throughput and latencies of the Results, the live progress line
 * on stderr and the summary at the end. */
#ifndef GLM4V_SWEEP_PROGRESS_H
#define GLM4V_SWEEP_PROGRESS_H

#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define SWEEP_N_FINISH 6 /* glm_finish_reason values */
#define SWEEP_N_CODES 32 /* room for glm_error_code values */

typedef struct sweep_stats {
    size_t total;       /* valid input rows */
    size_t done_before; /* rows the output file held when the run began */
    size_t done;        /* Results settled in this run (written or held for order) */
    size_t errors;      /* of which carry an error code */
    size_t from_redis;  /* of which were found finished in Redis before submitting */
    size_t timed_out;   /* rows given up on after --timeout (no line written) */
    size_t malformed;   /* input lines skipped */
    uint64_t completion_tokens;
    size_t by_finish[SWEEP_N_FINISH];
    size_t by_error[SWEEP_N_CODES];
    double *latency_ms; /* total_ms of each server Result */
    size_t n_latency, cap_latency;
    long long start_ms; /* monotonic */
} sweep_stats;

/* Counts one Result. from_server: false for the error Results the sweep writes itself (they have
 * no latency). */
void sweep_stats_add(sweep_stats *s, const glm_result *r, bool from_server);
void sweep_stats_free(sweep_stats *s);

/* The p-th percentile (0 < p <= 100, nearest rank) of sorted[0..n); 0 when n == 0. */
double sweep_percentile(const double *sorted, size_t n, double p);

typedef struct sweep_progress {
    FILE *f;
    bool tty;          /* redraw one line with \r; otherwise print a line every interval */
    int interval_ms;   /* between redraws (tty) or lines (not a tty) */
    long long last_ms; /* monotonic time of the last output; 0 = never */
    bool line_open;    /* the tty line needs a newline before anything else is printed */
} sweep_progress;

void sweep_progress_init(sweep_progress *p, FILE *f, bool tty, int plain_interval_ms);
/* Shows the state when the interval has passed (or force). */
void sweep_progress_update(sweep_progress *p, const sweep_stats *s, size_t in_flight, bool force);
/* Ends the live line so that other messages start on a fresh one. */
void sweep_progress_break(sweep_progress *p);

/* The summary: counts by finish reason and error code, throughput, latency percentiles. */
void sweep_stats_summary(sweep_stats *s, FILE *f);

#endif
