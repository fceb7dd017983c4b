/* glm4v-submit: sends one job to the cluster through Redis and prints the answer as it streams.
 *
 * Only Chunks and a Result stamped with this job's fingerprint (or with none: older servers) are
 * taken as its answer; a Result for another job under the same --id is reported as ID_CONFLICT.
 * Giving up (--timeout, SIGINT, SIGTERM) cancels the job on the cluster. A connection lost while
 * waiting (Redis restarting, failing over) is made again until --timeout; the job goes on
 * meanwhile.
 *
 * Exit codes: 0 done, 1 the job failed (its Result carries an error, or ID_CONFLICT), 2 usage
 * error, 3 transport error or timeout, 128+N stopped by signal N. */
#include "client/redis_client.h"
#include "client/stream_follow.h"
#include "client/submit_job.h"
#include "common/cli.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/result_json.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_JOB_ERROR = 1, EXIT_USAGE = 2, EXIT_TRANSPORT = 3 };
#define MAX_STOPS 16

/* The one piece of global state: a signal handler can only talk to the wait loop through it. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    g_stop_signal = sig;
}

typedef struct submit_args {
    const char *url, *prefix, *id, *system, *prompt, *messages, *password_file;
    const char *images[GLM_JSON_MAX_IMAGES]; /* --image, in order */
    size_t n_images;
    glm_sampling sampling;
    const char *stops[MAX_STOPS];
    double timeout_s;
    double deadline_ms; /* 0: none; else the job must be done within this many ms */
    int priority;
    bool json, status;
} submit_args;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: glm4v-submit --redis URL [--prefix P] [--id ID] [--image FILE]... [--system TEXT]\n"
        "                    --prompt TEXT | --messages FILE\n"
        "                    [--max-new-tokens N] [--temperature T] [--top-p P]\n"
        "                    [--top-k K] [--seed S] [--stop STR]... [--logprobs N]\n"
        "                    [--timeout SEC] [--json] [--ignore-eos] [--priority N]\n"
        "                    [--deadline-ms MS] [--password-file FILE]\n"
        "       glm4v-submit --redis URL [--prefix P] --status\n"
        "--image is repeatable (at most 8): with --prompt every image goes to the one user\n"
        "message, in order; --messages FILE is a JSON conversation ([{\"role\": \"user\",\n"
        "\"content\": [{\"image\": 0}, {\"text\": \"...\"}]}, ...]) whose {\"image\": K} is the\n"
        "K-th --image (or {\"image\": \"path\"}); any user message may carry images.\n"
        "The Redis password comes from --password-file or $GLM4V_REDIS_PASSWORD, never from\n"
        "the URL. Exit: 0 ok, 1 job error, 2 usage, 3 transport error or timeout.\n");
}

static int parse_args(int argc, char **argv, submit_args *a)
{
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'},
        {"prefix", required_argument, 0, 'P'},
        {"id", required_argument, 0, 'i'},
        {"image", required_argument, 0, 'I'},
        {"system", required_argument, 0, 's'},
        {"prompt", required_argument, 0, 'p'},
        {"messages", required_argument, 0, 'm'},
        {"max-new-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 't'},
        {"top-p", required_argument, 0, 'T'},
        {"top-k", required_argument, 0, 'k'},
        {"seed", required_argument, 0, 'S'},
        {"stop", required_argument, 0, 'x'},
        {"logprobs", required_argument, 0, 'l'},
        {"timeout", required_argument, 0, 'o'},
        {"json", no_argument, 0, 'j'},
        {"ignore-eos", no_argument, 0, 'E'},
        {"deadline-ms", required_argument, 0, 'D'},
        {"priority", required_argument, 0, 'R'},
        {"status", no_argument, 0, 'u'},
        {"password-file", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->prefix = "glm4v";
    a->timeout_s = 300;
    a->sampling = glm_sampling_defaults();
    a->sampling.stop = a->stops;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            a->url = optarg;
            break;
        case 'P':
            a->prefix = optarg;
            break;
        case 'i':
            a->id = optarg;
            break;
        case 'I':
            if (a->n_images == GLM_JSON_MAX_IMAGES) {
                fprintf(stderr, "glm4v-submit: at most %d --image files\n", GLM_JSON_MAX_IMAGES);
                return EXIT_USAGE;
            }
            a->images[a->n_images++] = optarg;
            break;
        case 'm':
            a->messages = optarg;
            break;
        case 's':
            a->system = optarg;
            break;
        case 'p':
            a->prompt = optarg;
            break;
        case 'w':
            a->password_file = optarg;
            break;
        case 'j':
            a->json = true;
            break;
        case 'u':
            a->status = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'n':
            if (!glm_cli_number("glm4v-submit", "--max-new-tokens", optarg, 1, 1 << 20, &v))
                return EXIT_USAGE;
            a->sampling.max_new_tokens = (uint32_t)v;
            break;
        case 't':
            if (!glm_cli_number("glm4v-submit", "--temperature", optarg, 0, 100, &v))
                return EXIT_USAGE;
            a->sampling.temperature = (float)v;
            break;
        case 'T':
            if (!glm_cli_number("glm4v-submit", "--top-p", optarg, 0, 1, &v)) return EXIT_USAGE;
            a->sampling.top_p = (float)v;
            break;
        case 'k':
            if (!glm_cli_number("glm4v-submit", "--top-k", optarg, 0, 1 << 20, &v))
                return EXIT_USAGE;
            a->sampling.top_k = (uint32_t)v;
            break;
        case 'S':
            if (!glm_cli_number("glm4v-submit", "--seed", optarg, 0, 1.8e19, &v)) return EXIT_USAGE;
            a->sampling.has_seed = true;
            a->sampling.seed = strtoull(optarg, NULL, 10);
            break;
        case 'x':
            if (a->sampling.n_stop == MAX_STOPS) {
                fprintf(stderr, "glm4v-submit: at most %d --stop strings\n", MAX_STOPS);
                return EXIT_USAGE;
            }
            a->stops[a->sampling.n_stop++] = optarg;
            break;
        case 'l':
            if (!glm_cli_number("glm4v-submit", "--logprobs", optarg, 0, 1000, &v))
                return EXIT_USAGE;
            a->sampling.has_logprobs = true;
            a->sampling.logprobs = (uint32_t)v;
            break;
        case 'E':
            a->sampling.ignore_eos = true;
            break;
        case 'D':
            if (!glm_cli_number("glm4v-submit", "--deadline-ms", optarg, 1, 1e9, &a->deadline_ms))
                return EXIT_USAGE;
            break;
        case 'R':
            if (!glm_cli_number("glm4v-submit", "--priority", optarg, -1000000, 1000000, &v))
                return EXIT_USAGE;
            a->priority = (int)v;
            break;
        case 'o':
            if (!glm_cli_number("glm4v-submit", "--timeout", optarg, 0.001, 1e7, &a->timeout_s))
                return EXIT_USAGE;
            break;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !a->url || (!a->status && !a->prompt == !a->messages)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (a->messages && a->system) {
        fprintf(stderr, "glm4v-submit: with --messages, put the system message in the file\n");
        return EXIT_USAGE;
    }
    if (a->id && !glm_job_id_valid(a->id)) {
        fprintf(stderr, "glm4v-submit: --id must be 1..%d bytes of [A-Za-z0-9._:@/-]\n",
                GLM_JOB_ID_MAX);
        return EXIT_USAGE;
    }
    return 0;
}

/* A random RFC 4122 version 4 UUID. */
static void make_uuid(char out[37])
{
    unsigned char b[16] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
        long long t = glm_now_unix_ms();
        for (int i = 0; i < 16; i++)
            b[i] = (unsigned char)((t >> (i % 8 * 8)) ^ (i * 37));
    }
    if (f) fclose(f);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* The Result of a job that found its id taken by another job: never that job's answer. */
static int report_conflict(const char *id, const glm_result *theirs, const char *fingerprint,
                           const submit_args *a)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "job id %s already belongs to another job (fingerprint %s, this job's is %s); its "
             "Result is not this job's answer: submit with another --id",
             id, theirs->job_fingerprint, fingerprint);
    if (a->json) {
        glm_result r = {.version = GLM4V_PROTOCOL_VERSION,
                        .id = id,
                        .text = "",
                        .finish_reason = GLM_FINISH_ERROR,
                        .error_code = GLM_EC_ID_CONFLICT,
                        .error_message = msg,
                        .server_id = "glm4v-submit",
                        .job_fingerprint = fingerprint};
        char *json = glm_result_to_json(&r);
        if (json) printf("%s\n", json);
        free(json);
    }
    fprintf(stderr, "glm4v-submit: job %s failed: ID_CONFLICT: %s\n", id, msg);
    return EXIT_JOB_ERROR;
}

/* Giving up on a job: tell the servers, so it stops using a batch slot nobody reads. */
static void cancel_job(glm_client *client, const char *id)
{
    glm_error err = {0};
    glm_status st = glm_client_cancel(client, id, &err);
    if (st == GLM_ERR_IO && glm_client_reconnect(client, &err) == GLM_OK)
        st = glm_client_cancel(client, id, &err); /* the connection was lost meanwhile */
    if (st == GLM_OK)
        fprintf(stderr, "glm4v-submit: cancelled job %s on the cluster\n", id);
    else
        fprintf(stderr, "glm4v-submit: could not cancel job %s: %s\n", id, err.msg);
}

static int wait_for_result(glm_client *client, const char *id, const char *fingerprint,
                           const char *raw_fingerprint, const submit_args *a)
{
    glm_stream_follow follow;
    glm_stream_follow_init(&follow, id, stdout, stderr,
                           isatty(fileno(stdout)) && isatty(fileno(stderr)));
    char cursor[48] = "0-0";
    long long deadline = glm_now_mono_ms() + (long long)(a->timeout_s * 1000.0);
    int rc = EXIT_TRANSPORT;
    bool lost = false; /* the connection to Redis, until a reconnection succeeds */
    for (;;) {
        long long left = deadline - glm_now_mono_ms();
        if (g_stop_signal) {
            cancel_job(client, id);
            rc = 128 + g_stop_signal;
            break;
        }
        if (left <= 0) {
            fprintf(stderr, "glm4v-submit: no result for job %s within %g s\n", id, a->timeout_s);
            cancel_job(client, id);
            break;
        }
        glm_client_event ev;
        glm_error err = {0};
        glm_status st =
            glm_client_next(client, id, cursor, left < 1000 ? (int)left : 1000, &ev, &err);
        if (st == GLM_ERR_IO || st == GLM_ERR_LIMIT) {
            /* a lost connection, a Redis restarting (LOADING) or failing over: the job goes on in
             * the cluster and its Result will be in Redis. Exiting here reported a transport
             * error for a job that was answered; instead reconnect and read on from the cursor,
             * until --timeout */
            if (!lost)
                fprintf(stderr, "glm4v-submit: %s; reconnecting until the timeout\n", err.msg);
            lost = true;
            nanosleep(&(struct timespec){0, (left < 200 ? left : 200) * 1000000L}, NULL);
            if (glm_client_reconnect(client, &err) == GLM_OK) {
                fprintf(stderr, "glm4v-submit: reconnected; following job %s again\n", id);
                lost = false;
            }
            continue;
        }
        if (st != GLM_OK) {
            fprintf(stderr, "glm4v-submit: %s\n", err.msg);
            break;
        }
        if (ev.kind == GLM_EVENT_CHUNK) {
            /* text mode follows the newest attempt; --json prints the Result alone */
            const glm_chunk *c = ev.chunk;
            if (!a->json &&
                glm_fingerprint_answers(c->job_fingerprint, fingerprint, raw_fingerprint))
                glm_stream_follow_chunk(&follow, c->attempt, c->index, c->text ? c->text : "",
                                        glm_chunk_text_bytes(c));
            glm_chunk_free(ev.chunk);
            continue;
        }
        if (ev.kind != GLM_EVENT_RESULT) continue;
        const glm_result *r = ev.result;
        if (!glm_fingerprint_answers(r->job_fingerprint, fingerprint, raw_fingerprint)) {
            rc = report_conflict(id, r, fingerprint, a);
            glm_result_free(ev.result);
            break;
        }
        if (a->json) {
            char *json = glm_result_to_json(r);
            if (json) printf("%s\n", json);
            free(json);
        } else if (r->error_code == GLM_EC_OK) {
            glm_stream_follow_result(&follow, r->text ? r->text : "", glm_result_text_bytes(r));
        }
        if (r->error_code != GLM_EC_OK)
            fprintf(stderr, "glm4v-submit: job %s failed: %s: %s\n", id,
                    glm_error_code_name(r->error_code), r->error_message);
        rc = r->error_code == GLM_EC_OK ? 0 : EXIT_JOB_ERROR;
        glm_result_free(ev.result);
        break;
    }
    fflush(stdout);
    glm_stream_follow_free(&follow);
    return rc;
}

/* Builds and encodes the job: the conversation of the flags (submit_job.h) and the sampling. */
static int encode_job(const submit_args *a, const char *id, uint8_t **bytes, size_t *len)
{
    submit_conversation conv;
    glm_error cerr = {0};
    if (submit_conversation_build(a->system, a->prompt, a->messages, a->images, a->n_images, &conv,
                                  &cerr)) {
        fprintf(stderr, "glm4v-submit: %s\n", cerr.msg);
        return EXIT_USAGE;
    }
    const glm_message *msgs = conv.messages;
    size_t n = conv.n_messages;
    glm_job job = {.version = GLM4V_PROTOCOL_VERSION,
                   .id = id,
                   .messages = msgs,
                   .n_messages = n,
                   .sampling = a->sampling,
                   .priority = a->priority};
    if (a->deadline_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        job.deadline_unix_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)(ts.tv_nsec / 1000000) +
                               (uint64_t)a->deadline_ms;
    }
    glm_error err = {0};
    glm_status st = glm_job_encode(&job, bytes, len, &err);
    submit_conversation_free(&conv);
    if (st != GLM_OK) {
        fprintf(stderr, "glm4v-submit: %s\n", err.msg);
        return EXIT_USAGE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    submit_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    char password[512];
    glm_client *client = NULL;
    glm_error err = {0};
    if (glm_redis_password_read(a.password_file, password, sizeof password, &err)) {
        fprintf(stderr, "glm4v-submit: %s\n", err.msg);
        return EXIT_USAGE;
    }
    glm_status st =
        glm_client_connect(a.url, password[0] ? password : NULL, a.prefix, 5000, &client, &err);
    memset(password, 0, sizeof password);
    if (st != GLM_OK) {
        fprintf(stderr, "glm4v-submit: %s\n", err.msg);
        return st == GLM_ERR_INVALID_ARG || st == GLM_ERR_UNSUPPORTED ? EXIT_USAGE : EXIT_TRANSPORT;
    }
    if (a.status) {
        st = glm_client_status(client, stdout, &err);
        if (st != GLM_OK) fprintf(stderr, "glm4v-submit: %s\n", err.msg);
        glm_client_destroy(client);
        return st == GLM_OK ? 0 : EXIT_TRANSPORT;
    }
    char uuid[37];
    const char *id = a.id;
    if (!id) {
        make_uuid(uuid);
        id = uuid;
    }
    uint8_t *job = NULL;
    size_t len = 0;
    rc = encode_job(&a, id, &job, &len);
    if (rc == 0) {
        char fingerprint[GLM_FINGERPRINT_LEN + 1], raw[GLM_FINGERPRINT_LEN + 1];
        glm_job_fingerprint_bytes(job, len, fingerprint); /* as the server will compute it */
        glm_job_fingerprint_raw(job, len, raw); /* as an older server that cannot decode it does */
        struct sigaction sa = {0};
        sa.sa_handler = on_stop_signal;
        sa.sa_flags = SA_RESTART; /* the wait loop looks at the flag at least once a second */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        st = glm_client_submit(client, id, job, len, &err);
        if (st != GLM_OK) {
            fprintf(stderr, "glm4v-submit: %s\n", err.msg);
            rc = EXIT_TRANSPORT;
        } else {
            rc = wait_for_result(client, id, fingerprint, raw, &a);
        }
    }
    free(job);
    glm_client_destroy(client);
    return rc;
}
