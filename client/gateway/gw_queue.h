/* The gateway's side of the Redis job protocol (proto/glm4v.proto for the keys): a pool of
 * connections shared by the request threads, submitting a Job exactly as glm4v-submit does,
 * reading a job's out stream, the queue depth, the cancel key and whether any server is live. */
#ifndef GLM4V_GW_QUEUE_H
#define GLM4V_GW_QUEUE_H

#include "common/status.h"
#include "coordinator/queue/job_codec.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>

typedef struct gw_queue gw_queue;

/* Checks the URL and the password by connecting once; a Redis that does not answer yet is only
 * a warning (each request connects again). timeout_ms bounds connect and commands. */
glm_status gw_queue_create(const char *url, const char *password, const char *prefix,
                           int timeout_ms, gw_queue **out, glm_error *err);
void gw_queue_destroy(gw_queue *q);

/* A connection for one request; give it back with gw_queue_release (healthy = false closes it,
 * after an I/O error). */
glm_status gw_queue_acquire(gw_queue *q, redisContext **ctx, glm_error *err);
void gw_queue_release(gw_queue *q, redisContext *ctx, bool healthy);

/* XLEN <prefix>:jobs (finished entries are deleted, so this is waiting + running jobs). */
glm_status gw_queue_depth(gw_queue *q, redisContext *ctx, long long *depth, glm_error *err);

/* Whether any <prefix>:server:* liveness key exists; the answer is cached for a second so a
 * busy gateway does not SCAN per request. */
glm_status gw_queue_servers_live(gw_queue *q, redisContext *ctx, bool *live, glm_error *err);

/* XADD <prefix>:jobs * job <bytes> id <job_id>, the fields glm4v-submit sends. GLM_ERR_LIMIT when
 * Redis refused it for now (OOM, READONLY, ...); *drop is then set when the refusal comes from a
 * replica (READONLY, MASTERDOWN: a failover demoted the server this connection reaches), so the
 * caller frees the connection instead of pooling it and the next one reaches the URL's new
 * primary. */
glm_status gw_queue_submit(gw_queue *q, redisContext *ctx, const char *job_id, const void *job,
                           size_t len, bool *drop, glm_error *err);

/* SET <prefix>:cancel:<job_id> 1 EX ttl_s: the server ends the job with a CANCELLED Result. */
glm_status gw_queue_cancel(gw_queue *q, redisContext *ctx, const char *job_id, int ttl_s,
                           glm_error *err);

#define GW_MAX_EVENTS 32

typedef struct gw_event {
    glm_chunk *chunk;   /* one of the two is set */
    glm_result *result; /* (glm_chunk_free / glm_result_free) */
} gw_event;

/* Reads up to GW_MAX_EVENTS entries of <prefix>:out:<job_id> after *cursor ("0-0" first; updated),
 * waiting up to block_ms; *n = 0 when none came. Entries that do not decode are skipped. */
glm_status gw_queue_read(gw_queue *q, redisContext *ctx, const char *job_id, char cursor[48],
                         int block_ms, gw_event *events, size_t *n, glm_error *err);
void gw_events_free(gw_event *events, size_t n);

#endif
