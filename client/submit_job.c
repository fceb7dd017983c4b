/* glm4v-submit's conversation from its flags (see submit_job.h). */
#include "client/submit_job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Image files are sent as they are; the server refuses what it cannot decode or what is over its
 * limit, so this bound only keeps a wrong path (a disk image) from being read into memory. */
#define MAX_IMAGE_FILE_BYTES (256u << 20)

static glm_status read_file(const char *path, glm_image_part *out, glm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot read image %s", path);
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    uint8_t *data =
        size > 0 && (unsigned long)size <= MAX_IMAGE_FILE_BYTES ? malloc((size_t)size) : NULL;
    glm_status st = GLM_OK;
    if (!data)
        st = glm_fail(err, GLM_ERR_IO, "image %s is empty, unreadable or over %u MiB", path,
                      MAX_IMAGE_FILE_BYTES >> 20);
    else if (fseek(f, 0, SEEK_SET) != 0 || fread(data, 1, (size_t)size, f) != (size_t)size)
        st = glm_fail(err, GLM_ERR_IO, "cannot read image %s", path);
    fclose(f);
    if (st) {
        free(data);
        return st;
    }
    *out = (glm_image_part){.data = data, .bytes = (size_t)size, .format = ""};
    return GLM_OK;
}

/* Gives message m the n images starting at parts[first]: the first as its image, the rest as its
 * more_images. */
static void attach(glm_message *m, const glm_image_part *parts, size_t first, size_t n)
{
    if (n == 0) return;
    m->image = parts[first].data;
    m->image_bytes = parts[first].bytes;
    m->image_format = "";
    m->more_images = n > 1 ? &parts[first + 1] : NULL;
    m->n_more_images = n - 1;
}

static glm_status from_prompt(const char *system, const char *prompt, const char *const *images,
                              size_t n_images, submit_conversation *c, glm_error *err)
{
    c->messages = calloc(2, sizeof(*c->messages));
    c->parts = calloc(n_images + 1, sizeof(*c->parts));
    if (!c->messages || !c->parts) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    for (; c->n_parts < n_images; c->n_parts++) {
        glm_status st = read_file(images[c->n_parts], &c->parts[c->n_parts], err);
        if (st) return st;
    }
    if (system)
        c->messages[c->n_messages++] = (glm_message){.role = GLM_ROLE_SYSTEM, .content = system};
    glm_message *user = &c->messages[c->n_messages++];
    *user = (glm_message){.role = GLM_ROLE_USER, .content = prompt, .image_format = ""};
    attach(user, c->parts, 0, n_images);
    return GLM_OK;
}

static glm_status from_file(const char *path, const char *const *images, size_t n_images,
                            submit_conversation *c, glm_error *err)
{
    glm_status st = glm_json_messages_load(path, &c->json, err);
    if (st) return st;
    const glm_json_messages *j = &c->json;
    if (j->max_index >= (int)n_images)
        return glm_fail(err, GLM_ERR_INVALID_ARG,
                        "%s refers to image %d, but %zu --image file(s) were given", path,
                        j->max_index, n_images);
    c->messages = calloc(j->n_messages, sizeof(*c->messages));
    c->parts = calloc(j->n_images + 1, sizeof(*c->parts));
    if (!c->messages || !c->parts) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    bool used[GLM_JSON_MAX_IMAGES + 1] = {0};
    for (size_t i = 0; i < j->n_messages; i++) {
        const glm_json_message *jm = &j->messages[i];
        size_t first = c->n_parts;
        for (size_t k = 0; k < jm->n_images; k++, c->n_parts++) {
            const glm_json_image *im = &jm->images[k];
            if (im->index >= 0 && im->index <= GLM_JSON_MAX_IMAGES) used[im->index] = true;
            st = read_file(im->index >= 0 ? images[im->index] : im->path, &c->parts[c->n_parts],
                           err);
            if (st) return st;
        }
        c->messages[i] = (glm_message){.role = jm->role, .content = jm->text, .image_format = ""};
        attach(&c->messages[i], c->parts, first, jm->n_images);
    }
    c->n_messages = j->n_messages;
    for (size_t k = 0; k < n_images; k++)
        if (k > GLM_JSON_MAX_IMAGES || !used[k])
            return glm_fail(err, GLM_ERR_INVALID_ARG,
                            "--image %s (image %zu) is not used by %s (refer to it as "
                            "{\"image\": %zu})",
                            images[k], k, path, k);
    return GLM_OK;
}

glm_status submit_conversation_build(const char *system, const char *prompt,
                                     const char *messages_path, const char *const *images,
                                     size_t n_images, submit_conversation *out, glm_error *err)
{
    memset(out, 0, sizeof(*out));
    out->json.max_index = -1;
    glm_status st = messages_path ? from_file(messages_path, images, n_images, out, err)
                                  : from_prompt(system, prompt, images, n_images, out, err);
    if (st) submit_conversation_free(out);
    return st;
}

void submit_conversation_free(submit_conversation *c)
{
    for (size_t i = 0; c->parts && i < c->n_parts; i++)
        free((void *)c->parts[i].data);
    free(c->parts);
    free(c->messages);
    glm_json_messages_free(&c->json);
    memset(c, 0, sizeof(*c));
}
