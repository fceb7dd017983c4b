/* One POST /v1/chat/completions from the parsed body to the last byte: validate and queue the Job,
 * follow its out stream, and answer either with one chat.completion object or with server-sent
 * events. Knows nothing of HTTP servers: the caller hands it the client's socket (to notice a
 * client that went away) and turns the reply into a response. */
#ifndef GLM4V_GW_CHAT_H
#define GLM4V_GW_CHAT_H

#include "client/gateway/gw_context.h"

#include <stddef.h>
#include <sys/types.h>

typedef struct gw_chat gw_chat;

typedef struct gw_reply {
    int status;        /* HTTP status; 0: the client went away, close without answering */
    char *body;        /* malloc'd JSON when stream is NULL */
    gw_chat *stream;   /* set for a 200 event stream: read with gw_chat_read */
    int retry_after_s; /* > 0: send Retry-After */
    bool no_retry;     /* send x-should-retry: false (gw_error.no_retry) */
} gw_reply;

/* Runs the request until its answer (non-streaming) or its first event (streaming), so that a job
 * the server refuses still gets its HTTP error code. client_fd: the client's socket, or -1. */
void gw_chat_start(gw_context *g, const char *body, size_t len, int client_fd, gw_reply *out);

/* Fills buf with up to max bytes of the event stream, waiting for the job as needed. Returns the
 * byte count, or -1 at the end of the stream. */
ssize_t gw_chat_read(gw_chat *c, char *buf, size_t max);

/* Ends the exchange: cancels the job if its Result was not seen (client gone, timeout), returns the
 * Redis connection and frees c. */
void gw_chat_finish(gw_chat *c);

#endif
