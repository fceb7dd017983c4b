#include "coordinator/serve/step_driver.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/sample_rng.h"
#include "worker/step_exec.h"

struct glm_step_driver {
    glm_model *model;
    glm_scheduler *sched;
    int vocab;
    int max_rows;
    glm_step_plan plan;
    const float *pixels; /* the plan's new images, in the scheduler's buffer */
    glm_logit_row *rows;
    glm_sample_params *params;
    int32_t *sampled;
    float *logprobs;
    float *logits; /* [max_rows, vocab], allocated when a sequence first asks for prompt logits */
    glm_sequence **seqs;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int glm_step_driver_image_rows(const glm_model *m)
{
    return glm_model_config_of(m)->has_vision ? glm_model_image_rows(m) : 3;
}

glm_scheduler_config glm_step_driver_model_limits(const glm_model *m)
{
    const glm_model_config *cfg = glm_model_config_of(m);
    const glm_vision_config *v = &cfg->vision;
    return (glm_scheduler_config){
        .block_size = glm_model_kv_block_size(m),
        .n_blocks = glm_model_kv_blocks(m),
        .max_blocks_per_seq = glm_model_max_blocks_per_seq(m),
        .image_rows = glm_step_driver_image_rows(m),
        .pixel_floats = cfg->has_vision ? v->in_channels * v->image_size * v->image_size : 0,
        .seq_length = cfg->seq_length,
        .eos_ids = cfg->eos_token_ids,
        .n_eos_ids = cfg->n_eos_token_ids,
    };
}

glm_status glm_step_driver_create(glm_model *model, glm_scheduler *sched, glm_step_driver **out,
                                  glm_error *err)
{
    *out = NULL;
    glm_step_driver *d = calloc(1, sizeof(*d));
    if (!d) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the step driver");
    d->model = model;
    d->sched = sched;
    d->vocab = glm_model_config_of(model)->padded_vocab_size;
    d->max_rows = glm_scheduler_max_logit_rows(sched);
    size_t n = (size_t)d->max_rows;
    d->rows = calloc(n, sizeof(*d->rows));
    d->params = calloc(n, sizeof(*d->params));
    d->sampled = calloc(n, sizeof(*d->sampled));
    d->logprobs = calloc(n * GLM_SAMPLE_LOGPROBS_STRIDE, sizeof(float));
    d->seqs = calloc(n, sizeof(*d->seqs));
    if (!d->rows || !d->params || !d->sampled || !d->logprobs || !d->seqs) {
        glm_step_driver_destroy(d);
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the step driver");
    }
    *out = d;
    return GLM_OK;
}

void glm_step_driver_destroy(glm_step_driver *d)
{
    if (!d) return;
    glm_step_plan_free(&d->plan);
    free(d->rows);
    free(d->params);
    free(d->sampled);
    free(d->logprobs);
    free(d->logits);
    free(d->seqs);
    free(d);
}

/* Whether a row of this step goes to a sequence's prompt_logits (then the step returns logits to
 * the host, which also keeps it off the decode graphs: such steps are prompt steps anyway). */
static bool wants_logits(const glm_step_driver *d, int n_rows)
{
    for (int i = 0; i < n_rows; i++)
        if (d->rows[i].seq->prompt_logits && d->rows[i].row < d->rows[i].seq->layout.n_rows)
            return true;
    return false;
}

static void copy_prompt_logits(glm_step_driver *d, int n_rows)
{
    for (int i = 0; i < n_rows; i++) {
        const glm_logit_row *lr = &d->rows[i];
        if (!lr->seq->prompt_logits || lr->row >= lr->seq->layout.n_rows) continue;
        memcpy(lr->seq->prompt_logits + (size_t)lr->row * d->vocab,
               d->logits + (size_t)i * d->vocab, sizeof(float) * (size_t)d->vocab);
    }
}

glm_status glm_step_driver_schedule(glm_step_driver *d, glm_step_report *rep, glm_error *err)
{
    memset(rep, 0, sizeof(*rep));
    glm_status st = glm_scheduler_schedule(d->sched, &d->plan, &d->pixels, d->rows, err);
    if (st) return st;
    glm_sequence *const *seqs;
    int n_seqs = glm_scheduler_step_sequences(d->sched, &seqs);
    memcpy(d->seqs, seqs, sizeof(*seqs) * (size_t)n_seqs); /* the scheduler's list ends at commit */
    rep->seqs = d->seqs;
    rep->n_seqs = n_seqs;
    rep->n_tokens = d->plan.n_tokens;
    rep->n_images = d->plan.n_images;
    rep->rows = d->rows;
    rep->sampled = d->sampled;
    rep->logprobs = d->logprobs;
    return GLM_OK;
}

glm_status glm_step_driver_run(glm_step_driver *d, glm_step_report *rep, glm_error *err)
{
    glm_status st = GLM_OK;
    int n = d->plan.n_logit_rows;
    for (int i = 0; i < n; i++) {
        const glm_sequence *q = d->rows[i].seq;
        d->params[i] = q->sample;
        /* the draw depends on the sequence's seed and its token index only */
        d->params[i].seed = glm_sample_mix64(q->sample.seed ^ (uint64_t)q->n_generated);
    }
    glm_step_output out = {
        .sample = d->params, .ids_host = d->sampled, .logprobs_host = d->logprobs};
    if (wants_logits(d, n)) {
        if (!d->logits &&
            !(d->logits = malloc(sizeof(float) * (size_t)d->max_rows * (size_t)d->vocab)))
            st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory for %d rows of logits",
                          d->max_rows);
        out.logits_host = d->logits;
    }
    rep->t_start_ms = now_ms();
    if (!st) st = glm_step_execute(d->model, &d->plan, d->pixels, &out, err);
    if (st) {
        glm_scheduler_abort_step(d->sched);
        return st;
    }
    rep->step_ms = now_ms() - rep->t_start_ms;
    rep->vision_ms = out.vision_ms;
    if (out.logits_host) copy_prompt_logits(d, n);
    glm_scheduler_commit(d->sched, d->rows, d->sampled, n);
    rep->n_rows = n;
    return GLM_OK;
}

glm_status glm_step_driver_step(glm_step_driver *d, glm_step_report *rep, glm_error *err)
{
    glm_status st = glm_step_driver_schedule(d, rep, err);
    if (st || (rep->n_tokens == 0 && rep->n_images == 0)) return st;
    return glm_step_driver_run(d, rep, err);
}
