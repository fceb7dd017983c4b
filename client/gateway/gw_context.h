/* What every request thread of the gateway shares: its settings, the Redis pool, the API keys,
 * the metrics and the stop flags. Created by main, passed to the HTTP layer; nothing global. */
#ifndef GLM4V_GW_CONTEXT_H
#define GLM4V_GW_CONTEXT_H

#include "client/gateway/gw_auth.h"
#include "client/gateway/gw_metrics.h"
#include "client/gateway/gw_queue.h"
#include "client/gateway/gw_request.h"

#include <stdatomic.h>
#include <stdbool.h>

#define GW_MAX_CORS_ORIGINS 16

typedef struct gw_settings {
    const char *host;
    int port;                  /* 0: any free port (printed at start) */
    const char *model_name;    /* the one model /v1/models lists */
    size_t max_body_bytes;     /* request bodies over this: 413 */
    long long max_queue_depth; /* XLEN <prefix>:jobs at or over this: 429; 0 = no limit */
    double timeout_s;          /* a request without its answer by then: 504, job cancelled */
    int cancel_ttl_s;          /* EX of <prefix>:cancel:<id> */
    bool require_server;       /* 502 when no replica's liveness key exists */
    int max_connections;
    double keepalive_s; /* SSE comment after this long without an event */
    /* --cors-origin: browser origins ("https://app.example" or "*") whose pages may call the
     * gateway; none: no CORS headers at all, as before the flag */
    const char *cors_origins[GW_MAX_CORS_ORIGINS];
    int n_cors_origins;
} gw_settings;

typedef struct gw_context {
    gw_settings settings;
    gw_request_limits limits;
    gw_queue *queue;
    gw_auth *auth; /* NULL: no key needed */
    gw_metrics metrics;
    atomic_bool draining; /* SIGTERM: new requests get 503, in-flight ones finish */
    atomic_bool aborting; /* drain time is up: in-flight jobs are cancelled and end with 503 */
} gw_context;

#endif
