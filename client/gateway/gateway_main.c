/* glm4v-gateway: an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models) in front of the
 * Redis job queue. One more client of the queue: it holds no model state, so any number of them
 * can run beside any number of replicas.
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT after draining, 1 runtime failure, 2 bad flags. */
#include "client/gateway/gw_context.h"
#include "client/gateway/gw_http.h"
#include "common/cli.h"
#include "coordinator/queue/redis_conn.h"

#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
#define PROG "glm4v-gateway"

typedef struct gateway_args {
    gw_settings s;
    const char *redis_url, *prefix, *password_file, *api_key_file;
    double drain_timeout_s;
    gw_image_policy image;
    int max_images; /* per request, as the servers' --max-images-per-prompt */
} gateway_args;

static void usage(FILE *f)
{
    fprintf(f, "usage: glm4v-gateway --redis URL [--prefix P] [--host ADDR] [--port N]\n"
               "                     [--api-key-file FILE] [--model-name NAME]\n"
               "                     [--allow-image-host HOST[:PORT]]... [--max-body-bytes N]\n"
               "                     [--max-image-bytes N] [--image-fetch-timeout-ms MS]\n"
               "                     [--max-queue-depth N] [--timeout SEC] [--cancel-ttl SEC]\n"
               "                     [--no-require-server] [--max-connections N]\n"
               "                     [--drain-timeout SEC] [--password-file FILE]\n"
               "                     [--max-images-per-prompt N] [--keepalive SEC]\n"
               "                     [--cors-origin ORIGIN|*]...\n"
               "Binds 127.0.0.1:8000 by default. Without --api-key-file no key is asked for;\n"
               "SIGHUP reads the key file again (a file that cannot be used keeps the old keys).\n"
               "--cors-origin lets pages of that origin (scheme://host[:port], or * for any)\n"
               "call the gateway from a browser; without it no CORS header is sent.\n"
               "The Redis password comes from --password-file or $GLM4V_REDIS_PASSWORD.\n");
}

static bool number(const char *flag, double lo, double hi, double *out)
{
    return glm_cli_number(PROG, flag, optarg, lo, hi, out);
}

/* An origin as browsers send it: scheme://host[:port], nothing after (a trailing '/' or a path
 * would never match, silently). */
static bool origin_valid(const char *o)
{
    if (strcmp(o, "*") == 0) return true;
    const char *host = strncmp(o, "https://", 8) == 0  ? o + 8
                       : strncmp(o, "http://", 7) == 0 ? o + 7
                                                       : NULL;
    return host && *host && strcspn(host, "/ ,\t\r\n?#") == strlen(host);
}

static int parse_args(int argc, char **argv, gateway_args *a)
{
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'},
        {"prefix", required_argument, 0, 'P'},
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"api-key-file", required_argument, 0, 'k'},
        {"model-name", required_argument, 0, 'm'},
        {"allow-image-host", required_argument, 0, 'a'},
        {"max-body-bytes", required_argument, 0, 'b'},
        {"max-image-bytes", required_argument, 0, 'i'},
        {"image-fetch-timeout-ms", required_argument, 0, 'f'},
        {"max-queue-depth", required_argument, 0, 'q'},
        {"timeout", required_argument, 0, 't'},
        {"cancel-ttl", required_argument, 0, 'c'},
        {"no-require-server", no_argument, 0, 'n'},
        {"max-connections", required_argument, 0, 'C'},
        {"drain-timeout", required_argument, 0, 'd'},
        {"password-file", required_argument, 0, 'w'},
        {"max-images-per-prompt", required_argument, 0, 'I'},
        {"keepalive", required_argument, 0, 'K'},
        {"cors-origin", required_argument, 0, 'O'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->prefix = "glm4v";
    a->s = (gw_settings){.host = "127.0.0.1",
                         .port = 8000,
                         .model_name = "glm-4v-9b",
                         .max_body_bytes = 32u << 20,
                         .max_queue_depth = 0,
                         .timeout_s = 600,
                         .cancel_ttl_s = 3600,
                         .require_server = true,
                         .max_connections = 1024,
                         .keepalive_s = 15};
    a->image = (gw_image_policy){.max_image_bytes = 20u << 20, .fetch_timeout_ms = 10000};
    a->drain_timeout_s = 30;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            a->redis_url = optarg;
            break;
        case 'P':
            a->prefix = optarg;
            break;
        case 'H':
            a->s.host = optarg;
            break;
        case 'k':
            a->api_key_file = optarg;
            break;
        case 'm':
            a->s.model_name = optarg;
            break;
        case 'w':
            a->password_file = optarg;
            break;
        case 'n':
            a->s.require_server = false;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'a':
            if (a->image.n_allow_hosts == GW_MAX_IMAGE_HOSTS) {
                fprintf(stderr, PROG ": at most %d --allow-image-host\n", GW_MAX_IMAGE_HOSTS);
                return EXIT_USAGE;
            }
            a->image.allow_hosts[a->image.n_allow_hosts++] = optarg;
            break;
        case 'O':
            if (!origin_valid(optarg)) {
                fprintf(stderr, PROG ": --cors-origin %s: want scheme://host[:port] or *\n",
                        optarg);
                return EXIT_USAGE;
            }
            if (a->s.n_cors_origins == GW_MAX_CORS_ORIGINS) {
                fprintf(stderr, PROG ": at most %d --cors-origin\n", GW_MAX_CORS_ORIGINS);
                return EXIT_USAGE;
            }
            a->s.cors_origins[a->s.n_cors_origins++] = optarg;
            break;
        case 'p':
            if (!number("--port", 0, 65535, &v)) return EXIT_USAGE;
            a->s.port = (int)v;
            break;
        case 'b':
            if (!number("--max-body-bytes", 1024, 1u << 30, &v)) return EXIT_USAGE;
            a->s.max_body_bytes = (size_t)v;
            break;
        case 'I': /* a request over it is a 400 TOO_MANY_IMAGES here, before any image is fetched
                   * past the parse; set it as the servers' --max-images-per-prompt */
            if (!number("--max-images-per-prompt", 1, 8, &v)) return EXIT_USAGE;
            a->max_images = (int)v;
            break;
        case 'i':
            if (!number("--max-image-bytes", 1, 1u << 30, &v)) return EXIT_USAGE;
            a->image.max_image_bytes = (size_t)v;
            break;
        case 'f':
            if (!number("--image-fetch-timeout-ms", 1, 600000, &v)) return EXIT_USAGE;
            a->image.fetch_timeout_ms = (int)v;
            break;
        case 'q':
            if (!number("--max-queue-depth", 0, 1e12, &v)) return EXIT_USAGE;
            a->s.max_queue_depth = (long long)v;
            break;
        case 't':
            if (!number("--timeout", 0.001, 86400, &a->s.timeout_s)) return EXIT_USAGE;
            break;
        case 'c':
            if (!number("--cancel-ttl", 1, 86400 * 7, &v)) return EXIT_USAGE;
            a->s.cancel_ttl_s = (int)v;
            break;
        case 'C':
            if (!number("--max-connections", 1, 100000, &v)) return EXIT_USAGE;
            a->s.max_connections = (int)v;
            break;
        case 'd':
            if (!number("--drain-timeout", 0, 86400, &a->drain_timeout_s)) return EXIT_USAGE;
            break;
        case 'K': /* a stream's headers wait for its job's first event at most this long, and a
                   * quiet stream gets a comment line this often: keep it under the read timeout
                   * of any proxy in front */
            if (!number("--keepalive", 0.1, 3600, &a->s.keepalive_s)) return EXIT_USAGE;
            break;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !a->redis_url) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return 0;
}

/* SIGHUP: the API key file is read again. A file that cannot be used (gone, empty, a key too long)
 * leaves the keys in force and says why; requests and streams go on throughout. */
static void reload_keys(gw_context *g, const char *api_key_file)
{
    if (!api_key_file) {
        fprintf(stderr, PROG ": SIGHUP: no --api-key-file, nothing to reload\n");
        return;
    }
    glm_error err = {0};
    size_t n = 0;
    if (gw_auth_reload(g->auth, api_key_file, &n, &err) != GLM_OK)
        fprintf(stderr, PROG ": SIGHUP: keeping the API keys in force: %s\n", err.msg);
    else
        fprintf(stderr, PROG ": SIGHUP: reloaded %zu API key%s from %s\n", n, n == 1 ? "" : "s",
                api_key_file);
}

/* Waits for SIGTERM or SIGINT, reloading the keys on each SIGHUP meanwhile (all three blocked in
 * every thread, taken here with sigwait). */
static void wait_for_stop(const sigset_t *set, gw_context *g, const char *api_key_file)
{
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            reload_keys(g, api_key_file);
            continue;
        }
        fprintf(stderr, PROG ": %s: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        return;
    }
}

#define ABORT_GRACE_MS 3000

/* Stops accepting, lets requests in flight finish for up to drain_s, then cancels the rest. */
static void drain(gw_context *g, gw_http *http, double drain_s)
{
    atomic_store(&g->draining, true);
    gw_http_quiesce(http);
    long long end = glm_now_mono_ms() + (long long)(drain_s * 1000);
    while (atomic_load(&g->metrics.in_flight) > 0 && glm_now_mono_ms() < end) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&g->aborting, true);
    /* Requests still waiting see aborting within a wait slice (250 ms) and answer 503 or end
     * their stream with an error event; stopping the daemon at once would cut their connections
     * first (it shuts every socket down), leaving them without an answer. A short, bounded
     * wait: one may be inside a Redis command or an image fetch. */
    end = glm_now_mono_ms() + ABORT_GRACE_MS;
    while (atomic_load(&g->metrics.in_flight) > 0 && glm_now_mono_ms() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Each connection holds a socket and, while its job runs, a Redis connection: lift the soft limit
 * on open files to the hard one so --max-connections is not cut short by the default 1024. */
static void raise_file_limit(int max_connections)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &r) != 0) getrlimit(RLIMIT_NOFILE, &r);
    }
    if (r.rlim_cur < (rlim_t)max_connections * 2 + 64)
        fprintf(stderr, PROG ": warning: only %llu open files allowed for %d connections\n",
                (unsigned long long)r.rlim_cur, max_connections);
}

int main(int argc, char **argv)
{
    gateway_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    /* Signals go to the main thread only: block them before any thread starts (SIGHUP too: its
     * default action ends the process). */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_file_limit(a.s.max_connections);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, PROG ": curl_global_init failed\n");
        return EXIT_RUNTIME;
    }

    gw_context *g = calloc(1, sizeof *g);
    if (!g) return EXIT_RUNTIME;
    g->settings = a.s;
    g->limits = (gw_request_limits){
        .image = a.image, .job = glm_job_limits_default(), .model_name = a.s.model_name};
    g->limits.job.max_image_bytes = a.image.max_image_bytes;
    if (a.max_images > 0) g->limits.job.max_images = (size_t)a.max_images;
    gw_metrics_init(&g->metrics);

    glm_error err = {0};
    char password[512];
    rc = 0;
    if (glm_redis_password_read(a.password_file, password, sizeof password, &err) != GLM_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = EXIT_USAGE;
    }
    if (!rc && a.api_key_file && gw_auth_load(a.api_key_file, &g->auth, &err) != GLM_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = EXIT_USAGE;
    }
    if (!rc && gw_queue_create(a.redis_url, password[0] ? password : NULL, a.prefix, 5000,
                               &g->queue, &err) != GLM_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = err.status == GLM_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUNTIME;
    }
    memset(password, 0, sizeof password);
    gw_http *http = NULL;
    int port = 0;
    if (!rc && gw_http_start(g, &http, &port, &err) != GLM_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        rc = EXIT_RUNTIME;
    }
    if (!rc) {
        fprintf(stderr, PROG ": listening on http://%s%s%s:%d model %s prefix %s%s\n",
                strchr(a.s.host, ':') ? "[" : "", a.s.host, strchr(a.s.host, ':') ? "]" : "", port,
                a.s.model_name, a.prefix, g->auth ? " (API keys required)" : "");
        wait_for_stop(&stop_set, g, a.api_key_file);
        drain(g, http, a.drain_timeout_s);
        gw_http_stop(http);
        fprintf(stderr, PROG ": stopped\n");
    }
    gw_queue_destroy(g->queue);
    gw_auth_destroy(g->auth);
    free(g);
    curl_global_cleanup();
    return rc;
}
