#include "coordinator/serve/request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/text/chat_template.h"
#include "kernels/sample_rng.h"

double glm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

glm_chat_role glm_chat_role_of(glm_role r)
{
    switch (r) {
    case GLM_ROLE_SYSTEM:
        return GLM_CHAT_SYSTEM;
    case GLM_ROLE_ASSISTANT:
        return GLM_CHAT_ASSISTANT;
    case GLM_ROLE_OBSERVATION:
        return GLM_CHAT_OBSERVATION;
    default:
        return GLM_CHAT_USER;
    }
}

static glm_error_code image_error_code(glm_status st)
{
    switch (st) {
    case GLM_ERR_LIMIT:
        return GLM_EC_IMAGE_TOO_LARGE;
    case GLM_ERR_UNSUPPORTED:
        return GLM_EC_UNSUPPORTED_IMAGE;
    default:
        return GLM_EC_BAD_IMAGE;
    }
}

/* Every image of the job, in prompt order, into r->pixels ([n, C, S, S]) and the sequence's
 * image keys. A bad image fails the job alone, naming which one (1-based, prompt order). */
static glm_status load_images(glm_request *r, const glm_request_env *env, size_t n_images,
                              glm_error_code *code, glm_error *err)
{
    const glm_job *job = r->job;
    const glm_vision_config *v = &env->cfg->vision;
    size_t floats = (size_t)v->in_channels * v->image_size * v->image_size;
    if (n_images > GLM_SEQ_MAX_IMAGES) {
        *code = GLM_EC_TOO_MANY_IMAGES;
        return glm_fail(err, GLM_ERR_LIMIT, "%zu images > %d per prompt", n_images,
                        GLM_SEQ_MAX_IMAGES);
    }
    r->pixels = malloc(n_images * floats * sizeof(float));
    if (!r->pixels) return glm_fail(err, GLM_ERR_NOMEM, "out of memory for pixels");
    size_t at = 0;
    for (size_t i = 0; i < job->n_messages; i++) {
        const glm_message *m = &job->messages[i];
        for (size_t k = 0; k < glm_message_n_images(m); k++, at++) {
            glm_image_part im = glm_message_image(m, k);
            glm_status st = glm_image_preprocess(im.data, im.bytes, v->image_size,
                                                 &env->image_limits, r->pixels + at * floats, err);
            if (st) {
                *code = image_error_code(st);
                glm_error_prefix(err, "image %zu of %zu (message %zu)", at + 1, n_images, i);
                return st;
            }
            r->seq.image_keys[at] = glm_image_key_of(im.data, im.bytes);
        }
    }
    r->seq.pixels = r->pixels;
    return GLM_OK;
}

/* job -> ids (chat template) and pixels; fills r->seq's layout. */
static glm_status build_prompt(glm_request *r, const glm_request_env *env, glm_error_code *code,
                               glm_error *err)
{
    const glm_job *job = r->job;
    const glm_model_config *cfg = env->cfg;
    glm_chat_message *msgs = calloc(job->n_messages ? job->n_messages : 1, sizeof(*msgs));
    if (!msgs) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    size_t n_images = 0;
    for (size_t i = 0; i < job->n_messages; i++) {
        msgs[i].role = glm_chat_role_of(job->messages[i].role);
        msgs[i].content = job->messages[i].content;
        msgs[i].content_len = strlen(job->messages[i].content);
        msgs[i].n_images = glm_message_n_images(&job->messages[i]);
        msgs[i].has_image = msgs[i].n_images > 0;
        n_images += msgs[i].n_images;
    }
    glm_chat_prompt prompt = {0};
    glm_status st = glm_chat_template_apply(env->tok, msgs, job->n_messages, true, &prompt, err);
    free(msgs);
    if (st) {
        *code = st == GLM_ERR_LIMIT ? GLM_EC_TOO_MANY_IMAGES : GLM_EC_INVALID_REQUEST;
        return st;
    }
    if (n_images > 0 && !cfg->has_vision) {
        glm_chat_prompt_free(&prompt);
        *code = GLM_EC_UNSUPPORTED_IMAGE;
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "this model has no vision tower");
    }
    if (n_images > 0 && (st = load_images(r, env, n_images, code, err))) {
        glm_chat_prompt_free(&prompt);
        return st;
    }
    st = glm_prompt_layout_build(prompt.ids.ids, (int)prompt.ids.n, cfg->boi_token_id,
                                 cfg->eoi_token_id, cfg->pad_token_id, env->image_rows,
                                 &r->seq.layout, err);
    glm_chat_prompt_free(&prompt);
    if (st) {
        *code = GLM_EC_INVALID_REQUEST;
        return st;
    }
    int max_new = job->sampling.max_new_tokens ? (int)job->sampling.max_new_tokens
                                               : env->default_max_new_tokens;
    if ((int64_t)r->seq.layout.n_rows + max_new > cfg->seq_length) {
        *code = GLM_EC_PROMPT_TOO_LONG;
        return glm_fail(err, GLM_ERR_LIMIT,
                        "prompt of %d positions + %d new tokens exceeds seq_length %d",
                        r->seq.layout.n_rows, max_new, cfg->seq_length);
    }
    r->seq.max_new_tokens = max_new;
    return GLM_OK;
}

/* Sampling parameters; a request without a seed gets one derived from its id, so re-running a
 * job reproduces it. The per-token seed folds in the token index (see glm_request_on_token). */
static void setup_sampling(glm_request *r)
{
    const glm_sampling *s = &r->job->sampling;
    r->seq.ignore_eos = s->ignore_eos;
    r->seq.stop_ids = s->stop_ids;
    r->seq.n_stop_ids = (int)s->n_stop_ids;
    r->seq.sample.temperature = s->temperature;
    r->seq.sample.top_k = (int)s->top_k;
    r->seq.sample.top_p = s->top_p > 0 ? s->top_p : 1.0f;
    uint64_t seed = s->has_seed ? s->seed : 0;
    if (!s->has_seed)
        for (const char *p = r->job->id; *p; p++)
            seed = glm_sample_mix64(seed ^ (uint8_t)*p);
    r->seq.sample.seed = seed;
    r->n_logprobs_wanted = s->has_logprobs ? (int)s->logprobs : -1;
    r->seq.sample.n_logprobs = s->has_logprobs ? (int)s->logprobs : 0;
}

glm_status glm_request_create(glm_queue_job *entry, glm_request **out, glm_error *err)
{
    *out = NULL;
    glm_request *r = calloc(1, sizeof(*r));
    if (!r) return glm_fail(err, GLM_ERR_NOMEM, "out of memory for a request");
    r->entry = *entry;
    memset(entry, 0, sizeof(*entry)); /* the bytes are the request's now */
    r->seq.request = r;
    r->seq.state = GLM_JOB_QUEUED;
    r->t_received = glm_now_ms();
    long long entry_ms = atoll(r->entry.entry_id);
    r->queue_ms = entry_ms > 0 ? wall_ms() - (double)entry_ms : 0;
    if (r->queue_ms < 0) r->queue_ms = 0;
    *out = r;
    return GLM_OK;
}

void glm_request_set_error(glm_request *r, glm_error_code code, const char *fmt, ...)
{
    if (r->error_code != GLM_EC_OK) return;
    r->error_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error_msg, sizeof(r->error_msg), fmt, ap);
    va_end(ap);
}

bool glm_request_prepare(glm_request *r, const glm_request_env *env)
{
    glm_detokenizer_init(&r->detok, env->tok);
    glm_job_problem problem = {0};
    glm_status st = glm_job_decode(r->entry.bytes, r->entry.len, &r->job, &problem);
    if (!st) st = glm_job_validate(r->job, &env->job_limits, &problem);
    /* An entry without the id field (not a glm4v client) is answered at the Job's id, its error
     * Result too (with no id at all it went to the dead letters, while its answer would have gone
     * to the Job's id: a failure its client never heard of). */
    const char *own_id = r->job ? r->job->id : problem.job_id;
    if (!r->entry.job_id[0] && own_id && glm_job_id_valid(own_id))
        snprintf(r->entry.job_id, sizeof(r->entry.job_id), "%s", own_id);
    if (st) {
        glm_request_set_error(r, problem.code, "%s", problem.message);
        return false;
    }
    /* The entry's id field is the job's address: its claim, done marker, cancel key and error
     * Results are keyed by it. A Job that names another id would have streamed and answered
     * there, bound that other id to this content and left its own client waiting for ever. */
    if (strcmp(r->job->id, r->entry.job_id) != 0) {
        glm_request_set_error(r, GLM_EC_INVALID_REQUEST,
                              "the Job's id \"%.128s\" differs from the id field of its stream "
                              "entry; send the same id in both",
                              r->job->id);
        return false;
    }
    if (r->job->deadline_unix_ms && (double)r->job->deadline_unix_ms < wall_ms()) {
        glm_request_set_error(r, GLM_EC_DEADLINE_EXCEEDED,
                              "deadline passed before the job was started");
        return false;
    }
    glm_error err = {0};
    glm_error_code code = GLM_EC_INTERNAL;
    if (build_prompt(r, env, &code, &err)) {
        glm_request_set_error(r, code, "%s", err.msg);
        return false;
    }
    setup_sampling(r);
    r->seq.priority = r->job->priority;
    if (r->n_logprobs_wanted >= 0 &&
        !(r->logprobs =
              calloc((size_t)r->seq.max_new_tokens, sizeof(float) * GLM_SAMPLE_LOGPROBS_STRIDE))) {
        glm_request_set_error(r, GLM_EC_INTERNAL, "out of memory");
        return false;
    }
    return true;
}

void glm_request_destroy(glm_request *r)
{
    if (!r) return;
    glm_sequence_free(&r->seq);
    glm_job_free(r->job);
    glm_queue_job_clear(&r->entry);
    glm_bytes_free(&r->text);
    free(r->pixels);
    free(r->logprobs);
    free(r);
}

/* Length of the longest suffix of text that is a proper prefix of some stop string: those bytes
 * are held back, since the next token may complete the stop string. */
static size_t stop_prefix_overlap(const glm_request *r)
{
    size_t best = 0;
    const glm_sampling *s = &r->job->sampling;
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t ls = strlen(s->stop[i]);
        for (size_t k = ls > 1 ? ls - 1 : 0; k > best; k--)
            if (k <= r->text.len && memcmp(r->text.data + r->text.len - k, s->stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

/* The earliest stop string occurrence that ends in the newly added bytes, or -1. */
static long find_stop(const glm_request *r, size_t added)
{
    const glm_sampling *s = &r->job->sampling;
    long found = -1;
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t ls = strlen(s->stop[i]);
        if (ls == 0 || ls > r->text.len) continue;
        size_t from = r->text.len >= added + ls ? r->text.len - added - ls + 1 : 0;
        const char *hit = memmem(r->text.data + from, r->text.len - from, s->stop[i], ls);
        if (hit && (found < 0 || hit - r->text.data < found)) found = hit - r->text.data;
    }
    return found;
}

glm_status glm_request_on_token(glm_request *r, const glm_request_env *env, int32_t id,
                                const float *logprobs, bool *stop_string, glm_bytes *delta,
                                glm_error *err)
{
    *stop_string = false;
    delta->len = 0;
    int index = r->seq.n_generated - 1;
    if (r->logprobs && logprobs && index >= 0)
        memcpy(r->logprobs + (size_t)index * GLM_SAMPLE_LOGPROBS_STRIDE, logprobs,
               sizeof(float) * GLM_SAMPLE_LOGPROBS_STRIDE);
    if (r->t_first_token == 0) r->t_first_token = glm_now_ms();
    /* an eos that ended the sequence is not text */
    bool is_end = r->seq.finish == GLM_SEQ_FINISHED_STOP && !r->seq.ignore_eos &&
                  glm_config_is_eos(env->cfg, id);
    size_t before = r->text.len;
    glm_status st = GLM_OK;
    if (!is_end) st = glm_detokenizer_push(&r->detok, id, &r->text, err);
    if (!st && r->seq.finish != GLM_SEQ_NOT_FINISHED)
        st = glm_detokenizer_flush(&r->detok, &r->text, err);
    if (st) return st;
    long stop_at = find_stop(r, r->text.len - before);
    size_t safe;
    if (stop_at >= 0) {
        r->text.len = (size_t)stop_at;
        if (r->text.data) r->text.data[r->text.len] = '\0';
        *stop_string = true;
        safe = r->text.len;
    } else {
        safe = r->seq.finish != GLM_SEQ_NOT_FINISHED ? r->text.len
                                                     : r->text.len - stop_prefix_overlap(r);
    }
    if (safe > r->text_emitted) {
        st = glm_bytes_append(delta, r->text.data + r->text_emitted, safe - r->text_emitted, err);
        r->text_emitted = safe;
    }
    return st;
}

static glm_token_logprobs *logprobs_view(const glm_request *r, int first, int n,
                                         glm_top_logprob *tops)
{
    glm_token_logprobs *out = calloc((size_t)(n > 0 ? n : 1), sizeof(*out));
    if (!out) return NULL;
    int k = r->n_logprobs_wanted;
    for (int i = 0; i < n; i++) {
        const float *lp = r->logprobs + (size_t)(first + i) * GLM_SAMPLE_LOGPROBS_STRIDE;
        out[i].token_id = r->seq.generated[first + i];
        out[i].logprob = lp[0];
        out[i].top = tops + (size_t)(first + i) * GLM_SAMPLE_MAX_LOGPROBS;
        out[i].n_top = (size_t)k;
        for (int j = 0; j < k; j++) {
            tops[(size_t)(first + i) * GLM_SAMPLE_MAX_LOGPROBS + j].token_id =
                (int32_t)lp[1 + 2 * j];
            tops[(size_t)(first + i) * GLM_SAMPLE_MAX_LOGPROBS + j].logprob = lp[2 + 2 * j];
        }
    }
    return out;
}

glm_status glm_request_chunk(glm_request *r, const glm_bytes *delta, uint8_t **bytes, size_t *len,
                             glm_error *err)
{
    int last = r->seq.n_generated - 1;
    glm_chunk c = {.id = r->job->id,
                   .index = r->chunk_index++,
                   .attempt = r->entry.deliveries,
                   .text = delta->len ? delta->data : "",
                   .text_bytes = delta->len, /* NUL bytes included: U+0000 is a token too */
                   .token_ids = r->seq.generated + last,
                   .n_tokens = 1};
    glm_top_logprob *tops = NULL;
    glm_token_logprobs *lps = NULL;
    if (r->logprobs) {
        tops = calloc((size_t)r->seq.max_new_tokens * GLM_SAMPLE_MAX_LOGPROBS, sizeof(*tops));
        lps = tops ? logprobs_view(r, last, 1, tops) : NULL;
        c.logprobs = lps;
        c.n_logprobs = lps ? 1 : 0;
    }
    glm_status st = glm_chunk_encode(&c, bytes, len, err);
    free(lps);
    free(tops);
    return st;
}

static glm_finish_reason finish_reason(glm_seq_finish f)
{
    switch (f) {
    case GLM_SEQ_FINISHED_STOP:
        return GLM_FINISH_STOP;
    case GLM_SEQ_FINISHED_STOP_STRING:
        return GLM_FINISH_STOP_STRING;
    case GLM_SEQ_FINISHED_ERROR:
    case GLM_SEQ_CANCELLED:
        return GLM_FINISH_ERROR;
    default:
        return GLM_FINISH_LENGTH;
    }
}

glm_status glm_request_result(glm_request *r, const glm_request_env *env, uint8_t **bytes,
                              size_t *len, glm_error *err)
{
    r->t_done = glm_now_ms();
    if (r->seq.state != GLM_JOB_FINISHED)
        return glm_result_encode_error(
            r->entry.job_id, r->error_code ? r->error_code : GLM_EC_INTERNAL, r->error_msg,
            env->server_id, r->entry.deliveries, bytes, len, err);
    double first = r->t_first_token ? r->t_first_token : r->t_done;
    double sched = r->t_scheduled ? r->t_scheduled : r->t_received;
    glm_result res = {
        .version = GLM4V_PROTOCOL_VERSION,
        .id = r->job->id,
        .text = r->text.data ? r->text.data : "",
        .text_bytes = r->text.len,
        .token_ids = r->seq.generated,
        .n_tokens = (size_t)r->seq.n_generated,
        .finish_reason = finish_reason(r->seq.finish),
        /* prompt positions processed: ids, each image's 3 placeholder ids replaced by its rows */
        .usage = {.prompt_tokens = (uint32_t)r->seq.layout.n_rows,
                  .image_tokens = (uint32_t)(r->seq.layout.n_images * env->image_rows),
                  .completion_tokens = (uint32_t)r->seq.n_generated},
        .timings = {.queue_ms = r->queue_ms + (sched - r->t_received),
                    .vision_ms = r->vision_ms,
                    .prefill_ms = first - sched,
                    .decode_ms = r->t_done - first,
                    .total_ms = r->queue_ms + (r->t_done - r->t_received)},
        .error_code = GLM_EC_OK,
        .error_message = "",
        .server_id = env->server_id,
        .attempts = r->entry.deliveries,
    };
    glm_top_logprob *tops = NULL;
    glm_token_logprobs *lps = NULL;
    if (r->logprobs && r->seq.n_generated > 0) {
        tops = calloc((size_t)r->seq.max_new_tokens * GLM_SAMPLE_MAX_LOGPROBS, sizeof(*tops));
        lps = tops ? logprobs_view(r, 0, r->seq.n_generated, tops) : NULL;
        res.logprobs = lps;
        res.n_logprobs = lps ? (size_t)r->seq.n_generated : 0;
    }
    glm_status st = glm_result_encode(&res, bytes, len, err);
    free(lps);
    free(tops);
    return st;
}
