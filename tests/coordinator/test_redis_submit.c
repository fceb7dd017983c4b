/* glm4v-submit end to end against a fake server: this test plays the server with the queue API
 * (reads the job, checks it, writes chunks and the Result) while the real glm4v-submit binary
 * (argv[1]) streams the text or prints the --json Result. Also --status, exit codes, password
 * handling. */
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/redis_queue.h"
#include "tests/coordinator/redis_fixture.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static redis_fixture fx;
static const char *submit_bin;

typedef struct child {
    pid_t pid;
    int out_fd;
} child;

/* Starts glm4v-submit with args (NULL-terminated); stdout goes to a pipe, stderr passes through. */
static child start_submit(const char *const *args, const char *password_env)
{
    int fds[2];
    child ch = {-1, -1};
    if (pipe(fds) != 0) return ch;
    const char *argv[32];
    int n = 0;
    argv[n++] = submit_bin;
    while (*args && n < 31)
        argv[n++] = *args++;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (password_env)
            setenv("GLM4V_REDIS_PASSWORD", password_env, 1);
        else
            unsetenv("GLM4V_REDIS_PASSWORD");
        execv(submit_bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    ch.pid = pid;
    ch.out_fd = fds[0];
    return ch;
}

/* Reads the child's stdout to EOF into buf and returns its exit code. */
static int finish_submit(child ch, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(ch.out_fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    close(ch.out_fd);
    int status = 0;
    waitpid(ch.pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static glm_queue *make_server(const char *server_id)
{
    glm_queue_config cfg = glm_queue_config_default();
    cfg.url = fx.url;
    cfg.prefix = "sb";
    cfg.server_id = server_id;
    cfg.server_version = "fake 0.1";
    glm_queue *q = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_queue_create(&cfg, &q, &err) == GLM_OK, "%s", err.msg);
    if (q) CHECK(glm_queue_ensure_group(q, &err) == GLM_OK);
    return q;
}

/* Takes the next job glm4v-submit queued, waiting up to 5 s (checked). */
static bool take_job(glm_queue *q, glm_queue_job *j)
{
    size_t n = 0;
    glm_error err = {0};
    for (int tries = 0; tries < 50 && n == 0; tries++)
        CHECK(glm_queue_read(q, 1, 100, j, &n, &err) == GLM_OK);
    CHECK(n == 1);
    return n == 1;
}

/* Finishes job j with a plain answer of n_ids tokens (ids 100, 101, ...), as a server does. */
static void finish_with_text(glm_queue *q, glm_queue_job *j, const char *text, size_t n_ids)
{
    int32_t ids[8];
    for (size_t i = 0; i < n_ids && i < 8; i++)
        ids[i] = 100 + (int32_t)i;
    glm_result r = {.id = j->job_id,
                    .text = text,
                    .token_ids = ids,
                    .n_tokens = n_ids,
                    .finish_reason = GLM_FINISH_LENGTH,
                    .server_id = "fake-1",
                    .attempts = 1};
    uint8_t *b = NULL;
    size_t len = 0;
    glm_error err = {0};
    glm_finish_outcome outcome;
    CHECK(glm_result_encode(&r, &b, &len, NULL) == GLM_OK);
    CHECK(b && glm_queue_finish(q, j->entry_id, j->job_id, b, len, &outcome, &err) == GLM_OK);
    free(b);
}

/* Plays the server for one job: streams pieces as chunks, then a Result (or an error Result). */
static void serve_one(glm_queue *q, const char *const *pieces, glm_error_code fail_with,
                      const uint8_t *want_image, size_t want_image_bytes)
{
    glm_queue_job j;
    glm_error err = {0};
    if (!take_job(q, &j)) return;
    glm_job *job = NULL;
    glm_job_problem pr;
    CHECK(glm_job_decode(j.bytes, j.len, &job, &pr) == GLM_OK);
    CHECK(job && glm_job_validate(job, NULL, &pr) == GLM_OK);
    CHECK(job && strcmp(job->id, j.job_id) == 0);
    if (job) {
        const glm_message *user = &job->messages[job->n_messages - 1];
        CHECK(user->role == GLM_ROLE_USER && strcmp(user->content, "describe it") == 0);
        CHECK(job->sampling.max_new_tokens == 16 && job->sampling.temperature == 0.0f);
        CHECK(job->sampling.n_stop == 2 && strcmp(job->sampling.stop[1], "</s>") == 0);
        CHECK(user->image_bytes == want_image_bytes);
        if (want_image)
            CHECK(user->image && memcmp(user->image, want_image, want_image_bytes) == 0);
        if (want_image) CHECK(job->n_messages == 2 && job->messages[0].role == GLM_ROLE_SYSTEM);
    }
    char text[256] = "";
    int32_t ids[16];
    uint32_t n_ids = 0;
    for (uint32_t i = 0; pieces && pieces[i]; i++) {
        ids[n_ids] = 100 + (int32_t)i;
        glm_chunk c = {.id = j.job_id,
                       .index = i,
                       .attempt = 1,
                       .text = pieces[i],
                       .token_ids = &ids[n_ids],
                       .n_tokens = 1};
        n_ids++;
        strcat(text, pieces[i]);
        uint8_t *b;
        size_t len;
        CHECK(glm_chunk_encode(&c, &b, &len, NULL) == GLM_OK);
        CHECK(glm_queue_write_chunk(q, j.job_id, b, len, &err) == GLM_OK);
        free(b);
    }
    uint8_t *b;
    size_t len;
    if (fail_with != GLM_EC_OK) {
        CHECK(glm_result_encode_error(j.job_id, fail_with, "image does not decode", "fake-1", 1, &b,
                                      &len, NULL) == GLM_OK);
    } else {
        glm_result r = {.id = j.job_id,
                        .text = text,
                        .token_ids = ids,
                        .n_tokens = n_ids,
                        .finish_reason = GLM_FINISH_LENGTH,
                        .usage = {12, 4, n_ids},
                        .timings = {1, 2, 3, 4, 10},
                        .server_id = "fake-1",
                        .attempts = 1};
        CHECK(glm_result_encode(&r, &b, &len, NULL) == GLM_OK);
    }
    glm_finish_outcome outcome;
    CHECK(glm_queue_finish(q, j.entry_id, j.job_id, b, len, &outcome, &err) == GLM_OK);
    CHECK(outcome == GLM_RESULT_WRITTEN);
    free(b);
    glm_job_free(job);
    glm_queue_job_clear(&j);
}

/* Plays a server older than glm4v-submit: it cannot decode the Job (a field or a version it does
 * not know), so its error Result carries code and is stamped with the fingerprint of the raw bytes,
 * as such a server's queue stamps it. */
static void serve_undecodable(glm_queue *q, glm_error_code code)
{
    glm_queue_job j;
    if (!take_job(q, &j)) return;
    char raw[GLM_FINGERPRINT_LEN + 1];
    glm_job_fingerprint_raw(j.bytes, j.len, raw);
    glm_result r = {.version = 1,
                    .id = j.job_id,
                    .text = "",
                    .finish_reason = GLM_FINISH_ERROR,
                    .error_code = code,
                    .error_message = "Job field 99 is unknown to this server",
                    .server_id = "old-1",
                    .attempts = 1,
                    .job_fingerprint = raw};
    uint8_t *b = NULL;
    size_t len = 0;
    CHECK(glm_result_encode(&r, &b, &len, NULL) == GLM_OK);
    redisContext *c = redis_fixture_connect(&fx);
    redisReply *x = c && b ? redisCommand(c, "XADD sb:out:%s * result %b", j.job_id, b, len) : NULL;
    CHECK(x && x->type == REDIS_REPLY_STRING);
    if (x) freeReplyObject(x);
    x = c ? redisCommand(c, "XACK sb:jobs sb:servers %s", j.entry_id) : NULL;
    CHECK(x && x->type == REDIS_REPLY_INTEGER && x->integer == 1);
    if (x) freeReplyObject(x);
    x = c ? redisCommand(c, "XDEL sb:jobs %s", j.entry_id) : NULL;
    if (x) freeReplyObject(x);
    if (c) redisFree(c);
    free(b);
    glm_queue_forget(q, j.entry_id);
    glm_queue_job_clear(&j);
}

/* Writes one chunk of attempt 1 for job_id. */
static void chunk_of_attempt_1(glm_queue *q, const char *job_id, uint32_t index, const char *text)
{
    int32_t id = 100 + (int32_t)index;
    glm_chunk c = {
        .id = job_id, .index = index, .attempt = 1, .text = text, .token_ids = &id, .n_tokens = 1};
    uint8_t *b = NULL;
    size_t len = 0;
    glm_error err = {0};
    CHECK(glm_chunk_encode(&c, &b, &len, NULL) == GLM_OK);
    CHECK_MSG(b && glm_queue_write_chunk(q, job_id, b, len, &err) == GLM_OK, "%s", err.msg);
    free(b);
}

/* Reads the child's stdout into buf (appending at *n) until it holds want or timeout_ms pass. */
static bool read_until(int fd, char *buf, size_t cap, size_t *n, const char *want, int timeout_ms)
{
    for (int waited = 0; !strstr(buf, want) && waited < timeout_ms; waited += 20) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20) == 1 && *n + 1 < cap) {
            ssize_t k = read(fd, buf + *n, cap - 1 - *n);
            if (k <= 0) break;
            *n += (size_t)k;
            buf[*n] = '\0';
        }
    }
    return strstr(buf, want) != NULL;
}

static const char *const JOB_ARGS_TAIL[] = {"--prompt",
                                            "describe it",
                                            "--max-new-tokens",
                                            "16",
                                            "--temperature",
                                            "0",
                                            "--stop",
                                            "\n\n",
                                            "--stop",
                                            "</s>",
                                            NULL};

static void build_args(const char **out, const char *const *head)
{
    int n = 0;
    out[n++] = "--redis";
    out[n++] = fx.url;
    out[n++] = "--prefix";
    out[n++] = "sb";
    while (*head)
        out[n++] = *head++;
    for (const char *const *t = JOB_ARGS_TAIL; *t; t++)
        out[n++] = *t;
    out[n] = NULL;
}

/* A job handed back by a draining server: the next one streams it again from index 0 under the
 * same attempt number (the hand-back is not blamed on the job). glm4v-submit follows the new
 * stream live, before any Result, and prints the answer once; it used to take the restart for a
 * lost chunk and show nothing more until the Result. */
static void test_handed_back_stream(glm_queue *q)
{
    const char *args[40];
    build_args(args, (const char *[]){"--id", "handed-1", NULL});
    child ch = start_submit(args, NULL);
    glm_queue_job j;
    bool taken = take_job(q, &j);
    char buf[4096] = "";
    size_t got = 0;
    if (taken) {
        chunk_of_attempt_1(q, j.job_id, 0, "The cat ");
        chunk_of_attempt_1(q, j.job_id, 1, "sits ");
        CHECK(read_until(ch.out_fd, buf, sizeof buf, &got, "sits ", 5000));
        /* drained: the next server starts over, same attempt, and goes further */
        chunk_of_attempt_1(q, j.job_id, 0, "The cat ");
        chunk_of_attempt_1(q, j.job_id, 1, "sits ");
        chunk_of_attempt_1(q, j.job_id, 2, "down.");
        CHECK_MSG(read_until(ch.out_fd, buf, sizeof buf, &got, "down.", 5000),
                  "streamed before the Result: '%s'", buf);
        finish_with_text(q, &j, "The cat sits down.", 3);
        glm_queue_job_clear(&j);
    }
    char rest[4096];
    int rc = finish_submit(ch, rest, sizeof rest);
    CHECK_MSG(rc == 0, "exit %d", rc);
    snprintf(buf + got, sizeof buf - got, "%s", rest);
    CHECK_MSG(strcmp(buf, "The cat sits down.\n") == 0, "got '%s'", buf);
}

/* Redis restarts (here without persistence, the harder case) while glm4v-submit waits: the job
 * goes on in the cluster and its Result is written after the restart. glm4v-submit used to exit 3
 * (transport error) at the first failed read; it must reconnect, read on from its cursor and print
 * the answer once. */
static void test_redis_restart_while_waiting(glm_queue *q)
{
    const char *args[40];
    build_args(args, (const char *[]){"--id", "restart-1", NULL});
    child ch = start_submit(args, NULL);
    glm_queue_job j;
    bool taken = take_job(q, &j);
    char buf[4096] = "";
    size_t got = 0;
    if (taken) {
        chunk_of_attempt_1(q, j.job_id, 0, "Before ");
        CHECK(read_until(ch.out_fd, buf, sizeof buf, &got, "Before ", 5000));
        redis_fixture_kill(&fx);
        redis_fixture_sleep_ms(300); /* the client's read fails meanwhile */
        CHECK(redis_fixture_restart(&fx) == 0);
        finish_with_text(q, &j, "Before after.", 2);
        glm_error err = {0};
        for (int i = 0; i < 100 && glm_queue_outbox_size(q); i++) { /* the server reconnects too */
            glm_queue_tick(q, NULL, &err);
            redis_fixture_sleep_ms(50);
        }
        CHECK(glm_queue_outbox_size(q) == 0);
        glm_queue_job_clear(&j);
    }
    char rest[4096];
    int rc = finish_submit(ch, rest, sizeof rest);
    CHECK_MSG(rc == 0, "exit %d", rc);
    snprintf(buf + got, sizeof buf - got, "%s", rest);
    CHECK_MSG(strcmp(buf, "Before after.\n") == 0, "got '%s'", buf);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_redis_submit PATH/glm4v-submit\n");
        return 2;
    }
    submit_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    if (redis_fixture_start(&fx, false) != 0) {
        CHECK_MSG(0, "redis-server did not start");
        return test_finish("test_redis_submit");
    }
    glm_queue *q = make_server("fake-1");
    if (!q) goto out;
    char buf[8192];
    const char *args[40];

    /* streamed text */
    const char *pieces[] = {"A red ", "bicycle ", "\xe8\x87\xaa\xe8\xa1\x8c\xe8\xbd\xa6.", NULL};
    build_args(args, (const char *[]){"--id", "plain-1", NULL});
    child ch = start_submit(args, NULL);
    serve_one(q, pieces, GLM_EC_OK, NULL, 0);
    int rc = finish_submit(ch, buf, sizeof buf);
    CHECK_MSG(rc == 0, "exit %d", rc);
    CHECK_MSG(strcmp(buf, "A red bicycle \xe8\x87\xaa\xe8\xa1\x8c\xe8\xbd\xa6.\n") == 0, "got '%s'",
              buf);

    /* --json with an image and a system prompt */
    char *dir = test_mkdtemp();
    char image_path[600];
    snprintf(image_path, sizeof image_path, "%s/img.png", dir);
    const uint8_t image[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 7};
    test_write_file(image_path, image, sizeof image);
    build_args(args, (const char *[]){"--json", "--image", image_path, "--system", "sys", "--id",
                                      "json-1", NULL});
    ch = start_submit(args, NULL);
    serve_one(q, pieces, GLM_EC_OK, image, sizeof image);
    rc = finish_submit(ch, buf, sizeof buf);
    CHECK(rc == 0);
    cJSON *o = cJSON_Parse(buf);
    CHECK_MSG(o != NULL, "not JSON: '%s'", buf);
    if (o) {
        CHECK(strcmp(cJSON_GetObjectItem(o, "id")->valuestring, "json-1") == 0);
        CHECK(strstr(cJSON_GetObjectItem(o, "text")->valuestring, "bicycle") != NULL);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "token_ids")) == 3);
        CHECK(strcmp(cJSON_GetObjectItem(o, "finish_reason")->valuestring, "length") == 0);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "image_tokens")->valueint == 4);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "timings"), "total_ms")->valuedouble ==
              10);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "error")));
    }
    cJSON_Delete(o);
    test_rmtree(dir);
    free(dir);

    /* a job error: exit 1, --json carries the error */
    build_args(args, (const char *[]){"--json", NULL});
    ch = start_submit(args, NULL);
    serve_one(q, NULL, GLM_EC_BAD_IMAGE, NULL, 0);
    rc = finish_submit(ch, buf, sizeof buf);
    CHECK_MSG(rc == 1, "exit %d", rc);
    o = cJSON_Parse(buf);
    cJSON *e = o ? cJSON_GetObjectItem(o, "error") : NULL;
    CHECK(e && strcmp(cJSON_GetObjectItem(e, "code")->valuestring, "BAD_IMAGE") == 0);
    cJSON_Delete(o);

    test_handed_back_stream(q);
    test_redis_restart_while_waiting(q);

    /* a server older than the client answers UNKNOWN_FIELD, stamped with the raw bytes'
     * fingerprint: that is this job's answer (exit 1, the code), not an ID_CONFLICT */
    build_args(args, (const char *[]){"--json", "--id", "skew-1", NULL});
    ch = start_submit(args, NULL);
    serve_undecodable(q, GLM_EC_UNKNOWN_FIELD);
    rc = finish_submit(ch, buf, sizeof buf);
    CHECK_MSG(rc == 1, "exit %d", rc);
    o = cJSON_Parse(buf);
    e = o ? cJSON_GetObjectItem(o, "error") : NULL;
    CHECK_MSG(e && strcmp(cJSON_GetObjectItem(e, "code")->valuestring, "UNKNOWN_FIELD") == 0,
              "got '%s'", buf);
    cJSON_Delete(o);
    /* and a Result stamped with another job's fingerprint is still a conflict */
    build_args(args, (const char *[]){"--json", "--id", "skew-1", "--seed", "7", NULL});
    rc = finish_submit(start_submit(args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 1 && strstr(buf, "ID_CONFLICT"), "exit %d: '%s'", rc, buf);
    /* the same conversation resubmitted finds its error Result (no server needed) */
    build_args(args, (const char *[]){"--json", "--id", "skew-1", NULL});
    rc = finish_submit(start_submit(args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 1 && strstr(buf, "UNKNOWN_FIELD"), "exit %d: '%s'", rc, buf);
    redisContext *trim = redis_fixture_connect(&fx); /* the two entries nobody serves */
    redisReply *t = trim ? redisCommand(trim, "XTRIM sb:jobs MAXLEN 0") : NULL;
    CHECK(t && t->type == REDIS_REPLY_INTEGER && t->integer == 2);
    if (t) freeReplyObject(t);
    if (trim) redisFree(trim);

    /* nobody serves: timeout -> exit 3 (the job stays queued; the status shows it) */
    build_args(args, (const char *[]){"--timeout", "0.5", NULL});
    rc = finish_submit(start_submit(args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 3, "exit %d", rc);

    /* --status: live server, queue depth, pending, dead letters */
    glm_error err = {0};
    CHECK(glm_queue_heartbeat(q, &(glm_server_load){.running = 1}, &err) == GLM_OK);
    const char *status_args[] = {"--redis", fx.url, "--prefix", "sb", "--status", NULL};
    rc = finish_submit(start_submit(status_args, NULL), buf, sizeof buf);
    CHECK(rc == 0);
    CHECK_MSG(strstr(buf, "server fake-1 ") && strstr(buf, "\"version\":\"fake 0.1\""), "%s", buf);
    CHECK_MSG(strstr(buf, "servers: 1 live") && strstr(buf, "queue depth: 1") &&
                  strstr(buf, "pending: 0") && strstr(buf, "dead letters: 0"),
              "%s", buf);

    /* transport and usage errors */
    char bad_url[64];
    snprintf(bad_url, sizeof bad_url, "redis://:hunter2@127.0.0.1:%d", fx.port);
    const char *pw_args[] = {"--redis", bad_url, "--prompt", "x", NULL};
    rc = finish_submit(start_submit(pw_args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 2, "password in URL: exit %d", rc);
    /* Redis has no password: AUTH fails, a transport error; the password is not printed */
    const char *plain_args[] = {"--redis", fx.url, "--prompt", "x", NULL};
    rc = finish_submit(start_submit(plain_args, "hunter2"), buf, sizeof buf);
    CHECK_MSG(rc == 3, "AUTH against a password-less server: exit %d", rc);
    const char *down_args[] = {"--redis", "redis://127.0.0.1:1", "--prompt", "x", NULL};
    rc = finish_submit(start_submit(down_args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 3, "unreachable: exit %d", rc);
    const char *usage_args[] = {"--redis", fx.url, NULL};
    rc = finish_submit(start_submit(usage_args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 2, "no prompt: exit %d", rc);
    const char *bad_t[] = {"--redis", fx.url, "--prompt", "x", "--temperature", "hot", NULL};
    rc = finish_submit(start_submit(bad_t, NULL), buf, sizeof buf);
    CHECK(rc == 2);

    /* a password-protected Redis: the password comes from a file or the environment */
    redisContext *admin = redisConnect("127.0.0.1", fx.port);
    redisReply *r = admin ? redisCommand(admin, "CONFIG SET requirepass s3cret") : NULL;
    CHECK(r && r->type == REDIS_REPLY_STATUS);
    if (r) freeReplyObject(r);
    if (admin) redisFree(admin);
    char *pw_dir = test_mkdtemp();
    char pw_file[600];
    snprintf(pw_file, sizeof pw_file, "%s/pw", pw_dir);
    test_write_file(pw_file, "s3cret\n", 7);
    const char *file_args[] = {"--redis",         fx.url,  "--prefix", "sb", "--status",
                               "--password-file", pw_file, NULL};
    rc = finish_submit(start_submit(file_args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 0 && strstr(buf, "queue depth: 1"), "password file: exit %d", rc);
    rc = finish_submit(start_submit(status_args, "s3cret"), buf, sizeof buf);
    CHECK_MSG(rc == 0, "password env: exit %d", rc);
    rc = finish_submit(start_submit(status_args, NULL), buf, sizeof buf);
    CHECK_MSG(rc == 3, "no password: exit %d", rc);
    /* the one reader every program uses: first line of the file, else the environment */
    char pw[64];
    CHECK(glm_redis_password_read(pw_file, pw, sizeof pw, &err) == GLM_OK && !strcmp(pw, "s3cret"));
    char empty_file[640];
    snprintf(empty_file, sizeof empty_file, "%s/empty", pw_dir);
    test_write_file(empty_file, "", 0);
    CHECK(glm_redis_password_read(empty_file, pw, sizeof pw, &err) == GLM_ERR_IO &&
          strstr(err.msg, empty_file) != NULL);
    CHECK(glm_redis_password_read("/nonexistent/pw", pw, sizeof pw, &err) == GLM_ERR_IO);
    setenv("GLM4V_REDIS_PASSWORD", "from-env", 1);
    CHECK(glm_redis_password_read(NULL, pw, sizeof pw, &err) == GLM_OK && !strcmp(pw, "from-env"));
    unsetenv("GLM4V_REDIS_PASSWORD");
    CHECK(glm_redis_password_read(NULL, pw, sizeof pw, &err) == GLM_OK && pw[0] == '\0');
    test_rmtree(pw_dir);
    free(pw_dir);
    /* the server side takes the password as a separate argument */
    glm_queue_config cfg = glm_queue_config_default();
    cfg.url = fx.url;
    cfg.prefix = "sb";
    cfg.server_id = "fake-2";
    cfg.password = "s3cret";
    glm_queue *q2 = NULL;
    CHECK_MSG(glm_queue_create(&cfg, &q2, &err) == GLM_OK, "%s", err.msg);
    glm_queue_destroy(q2);
    cfg.password = "wrong";
    CHECK(glm_queue_create(&cfg, &q2, &err) != GLM_OK && !strstr(err.msg, "wrong"));
out:
    glm_queue_destroy(q);
    redis_fixture_destroy(&fx);
    return test_finish("test_redis_submit");
}
