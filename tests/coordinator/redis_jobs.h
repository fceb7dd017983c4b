/* The steps the Redis queue tests share around the code they test: a server-side queue on the
 * fixture's server, a one-message job submitted the way glm4v-submit does, a chunk and a Result
 * written by a replica, and a job's out stream read back as a client sees it. Each step CHECKs
 * its own calls, so a test reads as the sequence it is about. */
#ifndef GLM4V_REDIS_JOBS_H
#define GLM4V_REDIS_JOBS_H

#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_fixture.h"

#include <stdint.h>

/* glm_queue_config_default() pointed at the fixture's server under prefix, as server_id. */
glm_queue_config redis_jobs_config(const redis_fixture *f, const char *prefix,
                                   const char *server_id);
/* Creates the queue and its consumer group; NULL (and a failed CHECK) when either fails. */
glm_queue *redis_jobs_queue(const glm_queue_config *cfg);

/* Submits a one-message user job (deadline 0 = none) under prefix. fingerprint, when not NULL,
 * receives the fingerprint of the submitted bytes as a client computes it. */
void redis_jobs_submit(const redis_fixture *f, const char *prefix, const char *id,
                       const char *prompt, uint64_t deadline_unix_ms,
                       char fingerprint[GLM_FINGERPRINT_LEN + 1]);

/* Writes a first-attempt chunk of text for job_id; returns the queue's status, with err filled
 * (callers check it: some expect a refusal). */
glm_status redis_jobs_write_chunk(glm_queue *q, const char *job_id, const char *text,
                                  glm_error *err);
/* Finishes job with a STOP Result of text (attempts = its deliveries); returns the outcome. */
glm_finish_outcome redis_jobs_finish(glm_queue *q, const glm_queue_job *job, const char *text);

/* Reads every entry of <prefix>:out:<id>: counts chunks (n_chunks may be NULL) and Results and
 * returns the last Result (NULL if none; glm_result_free it). chunk_fingerprint, when not NULL,
 * receives the first chunk's fingerprint ("" without chunks). */
glm_result *redis_jobs_read_out(const redis_fixture *f, const char *prefix, const char *id,
                                int *n_chunks, int *n_results,
                                char chunk_fingerprint[GLM_FINGERPRINT_LEN + 1]);

#endif
