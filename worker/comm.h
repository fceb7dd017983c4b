/* The communicator a tensor-parallel group uses: all-reduce, all-gather, broadcast, barrier, and
 * the host-memory broadcast that carries the step plan.
 *
 * Buffers of the collectives are backend memory (host for the CPU backend, device for CUDA); the
 * NCCL implementation runs on the backend's stream, the MPI one on host buffers. Model code is the
 * same for both. Implementations register in one table (comm_registry.c) with their capabilities;
 * callers pick one with glm_comm_open and ask capabilities, never names: local (one rank, every
 * call a no-op), MPI (CPU ranks), NCCL (GPU ranks, bootstrapped by an MPI broadcast of the
 * ncclUniqueId; small all-reduces inside one node take its peer-to-peer path, comm_p2p.h).
 *
 * The step watchdog: every operation has a deadline (glm_comm_options). An operation past it
 * fails with GLM_ERR_TIMEOUT and a message naming the operation and the peers that did not answer
 * (comm_watchdog.h), and the communicator is marked failed: the group is broken, its rank must end
 * the whole replica (glm_rank_abort) rather than wait in MPI_Finalize. */
#ifndef GLM4V_COMM_H
#define GLM4V_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/ops.h"

typedef struct glm_comm glm_comm;

/* What a communicator can do, asked by the model code instead of its name. */
typedef struct glm_comm_caps {
    bool multi_rank;       /* serves groups of more than one rank */
    bool device_buffers;   /* collective buffers may be device memory (else host memory only) */
    bool graph_capturable; /* collectives run on the backend's stream, so a backend graph may
                              record them with the ops around them */
} glm_comm_caps;

/* The step watchdog's deadlines. */
typedef struct glm_comm_options {
    int timeout_ms;       /* deadline of one operation once the group is warm; <= 0: none */
    int first_timeout_ms; /* the deadline until the group has exchanged its first two working
                             step plans (first GEMM autotuning, graph capture, a slow first image);
                             <= 0: timeout_ms */
} glm_comm_options;

/* --step-timeout-ms: the default deadline, well under Redis's 60 s visibility timeout so that a
 * broken replica ends before its jobs are reclaimed, and the first-step allowance. */
#define GLM_STEP_TIMEOUT_MS_DEFAULT 30000
#define GLM_FIRST_STEP_TIMEOUT_FACTOR 10

typedef struct glm_comm_ops {
    /* data[count] (dtype) summed over the group, in place. */
    glm_status (*allreduce_sum)(glm_comm *comm, void *data, size_t count, glm_dtype dtype);
    /* dst[size * count] = concatenation of every rank's src[count], in rank order. */
    glm_status (*allgather)(glm_comm *comm, void *dst, const void *src, size_t count,
                            glm_dtype dtype);
    glm_status (*broadcast)(glm_comm *comm, void *data, size_t count, glm_dtype dtype, int root);
    glm_status (*barrier)(glm_comm *comm);
    /* bytes[n] of HOST memory from root to every rank, whatever the backend: control messages
     * such as the step plan. what names the message in a watchdog report. */
    glm_status (*broadcast_host)(glm_comm *comm, void *bytes, size_t n, int root, const char *what);
    /* Waits until the backend's stream has passed every collective queued on it so far (those
     * of a replayed graph, which nobody waited on), within the deadline. NULL: every collective
     * has completed when its call returns. */
    glm_status (*sync)(glm_comm *comm, const char *what);
    /* After a failure: stops the transport so that nothing of this rank waits on the group any
     * more (ncclCommAbort). The rank is expected to end (glm_rank_abort). NULL: nothing to stop. */
    void (*abort)(glm_comm *comm);
    void (*destroy)(glm_comm *comm);
} glm_comm_ops;

/* One registered communicator. create's mpi_comm is an MPI_Comm passed by pointer (so this header
 * needs no mpi.h); the local one ignores it. */
typedef struct glm_comm_entry {
    const char *name;    /* for logs */
    uint32_t collective; /* its GLM_COLLECTIVE_* bit, matched against glm_backend_caps */
    glm_comm_caps caps;
    glm_status (*create)(glm_backend *be, const void *mpi_comm, glm_comm **out, glm_error *err);
} glm_comm_entry;

struct glm_comm {
    const glm_comm_ops *ops;
    const char *name; /* the entry's: "local", "mpi", "nccl" (logs only) */
    glm_comm_caps caps;
    int rank;
    int size;
    glm_backend *be; /* whose memory and stream the buffers belong to */
    glm_error err;   /* message of the last failure */
    glm_comm_options opt;
    int working_plans;   /* working step plans exchanged so far (deadlines tighten after two) */
    double last_plan_ms; /* CLOCK_MONOTONIC time of the last step plan exchanged (keepalives) */
    bool failed;         /* an operation failed or passed its deadline: the group is broken */
    void *impl;
};

/* The registry: every communicator this build has, NULL-terminated, in order of preference. */
const glm_comm_entry *const *glm_comm_registry(void);

/* Collective over mpi_comm (every rank calls it): the first registered communicator that serves a
 * group of this size and that the backend pairs with (glm_backend_caps.collectives); a single
 * rank gets the local one. opt may be NULL (no deadlines). */
glm_status glm_comm_open(glm_backend *be, const void *mpi_comm, int size,
                         const glm_comm_options *opt, glm_comm **out, glm_error *err);

/* The implementations, for tests that want one in particular. */
glm_status glm_comm_local_create(glm_backend *be, glm_comm **out, glm_error *err);
glm_status glm_comm_mpi_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                               glm_error *err);
glm_status glm_comm_nccl_create(glm_backend *be, const void *mpi_comm, glm_comm **out,
                                glm_error *err);
extern const glm_comm_entry glm_comm_local_entry;
extern const glm_comm_entry glm_comm_mpi_entry;
extern const glm_comm_entry glm_comm_nccl_entry; /* only in builds with CUDA */

/* Sets the deadlines (and makes the group cold again: the first-step allowance applies). */
void glm_comm_set_options(glm_comm *comm, const glm_comm_options *opt);
/* The deadline of the next operation, in ms; <= 0: none. */
int glm_comm_timeout_ms(const glm_comm *comm);
/* Records one working step plan exchanged (the first two get the first-step allowance). */
void glm_comm_count_working_plan(glm_comm *comm);
/* Marks the communicator failed and records the message (printf style) in comm->err. */
glm_status glm_comm_fail(glm_comm *comm, glm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void glm_comm_destroy(glm_comm *comm);

#endif
