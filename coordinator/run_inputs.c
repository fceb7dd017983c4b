#include "coordinator/run_inputs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
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
        if (*p == ',') p++;
        else if (*p)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "--input-ids: expected ',' near '%.20s'", p);
    }
    if (in->n_ids == 0) return glm_fail(err, GLM_ERR_INVALID_ARG, "--input-ids is empty");
    return GLM_OK;
}

/* FILE[:TENSOR] holding [1, C, S, S] pixels of any float dtype. */
static glm_status load_pixels(const char *spec, const glm_model_config *cfg, glm_run_inputs *in,
                              glm_error *err)
{
    char path[4096];
    const char *name = "pixel_values";
    snprintf(path, sizeof(path), "%s", spec);
    char *colon = strrchr(path, ':');
    if (colon && colon != path) {
        *colon = '\0';
        name = spec + (colon - path) + 1;
    }
    if (!cfg->has_vision)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels given but the model has no vision");
    glm_safetensors *st = NULL;
    glm_status s = glm_safetensors_open(path, &st, err);
    if (s) return glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s", err->msg);
    const glm_st_tensor *t = glm_safetensors_find(st, name);
    const glm_vision_config *v = &cfg->vision;
    if (!t) {
        s = glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s has no tensor '%s'", path, name);
    } else if (t->ndim != 4 || t->shape[0] != 1 || t->shape[1] != v->in_channels ||
               t->shape[2] != v->image_size || t->shape[3] != v->image_size) {
        s = glm_fail(err, GLM_ERR_INVALID_ARG,
                     "--pixels: %s:%s has shape [%lld,%lld,%lld,%lld], the model needs "
                     "[1,%d,%d,%d]",
                     path, name, (long long)t->shape[0], (long long)t->shape[1],
                     (long long)t->shape[2], (long long)t->shape[3], v->in_channels,
                     v->image_size, v->image_size);
    } else {
        size_t n = (size_t)v->in_channels * v->image_size * v->image_size;
        in->pixels = malloc(n * sizeof(float));
        if (!in->pixels) s = glm_fail(err, GLM_ERR_NOMEM, "out of memory");
        else if (glm_convert(in->pixels, GLM_F32, t->data, t->dtype, n))
            s = glm_fail(err, GLM_ERR_INVALID_ARG, "--pixels: %s:%s is not a float tensor", path,
                         name);
    }
    glm_safetensors_close(st);
    return s;
}

glm_status glm_run_inputs_prepare(const glm_run_args *a, const glm_model_config *cfg,
                                  int image_rows, glm_run_inputs *in, glm_error *err)
{
    (void)image_rows;
    memset(in, 0, sizeof(*in));
    glm_status st = GLM_OK;
    if (a->input_ids) st = parse_ids(a->input_ids, in, err);
    else st = glm_fail(err, GLM_ERR_UNSUPPORTED, "--prompt is not available in this build yet");
    if (!st && a->pixels) st = load_pixels(a->pixels, cfg, in, err);
    return st;
}

void glm_run_inputs_free(glm_run_inputs *in)
{
    free(in->ids);
    free(in->pixels);
    memset(in, 0, sizeof(*in));
}

static const char *finish_name(glm_gen_finish f)
{
    return f == GLM_GEN_FINISH_STOP ? "stop" : "length";
}

void glm_run_print_result(const glm_run_args *a, const glm_run_inputs *in,
                          const glm_generate_result *res, FILE *out)
{
    if (!a->json) {
        for (int i = 0; i < res->n_ids; i++) fprintf(out, "%s%d", i ? " " : "", res->ids[i]);
        fputc('\n', out);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *ids = cJSON_AddArrayToObject(o, "generated_ids");
    for (int i = 0; i < res->n_ids; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(res->ids[i]));
    cJSON *prompt = cJSON_AddArrayToObject(o, "prompt_ids");
    for (int i = 0; i < in->n_ids; i++) cJSON_AddItemToArray(prompt, cJSON_CreateNumber(in->ids[i]));
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
