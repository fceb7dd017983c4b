#include "coordinator/run_inputs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "coordinator/text/chat_template.h"
#include "coordinator/image/image.h"
#include "coordinator/queue/job_messages.h"
#include "coordinator/queue/result_json.h"
#include "coordinator/serve/request.h"
#include "coordinator/text/tokenizer.h"
#include "worker/safetensors.h"

static glm_status parse_ids(const char *list, glm_run_inputs *in, glm_error *err)
{
    size_t cap = 16;
    in->ids = malloc(cap * sizeof(int32_t));
    if (!in->ids) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "--input-ids: bad id near '%.20s'", p);
        if ((size_t)in->n_ids == cap) {
            cap *= 2;
            int32_t *ids = realloc(in->ids, cap * sizeof(int32_t));
            if (!ids) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
            in->ids = ids;
        }
        in->ids[in->n_ids++] = (int32_t)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "--input-ids: expected ',' near '%.20s'", p);
    }
    if (in->n_ids == 0) return glm_fail(err, GLM_ERR_INVALID_ARG, "--input-ids is empty");
    return GLM_OK;
}

/* Room for n more images at the end of in->pixels; returns where they go, NULL when out of
 * memory. */
static float *append_images(const glm_model_config *cfg, glm_run_inputs *in, int n)
{
    const glm_vision_config *v = &cfg->vision;
    size_t floats = (size_t)v->in_channels * v->image_size * v->image_size;
    float *p = realloc(in->pixels, sizeof(float) * floats * (size_t)(in->n_images + n));
    if (!p) return NULL;
    in->pixels = p;
    p += floats * (size_t)in->n_images;
    in->n_images += n;
    return p;
}

/* Splits FILE[:TENSOR] (tensor default pixel_values) into path and name. */
static const char *split_spec(const char *spec, char *path, size_t cap)
{
    snprintf(path, cap, "%s", spec);
    char *colon = strrchr(path, ':');
    if (!colon || colon == path) return "pixel_values";
    *colon = '\0';
    return spec + (colon - path) + 1;
}

/* Opens FILE[:TENSOR] and checks it is [n, C, S, S] for this model (n >= 1). */
static glm_status open_pixels(const char *spec, const glm_model_config *cfg, glm_safetensors **st,
                              const glm_st_tensor **t, glm_error *err)
{
    char path[4096];
    const char *name = split_spec(spec, path, sizeof(path));
    if (!cfg->has_vision)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels given but the model has no vision");
    if (glm_safetensors_open(path, st, err))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s", err->msg);
    *t = glm_safetensors_find(*st, name);
    const glm_vision_config *v = &cfg->vision;
    glm_status s = GLM_OK;
    if (!*t)
        s = glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s has no tensor '%s'", path, name);
    else if ((*t)->ndim != 4 || (*t)->shape[0] < 1 || (*t)->shape[1] != v->in_channels ||
             (*t)->shape[2] != v->image_size || (*t)->shape[3] != v->image_size)
        s = glm_fail(err, GLM_ERR_INVALID_ARG,
                     "--pixels: %s:%s has shape [%lld,%lld,%lld,%lld], the model needs "
                     "[n,%d,%d,%d] (n images)",
                     path, name, (long long)(*t)->shape[0], (long long)(*t)->shape[1],
                     (long long)(*t)->shape[2], (long long)(*t)->shape[3], v->in_channels,
                     v->image_size, v->image_size);
    if (s) {
        glm_safetensors_close(*st);
        *st = NULL;
    }
    return s;
}

/* FILE[:TENSOR] holding [n, C, S, S] pixels of any float dtype: n more images. */
static glm_status load_pixels(const char *spec, const glm_model_config *cfg, glm_run_inputs *in,
                              glm_error *err)
{
    glm_safetensors *st = NULL;
    const glm_st_tensor *t = NULL;
    glm_status s = open_pixels(spec, cfg, &st, &t, err);
    if (s) return s;
    const glm_vision_config *v = &cfg->vision;
    size_t n = (size_t)t->shape[0] * v->in_channels * v->image_size * v->image_size;
    float *dst = append_images(cfg, in, (int)t->shape[0]);
    if (!dst)
        s = glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    else if (glm_convert(dst, GLM_F32, t->data, t->dtype, n))
        s = glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s is not a float tensor", spec);
    glm_safetensors_close(st);
    return s;
}

glm_status glm_run_count_images(const glm_run_args *a, int *n_images, glm_error *err)
{
    *n_images = a->n_images;
    for (int i = 0; i < a->n_pixels; i++) {
        char path[4096];
        const char *name = split_spec(a->pixels[i], path, sizeof(path));
        glm_safetensors *st = NULL;
        if (glm_safetensors_open(path, &st, err))
            return glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s", err->msg);
        const glm_st_tensor *t = glm_safetensors_find(st, name);
        long long n = t && t->ndim == 4 ? (long long)t->shape[0] : 1;
        glm_safetensors_close(st);
        if (n < 1 || n > GLM_RUN_MAX_IMAGES - *n_images)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "more than %d images", GLM_RUN_MAX_IMAGES);
        *n_images += (int)n;
    }
    if (*n_images > GLM_RUN_MAX_IMAGES)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "more than %d images", GLM_RUN_MAX_IMAGES);
    return GLM_OK;
}

/* --image FILE: decode, convert, resize, normalize exactly as the server does. */
static glm_status load_image(const char *path, const glm_model_config *cfg, glm_run_inputs *in,
                             glm_error *err)
{
    if (!cfg->has_vision)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--image given but the model has no vision");
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_INVALID_ARG, "--image: cannot open %s", path);
    glm_image_limits limits = glm_image_limits_default();
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || (uint64_t)n > limits.max_file_bytes) {
        fclose(f);
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--image: %s is larger than %llu bytes", path,
                        (unsigned long long)limits.max_file_bytes);
    }
    uint8_t *bytes = malloc((size_t)n + 1);
    size_t got = bytes ? fread(bytes, 1, (size_t)n, f) : 0;
    fclose(f);
    const glm_vision_config *v = &cfg->vision;
    glm_status st = GLM_OK;
    float *dst = NULL;
    if (!bytes || got != (size_t)n)
        st = glm_fail(err, GLM_ERR_IO, "--image: cannot read %s", path);
    else if (!(dst = append_images(cfg, in, 1)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    else if ((st = glm_image_preprocess(bytes, (size_t)n, v->image_size, &limits, dst, err)))
        glm_error_prefix(err, "--image %s (image %d)", path, in->n_images);
    free(bytes);
    return st ? (st == GLM_ERR_NOMEM || st == GLM_ERR_IO ? st : GLM_ERR_INVALID_ARG) : GLM_OK;
}

/* --prompt / --system / --image through the chat template. */
static glm_status encode_prompt(const glm_run_args *a, glm_run_inputs *in, glm_error *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.model", a->model_dir);
    glm_tokenizer *tok = NULL;
    glm_status st = glm_tokenizer_load(path, &tok, err);
    if (st) return st;
    in->tokenizer = tok;
    glm_chat_message msgs[2];
    size_t n = 0;
    if (a->system)
        msgs[n++] = (glm_chat_message){
            .role = GLM_CHAT_SYSTEM, .content = a->system, .content_len = strlen(a->system)};
    msgs[n++] = (glm_chat_message){.role = GLM_CHAT_USER,
                                   .content = a->prompt,
                                   .content_len = strlen(a->prompt),
                                   .has_image = a->n_images > 0,
                                   .n_images = (size_t)a->n_images};
    glm_chat_prompt prompt = {0};
    st = glm_chat_template_apply(tok, msgs, n, true, &prompt, err);
    if (st) return st;
    in->ids = prompt.ids.ids; /* ownership moves to in */
    in->n_ids = (int)prompt.ids.n;
    return GLM_OK;
}

/* --messages FILE through the chat template; its {"image": K} must use each given image exactly
 * once (they are put in prompt order afterwards, order_images). */
static glm_status encode_messages(const glm_run_args *a, int n_given, glm_json_messages *jm,
                                  glm_run_inputs *in, glm_error *err)
{
    glm_status st = glm_json_messages_load(a->messages, jm, err);
    if (st) return st == GLM_ERR_NOMEM ? st : GLM_ERR_INVALID_ARG;
    bool used[GLM_JSON_MAX_IMAGES] = {0};
    for (size_t i = 0; i < jm->n_messages; i++)
        for (size_t k = 0; k < jm->messages[i].n_images; k++) {
            int idx = jm->messages[i].images[k].index;
            if (idx < 0 || idx >= n_given || used[idx])
                return glm_fail(err, GLM_ERR_INVALID_ARG,
                                "--messages: image references must be {\"image\": K}, each of the "
                                "%d given image(s) once (message %zu)",
                                n_given, i);
            used[idx] = true;
        }
    if ((int)jm->n_images != n_given)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--messages uses %zu image(s), %d were given",
                        jm->n_images, n_given);
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.model", a->model_dir);
    glm_tokenizer *tok = NULL;
    if ((st = glm_tokenizer_load(path, &tok, err))) return st;
    in->tokenizer = tok;
    glm_chat_message *msgs = calloc(jm->n_messages, sizeof(*msgs));
    if (!msgs) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < jm->n_messages; i++)
        msgs[i] = (glm_chat_message){.role = glm_chat_role_of(jm->messages[i].role),
                                     .content = jm->messages[i].text,
                                     .content_len = strlen(jm->messages[i].text),
                                     .has_image = jm->messages[i].n_images > 0,
                                     .n_images = jm->messages[i].n_images};
    glm_chat_prompt prompt = {0};
    st = glm_chat_template_apply(tok, msgs, jm->n_messages, true, &prompt, err);
    free(msgs);
    if (st) return st == GLM_ERR_NOMEM ? st : GLM_ERR_INVALID_ARG;
    in->ids = prompt.ids.ids; /* ownership moves to in */
    in->n_ids = (int)prompt.ids.n;
    return GLM_OK;
}

/* The given images (flag order) -> prompt order, as the messages refer to them. */
static glm_status order_images(const glm_json_messages *jm, const glm_model_config *cfg,
                               glm_run_inputs *in, glm_error *err)
{
    if (in->n_images == 0) return GLM_OK;
    const glm_vision_config *v = &cfg->vision;
    size_t floats = (size_t)v->in_channels * v->image_size * v->image_size;
    float *ordered = malloc(sizeof(float) * floats * (size_t)in->n_images);
    if (!ordered) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < jm->n_messages; i++)
        for (size_t k = 0; k < jm->messages[i].n_images; k++, at++)
            memcpy(ordered + at * floats,
                   in->pixels + (size_t)jm->messages[i].images[k].index * floats,
                   sizeof(float) * floats);
    free(in->pixels);
    in->pixels = ordered;
    return GLM_OK;
}

glm_status glm_run_inputs_prepare(const glm_run_args *a, const glm_model_config *cfg,
                                  int image_rows, glm_run_inputs *in, glm_error *err)
{
    (void)image_rows;
    memset(in, 0, sizeof(*in));
    glm_json_messages jm = {.max_index = -1};
    int n_given = 0;
    glm_status st = GLM_OK;
    if (a->input_ids)
        st = parse_ids(a->input_ids, in, err);
    else if (a->messages && !(st = glm_run_count_images(a, &n_given, err)))
        st = encode_messages(a, n_given, &jm, in, err);
    else if (!a->messages)
        st = encode_prompt(a, in, err);
    for (int i = 0; !st && i < a->n_pixels; i++)
        st = load_pixels(a->pixels[i], cfg, in, err);
    for (int i = 0; !st && i < a->n_images; i++)
        st = load_image(a->images[i], cfg, in, err);
    if (!st && a->messages) st = order_images(&jm, cfg, in, err);
    glm_json_messages_free(&jm);
    if (!st && a->dump_pixels && in->pixels) {
        const glm_vision_config *v = &cfg->vision;
        glm_st_write_tensor t = {
            .name = "pixel_values",
            .dtype = GLM_F32,
            .ndim = 4,
            .shape = {in->n_images, v->in_channels, v->image_size, v->image_size},
            .data = in->pixels};
        st = glm_safetensors_write(a->dump_pixels, &t, 1, err);
    } else if (!st && a->dump_pixels) {
        st = glm_fail(err, GLM_ERR_INVALID_ARG, "--dump-pixels needs --image or --pixels");
    }
    return st;
}

void glm_run_inputs_free(glm_run_inputs *in)
{
    glm_tokenizer_destroy(in->tokenizer);
    free(in->ids);
    free(in->pixels);
    memset(in, 0, sizeof(*in));
}

static const char *finish_name(glm_seq_finish f)
{
    return f == GLM_SEQ_FINISHED_STOP ? "stop" : "length";
}

void glm_run_print_result(const glm_run_args *a, const glm_run_inputs *in,
                          const glm_run_once_result *res, FILE *out)
{
    /* the answer's text, when a tokenizer is at hand; a final eos is not text */
    glm_bytes text = {0};
    if (in->tokenizer) {
        int n = res->n_ids;
        if (res->finish == GLM_SEQ_FINISHED_STOP && n > 0) n--;
        glm_error err = {0};
        /* invalid UTF-8 (a random model's bytes, a cut character) becomes U+FFFD, so the JSON
         * output is always valid UTF-8 */
        glm_bytes raw = {0};
        if (glm_tokenizer_decode(in->tokenizer, res->ids, (size_t)n, &raw, &err) == GLM_OK &&
            glm_utf8_sanitize(raw.data ? raw.data : "", raw.len, &text, &err) != GLM_OK)
            text.len = 0;
        glm_bytes_free(&raw);
    }
    if (!a->json) {
        if (in->tokenizer) {
            fwrite(text.data ? text.data : "", 1, text.len, out);
            fputc('\n', out);
        } else {
            for (int i = 0; i < res->n_ids; i++)
                fprintf(out, "%s%d", i ? " " : "", res->ids[i]);
            fputc('\n', out);
        }
        glm_bytes_free(&text);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    if (in->tokenizer) /* every byte: a NUL token is written \u0000 (cJSON strings end at it) */
        cJSON_AddItemToObject(o, "text", glm_json_bytes_item(text.data ? text.data : "", text.len));
    glm_bytes_free(&text);
    cJSON *ids = cJSON_AddArrayToObject(o, "generated_ids");
    for (int i = 0; i < res->n_ids; i++)
        cJSON_AddItemToArray(ids, cJSON_CreateNumber(res->ids[i]));
    cJSON *prompt = cJSON_AddArrayToObject(o, "prompt_ids");
    for (int i = 0; i < in->n_ids; i++)
        cJSON_AddItemToArray(prompt, cJSON_CreateNumber(in->ids[i]));
    cJSON_AddStringToObject(o, "finish_reason", finish_name(res->finish));
    cJSON_AddNumberToObject(o, "spliced_length", res->spliced_length);
    cJSON_AddNumberToObject(o, "images", res->n_images);
    cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
    cJSON_AddNumberToObject(t, "vision", res->vision_ms);
    cJSON_AddNumberToObject(t, "prefill", res->prefill_ms);
    cJSON_AddNumberToObject(t, "decode", res->decode_ms);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}
