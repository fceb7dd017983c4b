/* End of a rank-group tool's main (see rank_main.h). */
#include "coordinator/rank_main.h"

#include <mpi.h>
#include <stdio.h>

#include "worker/step_exec.h"

int glm_rank_main_end(glm_rank_context *ctx, int code, const char *prog)
{
    if (ctx->rank != 0) {
        glm_error err = {0};
        if (glm_worker_serve(ctx->model, &err)) {
            fprintf(stderr, "%s: rank %d: %s\n", prog, ctx->rank, err.msg);
            code = 1;
        }
    }
    if (!glm_rank_group_ok(ctx)) glm_rank_abort(ctx, code, prog);
    glm_rank_context_destroy(ctx);
    MPI_Finalize();
    return code;
}
