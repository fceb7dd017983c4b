/* The Lua scripts that make the queue's multi-key steps atomic, and EVALSHA with a SCRIPT LOAD
 * fallback (a restarted Redis has an empty script cache and answers NOSCRIPT).
 *
 * Scripts touch keys derived from the job id (<prefix>:out:<id>, <prefix>:done:<id>) that the
 * claim script cannot declare in KEYS up front. That is fine on a single Redis or Sentinel; on
 * Redis Cluster, put the prefix in a hash tag ("{glm4v}") so every key lives in one slot. */
#ifndef GLM4V_REDIS_SCRIPTS_H
#define GLM4V_REDIS_SCRIPTS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef enum glm_redis_script_id {
    /* KEYS jobs, out:<id>, done:<id>; ARGV group, entry id ("" = none), result, result ttl s,
     * done ttl s. Writes the Result, sets the done marker, XACKs and XDELs the entry; if the marker
     * already exists it only acks. Returns {written 0/1, acked 0/1}. */
    GLM_SCRIPT_FINISH,
    /* KEYS jobs, dead; ARGV group, consumer, min idle ms, cursor, count, max deliveries, prefix,
     * result ttl s, done ttl s. XAUTOCLAIM, then per claimed entry: already done -> ack; delivered
     * more than max -> dead-letter + error Result (POISON) + done marker + ack; else hand it back.
     * Returns {next cursor, n dead, {{entry id, job id, job bytes, deliveries}, ...}}. */
    GLM_SCRIPT_CLAIM,
    /* KEYS jobs, done:<id>; ARGV group, entry id. Acks when the marker exists. Returns 0/1. */
    GLM_SCRIPT_ACK_IF_DONE,
    /* KEYS jobs, dead; ARGV group, entry id, job bytes, reason, consumer. Moves an entry that has
     * no usable job id to the dead stream and acks it. Returns 1. */
    GLM_SCRIPT_DEAD_LETTER,
    GLM_SCRIPT_COUNT,
} glm_redis_script_id;

typedef struct glm_redis_scripts {
    char sha[GLM_SCRIPT_COUNT][41]; /* "" until loaded */
} glm_redis_scripts;

/* EVALSHA script with args[0..n_keys) as KEYS and the rest as ARGV (binary safe; lens may be NULL
 * for all-text args). Loads the script first when needed and once more on NOSCRIPT. Returns the
 * reply (caller frees) or NULL on a connection error. */
redisReply *glm_redis_eval(redisContext *c, glm_redis_scripts *scripts, glm_redis_script_id id,
                           int n_keys, int n_args, const char **args, const size_t *lens);

#endif
