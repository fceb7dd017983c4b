/* Chunk and Result bytes <-> glm_chunk / glm_result (declared in job_codec.h). */
#include "coordinator/queue/job_codec.h"

#include "proto/glm4v.pb-c.h"

#include <stdlib.h>
#include <string.h>

/* In job_codec.c. */
glm_status glm_pack_message(const ProtobufCMessage *m, uint8_t **bytes, size_t *len,
                            glm_error *err);

/* ---- logprobs, shared by Chunk and Result ------------------------------------------------------
 */

/* Protobuf view of n glm_token_logprobs; all of it lives in one allocation (free the returned
 * pointer array only). Returns NULL when n == 0 or on allocation failure (*failed tells which). */
static Glm4v__TokenLogprobs **logprobs_to_pb(const glm_token_logprobs *lp, size_t n, bool *failed)
{
    *failed = false;
    if (n == 0 || !lp) return NULL;
    size_t n_top = 0;
    for (size_t i = 0; i < n; i++)
        n_top += lp[i].n_top;
    size_t bytes = n * (sizeof(Glm4v__TokenLogprobs *) + sizeof(Glm4v__TokenLogprobs)) +
                   n_top * (sizeof(Glm4v__TopLogprob *) + sizeof(Glm4v__TopLogprob));
    Glm4v__TokenLogprobs **ptrs = calloc(1, bytes);
    if (!ptrs) {
        *failed = true;
        return NULL;
    }
    Glm4v__TokenLogprobs *tok = (Glm4v__TokenLogprobs *)(ptrs + n);
    Glm4v__TopLogprob **top_ptrs = (Glm4v__TopLogprob **)(tok + n);
    Glm4v__TopLogprob *top = (Glm4v__TopLogprob *)(top_ptrs + n_top);
    for (size_t i = 0; i < n; i++) {
        glm4v__token_logprobs__init(&tok[i]);
        tok[i].has_token_id = tok[i].has_logprob = 1;
        tok[i].token_id = lp[i].token_id;
        tok[i].logprob = lp[i].logprob;
        tok[i].n_top = lp[i].n_top;
        tok[i].top = top_ptrs;
        for (size_t k = 0; k < lp[i].n_top; k++) {
            glm4v__top_logprob__init(top);
            top->has_token_id = top->has_logprob = 1;
            top->token_id = lp[i].top[k].token_id;
            top->logprob = lp[i].top[k].logprob;
            *top_ptrs++ = top++;
        }
        ptrs[i] = &tok[i];
    }
    return ptrs;
}

/* glm view of decoded logprobs, one allocation. NULL when n == 0 or on allocation failure. */
static glm_token_logprobs *logprobs_from_pb(Glm4v__TokenLogprobs *const *pb, size_t n, bool *failed)
{
    *failed = false;
    if (n == 0) return NULL;
    size_t n_top = 0;
    for (size_t i = 0; i < n; i++)
        n_top += pb[i]->n_top;
    glm_token_logprobs *lp = calloc(1, n * sizeof *lp + n_top * sizeof(glm_top_logprob));
    if (!lp) {
        *failed = true;
        return NULL;
    }
    glm_top_logprob *top = (glm_top_logprob *)(lp + n);
    for (size_t i = 0; i < n; i++) {
        lp[i].token_id = pb[i]->token_id;
        lp[i].logprob = pb[i]->logprob;
        lp[i].top = top;
        lp[i].n_top = pb[i]->n_top;
        for (size_t k = 0; k < pb[i]->n_top; k++, top++) {
            top->token_id = pb[i]->top[k]->token_id;
            top->logprob = pb[i]->top[k]->logprob;
        }
    }
    return lp;
}

/* ---- text, shared by Chunk and Result ----------------------------------------------------------
 */

static size_t text_length(const char *text, size_t text_bytes)
{
    return !text ? 0 : text_bytes ? text_bytes : strlen(text);
}

size_t glm_chunk_text_bytes(const glm_chunk *chunk)
{
    return text_length(chunk->text, chunk->text_bytes);
}

size_t glm_result_text_bytes(const glm_result *result)
{
    return text_length(result->text, result->text_bytes);
}

/* The bytes field of a text of text_bytes bytes (strlen(text) when text_bytes is 0: a struct built
 * by hand from a C string); it points into text. */
static ProtobufCBinaryData text_to_pb(const char *text, size_t text_bytes)
{
    ProtobufCBinaryData b = {.len = text_length(text, text_bytes), .data = (uint8_t *)text};
    return b;
}

/* Copies a decoded text into dst (b.len + 1 bytes) and ends it with a NUL, so that it stays a C
 * string for callers that print it; its length is b.len, NULs inside included. */
static const char *text_from_pb(ProtobufCBinaryData b, char *dst)
{
    if (b.len) memcpy(dst, b.data, b.len);
    dst[b.len] = '\0';
    return dst;
}

/* ---- Chunk
 * --------------------------------------------------------------------------------------- */

glm_status glm_chunk_encode(const glm_chunk *chunk, uint8_t **bytes, size_t *len, glm_error *err)
{
    Glm4v__Chunk pb;
    glm4v__chunk__init(&pb);
    pb.id = (char *)(chunk->id ? chunk->id : "");
    pb.has_index = 1;
    pb.index = chunk->index;
    pb.has_attempt = chunk->attempt != 0;
    pb.attempt = chunk->attempt;
    pb.has_text = 1;
    pb.text = text_to_pb(chunk->text, chunk->text_bytes);
    if (chunk->job_fingerprint && chunk->job_fingerprint[0])
        pb.job_fingerprint = (char *)chunk->job_fingerprint;
    pb.n_token_ids = chunk->n_tokens;
    pb.token_ids = (int32_t *)chunk->token_ids;
    bool failed;
    pb.logprobs = logprobs_to_pb(chunk->logprobs, chunk->n_logprobs, &failed);
    pb.n_logprobs = pb.logprobs ? chunk->n_logprobs : 0;
    if (failed) return glm_fail(err, GLM_ERR_NOMEM, "encoding chunk of job %s", pb.id);
    glm_status st = glm_pack_message(&pb.base, bytes, len, err);
    free(pb.logprobs);
    return st;
}

glm_status glm_chunk_decode(const void *bytes, size_t len, glm_chunk **out, glm_error *err)
{
    *out = NULL;
    Glm4v__Chunk *pb = glm4v__chunk__unpack(NULL, len, bytes);
    if (!pb) return glm_fail(err, GLM_ERR_FORMAT, "%zu bytes do not parse as glm4v.Chunk", len);
    /* the text's copy follows the struct in its allocation */
    glm_chunk *c = calloc(1, sizeof *c + pb->text.len + 1);
    bool failed = false;
    const glm_token_logprobs *lp =
        c ? logprobs_from_pb(pb->logprobs, pb->n_logprobs, &failed) : NULL;
    if (!c || failed) {
        free(c);
        glm4v__chunk__free_unpacked(pb, NULL);
        return glm_fail(err, GLM_ERR_NOMEM, "decoding a chunk");
    }
    c->id = pb->id ? pb->id : "";
    c->index = pb->index;
    c->attempt = pb->attempt;
    c->text = text_from_pb(pb->text, (char *)(c + 1));
    c->text_bytes = pb->text.len;
    c->token_ids = pb->token_ids;
    c->n_tokens = pb->n_token_ids;
    c->logprobs = lp;
    c->n_logprobs = lp ? pb->n_logprobs : 0;
    c->job_fingerprint = pb->job_fingerprint ? pb->job_fingerprint : "";
    c->owner = pb;
    *out = c;
    return GLM_OK;
}

void glm_chunk_free(glm_chunk *chunk)
{
    if (!chunk) return;
    if (chunk->owner) glm4v__chunk__free_unpacked((Glm4v__Chunk *)chunk->owner, NULL);
    free((void *)chunk->logprobs);
    free(chunk);
}

/* ---- Result
 * -------------------------------------------------------------------------------------- */

glm_status glm_result_encode(const glm_result *r, uint8_t **bytes, size_t *len, glm_error *err)
{
    Glm4v__Result pb;
    glm4v__result__init(&pb);
    pb.has_version = 1;
    pb.version = r->version ? r->version : GLM4V_PROTOCOL_VERSION;
    pb.id = (char *)(r->id ? r->id : "");
    pb.has_text = 1;
    pb.text = text_to_pb(r->text, r->text_bytes);
    pb.n_token_ids = r->n_tokens;
    pb.token_ids = (int32_t *)r->token_ids;
    pb.has_finish_reason = 1;
    pb.finish_reason = (Glm4v__FinishReason)r->finish_reason;

    Glm4v__Usage usage;
    glm4v__usage__init(&usage);
    usage.has_prompt_tokens = usage.has_image_tokens = usage.has_completion_tokens = 1;
    usage.prompt_tokens = r->usage.prompt_tokens;
    usage.image_tokens = r->usage.image_tokens;
    usage.completion_tokens = r->usage.completion_tokens;
    pb.usage = &usage;

    Glm4v__Timings t;
    glm4v__timings__init(&t);
    t.has_queue_ms = t.has_vision_ms = t.has_prefill_ms = t.has_decode_ms = t.has_total_ms = 1;
    t.queue_ms = r->timings.queue_ms;
    t.vision_ms = r->timings.vision_ms;
    t.prefill_ms = r->timings.prefill_ms;
    t.decode_ms = r->timings.decode_ms;
    t.total_ms = r->timings.total_ms;
    pb.timings = &t;

    Glm4v__Error e;
    glm4v__error__init(&e);
    if (r->error_code != GLM_EC_OK) {
        e.has_code = 1;
        e.code = (Glm4v__ErrorCode)r->error_code;
        e.message = (char *)(r->error_message ? r->error_message : "");
        pb.error = &e;
    }
    pb.server_id = (char *)(r->server_id ? r->server_id : "");
    if (r->job_fingerprint && r->job_fingerprint[0])
        pb.job_fingerprint = (char *)r->job_fingerprint;
    pb.has_attempts = 1;
    pb.attempts = r->attempts;
    bool failed;
    pb.logprobs = logprobs_to_pb(r->logprobs, r->n_logprobs, &failed);
    pb.n_logprobs = pb.logprobs ? r->n_logprobs : 0;
    if (failed) return glm_fail(err, GLM_ERR_NOMEM, "encoding result of job %s", pb.id);
    glm_status st = glm_pack_message(&pb.base, bytes, len, err);
    free(pb.logprobs);
    return st;
}

glm_status glm_result_encode_error(const char *job_id, glm_error_code code, const char *message,
                                   const char *server_id, uint32_t attempts, uint8_t **bytes,
                                   size_t *len, glm_error *err)
{
    glm_result r;
    memset(&r, 0, sizeof r);
    r.id = job_id;
    r.text = "";
    r.finish_reason = GLM_FINISH_ERROR;
    r.error_code = code;
    r.error_message = message;
    r.server_id = server_id;
    r.attempts = attempts;
    return glm_result_encode(&r, bytes, len, err);
}

glm_status glm_result_decode(const void *bytes, size_t len, glm_result **out, glm_error *err)
{
    *out = NULL;
    Glm4v__Result *pb = glm4v__result__unpack(NULL, len, bytes);
    if (!pb) return glm_fail(err, GLM_ERR_FORMAT, "%zu bytes do not parse as glm4v.Result", len);
    /* the text's copy follows the struct in its allocation */
    glm_result *r = calloc(1, sizeof *r + pb->text.len + 1);
    bool failed = false;
    const glm_token_logprobs *lp =
        r ? logprobs_from_pb(pb->logprobs, pb->n_logprobs, &failed) : NULL;
    if (!r || failed) {
        free(r);
        glm4v__result__free_unpacked(pb, NULL);
        return glm_fail(err, GLM_ERR_NOMEM, "decoding a result");
    }
    r->version = pb->version;
    r->id = pb->id ? pb->id : "";
    r->text = text_from_pb(pb->text, (char *)(r + 1));
    r->text_bytes = pb->text.len;
    r->token_ids = pb->token_ids;
    r->n_tokens = pb->n_token_ids;
    r->finish_reason = (glm_finish_reason)pb->finish_reason;
    if (pb->usage) {
        r->usage.prompt_tokens = pb->usage->prompt_tokens;
        r->usage.image_tokens = pb->usage->image_tokens;
        r->usage.completion_tokens = pb->usage->completion_tokens;
    }
    if (pb->timings) {
        r->timings.queue_ms = pb->timings->queue_ms;
        r->timings.vision_ms = pb->timings->vision_ms;
        r->timings.prefill_ms = pb->timings->prefill_ms;
        r->timings.decode_ms = pb->timings->decode_ms;
        r->timings.total_ms = pb->timings->total_ms;
    }
    r->error_code = pb->error ? (glm_error_code)pb->error->code : GLM_EC_OK;
    r->error_message = pb->error && pb->error->message ? pb->error->message : "";
    r->server_id = pb->server_id ? pb->server_id : "";
    r->attempts = pb->attempts;
    r->logprobs = lp;
    r->n_logprobs = lp ? pb->n_logprobs : 0;
    r->job_fingerprint = pb->job_fingerprint ? pb->job_fingerprint : "";
    r->owner = pb;
    *out = r;
    return GLM_OK;
}

void glm_result_free(glm_result *result)
{
    if (!result) return;
    if (result->owner) glm4v__result__free_unpacked((Glm4v__Result *)result->owner, NULL);
    free((void *)result->logprobs);
    free(result);
}
