/* GLM-4V chat prompt construction (see chat_template.h for the format and its reference). */
#include "coordinator/text/chat_template.h"

#include <string.h>

static const char *const role_names[] = {"system", "user", "assistant", "observation"};
static const char *const role_tokens[] = {"<|system|>", "<|user|>", "<|assistant|>",
                                          "<|observation|>"};
#define N_ROLES (sizeof role_names / sizeof role_names[0])

glm_status glm_chat_role_from_name(const char *name, glm_chat_role *role, glm_error *err)
{
    for (size_t i = 0; i < N_ROLES; i++) {
        if (strcmp(name, role_names[i]) == 0) {
            *role = (glm_chat_role)i;
            return GLM_OK;
        }
    }
    return glm_fail(err, GLM_ERR_INVALID_ARG,
                    "unknown chat role '%s' (system, user, assistant, observation)", name);
}

const char *glm_chat_role_name(glm_chat_role role)
{
    return (unsigned)role < N_ROLES ? role_names[role] : NULL;
}

static glm_status push_special(const glm_tokenizer *tok, const char *name, glm_token_ids *ids,
                               glm_error *err)
{
    int32_t id = glm_tokenizer_special_id(tok, name);
    if (id < 0) return glm_fail(err, GLM_ERR_MISSING, "tokenizer has no %s", name);
    return glm_token_ids_push(ids, id, err);
}

static glm_status append_message(const glm_tokenizer *tok, const glm_chat_message *msg,
                                 size_t index, glm_chat_prompt *prompt, glm_error *err)
{
    if ((unsigned)msg->role >= N_ROLES)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "message %zu: unknown role %d", index,
                        (int)msg->role);
    if (msg->has_image && msg->role != GLM_CHAT_USER)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "message %zu: only user messages carry images",
                        index);
    if (msg->content_len == 0 && !msg->has_image) return GLM_OK;
    size_t n_images = !msg->has_image ? 0 : msg->n_images > 0 ? msg->n_images : 1;
    if (n_images > GLM_CHAT_MAX_IMAGES - prompt->n_images)
        return glm_fail(err, GLM_ERR_LIMIT, "message %zu: more than %d images", index,
                        GLM_CHAT_MAX_IMAGES);

    glm_status st = push_special(tok, role_tokens[msg->role], &prompt->ids, err);
    if (st == GLM_OK) st = glm_tokenizer_encode(tok, "\n", 1, &prompt->ids, err);
    for (size_t k = 0; k < n_images && st == GLM_OK; k++) {
        prompt->boi_index[prompt->n_images++] = prompt->ids.n;
        st = push_special(tok, "<|begin_of_image|>", &prompt->ids, err);
        if (st == GLM_OK) st = push_special(tok, "<|endoftext|>", &prompt->ids, err);
        if (st == GLM_OK) st = push_special(tok, "<|end_of_image|>", &prompt->ids, err);
    }
    if (st == GLM_OK)
        st = glm_tokenizer_encode(tok, msg->content, msg->content_len, &prompt->ids, err);
    if (st != GLM_OK) glm_error_prefix(err, "message %zu", index);
    return st;
}

glm_status glm_chat_template_apply(const glm_tokenizer *tok, const glm_chat_message *messages,
                                   size_t n_messages, bool add_generation_prompt,
                                   glm_chat_prompt *prompt, glm_error *err)
{
    memset(prompt, 0, sizeof *prompt);
    glm_status st = push_special(tok, "[gMASK]", &prompt->ids, err);
    if (st == GLM_OK) st = push_special(tok, "<sop>", &prompt->ids, err);
    for (size_t i = 0; i < n_messages && st == GLM_OK; i++)
        st = append_message(tok, &messages[i], i, prompt, err);
    if (st == GLM_OK && add_generation_prompt)
        st = push_special(tok, "<|assistant|>", &prompt->ids, err);
    if (st != GLM_OK) glm_chat_prompt_free(prompt);
    return st;
}

void glm_chat_prompt_free(glm_chat_prompt *prompt)
{
    glm_token_ids_free(&prompt->ids);
    memset(prompt, 0, sizeof *prompt);
}
