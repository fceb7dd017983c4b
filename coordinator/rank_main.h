/* The end of main() in the tools that run on a rank group (glm4v-run, glm4v-serve): rank 0 has
 * done the tool's work and shut the step loop down; every other rank serves rank 0's step plans
 * until then. */
#ifndef GLM4V_RANK_MAIN_H
#define GLM4V_RANK_MAIN_H

#include "worker/rank_context.h"

/* Ranks other than 0 serve rank 0's steps first (a failure: "<prog>: rank N: why", exit code 1).
 * Then on every rank: a group with a rank past the step watchdog's deadline is aborted (such a
 * peer would miss MPI_Finalize too), ctx is destroyed and MPI finalized. code is rank 0's exit
 * code; returns this rank's. */
int glm_rank_main_end(glm_rank_context *ctx, int code, const char *prog);

#endif
