/* A conversation written as JSON, for the command-line clients (glm4v-submit --messages,
 * glm4v-run --messages):
 *
 *   [{"role": "system" | "user" | "assistant" | "observation",
 *     "content": "text" | [{"text": "..."}, {"image": K}, {"image": "photo.jpg"}, ...]}, ...]
 *
 * or an object holding that array under "messages" (the cases of golden-multi-image.json read
 * as they are). {"image": K} is the K-th image given beside the file (0-based: the K-th --image
 * of the command line, or of --pixels' images for glm4v-run); {"image": "path"} names a file
 * (glm4v-submit only). A message's images take their places in the prompt by GLM-4V's rule,
 * right after its role line, in the order they are listed; its text parts are joined in order.
 * Only user messages may carry images. */
#ifndef GLM4V_JOB_MESSAGES_H
#define GLM4V_JOB_MESSAGES_H

#include <stddef.h>

#include "common/status.h"
#include "coordinator/queue/job_codec.h"

/* Images the whole conversation may reference (the server's ceiling, GLM_SEQ_MAX_IMAGES). */
#define GLM_JSON_MAX_IMAGES 8

typedef struct glm_json_image {
    int index;        /* >= 0: the index-th image given beside the file; -1: path */
    const char *path; /* when index is -1 (points into the parsed tree) */
} glm_json_image;

typedef struct glm_json_message {
    glm_role role;
    char *text; /* the text parts joined, NUL-terminated (malloc'd) */
    glm_json_image images[GLM_JSON_MAX_IMAGES];
    size_t n_images;
} glm_json_message;

typedef struct glm_json_messages {
    glm_json_message *messages;
    size_t n_messages;
    size_t n_images; /* over all messages */
    int max_index;   /* the largest {"image": K} (-1 when none) */
    void *tree;      /* the cJSON tree the paths point into */
} glm_json_messages;

/* Parses text (len bytes). GLM_ERR_FORMAT with a message naming the message and part at fault;
 * GLM_ERR_LIMIT past GLM_JSON_MAX_IMAGES images. On failure out holds nothing. */
glm_status glm_json_messages_parse(const char *text, size_t len, glm_json_messages *out,
                                   glm_error *err);
/* Reads and parses a file. */
glm_status glm_json_messages_load(const char *path, glm_json_messages *out, glm_error *err);
void glm_json_messages_free(glm_json_messages *m);

#endif
