/* The bytes behind an image_url content part: a base64 data URI, or an http(s) URL whose host the
 * operator allow-listed (fetched with libcurl under a size and a time limit; a redirect is
 * followed only to the same host). Anything else (file://, a bare path, ftp://, ...) is refused,
 * so no request can make the gateway read a local file. */
#ifndef GLM4V_GW_IMAGE_H
#define GLM4V_GW_IMAGE_H

#include "client/gateway/gw_errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MAX_IMAGE_HOSTS 32

typedef struct gw_image_policy {
    size_t max_image_bytes;
    int fetch_timeout_ms; /* whole fetch, redirects included */
    /* "host" or "host:port"; a bare host allows every port of it */
    const char *allow_hosts[GW_MAX_IMAGE_HOSTS];
    size_t n_allow_hosts;
} gw_image_policy;

/* Loads the image named by url into *bytes (malloc'd, *len bytes). On failure returns the HTTP
 * status (400, 413) with e filled, else 0. */
int gw_image_load(const char *url, const gw_image_policy *policy, uint8_t **bytes, size_t *len,
                  gw_error *e);

/* True when url's scheme is http or https and its host (and port, where the entry names one) is
 * allow-listed. */
bool gw_image_host_allowed(const char *url, const gw_image_policy *policy);

#endif
