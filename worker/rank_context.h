/* Everything one MPI rank of a replica holds: its place in the group, its backend (the GPU of
 * its local rank, or the CPU), the communicator, the config, the mapped checkpoint and the model
 * shard. glm4v-run and glm4v-serve set a rank up the same way through this. */
#ifndef GLM4V_RANK_CONTEXT_H
#define GLM4V_RANK_CONTEXT_H

#include <mpi.h>
#include <stdbool.h>

#include "worker/checkpoint.h"
#include "worker/comm.h"
#include "worker/config.h"
#include "worker/model.h"

typedef struct glm_rank_options {
    const char *model_dir;
    const char *device;    /* "cpu", "cuda" or "cpu-bf16" */
    const char *dtype;     /* 16-bit storage, "bf16" or "f16" (--dtype); NULL: the backend's own */
    int tp;                /* must equal the MPI world size */
    int cpu_threads;       /* 0: OpenMP default */
    double gpu_memory_gib; /* 0: free memory minus a margin */
    int step_timeout_ms;   /* the step watchdog's deadline for every collective and step plan
                              (--step-timeout-ms; the first steps get GLM_FIRST_STEP_TIMEOUT_FACTOR
                              times as long); <= 0: none */
    glm_model_options model;
} glm_rank_options;

typedef struct glm_rank_context {
    MPI_Comm world;
    int rank, size, local_rank;
    glm_backend *be;
    glm_comm *comm;
    glm_model_config cfg;
    glm_checkpoint *ck;
    glm_model *model;
} glm_rank_context;

/* Collective: every rank calls it; all succeed or all return the same failure (each rank's own
 * message in err; ranks that were fine report that a peer failed). */
glm_status glm_rank_context_create(const glm_rank_options *opt, glm_rank_context *ctx,
                                   glm_error *err);
void glm_rank_context_destroy(glm_rank_context *ctx);

/* Collective agreement on a status: the worst (highest) code across the group. */
glm_status glm_rank_agree(MPI_Comm comm, glm_status mine);

/* False once a collective or step plan of the group failed or passed the step watchdog's
 * deadline: the peers cannot be trusted to reach MPI_Finalize (which would wait for them), so
 * the rank must end the replica with glm_rank_abort. */
bool glm_rank_group_ok(const glm_rank_context *ctx);

/* Ends the whole replica: stops the communicator's transport (ncclCommAbort), then MPI_Abort,
 * upon which mpirun ends every rank of the group, so the replica's jobs go to the other
 * replicas. Logs why (one line, stderr) first. Only a main calls this. */
_Noreturn void glm_rank_abort(glm_rank_context *ctx, int code, const char *program);

#endif
