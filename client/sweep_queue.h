/* glm4v-sweep's side of the Redis job protocol (docs/DESIGN.md section 4): submit jobs, look up
 * Results already in Redis, and wait on the result streams of many jobs at once with one XREAD.
 *
 * glm4v-submit's glm_client follows one job at a time; a sweep keeps a window of jobs in flight
 * and must learn which of them finished without a round trip per job, hence this module. */
#ifndef GLM4V_SWEEP_QUEUE_H
#define GLM4V_SWEEP_QUEUE_H

#include "common/status.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_fingerprint.h"

#include <stddef.h>

typedef struct sweep_queue sweep_queue;

/* A job in flight: its Redis job id, how far its result stream has been read, and the caller's
 * bookkeeping (row index, deadline). */
typedef struct sweep_flight {
    char job_id[GLM_JOB_ID_MAX + 1];
    char fingerprint[GLM_FINGERPRINT_LEN + 1]; /* of the submitted job: its Result must match */
    /* of its bytes: an older server's error Result is stamped so (glm_fingerprint_answers) */
    char raw_fingerprint[GLM_FINGERPRINT_LEN + 1];
    char cursor[48]; /* "0-0" at submission */
    size_t row;
    long long submitted_ms, deadline_ms;
} sweep_flight;

/* Connects like glm4v-submit (a URL carrying a password is refused; give password instead).
 * timeout_ms bounds connect and each command. */
glm_status sweep_queue_connect(const char *url, const char *password, const char *prefix,
                               int timeout_ms, sweep_queue **out, glm_error *err);
void sweep_queue_destroy(sweep_queue *q);

/* For each job id, the final Result already in <prefix>:out:<id>, if any (one pipelined round trip
 * for all n). results[i] is a new Result (glm_result_free) or NULL. */
glm_status sweep_queue_lookup(sweep_queue *q, const char *const *job_ids, size_t n,
                              glm_result **results, glm_error *err);

/* XADD <prefix>:jobs * job <bytes> id <job_id>. */
glm_status sweep_queue_submit(sweep_queue *q, const char *job_id, const void *job, size_t len,
                              glm_error *err);

/* Waits up to block_ms for new entries on the result streams of jobs[0..n), reads past Chunks
 * (advancing each cursor) and sets results[i] to job i's Result when it arrived (NULL otherwise;
 * the caller frees them). */
glm_status sweep_queue_poll(sweep_queue *q, sweep_flight *jobs, size_t n, int block_ms,
                            glm_result **results, glm_error *err);

#endif
