/* The inside of a glm_queue, shared by its three source files: redis_queue.c (connection,
 * reading, claiming, beginning, liveness), redis_outbox.c (chunks, Results and the outbox) and
 * redis_held.c (the entries this replica holds: their fingerprints, states and claims, and the
 * crash-attribution step record). Not for use outside coordinator/queue/. */
#ifndef GLM4V_REDIS_QUEUE_INTERNAL_H
#define GLM4V_REDIS_QUEUE_INTERNAL_H

#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "coordinator/queue/redis_scripts.h"

#define KEY_MAX 256
#define CAUSE_MAX 200

/* An entry delivered to this replica and not yet finished, acked or handed back. */
typedef struct held_entry {
    char entry_id[48];
    char job_id[GLM_JOB_ID_MAX + 1];
    char fingerprint[GLM_FINGERPRINT_LEN + 1];
    uint64_t deadline_unix_ms;
    glm_entry_state state;
    long long answered_ms; /* monotonic time it was found ANSWERED or LOST, 0 before */
    bool in_outbox;        /* finished; its Result waits in the outbox */
} held_entry;

typedef struct outbox_item {
    char entry_id[48];
    char job_id[GLM_JOB_ID_MAX + 1];
    uint8_t *bytes; /* the Result, stamped with the job's fingerprint */
    size_t len;
    long long next_try_ms;     /* monotonic */
    int backoff_ms;            /* next delay after a refusal */
    long long give_up_unix_ms; /* then: the error Result; after its own hold: dropped */
    long long first_fail_unix_ms;
    bool is_error_stand_in; /* bytes are the REDIS_REFUSED Result that replaced the answer */
    char cause[CAUSE_MAX];  /* the last refusal or connection error */
} outbox_item;

struct glm_queue {
    glm_queue_config cfg;
    char prefix[64];
    char server_id[128];
    char version[128];
    char *password; /* NULL: the URL's */
    glm_redis_url url;
    char key_jobs[KEY_MAX], key_group[KEY_MAX], key_dead[KEY_MAX], key_server[KEY_MAX];
    char key_step[KEY_MAX];

    redisContext *ctx; /* NULL while disconnected */
    glm_redis_scripts scripts;
    long long next_connect_ms;
    int backoff_ms;
    bool group_wanted;
    bool reading;

    held_entry *held;
    size_t n_held, cap_held;

    outbox_item *outbox;
    size_t n_outbox, cap_outbox;
    long long last_outbox_touch_ms, last_job_check_ms;

    bool refusing;               /* the last write was refused (logged once per episode) */
    bool on_replica;             /* READONLY / MASTERDOWN seen: reconnects back off until a write
                                  * is accepted again */
    long long refusing_since_ms; /* unix */
    bool step_recorded;          /* <prefix>:step:<id> may hold a record to clear */

    long long last_heartbeat_ms;
    bool heartbeat_failing;
    long long started_unix_ms;
    glm_server_load last_load;
    glm_queue_stats stats;
};

/* Checks a reply: a lost connection (NULL reply) drops the context so a later call reconnects; a
 * refusal is counted and logged once per episode. Returns as glm_redis_check. */
glm_status queue_check(glm_queue *q, redisReply *r, int type, const char *what, glm_error *err);
/* Makes sure q->ctx is usable: connects when disconnected and the backoff delay has passed. */
glm_status queue_conn(glm_queue *q, glm_error *err);
void queue_drop_connection(glm_queue *q);
/* Notes that Redis accepted a write: ends a refusal episode (logged). */
void queue_writes_accepted(glm_queue *q);

/* redis_held.c */
held_entry *held_find(glm_queue *q, const char *entry_id);
held_entry *held_find_job(glm_queue *q, const char *job_id);
/* Adds (or refreshes) the entry of a delivered job. */
glm_status held_add(glm_queue *q, const glm_queue_job *job, glm_error *err);
void held_remove(glm_queue *q, const char *entry_id);
/* Marks an entry answered elsewhere and says so (HOW: where it was found); a no-op when it
 * already is. The time is kept: the caller forgets the entry at its next step, and one still held
 * a minute later is dropped. */
void held_mark_answered(glm_queue *q, held_entry *h, const char *how);
/* Marks an active entry LOST (the touch found it owned by another consumer, or acked) and says
 * so; the caller stops working on it at its next step, like an answered one. */
void held_mark_lost(glm_queue *q, held_entry *h);

/* redis_outbox.c */
void outbox_flush(glm_queue *q, bool all);
void outbox_free(glm_queue *q);

#endif
