#include "worker/rank_context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_registry.h"

glm_status glm_rank_agree(MPI_Comm comm, glm_status mine)
{
    int in = (int)mine, out = 0;
    if (MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS) return GLM_ERR_COMM;
    return (glm_status)out;
}

static glm_status create_comm(const glm_rank_options *opt, glm_rank_context *ctx, glm_error *err)
{
    int timeout_ms = opt->step_timeout_ms;
    glm_comm_options co = {
        .timeout_ms = timeout_ms,
        .first_timeout_ms = timeout_ms > 0 ? timeout_ms * GLM_FIRST_STEP_TIMEOUT_FACTOR : 0,
    };
    return glm_comm_open(ctx->be, &ctx->world, ctx->size, &co, &ctx->comm, err);
}

static glm_status create_local(const glm_rank_options *opt, glm_rank_context *ctx, glm_error *err)
{
    glm_status st;
    if (opt->tp != ctx->size)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "--tp %d but mpirun started %d rank%s (use mpirun -np %d)", opt->tp,
                        ctx->size, ctx->size == 1 ? "" : "s", opt->tp);
    if ((st = glm_config_load(opt->model_dir, &ctx->cfg, err))) return st;
    glm_shard_plan plan;
    if ((st = glm_shard_plan_make(&ctx->cfg, ctx->rank, ctx->size, &plan, err))) return st;
    const glm_backend_entry *entry = glm_backend_find(opt->device);
    if (!entry) return glm_backend_create(opt->device, 0, &ctx->be, err); /* says what there is */
    glm_backend_params params = {.device_index = ctx->local_rank, .n_threads = opt->cpu_threads};
    if ((st = glm_backend_create_from(entry, &params, &ctx->be, err))) return st;
    if (opt->dtype) {
        glm_dtype storage;
        if (!glm_storage_parse(opt->dtype, &storage))
            return glm_fail(err, GLM_ERR_INVALID_ARG, "--dtype %s: expected bf16 or f16",
                            opt->dtype);
        if ((st = glm_backend_set_storage(ctx->be, storage, err))) return st;
    }
    if (!opt->model.use_random_weights && (st = glm_checkpoint_open(opt->model_dir, &ctx->ck, err)))
        return st;
    return GLM_OK;
}

glm_status glm_rank_context_create(const glm_rank_options *opt, glm_rank_context *ctx,
                                   glm_error *err)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->world = MPI_COMM_WORLD;
    MPI_Comm_rank(ctx->world, &ctx->rank);
    MPI_Comm_size(ctx->world, &ctx->size);
    MPI_Comm node;
    MPI_Comm_split_type(ctx->world, MPI_COMM_TYPE_SHARED, ctx->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &ctx->local_rank);
    MPI_Comm_free(&node);

    /* steps that may fail on one rank alone are followed by an agreement, so no rank waits in a
     * collective that a failed peer will never enter */
    glm_status st = create_local(opt, ctx, err);
    glm_status all = glm_rank_agree(ctx->world, st);
    if (!st && all) st = glm_fail(err, all, "another rank failed to start");
    if (!st) {
        st = create_comm(opt, ctx, err);
        all = glm_rank_agree(ctx->world, st);
        if (!st && all) st = glm_fail(err, all, "another rank failed to start");
    }
    if (!st) {
        glm_model_options mo = opt->model;
        if (opt->gpu_memory_gib > 0)
            mo.total_memory_bytes = (size_t)(opt->gpu_memory_gib * (1 << 30));
        st = glm_model_create(&ctx->cfg, &mo, ctx->ck, ctx->be, ctx->comm, &ctx->model, err);
        all = glm_rank_agree(ctx->world, st);
        if (!st && all) st = glm_fail(err, all, "another rank failed to load its shard");
    }
    if (st) glm_rank_context_destroy(ctx);
    return st;
}

void glm_rank_context_destroy(glm_rank_context *ctx)
{
    glm_model_destroy(ctx->model);
    glm_checkpoint_close(ctx->ck);
    glm_comm_destroy(ctx->comm);
    glm_backend_destroy(ctx->be);
    ctx->model = NULL;
    ctx->ck = NULL;
    ctx->comm = NULL;
    ctx->be = NULL;
}

bool glm_rank_group_ok(const glm_rank_context *ctx)
{
    return !ctx->comm || !ctx->comm->failed;
}

void glm_rank_abort(glm_rank_context *ctx, int code, const char *program)
{
    fprintf(stderr, "%s: rank %d: the group is broken (%s); aborting the replica\n", program,
            ctx->rank, ctx->comm ? ctx->comm->err.msg : "no communicator");
    fflush(stderr);
    if (ctx->comm && ctx->comm->ops->abort) ctx->comm->ops->abort(ctx->comm);
    MPI_Abort(ctx->world, code ? code : 1);
    abort(); /* MPI_Abort does not return; this keeps the compiler sure of it */
}
