/* image_url -> bytes (see gw_image.h). */
#include "client/gateway/gw_image.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/base64.h"

#define MAX_REDIRECTS 3

/* data:image/<png|jpeg|jpg|webp>;base64,<data> */
static int load_data_uri(const char *url, const gw_image_policy *p, uint8_t **bytes, size_t *len,
                         gw_error *e)
{
    const char *comma = strchr(url, ',');
    if (!comma) return gw_bad_request(e, "messages", "image_url: a data URI needs a comma");
    size_t head = (size_t)(comma - url);
    static const char *const types[] = {"image/png", "image/jpeg", "image/jpg", "image/webp"};
    bool type_ok = false;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        size_t n = strlen(types[i]);
        if (head == 5 + n + 7 && strncasecmp(url + 5, types[i], n) == 0 &&
            strncasecmp(url + 5 + n, ";base64", 7) == 0)
            type_ok = true;
    }
    if (!type_ok)
        return gw_bad_request(e, "messages",
                              "image_url: only data:image/{png,jpeg,webp};base64,... data URIs "
                              "are accepted");
    const char *data = comma + 1;
    size_t n = strlen(data);
    /* some clients wrap the base64 in 76-column CRLF lines (RFC 2045): the breaks are skipped and
     * not counted against the limit */
    size_t chars = n - glm_base64_count_breaks(data, n);
    /* reject on the encoded size first: no allocation for a body the limit refuses anyway */
    if (chars / 4 * 3 > p->max_image_bytes + 3)
        return gw_fail(e, 413, "invalid_request_error", "image_too_large", "messages",
                       "image of about %zu bytes is over the limit of %zu bytes", chars / 4 * 3,
                       p->max_image_bytes);
    uint8_t *out = malloc(chars / 4 * 3 + 3);
    if (!out) return gw_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t out_len = 0;
    if (!glm_base64_decode_lines(data, n, out, &out_len) || out_len == 0) {
        free(out);
        return gw_bad_request(e, "messages", "image_url: the data URI is not valid base64");
    }
    if (out_len > p->max_image_bytes) {
        free(out);
        return gw_fail(e, 413, "invalid_request_error", "image_too_large", "messages",
                       "image of %zu bytes is over the limit of %zu bytes", out_len,
                       p->max_image_bytes);
    }
    *bytes = out;
    *len = out_len;
    return 0;
}

bool gw_image_host_allowed(const char *url, const gw_image_policy *p)
{
    CURLU *u = curl_url();
    if (!u) return false;
    bool ok = false;
    char *scheme = NULL, *host = NULL, *port = NULL;
    /* CURLU_NON_SUPPORT_SCHEME off: only schemes this libcurl knows parse at all */
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0)) {
        for (size_t i = 0; i < p->n_allow_hosts && !ok; i++) {
            const char *entry = p->allow_hosts[i];
            const char *colon = strrchr(entry, ':');
            /* "[::1]:8080" and "host:8080" name a port; "::1" alone does not */
            bool has_port = colon && (entry[0] != '[' ? strchr(entry, ':') == colon
                                                      : colon > strchr(entry, ']'));
            size_t host_len = has_port ? (size_t)(colon - entry) : strlen(entry);
            ok = strlen(host) == host_len && strncasecmp(host, entry, host_len) == 0 &&
                 (!has_port || strcmp(colon + 1, port) == 0);
        }
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* The host part of url ("" when it does not parse), for the same-host redirect rule. */
static void url_host(const char *url, char *out, size_t cap)
{
    out[0] = '\0';
    CURLU *u = curl_url();
    char *host = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(out, cap, "%s", host);
    curl_free(host);
    curl_url_cleanup(u);
}

typedef struct fetch_buf {
    uint8_t *data;
    size_t len, cap, limit;
    bool over;
} fetch_buf;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    fetch_buf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > b->limit) {
        b->over = true;
        return 0; /* aborts the transfer */
    }
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2 < b->limit ? (b->len + n) * 2 : b->limit;
        uint8_t *g = realloc(b->data, cap);
        if (!g) return 0;
        b->data = g;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One GET without following redirects. Returns 0 with *status and, for a redirect, location
 * (malloc'd) set; or an HTTP error status with e filled. */
static int fetch_once(const char *url, const gw_image_policy *p, long timeout_ms, fetch_buf *b,
                      long *status, char **location, gw_error *e)
{
    CURL *h = curl_easy_init();
    if (!h) return gw_fail(e, 500, "server_error", NULL, NULL, "curl_easy_init failed");
    /* The options that keep the fetch to http(s), this one URL and the size limit must take:
     * a libcurl too old for one of them fails the fetch rather than running without it. */
    CURLcode set = curl_easy_setopt(h, CURLOPT_URL, url);
    if (set == CURLE_OK) set = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (set == CURLE_OK) set = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (set == CURLE_OK) set = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    if (set == CURLE_OK)
        set = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)p->max_image_bytes);
    if (set == CURLE_OK) set = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (set != CURLE_OK) {
        curl_easy_cleanup(h);
        return gw_fail(e, 500, "server_error", NULL, NULL, "libcurl refused an option: %s",
                       curl_easy_strerror(set));
    }
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "glm4v-gateway");
    CURLcode rc = curl_easy_perform(h);
    int out = 0;
    if (b->over || rc == CURLE_FILESIZE_EXCEEDED) {
        out = gw_fail(e, 413, "invalid_request_error", "image_too_large", "messages",
                      "image at %s is over the limit of %zu bytes", url, p->max_image_bytes);
    } else if (rc != CURLE_OK) {
        out = gw_bad_request(e, "messages", "image_url %s could not be fetched: %s", url,
                             curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        char *loc = NULL;
        if (*status >= 300 && *status < 400 &&
            curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
            *location = strdup(loc);
    }
    curl_easy_cleanup(h);
    return out;
}

static int load_http(const char *url, const gw_image_policy *p, uint8_t **bytes, size_t *len,
                     gw_error *e)
{
    if (!gw_image_host_allowed(url, p))
        return gw_bad_request(e, "messages",
                              "image_url: only data: URIs are accepted, or http(s) URLs whose "
                              "host the gateway allow-lists (--allow-image-host)");
    char first_host[256];
    url_host(url, first_host, sizeof first_host);
    long long deadline = now_ms() + p->fetch_timeout_ms;
    char *current = strdup(url);
    if (!current) return gw_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int rc = 0;
    for (int hop = 0;; hop++) {
        long left = (long)(deadline - now_ms());
        if (left <= 0) {
            rc = gw_bad_request(e, "messages", "image_url %s: fetch timed out", url);
            break;
        }
        fetch_buf b = {.limit = p->max_image_bytes};
        long status = 0;
        char *location = NULL;
        rc = fetch_once(current, p, left, &b, &status, &location, e);
        if (rc == 0 && location) {
            free(b.data);
            char host[256];
            url_host(location, host, sizeof host);
            if (hop == MAX_REDIRECTS)
                rc = gw_bad_request(e, "messages", "image_url %s: too many redirects", url);
            else if (strcasecmp(host, first_host) != 0 || !gw_image_host_allowed(location, p))
                rc = gw_bad_request(e, "messages",
                                    "image_url %s redirects to another host or scheme; "
                                    "not followed",
                                    url);
            free(current);
            current = location;
            if (rc) break;
            continue;
        }
        free(location);
        if (rc == 0 && status != 200)
            rc = gw_bad_request(e, "messages", "image_url %s answered HTTP %ld", url, status);
        if (rc == 0 && b.len == 0) rc = gw_bad_request(e, "messages", "image_url %s is empty", url);
        if (rc) {
            free(b.data);
            break;
        }
        *bytes = b.data;
        *len = b.len;
        break;
    }
    free(current);
    return rc;
}

int gw_image_load(const char *url, const gw_image_policy *policy, uint8_t **bytes, size_t *len,
                  gw_error *e)
{
    *bytes = NULL;
    *len = 0;
    if (strncasecmp(url, "data:", 5) == 0) return load_data_uri(url, policy, bytes, len, e);
    if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0)
        return load_http(url, policy, bytes, len, e);
    return gw_bad_request(e, "messages",
                          "image_url: only data: URIs and allow-listed http(s) URLs are "
                          "accepted (never files)");
}
