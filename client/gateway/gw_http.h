/* The gateway's HTTP server (libmicrohttpd, one thread per connection, so a request may block on
 * its job): routing, API keys, the body size limit, metrics around every request.
 *
 *   POST /v1/chat/completions   gw_chat
 *   GET  /v1/models             the one model this gateway serves
 *   GET  /health                200 when Redis answers (no key needed: for load balancers)
 *   GET  /metrics               Prometheus text (no key needed; bind it privately)
 *   OPTIONS (any of them)       a CORS preflight, 204, when --cors-origin allows the Origin;
 *                               without the flag OPTIONS stays a 405 */
#ifndef GLM4V_GW_HTTP_H
#define GLM4V_GW_HTTP_H

#include "client/gateway/gw_context.h"

typedef struct gw_http gw_http;

/* Binds settings.host:settings.port and starts serving; *bound_port is the port in use. */
glm_status gw_http_start(gw_context *g, gw_http **out, int *bound_port, glm_error *err);

/* Stops accepting connections; requests in flight go on. */
void gw_http_quiesce(gw_http *h);

/* Stops the server, waiting for every connection thread. */
void gw_http_stop(gw_http *h);

#endif
