#include "coordinator/serve/run_once.h"

#include <stdlib.h>
#include <string.h>

#include "coordinator/image/image_cache.h"
#include "coordinator/serve/step_driver.h"
#include "coordinator/text/prompt_layout.h"

static glm_status build_layout(const glm_model *m, const glm_run_once_request *req,
                               glm_prompt_layout *layout, glm_error *err)
{
    const glm_model_config *cfg = glm_model_config_of(m);
    /* the id between boi and eoi is <|endoftext|>, which is also the pad id */
    return glm_prompt_layout_build(req->ids, req->n_ids, cfg->boi_token_id, cfg->eoi_token_id,
                                   cfg->pad_token_id, glm_step_driver_image_rows(m), layout, err);
}

glm_status glm_run_once_validate(const glm_model *m, const glm_run_once_request *req,
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
    glm_prompt_layout layout;
    glm_status st = build_layout(m, req, &layout, err);
    if (st) return st;
    int n_rows = layout.n_rows, n_images = layout.n_images;
    glm_prompt_layout_free(&layout);
    if (n_images > 0 && !cfg->has_vision)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the prompt has an image but the model has no vision tower");
    int given = !req->pixels ? 0 : req->n_images > 0 ? req->n_images : 1;
    if (n_images > 0 && !req->pixels)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the prompt has an image but no pixels were given");
    if (n_images == 0 && req->pixels)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "pixels were given but the prompt has no <|begin_of_image|> marker");
    if (given != n_images)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "the prompt has %d image markers but %d images were given", n_images,
                        given);
    if (n_images > GLM_SEQ_MAX_IMAGES || n_images > glm_model_max_images(m))
        return glm_fail(err, GLM_ERR_LIMIT,
                        "the prompt has %d images; this model instance takes at most %d (and never "
                        "more than %d)",
                        n_images, glm_model_max_images(m), GLM_SEQ_MAX_IMAGES);
    int64_t rows = (int64_t)n_rows + req->max_new_tokens;
    if (rows > cfg->seq_length)
        return glm_fail(err, GLM_ERR_LIMIT,
                        "prompt of %d positions (%d ids) + %d new tokens exceeds seq_length %d",
                        n_rows, req->n_ids, req->max_new_tokens, cfg->seq_length);
    /* one sequence alone must fit, or the scheduler could never place it */
    int block_size = glm_model_kv_block_size(m);
    int64_t blocks = (rows + block_size - 1) / block_size;
    if (blocks > glm_model_kv_blocks(m) || blocks > glm_model_max_blocks_per_seq(m))
        return glm_fail(err, GLM_ERR_LIMIT, "KV cache too small for %lld positions",
                        (long long)rows);
    if (spliced_length) *spliced_length = n_rows;
    return GLM_OK;
}

static glm_status make_scheduler(glm_model *m, const glm_run_once_request *req, int n_images,
                                 glm_image_cache *images, glm_scheduler **out, glm_error *err)
{
    int chunk = req->prefill_chunk > 0 ? req->prefill_chunk : 512;
    glm_scheduler_config sc = glm_step_driver_model_limits(m);
    sc.max_batch = 1;
    sc.max_tokens_per_step = chunk;
    sc.prefill_chunk = chunk;
    sc.max_images_per_step = n_images > 0 ? n_images : 1;
    return glm_scheduler_create(&sc, images, out, err);
}

/* Steps until the sequence ends, splitting the time into vision, prefill (up to the first token)
 * and decode. */
static glm_status drive(glm_step_driver *d, glm_scheduler *sched, glm_sequence *q,
                        glm_run_once_result *res, glm_error *err)
{
    double prefill_ms = 0, decode_ms = 0;
    glm_status st = GLM_OK;
    while (!st && glm_scheduler_has_work(sched)) {
        bool decoding = q->n_generated > 0;
        glm_step_report rep;
        st = glm_step_driver_step(d, &rep, err);
        if (!st && rep.n_tokens == 0 && rep.n_images == 0)
            st = glm_fail(err, GLM_ERR_LIMIT, "the scheduler cannot place the sequence");
        res->vision_ms += rep.vision_ms;
        if (decoding)
            decode_ms += rep.step_ms;
        else
            prefill_ms += rep.step_ms - rep.vision_ms;
    }
    res->prefill_ms = prefill_ms;
    res->decode_ms = decode_ms;
    if (!st && q->state == GLM_JOB_FAILED)
        st = glm_fail(err, GLM_ERR_BACKEND,
                      "the model's logits were not finite at generated token %d: an activation "
                      "overflowed (with --dtype f16 storage, run this model with bf16)",
                      q->n_generated);
    return st;
}

glm_status glm_run_once(glm_model *m, const glm_run_once_request *req, glm_run_once_result *res,
                        glm_error *err)
{
    memset(res, 0, sizeof(*res));
    glm_status st = glm_run_once_validate(m, req, NULL, err);
    if (st) return st;
    glm_image_cache *images = NULL;
    glm_scheduler *sched = NULL;
    glm_step_driver *driver = NULL;
    glm_sequence q = {0};
    st = build_layout(m, req, &q.layout, err);
    int n_images = st ? 0 : q.layout.n_images;
    if (!st) st = glm_image_cache_create(n_images > 0 ? n_images : 1, &images, err);
    if (!st) st = make_scheduler(m, req, n_images, images, &sched, err);
    if (!st) st = glm_step_driver_create(m, sched, &driver, err);
    if (!st) {
        const glm_model_config *cfg = glm_model_config_of(m);
        size_t pixel_bytes = sizeof(float) * (size_t)cfg->vision.in_channels *
                             cfg->vision.image_size * cfg->vision.image_size;
        q.pixels = req->pixels;
        for (int i = 0; i < n_images; i++) /* each image by its own pixels */
            q.image_keys[i] =
                glm_image_key_of((const char *)req->pixels + (size_t)i * pixel_bytes, pixel_bytes);
        q.max_new_tokens = req->max_new_tokens;
        q.ignore_eos = req->ignore_eos;
        q.sample = (glm_sample_params){.temperature = 0, .top_p = 1.0f}; /* greedy */
        q.prompt_logits = req->dump_logits;
        res->spliced_length = q.layout.n_rows;
        res->n_images = q.layout.n_images;
        st = glm_scheduler_add(sched, &q, err);
    }
    if (!st) st = drive(driver, sched, &q, res, err);
    if (!st) {
        res->finish = q.finish;
        res->n_ids = q.n_generated;
        res->ids = malloc(sizeof(int32_t) * (size_t)(q.n_generated > 0 ? q.n_generated : 1));
        if (!res->ids)
            st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
        else if (q.n_generated > 0)
            memcpy(res->ids, q.generated, sizeof(int32_t) * (size_t)q.n_generated);
    }
    /* a failed step leaves the sequence in the scheduler: end it before freeing */
    if (glm_job_state_is_scheduled(q.state)) glm_scheduler_finish(sched, &q, GLM_SEQ_CANCELLED);
    glm_sequence_free(&q);
    glm_step_driver_destroy(driver);
    glm_scheduler_destroy(sched);
    glm_image_cache_destroy(images);
    if (st) glm_run_once_result_free(res);
    return st;
}

void glm_run_once_result_free(glm_run_once_result *res)
{
    free(res->ids);
    res->ids = NULL;
    res->n_ids = 0;
}
