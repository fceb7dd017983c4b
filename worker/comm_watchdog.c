/* Deadline waits and peer questions of the step watchdog (see comm_watchdog.h). */
#include "worker/comm_watchdog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TAG_QUESTION = 1, TAG_ANSWER = 2 };

#define WHAT_LEN 48
/* A nonblocking collective advances only inside MPI calls, so naps slow a large one down: short
 * naps while a wait could still be a big transfer, long ones only once it is surely an idle wait
 * (a worker waiting for the next plan). */
#define SPIN_MS 2.0     /* poll without sleeping for this long */
#define SHORT_NAP_US 20 /* then nap this long between polls ... */
#define LONG_WAIT_MS 1000.0
#define LONG_NAP_US 1000 /* ... and this long once the wait is older than LONG_WAIT_MS */

/* What one rank says about itself. Fixed layout: it travels as MPI_BYTE. */
typedef struct answer {
    int64_t op;          /* operations entered so far */
    char what[WHAT_LEN]; /* the current (or last) one */
} answer;

struct glm_watchdog {
    MPI_Comm comm; /* private duplicate */
    int rank, size;
    int64_t op;
    const char *what;
    /* a report's messages: buffers stay here until destroy, since MPI reads them later */
    int64_t question;
    answer mine;           /* the answer being sent to a peer (blocking send: reused) */
    answer *answers;       /* [size] */
    MPI_Request *requests; /* [2 * size]: question sends, answer receives */
    bool in_flight;        /* a report left requests pending */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

glm_status glm_watchdog_create(MPI_Comm parent, glm_watchdog **out, glm_error *err)
{
    *out = NULL;
    glm_watchdog *w = calloc(1, sizeof(*w));
    if (!w) return glm_fail(err, GLM_ERR_NOMEM, "watchdog: out of host memory");
    if (MPI_Comm_dup(parent, &w->comm) != MPI_SUCCESS) {
        free(w);
        return glm_fail(err, GLM_ERR_COMM, "watchdog: MPI_Comm_dup failed");
    }
    glm_watchdog_errors_return(w->comm);
    MPI_Comm_rank(w->comm, &w->rank);
    MPI_Comm_size(w->comm, &w->size);
    w->answers = calloc((size_t)w->size, sizeof(answer));
    w->requests = malloc(2 * (size_t)w->size * sizeof(MPI_Request));
    if (!w->answers || !w->requests) {
        glm_watchdog_destroy(w);
        return glm_fail(err, GLM_ERR_NOMEM, "watchdog: out of host memory");
    }
    for (int i = 0; i < 2 * w->size; i++)
        w->requests[i] = MPI_REQUEST_NULL;
    w->what = "start-up";
    *out = w;
    return GLM_OK;
}

void glm_watchdog_destroy(glm_watchdog *w)
{
    if (!w) return;
    if (w->in_flight) return; /* MPI may still read or write the buffers: leave them */
    if (w->comm != MPI_COMM_NULL) MPI_Comm_free(&w->comm);
    free(w->answers);
    free(w->requests);
    free(w);
}

void glm_watchdog_enter(glm_watchdog *w, const char *what)
{
    w->op++;
    w->what = what;
}

void glm_watchdog_answer(glm_watchdog *w)
{
    for (;;) {
        int pending = 0;
        MPI_Status status;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_QUESTION, w->comm, &pending, &status) != MPI_SUCCESS ||
            !pending)
            return;
        int64_t their_op = 0;
        MPI_Recv(&their_op, 1, MPI_INT64_T, status.MPI_SOURCE, TAG_QUESTION, w->comm,
                 MPI_STATUS_IGNORE);
        w->mine.op = w->op;
        snprintf(w->mine.what, sizeof(w->mine.what), "%s", w->what);
        /* small enough to go eagerly: the send returns without waiting for the asker */
        MPI_Send(&w->mine, (int)sizeof(w->mine), MPI_BYTE, status.MPI_SOURCE, TAG_ANSWER, w->comm);
    }
}

void glm_watchdog_errors_return(MPI_Comm comm)
{
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
}

glm_wait_result glm_watchdog_wait(glm_watchdog *w, MPI_Request *req, int timeout_ms, glm_error *why)
{
    double start = now_ms();
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, msg, &len);
            glm_fail(why, GLM_ERR_COMM, "%.*s", len, msg);
            return GLM_WAIT_MPI_ERROR;
        }
        if (done) return GLM_WAIT_DONE;
        double waited = now_ms() - start;
        if (timeout_ms > 0 && waited > timeout_ms) return GLM_WAIT_TIMEOUT;
        if (waited < SPIN_MS) continue;
        glm_watchdog_answer(w);
        nap_us(waited < LONG_WAIT_MS ? SHORT_NAP_US : LONG_NAP_US);
    }
}

int glm_watchdog_grace_ms(int timeout_ms)
{
    int grace = timeout_ms / 4;
    if (grace < 200) grace = 200;
    if (grace > 2000) grace = 2000;
    return grace;
}

void glm_watchdog_report(glm_watchdog *w, int grace_ms, char *buf, size_t cap)
{
    int n = w->size;
    MPI_Request *asks = w->requests, *replies = w->requests + n;
    if (w->in_flight) { /* a second report would reuse buffers MPI may still hold */
        snprintf(buf, cap, "the peers were asked already");
        return;
    }
    w->question = w->op;
    w->in_flight = true;
    for (int p = 0; p < n; p++) {
        if (p == w->rank) continue;
        MPI_Isend(&w->question, 1, MPI_INT64_T, p, TAG_QUESTION, w->comm, &asks[p]);
        MPI_Irecv(&w->answers[p], (int)sizeof(answer), MPI_BYTE, p, TAG_ANSWER, w->comm,
                  &replies[p]);
    }
    double start = now_ms();
    for (;;) {
        /* one by one: MPI_Testall leaves every request untouched unless all are done */
        int all = 1;
        for (int p = 0; p < n; p++) {
            int done = 0;
            MPI_Test(&replies[p], &done, MPI_STATUS_IGNORE);
            all = all && done;
        }
        if (all || now_ms() - start > grace_ms) break;
        glm_watchdog_answer(w); /* the peers are asking too */
        nap_us(SHORT_NAP_US);
    }
    size_t used = 0;
    if (cap) buf[0] = '\0';
    for (int p = 0; p < n && used < cap; p++) {
        if (p == w->rank) continue;
        int got = replies[p] == MPI_REQUEST_NULL;
        const char *sep = used ? "; " : "";
        if (got)
            used += (size_t)snprintf(buf + used, cap - used, "%srank %d is in %.*s (op %lld)", sep,
                                     p, WHAT_LEN, w->answers[p].what, (long long)w->answers[p].op);
        else
            used += (size_t)snprintf(buf + used, cap - used,
                                     "%srank %d did not answer in %d ms (stopped, dead, cut off, "
                                     "or busy outside the group)",
                                     sep, p, grace_ms);
    }
}
