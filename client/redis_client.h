/* The client side of the Redis job protocol (proto/glm4v.proto for the keys): submit a Job, follow
 * its result stream with XREAD BLOCK, and read the cluster status. Used by glm4v-submit and
 * glm4v-sweep. One glm_client is one connection; no global state. */
#ifndef GLM4V_REDIS_CLIENT_H
#define GLM4V_REDIS_CLIENT_H

#include "common/status.h"
#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct glm_client glm_client;

/* Connects to url (redis://host[:port][/db]; a URL carrying a password is refused so passwords
 * never sit on a command line) with password (NULL = none). timeout_ms bounds connect and each
 * command. */
glm_status glm_client_connect(const char *url, const char *password, const char *prefix,
                              int timeout_ms, glm_client **out, glm_error *err);
void glm_client_destroy(glm_client *c);

/* Drops the connection and connects again with the same settings (after a lost connection, a
 * Redis restart or a failover: the URL may lead elsewhere now). On failure the client has no
 * connection (every call fails with GLM_ERR_IO) until a later reconnection succeeds. */
glm_status glm_client_reconnect(glm_client *c, glm_error *err);

/* XADD <prefix>:jobs * job <bytes> id <job_id>. */
glm_status glm_client_submit(glm_client *c, const char *job_id, const void *job, size_t len,
                             glm_error *err);

/* Tells the servers that nobody waits for job_id any more: SET <prefix>:cancel:<job_id> 1 EX 3600.
 * A server running it ends it within a few steps with a CANCELLED Result (which then is that id's
 * Result for the result TTL: submit again under a new id). */
glm_status glm_client_cancel(glm_client *c, const char *job_id, glm_error *err);

typedef enum glm_client_event_kind {
    GLM_EVENT_NONE,   /* nothing arrived within block_ms */
    GLM_EVENT_CHUNK,  /* event.chunk set (glm_chunk_free) */
    GLM_EVENT_RESULT, /* event.result set (glm_result_free) */
} glm_client_event_kind;

typedef struct glm_client_event {
    glm_client_event_kind kind;
    glm_chunk *chunk;
    glm_result *result;
} glm_client_event;

/* Reads the next entry of <prefix>:out:<job_id> after *cursor (start with "0-0"; updated), waiting
 * up to block_ms. Entries that do not decode are skipped with a warning on stderr. */
glm_status glm_client_next(glm_client *c, const char *job_id, char cursor[48], int block_ms,
                           glm_client_event *event, glm_error *err);

/* Prints live servers (SCAN <prefix>:server:*), queue depth (XLEN), pending (XPENDING summary) and
 * dead-letter count (XLEN <prefix>:dead) to out. */
glm_status glm_client_status(glm_client *c, FILE *out, glm_error *err);

#endif
