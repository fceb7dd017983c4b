/* A throwaway redis-server for tests: 127.0.0.1, a free port, its own temp dir, no RDB snapshots
 * (AOF with fsync always when asked). The server gets PR_SET_PDEATHSIG, so it dies with the test
 * even when the test crashes, and an atexit hook stops it and removes its directory. */
#ifndef GLM4V_REDIS_FIXTURE_H
#define GLM4V_REDIS_FIXTURE_H

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

#endif
