/* A worker rank that cannot run a plan breaks its group (mpirun -np 2 test_worker_loop MODEL_DIR):
 * rank 0 sends a plan whose KV slot is out of range without running it itself; rank 1's
 * glm_worker_serve refuses it and returns, and its communicator is then failed, so that the main
 * ends the replica at once (glm_rank_group_ok false -> glm_rank_abort) instead of leaving rank 0
 * to wait for it until the step watchdog's deadline. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "tests/testutil.h"
#include "worker/rank_context.h"
#include "worker/step_exec.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2 || argc != 2) {
        if (rank == 0) fprintf(stderr, "usage: mpirun -np 2 test_worker_loop MODEL_DIR\n");
        MPI_Finalize();
        return 2;
    }
    glm_rank_options ro = {.model_dir = argv[1], .device = "cpu", .tp = 2, .cpu_threads = 1,
                           .step_timeout_ms = 5000};
    glm_model_options_default(&ro.model);
    glm_rank_context ctx;
    glm_error err = {0};
    if (glm_rank_context_create(&ro, &ctx, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.msg);
        MPI_Finalize();
        return 1;
    }
    CHECK(glm_rank_group_ok(&ctx));
    if (rank == 0) {
        glm_step_plan plan = {0};
        CHECK(glm_step_plan_resize(&plan, 1, 1, 1, 1, 0, &err) == GLM_OK);
        plan.token_ids[0] = 1, plan.positions[0] = 0, plan.image_rows[0] = -1;
        plan.slots[0] = 1 << 30; /* no cache has that many slots */
        plan.q_start[0] = 0, plan.q_start[1] = 1, plan.ctx_len[0] = 1, plan.block_table[0] = 0;
        plan.logit_rows[0] = 0;
        CHECK(glm_step_plan_broadcast(&plan, 0, ctx.comm, &err) == GLM_OK);
        glm_step_plan_free(&plan);
        CHECK(glm_rank_group_ok(&ctx)); /* rank 0 itself saw nothing wrong */
    } else {
        glm_status st = glm_worker_serve(ctx.model, &err);
        CHECK_MSG(st == GLM_ERR_INVALID_ARG, "worker loop: %s", glm_status_name(st));
        CHECK(!glm_rank_group_ok(&ctx));
        CHECK_MSG(strstr(ctx.comm->err.msg, "rank 1 left the step loop") &&
                      strstr(ctx.comm->err.msg, "slot"),
                  "'%s'", ctx.comm->err.msg);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    glm_rank_context_destroy(&ctx);
    int failures = test_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    char suite[32];
    snprintf(suite, sizeof(suite), "worker loop rank %d", rank);
    int code = test_finish(suite);
    MPI_Finalize();
    return code || total ? 1 : 0;
}
