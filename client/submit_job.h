/* glm4v-submit's conversation: the flags (--system, --prompt, --image ..., or --messages FILE
 * with --image ...) -> the messages of one Job, with every image's bytes read. */
#ifndef GLM4V_SUBMIT_JOB_H
#define GLM4V_SUBMIT_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_messages.h"

typedef struct submit_conversation {
    glm_message *messages; /* what glm_job.messages points to */
    size_t n_messages;
    glm_image_part *parts; /* the messages' images, in prompt order (more_images point here) */
    size_t n_parts;
    glm_json_messages json; /* --messages: the parsed file the texts point into */
} submit_conversation;

/* Without messages_path: an optional system message, then one user message with prompt and
 * every image (in order). With it: the file's messages, {"image": K} naming images[K] and
 * {"image": "path"} a file; every --image must be used. GLM_ERR_IO / GLM_ERR_FORMAT /
 * GLM_ERR_INVALID_ARG with a message; out holds nothing then. */
glm_status submit_conversation_build(const char *system, const char *prompt,
                                     const char *messages_path, const char *const *images,
                                     size_t n_images, submit_conversation *out, glm_error *err);
void submit_conversation_free(submit_conversation *c);

#endif
