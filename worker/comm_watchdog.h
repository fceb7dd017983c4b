/* The step watchdog's MPI side, shared by the MPI and NCCL communicators (both hold an MPI
 * communicator): waiting for a nonblocking MPI request with a deadline, and, once a deadline has
 * passed, naming the peers that did not come.
 *
 * Naming a peer: an MPI collective that does not complete says nothing about which rank is
 * missing. So a rank past its deadline asks every peer, on a private duplicate communicator,
 * where it is; every rank answers such questions whenever it waits in one of its own operations
 * (glm_watchdog_wait, or glm_watchdog_answer from a loop that waits on something else, such as a
 * CUDA event). A peer that answers names the operation it is in; one that does not answer within
 * a short grace is stopped, dead, cut off, or busy outside the group's operations. */
#ifndef GLM4V_COMM_WATCHDOG_H
#define GLM4V_COMM_WATCHDOG_H

#include <mpi.h>
#include <stddef.h>

#include "common/status.h"

typedef struct glm_watchdog glm_watchdog;

/* Collective over parent (duplicated, so its messages never meet anyone else's). */
glm_status glm_watchdog_create(MPI_Comm parent, glm_watchdog **out, glm_error *err);
/* Frees it; when a question or answer may still be in flight (after a report), the buffers are
 * left allocated, since MPI may still read them: the process is ending anyway. */
void glm_watchdog_destroy(glm_watchdog *w);

/* Names the operation this rank enters now (a string literal or one that outlives the
 * operation), for the answers it gives. */
void glm_watchdog_enter(glm_watchdog *w, const char *what);

/* Answers every question pending from peers. Cheap when there is none. */
void glm_watchdog_answer(glm_watchdog *w);

typedef enum glm_wait_result {
    GLM_WAIT_DONE = 0,
    GLM_WAIT_TIMEOUT,
    GLM_WAIT_MPI_ERROR,
} glm_wait_result;

/* Polls *req until it completes or timeout_ms passes (<= 0: no deadline), answering peers'
 * questions meanwhile. Spins at first (a collective of a healthy group completes in microseconds
 * to milliseconds), then sleeps between polls so that a long wait (an idle server's worker
 * waiting for the next plan) costs no core. On a timeout the request stays pending; on an MPI
 * error (a peer's connection reset: its process died) *why receives MPI's message. */
glm_wait_result glm_watchdog_wait(glm_watchdog *w, MPI_Request *req, int timeout_ms,
                                  glm_error *why);

/* Makes MPI calls on comm return their errors instead of ending the process, so that a lost peer
 * becomes a status this code can report (MPI's default is to abort at once, without context). */
void glm_watchdog_errors_return(MPI_Comm comm);

/* After a deadline passed: asks every peer where it is, waits at most grace_ms for the answers
 * (answering the peers' own questions meanwhile) and writes one line into buf, e.g.
 * "rank 1 did not answer in 1000 ms (stopped, dead, cut off, or busy outside the group); rank 2
 * is in allreduce (op 812)". */
void glm_watchdog_report(glm_watchdog *w, int grace_ms, char *buf, size_t cap);

/* The grace a report waits for answers, for an operation deadline of timeout_ms. */
int glm_watchdog_grace_ms(int timeout_ms);

#endif
