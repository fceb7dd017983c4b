/* GLM-4V chat prompt: messages -> token ids, as THUDM/glm-4v-9b's tokenizer builds them.
 *
 *   [gMASK] <sop>  then per message  <|role|> encode("\n") [boi eot eoi] encode(content)
 *   and, with add_generation_prompt, a final <|assistant|>.
 *
 * "\n" and the content are encoded separately (the reference's build_single_message encodes
 * metadata + "\n" and the message apart), so content that starts with a newline does not merge
 * with it. The three image ids <|begin_of_image|> <|endoftext|> <|end_of_image|> sit between the
 * newline and the content; the caller replaces them with the vision embeddings, starting at the
 * boi index this returns. A message with empty content and no image is left out entirely, as the
 * reference does. Content is ordinary text: "<|user|>" typed in it is not a special token.
 *
 * Several images (an extension: the original model was trained with one image per conversation)
 * follow the one-image rule for each image in turn (../shared/testdata/README.md): a user message
 * with k images gets k placeholders one after the other between its newline and its text, and
 * any user message of the conversation may carry images. */
#ifndef GLM4V_CHAT_TEMPLATE_H
#define GLM4V_CHAT_TEMPLATE_H

#include "coordinator/text/tokenizer.h"

typedef enum glm_chat_role {
    GLM_CHAT_SYSTEM,
    GLM_CHAT_USER,
    GLM_CHAT_ASSISTANT,
    GLM_CHAT_OBSERVATION,
} glm_chat_role;

typedef struct glm_chat_message {
    glm_chat_role role;
    const char *content; /* UTF-8 (invalid bytes become U+FFFD), content_len bytes */
    size_t content_len;
    bool has_image; /* user messages only: the message carries image(s) */
    /* how many images it carries when has_image is set (0 means 1, as before several images
     * existed); they all sit right after the role's newline, in order */
    size_t n_images;
} glm_chat_message;

#define GLM_CHAT_MAX_IMAGES 8

typedef struct glm_chat_prompt {
    glm_token_ids ids;
    size_t n_images;
    size_t boi_index[GLM_CHAT_MAX_IMAGES]; /* index in ids of each image's <|begin_of_image|> */
} glm_chat_prompt;

/* "system", "user", "assistant", "observation" <-> role. */
glm_status glm_chat_role_from_name(const char *name, glm_chat_role *role, glm_error *err);
const char *glm_chat_role_name(glm_chat_role role);

/* Fills prompt (zero-initialize it first, free with glm_chat_prompt_free). Fails with
 * GLM_ERR_INVALID_ARG for an unknown role or an image outside a user message, and GLM_ERR_LIMIT
 * past GLM_CHAT_MAX_IMAGES images; on failure prompt holds nothing. */
glm_status glm_chat_template_apply(const glm_tokenizer *tok, const glm_chat_message *messages,
                                   size_t n_messages, bool add_generation_prompt,
                                   glm_chat_prompt *prompt, glm_error *err);
void glm_chat_prompt_free(glm_chat_prompt *prompt);

#endif
