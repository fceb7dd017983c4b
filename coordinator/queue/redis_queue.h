/* The server side of the Redis job protocol (DESIGN.md section 4, proto/glm4v.proto for the keys).
 *
 * One glm_queue is one replica's consumer: it reads jobs from <prefix>:jobs through the consumer
 * group <prefix>:servers, reclaims jobs that other replicas left idle past the visibility timeout,
 * dead-letters jobs delivered too often, writes Chunks and the final Result, and acks a job only in
 * the same Lua script that writes its Result. There is no global state: two queues may live in one
 * process (tests do that to play two replicas).
 *
 * Redis going away: every call that needs Redis returns GLM_ERR_IO when the connection is lost or
 * still down, and reconnects with exponential backoff on a later call (glm_queue_tick is the place
 * to drive that). Results of finished jobs are never dropped: a glm_queue_finish that cannot reach
 * Redis keeps the Result in an outbox inside the queue and writes it after the reconnect; the done
 * marker makes the retry safe (nothing is written or acked twice). Chunks are best effort: one that
 * cannot be written is dropped (the final Result carries the whole text). */
#ifndef GLM4V_REDIS_QUEUE_H
#define GLM4V_REDIS_QUEUE_H

#include "common/status.h"
#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct glm_queue glm_queue;

typedef struct glm_queue_config {
    const char *url;            /* redis://[[user]:password@]host[:port][/db] */
    const char *password;       /* NULL = the URL's (or none); else overrides the URL's */
    const char *prefix;         /* key prefix, "glm4v" */
    const char *server_id;      /* consumer name + liveness key; unique per replica */
    const char *server_version; /* published in the liveness key */
    int connect_timeout_ms;     /* 2000 */
    int command_timeout_ms;     /* 5000; blocking reads add their block time */
    int visibility_timeout_ms;  /* a job idle longer than this may be claimed: 60000 */
    int max_deliveries;         /* delivered more than this -> <prefix>:dead: 3 */
    int result_ttl_s;           /* <prefix>:out:<id> expiry: 86400 */
    int done_ttl_s;             /* <prefix>:done:<id> expiry (>= result ttl): 86400 */
    int liveness_ttl_s;         /* <prefix>:server:<id> expiry: 15 */
    int liveness_interval_ms;   /* refresh period in glm_queue_tick: 5000 */
    int backoff_initial_ms;     /* first reconnect delay: 100 */
    int backoff_max_ms;         /* reconnect delay cap: 5000 */
    size_t outbox_max;          /* finished Results held while Redis is away: 4096 */
} glm_queue_config;

glm_queue_config glm_queue_config_default(void);

/* One delivered stream entry. The Job bytes are not decoded here (glm_job_decode does that), so
 * malformed jobs reach the caller and get an error Result like any other bad request. */
typedef struct glm_queue_job {
    char entry_id[48];               /* stream entry id, "1700000000000-0" */
    char job_id[GLM_JOB_ID_MAX + 1]; /* the entry's "id" field; "" if absent or not a valid id */
    uint8_t *bytes;                  /* the entry's "job" field (malloc'd; NULL if absent) */
    size_t len;
    uint32_t deliveries; /* 1 on first delivery, +1 per claim */
} glm_queue_job;

void glm_queue_job_clear(glm_queue_job *job);

typedef enum glm_finish_outcome {
    GLM_RESULT_WRITTEN,   /* Result written, job acked */
    GLM_RESULT_DUPLICATE, /* a Result already existed: only acked */
    GLM_RESULT_QUEUED,    /* Redis unreachable: held in the outbox, written after reconnect */
} glm_finish_outcome;

typedef struct glm_server_load {
    int running; /* sequences in the running batch */
    int waiting; /* admitted but not yet running */
    double load; /* 0..1, e.g. KV blocks in use */
    uint64_t vision_cache_hits, vision_cache_misses; /* images found in / encoded into the cache */
} glm_server_load;

/* Creates the queue and tries to connect once; a failed first connection is returned as an error
 * (misconfiguration shows at start), later losses are handled by reconnecting. */
glm_status glm_queue_create(const glm_queue_config *cfg, glm_queue **out, glm_error *err);
/* Tries once to flush the outbox, removes the liveness key and disconnects. */
void glm_queue_destroy(glm_queue *q);

/* XGROUP CREATE <prefix>:jobs <prefix>:servers 0 MKSTREAM; an existing group is fine. The group
 * starts at 0, not $, so jobs submitted before any server ever ran are served too (finished entries
 * are XDELed, so the stream holds only unfinished work). Redone after every reconnect. */
glm_status glm_queue_ensure_group(glm_queue *q, glm_error *err);

/* XREADGROUP ... COUNT max_jobs BLOCK block_ms ... >: new jobs for this consumer. *n_jobs may be 0
 * (timeout, or stop_reading). Fill jobs[0..*n_jobs); clear each with glm_queue_job_clear. */
glm_status glm_queue_read(glm_queue *q, size_t max_jobs, int block_ms, glm_queue_job *jobs,
                          size_t *n_jobs, glm_error *err);

/* XAUTOCLAIM jobs idle past the visibility timeout, in one Lua script that also acks claimed jobs
 * whose Result already exists and dead-letters those delivered more than max_deliveries times
 * (error Result POISON in their out stream). Returns the rest in jobs; n_dead may be NULL. */
glm_status glm_queue_claim(glm_queue *q, size_t max_jobs, glm_queue_job *jobs, size_t *n_jobs,
                           size_t *n_dead, glm_error *err);

/* Before starting a (re-)delivered job: if its Result already exists, acks it and sets *done. */
glm_status glm_queue_ack_if_done(glm_queue *q, const glm_queue_job *job, bool *done,
                                 glm_error *err);

/* XADD <prefix>:out:<job_id> * chunk <bytes>, EXPIRE result ttl. Best effort (see above). */
glm_status glm_queue_write_chunk(glm_queue *q, const char *job_id, const void *chunk, size_t len,
                                 glm_error *err);

/* Writes the final Result and acks entry_id in one script (see glm_finish_outcome). entry_id may be
 * "" to write a Result for a job that came from nowhere in the stream. Returns GLM_OK for all three
 * outcomes; an error only when the outbox is full or the arguments are bad. */
/* The chunks of one step for many jobs, pipelined in one round trip (best effort like
 * glm_queue_write_chunk: a lost chunk is covered by the final Result's full text). */
glm_status glm_queue_write_chunks(glm_queue *q, size_t n, const char *const *job_ids,
                                  const void *const *chunks, const size_t *lens, glm_error *err);

glm_status glm_queue_finish(glm_queue *q, const char *entry_id, const char *job_id,
                            const void *result, size_t len, glm_finish_outcome *outcome,
                            glm_error *err);

/* For an entry with no usable job id (nowhere to send an error Result): copies it to
 * <prefix>:dead with reason and acks it. */
glm_status glm_queue_dead_letter(glm_queue *q, const glm_queue_job *job, const char *reason,
                                 glm_error *err);

/* SIGTERM drain: marks a job this replica will not finish as idle past the visibility timeout
 * (XCLAIM ... IDLE, JUSTID so its delivery count is unchanged), so another replica claims it at
 * once instead of after the timeout. */
/* Resets the idle time of entries this server is still working on (XCLAIM to itself, JUSTID),
 * so a job that runs longer than the visibility timeout is not reclaimed from a live server.
 * The serve loop calls it every third of the visibility timeout for all its in-flight jobs. */
glm_status glm_queue_touch(glm_queue *q, const char *const *entry_ids, size_t n, glm_error *err);

glm_status glm_queue_hand_back(glm_queue *q, const char *entry_id, glm_error *err);

/* From now on glm_queue_read and glm_queue_claim return no jobs; writing results continues. */
void glm_queue_stop_reading(glm_queue *q);
bool glm_queue_reading(const glm_queue *q);

/* SET <prefix>:server:<id> <json> EX liveness ttl, now. */
glm_status glm_queue_heartbeat(glm_queue *q, const glm_server_load *load, glm_error *err);

/* Call every scheduler step: reconnects when due, flushes the outbox, refreshes the liveness key
 * when the interval has passed (load may be NULL: zeros). Cheap when there is nothing to do. */
glm_status glm_queue_tick(glm_queue *q, const glm_server_load *load, glm_error *err);

bool glm_queue_connected(const glm_queue *q);
size_t glm_queue_outbox_size(const glm_queue *q);
/* How often glm_queue_finish found an existing Result, and entries dead-lettered by this queue. */
size_t glm_queue_duplicates(const glm_queue *q);
size_t glm_queue_dead_count(const glm_queue *q);

#endif
