/* JSON conversations for the command-line clients (see job_messages.h for the format). */
#include "coordinator/queue/job_messages.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ROLE_NAMES[] = {"system", "user", "assistant", "observation"};
static const glm_role ROLES[] = {GLM_ROLE_SYSTEM, GLM_ROLE_USER, GLM_ROLE_ASSISTANT,
                                 GLM_ROLE_OBSERVATION};

static glm_status parse_role(const cJSON *role, size_t i, glm_role *out, glm_error *err)
{
    for (size_t k = 0; cJSON_IsString(role) && k < sizeof(ROLES) / sizeof(ROLES[0]); k++)
        if (strcmp(role->valuestring, ROLE_NAMES[k]) == 0) {
            *out = ROLES[k];
            return GLM_OK;
        }
    return glm_fail(err, GLM_ERR_FORMAT,
                    "message %zu: \"role\" must be system, user, assistant or observation", i);
}

/* Appends s to *text (malloc'd, NUL-terminated). */
static glm_status append_text(char **text, const char *s, glm_error *err)
{
    size_t have = *text ? strlen(*text) : 0, add = strlen(s);
    char *t = realloc(*text, have + add + 1);
    if (!t) return glm_fail(err, GLM_ERR_NOMEM, "out of memory for message text");
    memcpy(t + have, s, add + 1);
    *text = t;
    return GLM_OK;
}

static glm_status parse_image(const cJSON *v, size_t i, glm_json_messages *all, glm_json_message *m,
                              glm_error *err)
{
    if (all->n_images == GLM_JSON_MAX_IMAGES)
        return glm_fail(err, GLM_ERR_LIMIT, "message %zu: more than %d images in the conversation",
                        i, GLM_JSON_MAX_IMAGES);
    glm_json_image im = {.index = -1};
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1024 &&
        v->valuedouble == (double)(int)v->valuedouble)
        im.index = (int)v->valuedouble;
    else if (cJSON_IsString(v) && v->valuestring[0])
        im.path = v->valuestring;
    else
        return glm_fail(err, GLM_ERR_FORMAT,
                        "message %zu: \"image\" must be an index (0, 1, ...) or a file path", i);
    if (im.index > all->max_index) all->max_index = im.index;
    m->images[m->n_images++] = im;
    all->n_images++;
    return GLM_OK;
}

static glm_status parse_message(const cJSON *o, size_t i, glm_json_messages *all, glm_error *err)
{
    glm_json_message *m = &all->messages[i];
    if (!cJSON_IsObject(o)) return glm_fail(err, GLM_ERR_FORMAT, "message %zu is not an object", i);
    glm_status st = parse_role(cJSON_GetObjectItemCaseSensitive(o, "role"), i, &m->role, err);
    if (st) return st;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (cJSON_IsString(content)) return append_text(&m->text, content->valuestring, err);
    if (!cJSON_IsArray(content))
        return glm_fail(err, GLM_ERR_FORMAT,
                        "message %zu: \"content\" must be a string or a list of parts", i);
    size_t k = 0;
    for (const cJSON *part = content->child; part; part = part->next, k++) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        const cJSON *image = cJSON_GetObjectItemCaseSensitive(part, "image");
        if (cJSON_IsString(text) && !image)
            st = append_text(&m->text, text->valuestring, err);
        else if (image && !text)
            st = parse_image(image, i, all, m, err);
        else
            st = glm_fail(err, GLM_ERR_FORMAT,
                          "message %zu part %zu: expected {\"text\": \"...\"} or {\"image\": ...}",
                          i, k);
        if (st) return st;
    }
    if (m->n_images > 0 && m->role != GLM_ROLE_USER)
        return glm_fail(err, GLM_ERR_FORMAT, "message %zu: only user messages carry images", i);
    return m->text ? GLM_OK : append_text(&m->text, "", err);
}

glm_status glm_json_messages_parse(const char *text, size_t len, glm_json_messages *out,
                                   glm_error *err)
{
    memset(out, 0, sizeof(*out));
    out->max_index = -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return glm_fail(err, GLM_ERR_FORMAT, "messages: not valid JSON");
    out->tree = root;
    const cJSON *list =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "messages") : root;
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    glm_status st = GLM_OK;
    if (n < 1)
        st = glm_fail(err, GLM_ERR_FORMAT,
                      "messages: expected a non-empty list of messages (or {\"messages\": [...]})");
    else if (!(out->messages = calloc((size_t)n, sizeof(*out->messages))))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of memory for %d messages", n);
    else
        out->n_messages = (size_t)n;
    size_t i = 0;
    for (const cJSON *o = st ? NULL : list->child; o && !st; o = o->next, i++)
        st = parse_message(o, i, out, err);
    if (st) glm_json_messages_free(out);
    return st;
}

glm_status glm_json_messages_load(const char *path, glm_json_messages *out, glm_error *err)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot open messages file %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    glm_status st = GLM_OK;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            char *b = cap <= (64u << 20) ? realloc(buf, cap) : NULL;
            if (!b) {
                st = glm_fail(err, GLM_ERR_LIMIT, "messages file %s: too large", path);
                break;
            }
            buf = b;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (!st && ferror(f)) st = glm_fail(err, GLM_ERR_IO, "cannot read messages file %s", path);
    fclose(f);
    if (!st && (st = glm_json_messages_parse(buf, len, out, err)))
        glm_error_prefix(err, "%s", path);
    free(buf);
    return st;
}

void glm_json_messages_free(glm_json_messages *m)
{
    for (size_t i = 0; m->messages && i < m->n_messages; i++)
        free(m->messages[i].text);
    free(m->messages);
    cJSON_Delete((cJSON *)m->tree);
    memset(m, 0, sizeof(*m));
    m->max_index = -1;
}
