/* The server side of the Redis job protocol (DESIGN.md section 4, proto/glm4v.proto for the keys).
 *
 * One glm_queue is one replica's consumer: it reads jobs from <prefix>:jobs through the consumer
 * group <prefix>:servers, reclaims jobs that other replicas left idle past the visibility timeout,
 * dead-letters jobs delivered too often, writes Chunks and the final Result, and acks a job only in
 * the same Lua script that writes its Result. There is no global state: two queues may live in one
 * process (tests do that to play two replicas).
 *
 * Job identity: every entry read or claimed is fingerprinted (job_fingerprint.h). glm_queue_begin
 * binds the job id to that fingerprint in Redis (<prefix>:claim:<id>, then <prefix>:done:<id>), so
 * one id is computed once: a duplicate with the same fingerprint joins the computation in flight
 * or its Result, one with another fingerprint is a conflict and is not run. Every Chunk and Result
 * written through the queue is stamped with the fingerprint of the entry it belongs to.
 *
 * Redis going away or refusing: every call that needs Redis returns GLM_ERR_IO when the connection
 * is lost or still down (and reconnects with exponential backoff on a later call; glm_queue_tick
 * is the place to drive that), and GLM_ERR_LIMIT when Redis refused the command (OOM, READONLY,
 * LOADING, BUSY, MISCONF, ...: see glm_redis_refusal; READONLY and MASTERDOWN, a replica's
 * answers after a failover, also drop the connection so that a reconnection finds the new
 * primary). A finished Result is never dropped for
 * either: glm_queue_finish keeps it in an outbox and retries with backoff until Redis takes it or
 * the job's deadline (else outbox_hold_ms) passes; only then is it replaced by a small
 * REDIS_REFUSED error Result naming the cause. Entries in the outbox stay claimed (their idle time
 * and claim are refreshed), so no other replica recomputes them meanwhile. Chunks are best effort:
 * one that cannot be written is dropped (the final Result carries the whole text), and a Chunk is
 * never written after its job's Result exists. */
#ifndef GLM4V_REDIS_QUEUE_H
#define GLM4V_REDIS_QUEUE_H

#include "common/status.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_fingerprint.h"

#include <signal.h>
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
    int backoff_initial_ms;     /* first reconnect / outbox retry delay: 100 */
    int backoff_max_ms;         /* reconnect / outbox retry delay cap: 5000 */
    size_t outbox_max;          /* finished Results held while Redis is away or refusing: 4096 */
    int outbox_hold_ms;         /* how long a Result of a job without deadline is retried: 600000 */
    int job_check_interval_ms;  /* glm_queue_tick polls Result/cancel keys of held jobs: 250 */
    long dead_max_len;          /* <prefix>:dead is trimmed to about this many entries: 10000 */
    size_t dead_payload_max;    /* job bytes kept per dead-letter entry: 65536 */
    int startup_wait_ms;        /* glm_queue_create waits this long for Redis (-1: for ever): -1 */
    const volatile sig_atomic_t *stop; /* set (e.g. by SIGTERM): the startup wait gives up */
} glm_queue_config;

glm_queue_config glm_queue_config_default(void);

/* One delivered stream entry. The Job bytes are not decoded for the caller (glm_job_decode does
 * that), so malformed jobs reach the caller and get an error Result like any other bad request;
 * the queue decodes them once on its own for the fingerprint and the deadline. */
typedef struct glm_queue_job {
    char entry_id[48];               /* stream entry id, "1700000000000-0" */
    char job_id[GLM_JOB_ID_MAX + 1]; /* the entry's "id" field; when absent or not a valid id,
                                      * the Job's own id; "" when the bytes do not decode either */
    uint8_t *bytes;                  /* the entry's "job" field (malloc'd; NULL if absent) */
    size_t len;
    uint32_t deliveries; /* 1 on first delivery, +1 per claim blamed on it (see glm_queue_claim) */
    char fingerprint[GLM_FINGERPRINT_LEN + 1]; /* of the job bytes (job_fingerprint.h) */
    uint64_t deadline_unix_ms;                 /* the Job's deadline, 0 = none or undecodable */
} glm_queue_job;

void glm_queue_job_clear(glm_queue_job *job);

typedef enum glm_finish_outcome {
    GLM_RESULT_WRITTEN,   /* Result written, job acked */
    GLM_RESULT_DUPLICATE, /* a Result already existed: only acked */
    GLM_RESULT_QUEUED,    /* Redis unreachable or refusing: held in the outbox, retried */
} glm_finish_outcome;

typedef enum glm_begin_outcome {
    GLM_BEGIN_RUN,      /* this entry is the one computation of its job id: run it */
    GLM_BEGIN_DONE,     /* its Result exists (same fingerprint): acked, nothing to run */
    GLM_BEGIN_JOINED,   /* the same job is running from another entry: acked, its Result serves */
    GLM_BEGIN_CONFLICT, /* the id belongs to a job with another fingerprint: acked, not run */
} glm_begin_outcome;

typedef enum glm_entry_state {
    GLM_ENTRY_ACTIVE,    /* nothing known against it */
    GLM_ENTRY_ANSWERED,  /* its Result exists (written elsewhere): stop working on it */
    GLM_ENTRY_CANCELLED, /* its client set <prefix>:cancel:<id>: end it with a CANCELLED Result */
    GLM_ENTRY_LOST,      /* another replica owns it now (this one was paused past its lease): stop
                          * working on it, without a Result and without handing it back */
} glm_entry_state;

typedef struct glm_server_load {
    int running;                                     /* sequences in the running batch */
    int waiting;                                     /* admitted but not yet running */
    double load;                                     /* 0..1, e.g. KV blocks in use */
    uint64_t vision_cache_hits, vision_cache_misses; /* images found in / encoded into the cache */
    double prefix_hit_rate;   /* prompt rows reused from the prefix cache / prompt rows admitted */
    int prefix_cached_blocks; /* KV blocks holding reusable prompt content */
} glm_server_load;

/* What the queue counted since it was created (for metrics and tests). */
typedef struct glm_queue_stats {
    uint64_t duplicates;          /* glm_queue_finish found an existing Result */
    uint64_t dead;                /* entries dead-lettered by this queue */
    uint64_t refusals;            /* commands Redis refused (OOM, READONLY, ...) */
    uint64_t refusals_by_kind[8]; /* indexed by glm_redis_refusal */
    uint64_t conflicts;           /* entries not run: their id belongs to another fingerprint */
    uint64_t joined;              /* entries acked because the same job was running elsewhere */
    uint64_t chunks_suppressed;   /* chunks not written because the job's Result existed */
    uint64_t results_abandoned;   /* Results replaced by REDIS_REFUSED or given up */
    uint64_t liveness_lost;       /* times the liveness key was found gone */
} glm_queue_stats;

/* Creates the queue and connects. A Redis that cannot be reached yet (refused connection,
 * timeout, LOADING) is waited for with backoff, saying so on stderr, for cfg->startup_wait_ms
 * (-1: until *cfg->stop is set); a misconfiguration (bad URL, wrong password) fails at once. */
glm_status glm_queue_create(const glm_queue_config *cfg, glm_queue **out, glm_error *err);
/* Tries once to flush the outbox, removes the liveness key and disconnects. */
void glm_queue_destroy(glm_queue *q);

/* XGROUP CREATE <prefix>:jobs <prefix>:servers 0 MKSTREAM; an existing group is fine. The group
 * starts at 0, not $, so jobs submitted before any server ever ran are served too (finished entries
 * are XDELed, so the stream holds only unfinished work). Redone after every reconnect. */
glm_status glm_queue_ensure_group(glm_queue *q, glm_error *err);

/* XREADGROUP ... COUNT max_jobs BLOCK block_ms ... >: new jobs for this consumer. *n_jobs may be 0
 * (timeout, or stop_reading). Fill jobs[0..*n_jobs); clear each with glm_queue_job_clear. The
 * jobs returned are the caller's to handle whatever the status: out of memory part way through a
 * batch returns the ones taken before with GLM_ERR_NOMEM, and hands the rest back (unblamed).
 * The same holds for glm_queue_claim. */
glm_status glm_queue_read(glm_queue *q, size_t max_jobs, int block_ms, glm_queue_job *jobs,
                          size_t *n_jobs, glm_error *err);

/* Claims jobs idle past the visibility timeout, in one Lua script that also acks claimed jobs
 * whose Result already exists and dead-letters those delivered more than max_deliveries times
 * (error Result POISON in their out stream). A claim counts as a delivery only when it may be
 * the job's fault: the previous owner left no step record (glm_queue_step_begin) or its record
 * lists the entry. Returns the rest in jobs; n_dead may be NULL. */
glm_status glm_queue_claim(glm_queue *q, size_t max_jobs, glm_queue_job *jobs, size_t *n_jobs,
                           size_t *n_dead, glm_error *err);

/* Before starting a delivered job (new or reclaimed): binds its id to its fingerprint (see the
 * outcomes). Entries without a job id always RUN (they get an error Result anyway). Logs every
 * outcome but RUN with the job id. */
glm_status glm_queue_begin(glm_queue *q, const glm_queue_job *job, glm_begin_outcome *outcome,
                           glm_error *err);

/* glm_queue_begin for callers that only need "is there nothing to do": *done is true for DONE,
 * JOINED and CONFLICT (the entry was acked). */
glm_status glm_queue_ack_if_done(glm_queue *q, const glm_queue_job *job, bool *done,
                                 glm_error *err);

/* XADD <prefix>:out:<job_id> * chunk <bytes>, EXPIRE result ttl. Best effort (see above). */
glm_status glm_queue_write_chunk(glm_queue *q, const char *job_id, const void *chunk, size_t len,
                                 glm_error *err);

/* The chunks of one step for many jobs, pipelined in one round trip (best effort like
 * glm_queue_write_chunk: a lost chunk is covered by the final Result's full text). A chunk whose
 * job's Result already exists is not written and marks the job ANSWERED (glm_queue_entry_state). */
glm_status glm_queue_write_chunks(glm_queue *q, size_t n, const char *const *job_ids,
                                  const void *const *chunks, const size_t *lens, glm_error *err);

/* Writes the final Result and acks entry_id in one script (see glm_finish_outcome). entry_id may be
 * "" to write a Result for a job that came from nowhere in the stream. Returns GLM_OK for all three
 * outcomes; an error only when the outbox is full or the arguments are bad. */
glm_status glm_queue_finish(glm_queue *q, const char *entry_id, const char *job_id,
                            const void *result, size_t len, glm_finish_outcome *outcome,
                            glm_error *err);

/* For an entry with no usable job id (nowhere to send an error Result): copies it to
 * <prefix>:dead with reason and acks it. */
glm_status glm_queue_dead_letter(glm_queue *q, const glm_queue_job *job, const char *reason,
                                 glm_error *err);

/* Resets the idle time of entries this server is still working on (XCLAIM to itself, JUSTID)
 * and refreshes their claims, so a job that runs longer than the visibility timeout is not
 * reclaimed from a live server. The serve loop calls it every third of the visibility timeout
 * for all its in-flight jobs, those still in preparation too (entries held in the outbox are
 * refreshed by glm_queue_tick). Only entries this consumer still owns are extended: one that
 * another replica reclaimed while this one was paused past its lease (or that is no longer
 * pending) stays with its owner and becomes GLM_ENTRY_LOST here (glm_queue_entry_state). */
glm_status glm_queue_touch(glm_queue *q, const char *const *entry_ids, size_t n, glm_error *err);

/* SIGTERM drain: marks a job this replica will not finish as idle past the visibility timeout,
 * so another replica claims it at once instead of after the timeout. The hand-back is not blamed
 * on the job: the next claim delivers it with the count it had here (no quarantine, no step
 * nearer the dead letters), so its Chunks restart at index 0 under the same attempt number. An
 * entry another replica owns by now is left to it. */
glm_status glm_queue_hand_back(glm_queue *q, const char *entry_id, glm_error *err);

/* What the latest poll (glm_queue_tick, chunk writes) learnt about a held entry. */
glm_entry_state glm_queue_entry_state(const glm_queue *q, const char *entry_id);
/* Polls the Result and cancel keys of every held entry now (one pipelined round trip). */
glm_status glm_queue_check_jobs(glm_queue *q, glm_error *err);
/* The caller stopped working on entry_id without a Result of its own (it was ANSWERED
 * elsewhere): the queue stops tracking it. */
void glm_queue_forget(glm_queue *q, const char *entry_id);

/* Crash attribution: before a model step that holds re-delivered jobs, record the step's entries
 * in <prefix>:step:<server id>; after the step, clear it. A replica that dies inside the step is
 * then blamed on those entries only (glm_queue_claim); without a record, on all its entries. */
glm_status glm_queue_step_begin(glm_queue *q, const char *const *entry_ids, size_t n,
                                glm_error *err);
glm_status glm_queue_step_end(glm_queue *q, glm_error *err);

/* From now on glm_queue_read and glm_queue_claim return no jobs; writing results continues. */
void glm_queue_stop_reading(glm_queue *q);
bool glm_queue_reading(const glm_queue *q);

/* SET <prefix>:server:<id> <json> EX liveness ttl, now. A key found gone is logged. */
glm_status glm_queue_heartbeat(glm_queue *q, const glm_server_load *load, glm_error *err);

/* Call every scheduler step: reconnects when due, retries outbox Results whose backoff passed,
 * refreshes held entries in the outbox, polls job states every job_check_interval_ms, refreshes
 * the liveness key when the interval has passed (load may be NULL: zeros). Cheap when there is
 * nothing to do. */
glm_status glm_queue_tick(glm_queue *q, const glm_server_load *load, glm_error *err);

bool glm_queue_connected(const glm_queue *q);
size_t glm_queue_outbox_size(const glm_queue *q);
/* How often glm_queue_finish found an existing Result, and entries dead-lettered by this queue. */
size_t glm_queue_duplicates(const glm_queue *q);
size_t glm_queue_dead_count(const glm_queue *q);
glm_queue_stats glm_queue_stats_get(const glm_queue *q);

#endif
