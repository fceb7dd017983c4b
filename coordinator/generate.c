#include "coordinator/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/text/prompt_layout.h"
#include "worker/step_exec.h"

/* The id the prompt carries between boi and eoi: <|endoftext|>, which is also the pad id. */
static int image_pad_id(const glm_model_config *cfg)
{
    return cfg->pad_token_id;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The greedy id of a row (NaN never wins; ties to the lowest id), or -1 when the row has no
 * finite maximum: an activation overflowed on the way, as the device samplers report it. */
static int32_t argmax(const float *row, int n)
{
    int32_t best = -1;
    float top = -INFINITY;
    for (int i = 0; i < n; i++)
        if (row[i] > top) top = row[i], best = i;
    return isfinite(top) ? best : -1;
}

static glm_status check_drawn(int32_t id, int n_generated, glm_error *err)
{
    if (id >= 0) return GLM_OK;
    return glm_fail(err, GLM_ERR_BACKEND,
                    "the model's logits were not finite at generated token %d: an activation "
                    "overflowed (with --dtype f16 storage, run this model with bf16)",
                    n_generated);
}

glm_status glm_generate_validate(const glm_model *m, const glm_generate_request *req,
                                 int *spliced_length, glm_error *err)
{
    const glm_model_config *cfg = glm_model_config_of(m);
    if (req->n_ids < 1) return glm_fail(err, GLM_ERR_INVALID_ARG, "empty prompt");
    if (req->max_new_tokens < 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "max_new_tokens must not be negative");
    for (int i = 0; i < req->n_ids; i++)
        if (req->ids[i] < 0 || req->ids[i] >= cfg->padded_vocab_size)
            return glm_fail(err, GLM_ERR_INVALID_ARG,
                            "token id %d at position %d is outside the vocabulary [0, %d)",
                            req->ids[i], i, cfg->padded_vocab_size);
    int image_rows = cfg->has_vision ? glm_model_image_rows(m) : 3;
    glm_prompt_layout layout;
    glm_status st =
        glm_prompt_layout_build(req->ids, req->n_ids, cfg->boi_token_id, cfg->eoi_token_id,
                                image_pad_id(cfg), image_rows, &layout, err);
    if (st) return st;
    int n_rows = layout.n_rows, n_images = layout.n_images;
    glm_prompt_layout_free(&layout);
    if (n_images > 0 && !cfg->has_vision)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the prompt has an image but the model has no "
                        "vision tower");
    if (n_images > 1)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "the prompt has %d images; GLM-4V takes one",
                        n_images);
    if (n_images > 0 && !req->pixels)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the prompt has an image but no pixels were "
                        "given");
    if (n_images == 0 && req->pixels)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "pixels were given but the prompt has no <|begin_of_image|> marker");
    if ((int64_t)n_rows + req->max_new_tokens > cfg->seq_length)
        return glm_fail(err, GLM_ERR_LIMIT,
                        "prompt of %d positions (%d ids) + %d new tokens exceeds seq_length %d",
                        n_rows, req->n_ids, req->max_new_tokens, cfg->seq_length);
    if (spliced_length) *spliced_length = n_rows;
    return GLM_OK;
}

/* Fills plan with rows [first, first + n) of the layout for one sequence. */
static glm_status plan_prompt_chunk(glm_step_plan *plan, const glm_prompt_layout *layout,
                                    const glm_block_table *table, int block_size, int max_blocks,
                                    int first, int n, bool all_logits, glm_error *err)
{
    bool last = first + n == layout->n_rows;
    int n_logits = all_logits ? n : last ? 1 : 0;
    glm_status st = glm_step_plan_resize(plan, 1, n, max_blocks, n_logits, 0, err);
    if (st) return st;
    plan->flags = 0;
    for (int i = 0; i < n; i++) {
        int r = first + i;
        plan->token_ids[i] = layout->token_ids[r];
        plan->positions[i] = layout->positions[r];
        plan->slots[i] = glm_block_table_slot(table, block_size, r);
        /* one image, in pool slot 0 */
        plan->image_rows[i] = layout->image_row[r] >= 0 ? layout->image_row[r] : -1;
    }
    plan->q_start[0] = 0;
    plan->q_start[1] = n;
    plan->ctx_len[0] = first + n;
    memset(plan->block_table, 0, sizeof(int32_t) * (size_t)max_blocks);
    memcpy(plan->block_table, table->blocks, sizeof(int32_t) * (size_t)table->n_blocks);
    for (int i = 0; i < n_logits; i++)
        plan->logit_rows[i] = all_logits ? i : n - 1;
    return GLM_OK;
}

static glm_status plan_decode_token(glm_step_plan *plan, const glm_block_table *table,
                                    int block_size, int max_blocks, int32_t id, int position,
                                    int kv_index, glm_error *err)
{
    glm_status st = glm_step_plan_resize(plan, 1, 1, max_blocks, 1, 0, err);
    if (st) return st;
    plan->flags = 0;
    plan->token_ids[0] = id;
    plan->positions[0] = position;
    plan->slots[0] = glm_block_table_slot(table, block_size, kv_index);
    plan->image_rows[0] = -1;
    plan->q_start[0] = 0;
    plan->q_start[1] = 1;
    plan->ctx_len[0] = kv_index + 1;
    memset(plan->block_table, 0, sizeof(int32_t) * (size_t)max_blocks);
    memcpy(plan->block_table, table->blocks, sizeof(int32_t) * (size_t)table->n_blocks);
    plan->logit_rows[0] = 0;
    return GLM_OK;
}

glm_status glm_generate(glm_model *m, const void *mpi_comm, const glm_generate_request *req,
                        glm_generate_result *res, glm_error *err)
{
    (void)mpi_comm; /* the plans travel over the model's communicator (worker/step_exec.c) */
    memset(res, 0, sizeof(*res));
    const glm_model_config *cfg = glm_model_config_of(m);
    glm_status st = glm_generate_validate(m, req, NULL, err);
    if (st) return st;
    int image_rows = cfg->has_vision ? glm_model_image_rows(m) : 3;
    int block_size = glm_model_kv_block_size(m), max_blocks = glm_model_max_blocks_per_seq(m);
    int vocab = cfg->padded_vocab_size;

    glm_prompt_layout layout = {0};
    glm_block_allocator alloc = {0};
    glm_block_table table = {0};
    glm_step_plan plan = {0};
    float *logits = NULL;
    int chunk = req->prefill_chunk > 0 ? req->prefill_chunk : 512;
    int logit_rows = req->dump_logits ? chunk : 1;

    st = glm_prompt_layout_build(req->ids, req->n_ids, cfg->boi_token_id, cfg->eoi_token_id,
                                 image_pad_id(cfg), image_rows, &layout, err);
    if (!st) st = glm_block_allocator_init(&alloc, glm_model_kv_blocks(m), err);
    if (!st && glm_block_table_reserve(&table, &alloc, block_size,
                                       layout.n_rows + req->max_new_tokens) != 0)
        st = glm_fail(err, GLM_ERR_LIMIT, "KV cache too small for %d positions",
                      layout.n_rows + req->max_new_tokens);
    if (!st && !(logits = malloc(sizeof(float) * (size_t)logit_rows * (size_t)vocab)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory for logits");
    res->ids =
        malloc(sizeof(int32_t) * (size_t)(req->max_new_tokens > 0 ? req->max_new_tokens : 1));
    if (!st && !res->ids) st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    res->spliced_length = layout.n_rows;
    res->n_images = layout.n_images;

    /* the image first, into pool slot 0, in a step of its own so its time is measurable */
    double t0 = now_ms();
    if (!st && layout.n_images > 0) {
        st = glm_step_plan_resize(&plan, 0, 0, max_blocks, 0, 1, err);
        if (!st) {
            plan.flags = 0;
            plan.image_slots[0] = 0;
            st = glm_step_execute(m, &plan, req->pixels, NULL, err);
        }
    }
    res->vision_ms = now_ms() - t0;

    /* prefill, chunk by chunk */
    int32_t next = -1;
    t0 = now_ms();
    for (int first = 0; !st && first < layout.n_rows; first += chunk) {
        int n = layout.n_rows - first < chunk ? layout.n_rows - first : chunk;
        st = plan_prompt_chunk(&plan, &layout, &table, block_size, max_blocks, first, n,
                               req->dump_logits != NULL, err);
        if (!st) st = glm_step_execute(m, &plan, NULL, logits, err);
        if (!st && req->dump_logits)
            memcpy(req->dump_logits + (size_t)first * vocab, logits,
                   sizeof(float) * (size_t)n * (size_t)vocab);
        if (!st && first + n == layout.n_rows) {
            next = argmax(req->dump_logits ? logits + (size_t)(n - 1) * vocab : logits, vocab);
            st = check_drawn(next, 0, err);
        }
    }
    res->prefill_ms = now_ms() - t0;

    /* decode: one token per step through the cache */
    t0 = now_ms();
    int position = layout.n_ids, kv_index = layout.n_rows;
    res->finish = GLM_GEN_FINISH_LENGTH;
    while (!st && res->n_ids < req->max_new_tokens) {
        res->ids[res->n_ids++] = next;
        if (!req->ignore_eos && glm_config_is_eos(cfg, next)) {
            res->finish = GLM_GEN_FINISH_STOP;
            break;
        }
        if (res->n_ids == req->max_new_tokens) break;
        st =
            plan_decode_token(&plan, &table, block_size, max_blocks, next, position, kv_index, err);
        if (!st) st = glm_step_execute(m, &plan, NULL, logits, err);
        if (!st) next = argmax(logits, vocab);
        if (!st) st = check_drawn(next, res->n_ids, err);
        position++;
        kv_index++;
    }
    res->decode_ms = now_ms() - t0;

    free(logits);
    glm_step_plan_free(&plan);
    glm_block_table_free(&table);
    glm_block_allocator_free(&alloc);
    glm_prompt_layout_free(&layout);
    if (st) glm_generate_result_free(res);
    return st;
}

void glm_generate_result_free(glm_generate_result *res)
{
    free(res->ids);
    res->ids = NULL;
    res->n_ids = 0;
}
