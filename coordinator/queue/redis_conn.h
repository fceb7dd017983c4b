/* Redis connection helpers shared by the server queue (redis_queue.c) and the clients: URL parsing,
 * connect + AUTH + SELECT, and the one checking helper for hiredis replies.
 *
 * Passwords never appear in an error message or a log line: messages name host:port/db only. */
#ifndef GLM4V_REDIS_CONN_H
#define GLM4V_REDIS_CONN_H

#include "common/status.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>

typedef struct glm_redis_url {
    char host[256];
    int port;       /* 6379 when absent */
    int db;         /* 0 when absent */
    char user[128]; /* ACL user, "" for the default user */
    char password[256];
    bool has_password; /* the URL carried a password */
} glm_redis_url;

/* Parses redis://[[user]:password@]host[:port][/db] (also accepts a bare host[:port]). */
glm_status glm_redis_url_parse(const char *url, glm_redis_url *out, glm_error *err);

/* Connects, authenticates (password overrides the URL's when not NULL), selects the db and PINGs.
 * Timeouts in ms; command_timeout_ms 0 = none. On failure *out is NULL. */
/* For clients (glm4v-submit, glm4v-sweep): parses url, refuses one that carries a password
 * (command lines are visible to every user; the password comes from a file or the environment),
 * checks the key prefix and connects with timeout_ms for connecting and for commands. */
glm_status glm_redis_client_connect(const char *url, const char *password, const char *prefix,
                                    size_t prefix_cap, int timeout_ms, redisContext **ctx,
                                    glm_error *err);

glm_status glm_redis_connect(const glm_redis_url *url, const char *password, int connect_timeout_ms,
                             int command_timeout_ms, redisContext **out, glm_error *err);

/* The Redis password of every program (glm4v-serve, glm4v-submit, glm4v-sweep): the first line of
 * file when one is given (an unreadable or empty file is an error), else $GLM4V_REDIS_PASSWORD,
 * else "" (no password). Never from a URL or a command line. */
glm_status glm_redis_password_read(const char *file, char *pw, size_t cap, glm_error *err);

/* Sets the socket timeout of c (ms; 0 = none). */
void glm_redis_set_timeout(redisContext *c, int timeout_ms);

/* The checking helper for every hiredis reply: GLM_OK when reply is not NULL, not an error and of
 * expected_type (-1 = any non-error type; REDIS_REPLY_NIL is accepted where expected_type is
 * REDIS_REPLY_ARRAY or REDIS_REPLY_STRING, as Redis answers "nothing" that way). Otherwise fills
 * err with what + the cause and returns GLM_ERR_IO (connection lost: reply NULL, c->err set),
 * GLM_ERR_LIMIT (Redis refused the command for now, see glm_redis_refusal: the connection is fine
 * and the same command may succeed later) or GLM_ERR_FORMAT (any other error reply, or an
 * unexpected type). Does not free the reply. */
glm_status glm_redis_check(const redisContext *c, const redisReply *reply, int expected_type,
                           const char *what, glm_error *err);

#define REDIS_CHECK(ctx, reply, type, what, err)                                                   \
    glm_redis_check((ctx), (reply), (type), (what), (err))

/* Why Redis refused a command it may accept later: out of memory under a noeviction policy, a
 * read-only replica, loading its dataset, busy in a script, a failed background save
 * (stop-writes-on-bgsave-error), a master link down or too few replicas. */
typedef enum glm_redis_refusal {
    GLM_REDIS_NOT_REFUSED = 0, /* not an error reply, or an error that is not a refusal */
    GLM_REDIS_OOM,
    GLM_REDIS_READONLY,
    GLM_REDIS_LOADING,
    GLM_REDIS_BUSY,
    GLM_REDIS_MISCONF,
    GLM_REDIS_MASTERDOWN,
    GLM_REDIS_NOREPLICAS,
    GLM_REDIS_REFUSAL_KINDS,
} glm_redis_refusal;

/* The refusal an error reply carries (its first word; a script's error keeps the inner command's
 * code first). */
glm_redis_refusal glm_redis_refusal_of(const redisReply *reply);
const char *glm_redis_refusal_name(glm_redis_refusal kind); /* "OOM", "READONLY", ... */

/* True when reply is an error reply starting with prefix ("NOSCRIPT", "BUSYGROUP", "NOGROUP"). */
bool glm_redis_is_error(const redisReply *reply, const char *prefix);

/* Milliseconds on CLOCK_MONOTONIC and CLOCK_REALTIME. */
long long glm_now_mono_ms(void);
long long glm_now_unix_ms(void);

#endif
