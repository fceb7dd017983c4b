/* Watchdog aborts recorded in Redis (coordinator/serve/abort_record.h) against a real
 * redis-server: the count per server id and the last reason, read back into a new replica's
 * glm4v_watchdog_aborts_total, and the time bound of a write when Redis does not answer (a
 * listening socket that never replies) or is not there. */
#include "coordinator/queue/redis_conn.h"
#include "coordinator/serve/abort_record.h"
#include "coordinator/serve/metrics.h"
#include "tests/coordinator/redis_fixture.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A TCP listener on 127.0.0.1 that never accepts: connects succeed (the kernel's backlog), every
 * command waits for an answer that never comes. Returns the socket; *port its port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 8) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static void check_counts(redis_fixture *fx)
{
    glm_abort_target t = {fx->url, NULL, "ar", "srv-a"};
    glm_error err = {0};
    uint64_t n = 99;
    CHECK(glm_abort_record_read(&t, 1000, &n, &err) == GLM_OK);
    CHECK_MSG(n == 0, "nothing recorded yet, read %llu", (unsigned long long)n);

    CHECK(glm_abort_record_write(&t, "rank 0: allreduce not done after 2000 ms", 1000, &err) ==
          GLM_OK);
    CHECK(glm_abort_record_write(&t, "rank 0: step plan: rank 1 did not answer", 1000, &err) ==
          GLM_OK);
    glm_abort_target other = {fx->url, NULL, "ar", "srv-b"};
    CHECK(glm_abort_record_write(&other, "b's", 1000, &err) == GLM_OK);
    CHECK(glm_abort_record_read(&t, 1000, &n, &err) == GLM_OK);
    CHECK_MSG(n == 2, "two aborts of srv-a, read %llu", (unsigned long long)n);
    CHECK(glm_abort_record_read(&other, 1000, &n, &err) == GLM_OK && n == 1);

    /* the last reason and its time, as an operator reads them */
    glm_redis_url u;
    redisContext *c = NULL;
    CHECK(glm_redis_url_parse(fx->url, &u, &err) == GLM_OK);
    CHECK(glm_redis_connect(&u, NULL, 1000, 1000, &c, &err) == GLM_OK);
    if (c) {
        redisReply *r = redisCommand(c, "HGET ar:watchdog_abort:srv-a reason");
        CHECK(r && r->type == REDIS_REPLY_STRING &&
              strcmp(r->str, "rank 0: step plan: rank 1 did not answer") == 0);
        if (r) freeReplyObject(r);
        r = redisCommand(c, "HGET ar:watchdog_abort:srv-a unix_ms");
        CHECK(r && r->type == REDIS_REPLY_STRING && strtoll(r->str, NULL, 10) > 1700000000000LL);
        if (r) freeReplyObject(r);
        /* a count that is not a number is an error, not a zero */
        r = redisCommand(c, "HSET ar:watchdog_aborts srv-c many");
        if (r) freeReplyObject(r);
        redisFree(c);
    }
    glm_abort_target bad = {fx->url, NULL, "ar", "srv-c"};
    CHECK(glm_abort_record_read(&bad, 1000, &n, &err) == GLM_ERR_FORMAT);

    /* a new replica under the same id starts from the stored count, and counts on */
    glm_metrics *m = NULL;
    CHECK(glm_metrics_create(&m, &err) == GLM_OK);
    glm_abort_record_seed(&t, m);
    CHECK(glm_metrics_counter_value(m, GLM_COUNTER_WATCHDOG_ABORTS) == 2);
    glm_abort_record_now(&t, m, "rank 0: broken", 1000);
    CHECK(glm_metrics_counter_value(m, GLM_COUNTER_WATCHDOG_ABORTS) == 3);
    CHECK(glm_abort_record_read(&t, 1000, &n, &err) == GLM_OK && n == 3);
    char *text = NULL;
    size_t len = 0;
    CHECK(glm_metrics_render(m, &text, &len, &err) == GLM_OK);
    CHECK(text && strstr(text, "\nglm4v_watchdog_aborts_total 3\n"));
    free(text);
    glm_metrics_destroy(m);
}

static void check_bounds(void)
{
    glm_error err = {0};
    int port = 0;
    int fd = silent_listener(&port);
    CHECK(fd >= 0);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    glm_abort_target t = {url, NULL, "ar", "srv-a"};
    double t0 = now_ms();
    glm_status st = glm_abort_record_write(&t, "x", 400, &err);
    double took = now_ms() - t0;
    CHECK_MSG(st != GLM_OK, "a Redis that never answers cannot have recorded it");
    CHECK_MSG(took < 400 + 250, "write took %.0f ms for a 400 ms budget", took);
    uint64_t n = 7;
    t0 = now_ms();
    CHECK(glm_abort_record_read(&t, 200, &n, &err) != GLM_OK && n == 0);
    CHECK_MSG(now_ms() - t0 < 200 * 3 + 250, "read took %.0f ms", now_ms() - t0);
    close(fd);

    /* nothing listening: refused at once */
    t0 = now_ms();
    CHECK(glm_abort_record_write(&t, "x", 2000, &err) != GLM_OK);
    CHECK_MSG(now_ms() - t0 < 1000, "refused connection took %.0f ms", now_ms() - t0);

    glm_abort_target none = {NULL, NULL, "ar", "srv-a"};
    CHECK(glm_abort_record_write(&none, "x", 100, &err) == GLM_ERR_INVALID_ARG);
    glm_abort_target bad_url = {"redis://:99999999", NULL, "ar", "srv-a"};
    CHECK(glm_abort_record_write(&bad_url, "x", 100, &err) != GLM_OK);
}

int main(void)
{
    redis_fixture fx;
    if (redis_fixture_start(&fx, false) != 0) {
        fprintf(stderr, "cannot start redis-server\n");
        return 1;
    }
    check_counts(&fx);
    redis_fixture_destroy(&fx);
    check_bounds();
    return test_finish("test_abort_record");
}
