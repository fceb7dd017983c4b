#include "tests/worker/model_test_frame.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/run_once.h"

#include "tests/testutil.h"
#include "worker/step_exec.h"

void model_test_options(glm_rank_options *ro, const char *model_dir, const char *device, int rows)
{
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    *ro = (glm_rank_options){.model_dir = model_dir, .device = device, .tp = size};
    glm_model_options_default(&ro->model);
    ro->model.max_seqs = 1;
    ro->model.max_step_tokens = rows;
    ro->model.max_logit_rows = rows;
    ro->model.image_pool_slots = 1;
}

bool model_test_start(const glm_rank_options *ro, glm_rank_context *ctx)
{
    glm_error err = {0};
    if (glm_rank_context_create(ro, ctx, &err) == GLM_OK) return true;
    fprintf(stderr, "setup: %s\n", err.msg);
    return false;
}

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

glm_status model_test_generate(glm_model *m, const int32_t *ids, int n_ids, const float *pixels,
                               int chunk, model_run *out, glm_error *err)
{
    return model_test_generate_images(m, ids, n_ids, pixels, pixels ? 1 : 0, chunk, out, err);
}

glm_status model_test_generate_images(glm_model *m, const int32_t *ids, int n_ids,
                                      const float *pixels, int n_images, int chunk,
                                      model_run *out, glm_error *err)
{
    int spliced = 0, vocab = glm_model_config_of(m)->padded_vocab_size;
    glm_run_once_request req = {.ids = ids,
                                .n_ids = n_ids,
                                .pixels = pixels,
                                .n_images = n_images,
                                .max_new_tokens = MODEL_TEST_GEN,
                                .ignore_eos = true,
                                .prefill_chunk = chunk};
    glm_status st = glm_run_once_validate(m, &req, &spliced, err);
    if (st) return st;
    out->rows = spliced;
    out->logits = malloc(sizeof(float) * (size_t)spliced * vocab);
    if (!out->logits) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for logits");
    /* NaN until written: a prompt row the driver failed to deliver fails the comparison */
    for (size_t i = 0; i < (size_t)spliced * vocab; i++)
        out->logits[i] = NAN;
    req.dump_logits = out->logits;
    glm_run_once_result res;
    if ((st = glm_run_once(m, &req, &res, err))) return st;
    out->n_ids = res.n_ids;
    memcpy(out->ids, res.ids, sizeof(int32_t) * (size_t)res.n_ids);
    glm_run_once_result_free(&res);
    return GLM_OK;
}

int model_test_finish(glm_rank_context *ctx, const char *suite)
{
    glm_error err = {0};
    int code = 0;
    if (ctx->rank == 0) {
        glm_step_shutdown(ctx->model, &err);
        code = test_finish(suite);
    } else if (glm_worker_serve(ctx->model, &err)) {
        fprintf(stderr, "rank %d: %s\n", ctx->rank, err.msg);
        code = 1;
    }
    glm_rank_context_destroy(ctx);
    return code;
}
