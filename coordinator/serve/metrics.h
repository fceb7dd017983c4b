/* Prometheus metrics of one glm4v-serve replica: a registry of counters, gauges and histograms,
 * rendered in the Prometheus text exposition format (version 0.0.4) and served over HTTP by
 * libmicrohttpd on a thread of its own (GET /metrics, GET /healthz).
 *
 * Every metric is named by an enum id, so a call site cannot misspell a name or a label; the
 * table in metrics.c maps each id to its Prometheus family name, label and help text. A series
 * with a label (glm4v_jobs_total{outcome="ok"}) is one id per label value.
 *
 * The registry is an object (no global state): two registries, each with its own HTTP server,
 * may live in one process. Updates, reads and rendering are thread-safe: the serve loop updates
 * metrics while the HTTP thread renders them, and an update holds one mutex for a few
 * instructions. serve, stop and destroy belong to the thread that owns the registry. */
#ifndef GLM4V_METRICS_H
#define GLM4V_METRICS_H

#include "common/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct glm_metrics glm_metrics;

/* Monotonic counters (Prometheus type counter). */
typedef enum glm_counter_id {
    GLM_COUNTER_JOBS_OK,             /* glm4v_jobs_total{outcome="ok"} */
    GLM_COUNTER_JOBS_ERROR,          /* glm4v_jobs_total{outcome="error"}: error Result written */
    GLM_COUNTER_JOBS_DEAD_LETTERED,  /* glm4v_jobs_total{outcome="dead_lettered"} */
    GLM_COUNTER_JOBS_CANCELLED,      /* glm4v_jobs_total{outcome="cancelled"} */
    GLM_COUNTER_GENERATED_TOKENS,    /* glm4v_generated_tokens_total */
    GLM_COUNTER_PROMPT_TOKENS,       /* glm4v_prompt_tokens_total */
    GLM_COUNTER_VISION_CACHE_HITS,   /* glm4v_vision_cache_hits_total */
    GLM_COUNTER_VISION_CACHE_MISSES, /* glm4v_vision_cache_misses_total */
    GLM_COUNTER_PREFIX_PROMPT_ROWS,  /* glm4v_prefix_cache_prompt_tokens_total */
    GLM_COUNTER_PREFIX_HIT_ROWS,     /* glm4v_prefix_cache_hit_tokens_total */
    GLM_COUNTER_REDIS_REFUSED_OOM,      /* glm4v_redis_refusals_total{kind="OOM"} */
    GLM_COUNTER_REDIS_REFUSED_READONLY, /* ... kind="READONLY" (a replica, or failover) */
    GLM_COUNTER_REDIS_REFUSED_LOADING,  /* ... kind="LOADING" (restarting Redis) */
    GLM_COUNTER_REDIS_REFUSED_BUSY,     /* ... kind="BUSY" (a script running too long) */
    GLM_COUNTER_REDIS_REFUSED_MISCONF,  /* ... kind="MISCONF" (background save failing) */
    GLM_COUNTER_REDIS_REFUSED_OTHER,    /* ... kind="other" (MASTERDOWN, NOREPLICAS) */
    GLM_COUNTER_PREFIX_EVICTIONS,    /* glm4v_prefix_cache_evictions_total */
    GLM_COUNTER_WATCHDOG_ABORTS,     /* glm4v_watchdog_aborts_total (abort_record.h) */
    GLM_COUNTER_COUNT
} glm_counter_id;

/* Values that go up and down (Prometheus type gauge); the serve loop sets them once a step. */
typedef enum glm_gauge_id {
    GLM_GAUGE_QUEUE_DEPTH,          /* glm4v_queue_depth: entries in <prefix>:jobs */
    GLM_GAUGE_RUNNING_SEQUENCES,    /* glm4v_running_sequences */
    GLM_GAUGE_WAITING_SEQUENCES,    /* glm4v_waiting_sequences */
    GLM_GAUGE_KV_BLOCKS_USED,       /* glm4v_kv_blocks_used */
    GLM_GAUGE_KV_BLOCKS_TOTAL,      /* glm4v_kv_blocks_total */
    GLM_GAUGE_VISION_CACHE_ENTRIES, /* glm4v_vision_cache_entries */
    GLM_GAUGE_PREFIX_CACHE_BLOCKS,  /* glm4v_prefix_cache_blocks */
    GLM_GAUGE_COUNT
} glm_gauge_id;

/* Distributions in seconds with fixed buckets (Prometheus type histogram). */
typedef enum glm_histogram_id {
    GLM_HISTOGRAM_STEP_DURATION,       /* glm4v_step_duration_seconds: one scheduler step */
    GLM_HISTOGRAM_TIME_TO_FIRST_TOKEN, /* glm4v_time_to_first_token_seconds: enqueue to token 1 */
    GLM_HISTOGRAM_REQUEST_DURATION,    /* glm4v_request_duration_seconds: enqueue to Result */
    GLM_HISTOGRAM_COUNT
} glm_histogram_id;

/* The window of the derived gauge glm4v_generated_tokens_per_second. */
#define GLM_METRICS_RATE_WINDOW_S 10

glm_status glm_metrics_create(glm_metrics **out, glm_error *err);
/* Stops the HTTP server if one runs, then frees the registry. NULL is fine. */
void glm_metrics_destroy(glm_metrics *m);

/* counter += value. An id out of range is ignored (metrics never fail the caller). */
void glm_metrics_inc(glm_metrics *m, glm_counter_id id, uint64_t value);
/* gauge = value. */
void glm_metrics_set(glm_metrics *m, glm_gauge_id id, double value);
/* Adds one observation; NaN is ignored, negative values count as 0. */
void glm_metrics_observe(glm_metrics *m, glm_histogram_id id, double seconds);

/* Reads back one value (for tests and for the liveness key's load figure). */
uint64_t glm_metrics_counter_value(glm_metrics *m, glm_counter_id id);
double glm_metrics_gauge_value(glm_metrics *m, glm_gauge_id id);
/* Generated tokens per second over the last GLM_METRICS_RATE_WINDOW_S seconds (or since the
 * registry was created, when that is shorter; never over less than one second). */
double glm_metrics_tokens_per_second(glm_metrics *m);

/* Renders every metric in the text exposition format into a malloc'd, NUL-terminated string
 * (*out, length *len without the NUL); the caller frees it. */
glm_status glm_metrics_render(glm_metrics *m, char **out, size_t *len, glm_error *err);

/* Starts the HTTP server on bind_addr (an IPv4 or IPv6 literal; NULL means "127.0.0.1") and port
 * (0 picks a free one). *actual_port (may be NULL) receives the bound port. One server per
 * registry: a second call before glm_metrics_stop fails with GLM_ERR_INVALID_ARG. */
glm_status glm_metrics_serve(glm_metrics *m, const char *bind_addr, int port, int *actual_port,
                             glm_error *err);
/* Stops the HTTP server (waits for its thread); a no-op when none runs. */
void glm_metrics_stop(glm_metrics *m);

/* Replaces the clock (seconds, monotonic) used by the tokens/s window. For tests only; pass NULL
 * to go back to CLOCK_MONOTONIC. Call before any update. */
void glm_metrics_set_clock(glm_metrics *m, double (*now_s)(void *ctx), void *ctx);

#endif
