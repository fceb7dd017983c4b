/* Streaming detokenizer: token ids in, complete UTF-8 text out.
 *
 * A character whose bytes are split across tokens (Chinese, emoji: 2 to 4 tokens each) is held
 * back until its last byte arrives. Bytes that can never become a valid character are emitted as
 * U+FFFD at once, so text keeps flowing; flush ends the stream and turns a held incomplete
 * character into one U+FFFD. The concatenated output of push... flush equals
 * decode(all ids) with invalid UTF-8 replaced as glm_utf8_sanitize does. Special ids produce
 * their names ("<|user|>"); callers that stop on eos simply do not push it. */
#ifndef GLM4V_DETOKENIZER_H
#define GLM4V_DETOKENIZER_H

#include "coordinator/text/tokenizer.h"

typedef struct glm_detokenizer {
    const glm_tokenizer *tok;
    unsigned char held[4]; /* a valid but incomplete UTF-8 prefix, at most 3 bytes */
    size_t n_held;
} glm_detokenizer;

void glm_detokenizer_init(glm_detokenizer *d, const glm_tokenizer *tok);
/* Appends the text completed by id to out. An unknown id fails with GLM_ERR_INVALID_ARG and
 * changes neither the detokenizer nor out. */
glm_status glm_detokenizer_push(glm_detokenizer *d, int32_t id, glm_bytes *out, glm_error *err);
/* Appends U+FFFD if an incomplete character is held, and resets the detokenizer for reuse. */
glm_status glm_detokenizer_flush(glm_detokenizer *d, glm_bytes *out, glm_error *err);
/* Bytes currently held back (0..3). */
size_t glm_detokenizer_pending(const glm_detokenizer *d);

#endif
