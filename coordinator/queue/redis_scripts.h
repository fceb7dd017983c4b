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
    /* KEYS jobs, out:<id>, done:<id>, claim:<id>; ARGV group, entry id ("" = none), result,
     * result ttl s, done ttl s, fingerprint ("" = unknown). Unless the done marker exists: writes
     * the Result and sets the marker to the fingerprint. Releases the claim when it names this
     * entry, XACKs and XDELs the entry. Returns {written 0/1, acked 0/1, marker or ""}: written 0
     * means a Result was already there (marker: the fingerprint of the job it answers). */
    GLM_SCRIPT_FINISH,
    /* KEYS jobs, dead; ARGV group, consumer, min idle ms, (unused), count, max deliveries, prefix,
     * result ttl s, done ttl s, dead maxlen, dead payload cap bytes. Claims entries idle past min
     * idle (XPENDING IDLE + XCLAIM). Crash attribution: the delivery counts only when the previous
     * owner's step record (<prefix>:step:<owner>) is absent or lists the entry; otherwise
     * RETRYCOUNT keeps the old count. Then per entry: done -> ack; delivered more than max ->
     * dead-letter (capped payload, MAXLEN ~) + POISON Result + done marker + ack; else returned.
     * Returns {"0-0", n dead, {{entry id, job id, job bytes, deliveries}, ...}}. */
    GLM_SCRIPT_CLAIM,
    /* KEYS jobs, done:<id>, claim:<id>; ARGV group, entry id, fingerprint, server, claim ttl ms.
     * Decides whether this entry runs: done marker with this fingerprint (or a marker from before
     * fingerprints) -> ack, "done"; done marker or claim with another fingerprint -> ack,
     * "conflict"; a claim by another entry with this fingerprint -> ack, "joined" (that entry's
     * Result answers this one too); else the claim is (re)taken -> "run".
     * Returns {outcome, other fingerprint or server or ""}. */
    GLM_SCRIPT_BEGIN,
    /* KEYS jobs, dead; ARGV group, entry id, job bytes, reason, consumer, dead maxlen, payload
     * cap. Moves an entry that has no usable job id to the dead stream and acks it. Returns 1. */
    GLM_SCRIPT_DEAD_LETTER,
    /* KEYS out:<id>, done:<id>; ARGV chunk, result ttl s. Appends the Chunk unless the job's
     * Result exists (a stale replica never writes after the Result). Returns 1 written, 0 not. */
    GLM_SCRIPT_CHUNK,
    /* KEYS jobs; ARGV group, consumer, entry id, idle ms. Hands an entry this consumer still owns
     * back (SIGTERM drain): marks it idle past the visibility timeout and takes one off its
     * delivery count, so the next claim, which adds one for an owner without a step record,
     * leaves the count where it was: a hand-back is no delivery blamed on the job (it neither
     * quarantines the job nor brings it nearer the dead letters). An entry owned by another
     * consumer (reclaimed while this one was paused) is left alone. Returns 1 handed back, 0 if
     * not. */
    GLM_SCRIPT_HAND_BACK,
    /* KEYS jobs; ARGV group, consumer, claim ttl ms, then per entry: entry id, its claim key (""
     * = none). Extends the lease of each entry this consumer still owns (XCLAIM to itself, idle 0,
     * the delivery count untouched) and its claim when the claim names the entry; an entry owned
     * by another consumer (reclaimed while this one was paused) or no longer pending is left as
     * it is. Returns one integer per entry: 1 extended, 0 not this consumer's any more. */
    GLM_SCRIPT_TOUCH,
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

/* The SHA of script id, loading it first when needed, for callers that pipeline EVALSHA
 * themselves (a NOSCRIPT reply there means: forget the SHA with s->sha[id][0] = '\0'). NULL
 * when the script cannot be loaded (connection lost or Redis refused). */
const char *glm_redis_script_sha(redisContext *c, glm_redis_scripts *s, glm_redis_script_id id);

#endif
