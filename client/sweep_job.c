/* Job building for glm4v-sweep (see sweep_job.h). */
#include "client/sweep_job.h"

#include "coordinator/queue/result_json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

glm_sampling sweep_job_sampling(const glm_sampling *defaults, uint64_t sweep_seed,
                                const sweep_line *line)
{
    glm_sampling s = *defaults;
    const sweep_overrides *o = &line->over;
    if (o->has_max_new_tokens) s.max_new_tokens = o->max_new_tokens;
    if (o->has_temperature) s.temperature = o->temperature;
    if (o->has_top_p) s.top_p = o->top_p;
    if (o->has_top_k) s.top_k = o->top_k;
    if (o->n_stop) {
        s.stop = o->stop;
        s.n_stop = o->n_stop;
    }
    s.has_seed = true;
    /* 63 bits, so the seed can be handed to glm4v-submit --seed to reproduce one row */
    s.seed = o->has_seed ? o->seed : (sweep_fnv1a64(line->id) ^ sweep_seed) & SWEEP_SEED_MASK;
    return s;
}

glm_status sweep_job_encode(const sweep_line *line, const char *job_id,
                            const glm_sampling *sampling, const glm_image_part *images,
                            size_t n_images, uint8_t **bytes, size_t *len, glm_error *err)
{
    glm_message msgs[SWEEP_MAX_MESSAGES];
    for (size_t i = 0; i < line->n_messages; i++)
        msgs[i] = (glm_message){.role = line->roles[i], .content = line->contents[i]};
    /* images[k] (read from line->images[k]) goes to message line->image_message[k]; a message's
     * images are consecutive in the line's order: the first is its image, the rest more_images */
    for (size_t k = 0; k < n_images && k < line->n_images; k++) {
        glm_message *m = &msgs[line->image_message[k]];
        if (!m->image) {
            m->image = images[k].data;
            m->image_bytes = images[k].bytes;
            m->image_format = "";
            m->more_images = &images[k + 1];
        } else {
            m->n_more_images++;
        }
    }
    glm_job job = {.version = GLM4V_PROTOCOL_VERSION,
                   .id = job_id,
                   .messages = msgs,
                   .n_messages = line->n_messages,
                   .sampling = *sampling};
    return glm_job_encode(&job, bytes, len, err);
}

glm_status sweep_job_read_image(const char *path, size_t max_bytes, uint8_t **data, size_t *len,
                                glm_error *err)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot open image %s: %s", path, strerror(errno));
    glm_status st = GLM_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size <= 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = glm_fail(err, GLM_ERR_IO, "image %s is empty or not a regular file", path);
    } else if ((size_t)size > max_bytes) {
        st = glm_fail(err, GLM_ERR_LIMIT, "image %s has %ld bytes, over the limit of %zu", path,
                      size, max_bytes);
    } else if (!(*data = malloc((size_t)size))) {
        st = glm_fail(err, GLM_ERR_NOMEM, "image %s", path);
    } else if (fread(*data, 1, (size_t)size, f) != (size_t)size) {
        st = glm_fail(err, GLM_ERR_IO, "cannot read image %s", path);
        free(*data);
        *data = NULL;
    } else {
        *len = (size_t)size;
    }
    fclose(f);
    return st;
}

char *sweep_job_error_json(const char *id, glm_error_code code, const char *message)
{
    glm_result r = {.version = GLM4V_PROTOCOL_VERSION,
                    .id = id,
                    .text = "",
                    .finish_reason = GLM_FINISH_ERROR,
                    .error_code = code,
                    .error_message = message,
                    .server_id = "glm4v-sweep"};
    return glm_result_to_json(&r);
}
