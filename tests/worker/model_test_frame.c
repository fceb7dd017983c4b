#include "tests/worker/model_test_frame.h"

#include <stdio.h>

#include "tests/testutil.h"
#include "worker/step_exec.h"

glm_model *cpu_reference_create(glm_rank_context *ctx, const glm_model_options *mo,
                                cpu_reference *ref)
{
    glm_error err = {0};
    *ref = (cpu_reference){0};
    if (glm_backend_cpu_create(0, &ref->be, &err) ||
        glm_comm_local_create(ref->be, &ref->comm, &err) ||
        glm_model_create(&ctx->cfg, mo, ctx->ck, ref->be, ref->comm, &ref->model, &err))
        fprintf(stderr, "cpu reference model: %s\n", err.msg);
    return ref->model;
}

void cpu_reference_destroy(cpu_reference *ref)
{
    glm_model_destroy(ref->model);
    glm_comm_destroy(ref->comm);
    glm_backend_destroy(ref->be);
    *ref = (cpu_reference){0};
}

int model_test_finish(glm_rank_context *ctx, const char *suite)
{
    glm_error err = {0};
    int code = 0;
    if (ctx->rank == 0) {
        glm_step_shutdown(&ctx->world, &err);
        code = test_finish(suite);
    } else if (glm_worker_serve(ctx->model, &ctx->world, &err)) {
        fprintf(stderr, "rank %d: %s\n", ctx->rank, err.msg);
        code = 1;
    }
    glm_rank_context_destroy(ctx);
    return code;
}
