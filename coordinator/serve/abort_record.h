/* The record of a replica that the step watchdog ended (its group broken: a collective or step
 * plan past its deadline, or a peer's connection lost), kept in Redis because the process ends a
 * moment later and its /metrics with it:
 *
 *   <prefix>:watchdog_aborts             hash: server id -> aborts counted (HINCRBY)
 *   <prefix>:watchdog_abort:<server id>  hash: reason (the watchdog's line), unix_ms, of the last
 * one
 *
 * A replica started again under the same --server-id reads its count back, so that its
 * glm4v_watchdog_aborts_total carries the aborts of the processes before it.
 *
 * Writing happens on the way to MPI_Abort, so it must never hold the abort up: it runs on a
 * thread of its own that the caller waits for at most a budget (a Redis that is unreachable, a
 * name that does not resolve, a stalled server all end in that bound). */
#ifndef GLM4V_ABORT_RECORD_H
#define GLM4V_ABORT_RECORD_H

#include <stdint.h>

#include "common/status.h"

typedef struct glm_abort_target {
    const char *redis_url; /* redis://[[user]:password@]host[:port][/db] */
    const char *password;  /* NULL or "": the URL's (or none) */
    const char *prefix;
    const char *server_id;
} glm_abort_target;

/* Counts one abort of t->server_id and stores reason as its last. Returns within about budget_ms
 * whatever Redis does: GLM_OK once recorded, GLM_ERR_TIMEOUT when the budget ran out first (the
 * thread may still finish later; nothing waits for it), or the Redis failure. */
glm_status glm_abort_record_write(const glm_abort_target *t, const char *reason, int budget_ms,
                                  glm_error *err);

/* The aborts recorded for t->server_id (0 when none), with timeout_ms for connecting and for each
 * command. */
glm_status glm_abort_record_read(const glm_abort_target *t, int timeout_ms, uint64_t *count,
                                 glm_error *err);

/* What glm4v-serve's rank 0 calls. On start: adds the count stored for its server id to
 * glm4v_watchdog_aborts_total (a Redis that does not answer within 1 s leaves it at 0, logged).
 * When its group broke: counts the abort in metrics and in Redis (at most budget_ms) and logs
 * one line saying whether it was recorded. */
typedef struct glm_metrics glm_metrics;
void glm_abort_record_seed(const glm_abort_target *t, glm_metrics *m);
void glm_abort_record_now(const glm_abort_target *t, glm_metrics *m, const char *reason,
                          int budget_ms);

#endif
