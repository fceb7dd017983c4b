/* A throwaway redis-server for tests: 127.0.0.1, a free port, its own temp dir, no RDB snapshots
 * (AOF with fsync always when asked). The server gets PR_SET_PDEATHSIG, so it dies with the test
 * even when the test crashes, and an atexit hook stops it and removes its directory. */
#ifndef GLM4V_REDIS_FIXTURE_H
#define GLM4V_REDIS_FIXTURE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct redis_fixture {
    pid_t pid; /* 0 while stopped */
    int port;
    bool appendonly;
    char dir[256];
    char url[64]; /* redis://127.0.0.1:<port> */
} redis_fixture;

/* Starts a server; returns 0 on success. */
int redis_fixture_start(redis_fixture *f, bool appendonly);
/* SIGKILLs the server (data survives only through AOF) and waits for it. */
void redis_fixture_kill(redis_fixture *f);
/* Starts again on the same port and dir (after redis_fixture_kill); returns 0 on success. */
int redis_fixture_restart(redis_fixture *f);
/* Stops the server and removes its dir. */
void redis_fixture_destroy(redis_fixture *f);

/* main() of a test program against one server: starts it (appendonly off) with a spy connection
 * (*spy, redis_fixture_connect) for the tests to look at keys, runs the tests in order when both
 * came up (a failed CHECK when not), closes the spy (if the tests left one), destroys the server
 * and returns test_finish(suite). */
int redis_fixture_main(redis_fixture *f, redisContext **spy, const char *suite,
                       void (*const tests[])(void), size_t n_tests);

/* A direct connection (2 s timeout) for looking at keys behind the code under test; NULL or a
 * context with err set when the server does not answer (callers CHECK it). */
redisContext *redis_fixture_connect(const redis_fixture *f);
/* Runs a hiredis-formatted command on c and returns its integer reply, or the first element of an
 * array reply when that is an integer (the count of an XPENDING summary); -1 for anything else. */
long long redis_fixture_int(redisContext *c, const char *fmt, ...);
/* Runs a command that must succeed; an error reply or none fails the test (CHECK). */
void redis_fixture_do(redisContext *c, const char *cmd);
/* The queue tests wait out visibility timeouts and leases with real time. */
void redis_fixture_sleep_ms(int ms);

#endif
