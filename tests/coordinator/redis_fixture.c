/* Throwaway redis-server for tests (see redis_fixture.h). */
#include "tests/coordinator/redis_fixture.h"

#include "tests/testutil.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FIXTURES 8
static redis_fixture *live[MAX_FIXTURES];

static void cleanup_at_exit(void)
{
    for (int i = 0; i < MAX_FIXTURES; i++)
        if (live[i]) redis_fixture_destroy(live[i]);
}

static void track(redis_fixture *f)
{
    static bool hooked;
    if (!hooked) {
        atexit(cleanup_at_exit);
        hooked = true;
    }
    for (int i = 0; i < MAX_FIXTURES; i++) {
        if (live[i] == f) return;
        if (!live[i]) {
            live[i] = f;
            return;
        }
    }
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

void redis_fixture_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits until the server answers PING with PONG (not -LOADING). */
static int wait_ready(redis_fixture *f)
{
    for (int i = 0; i < 500; i++) {
        int status;
        if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
            f->pid = 0;
            return -1; /* exited: port taken or bad config */
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", f->port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return 0;
        } else if (c) {
            redisFree(c);
        }
        redis_fixture_sleep_ms(20);
    }
    return -1;
}

static int spawn(redis_fixture *f)
{
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", f->port);
    snprintf(log, sizeof log, "%s/redis.log", f->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        const char *bin =
            getenv("GLM4V_REDIS_SERVER") ? getenv("GLM4V_REDIS_SERVER") : "redis-server";
        execlp(bin, bin, "--port", port, "--bind", "127.0.0.1", "--dir", f->dir, "--save", "",
               "--appendonly", f->appendonly ? "yes" : "no", "--appendfsync", "always",
               "--daemonize", "no", "--logfile", log, (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    track(f);
    return wait_ready(f);
}

int redis_fixture_start(redis_fixture *f, bool appendonly)
{
    memset(f, 0, sizeof *f);
    f->appendonly = appendonly;
    char *dir = test_mkdtemp();
    if (!dir) return -1;
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    free(dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        f->port = free_port();
        if (f->port > 0 && spawn(f) == 0) {
            snprintf(f->url, sizeof f->url, "redis://127.0.0.1:%d", f->port);
            return 0;
        }
        redis_fixture_kill(f);
    }
    fprintf(stderr, "redis_fixture: could not start redis-server (see %s/redis.log)\n", f->dir);
    return -1;
}

void redis_fixture_kill(redis_fixture *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
    }
    f->pid = 0;
}

int redis_fixture_restart(redis_fixture *f)
{
    redis_fixture_kill(f);
    /* The old socket may linger for a moment; retry the bind a few times. */
    for (int attempt = 0; attempt < 20; attempt++) {
        if (spawn(f) == 0) return 0;
        redis_fixture_kill(f);
        redis_fixture_sleep_ms(100);
    }
    return -1;
}

void redis_fixture_destroy(redis_fixture *f)
{
    redis_fixture_kill(f);
    if (f->dir[0]) test_rmtree(f->dir);
    f->dir[0] = '\0';
    for (int i = 0; i < MAX_FIXTURES; i++)
        if (live[i] == f) live[i] = NULL;
}

redisContext *redis_fixture_connect(const redis_fixture *f)
{
    struct timeval tv = {2, 0};
    return redisConnectWithTimeout("127.0.0.1", f->port, tv);
}

long long redis_fixture_int(redisContext *c, const char *fmt, ...)
{
    if (!c) return -1;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER) v = r->integer;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer;
    if (r) freeReplyObject(r);
    return v;
}

void redis_fixture_do(redisContext *c, const char *cmd)
{
    redisReply *r = c ? redisCommand(c, cmd) : NULL;
    CHECK_MSG(r && r->type != REDIS_REPLY_ERROR, "%s: %s", cmd, r && r->str ? r->str : "no reply");
    if (r) freeReplyObject(r);
}

int redis_fixture_main(redis_fixture *f, redisContext **spy, const char *suite,
                       void (*const tests[])(void), size_t n_tests)
{
    *spy = NULL;
    if (redis_fixture_start(f, false) != 0) {
        CHECK_MSG(0, "redis-server did not start");
    } else {
        *spy = redis_fixture_connect(f);
        bool up = *spy && !(*spy)->err;
        CHECK_MSG(up, "no connection to redis-server on port %d", f->port);
        for (size_t i = 0; up && i < n_tests; i++)
            tests[i]();
    }
    if (*spy) redisFree(*spy);
    *spy = NULL;
    redis_fixture_destroy(f);
    return test_finish(suite);
}
