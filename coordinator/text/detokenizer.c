/* Streaming detokenizer: holds back an incomplete UTF-8 character between tokens. */
#include "coordinator/text/detokenizer.h"

#include <string.h>

static const char replacement[] = "\xEF\xBF\xBD";

void glm_detokenizer_init(glm_detokenizer *d, const glm_tokenizer *tok)
{
    d->tok = tok;
    d->n_held = 0;
}

size_t glm_detokenizer_pending(const glm_detokenizer *d)
{
    return d->n_held;
}

/* Emits the valid characters of s[0..n), U+FFFD for each invalid subsequence, and keeps a valid
 * but truncated tail in d->held. */
static glm_status emit_text(glm_detokenizer *d, const unsigned char *s, size_t n, glm_bytes *out,
                            glm_error *err)
{
    size_t run = 0, i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        enum glm_utf8_kind kind;
        size_t len = glm_utf8_scan(s + i, n - i, &kind);
        if (kind == GLM_UTF8_VALID) {
            i += len;
            continue;
        }
        glm_status st = glm_bytes_append(out, s + run, i - run, err);
        if (st != GLM_OK) return st;
        if (kind == GLM_UTF8_TRUNCATED) { /* only possible at the very end */
            memcpy(d->held, s + i, len);
            d->n_held = len;
            return GLM_OK;
        }
        st = glm_bytes_append(out, replacement, 3, err);
        if (st != GLM_OK) return st;
        i += len;
        run = i;
    }
    return glm_bytes_append(out, s + run, n - run, err);
}

glm_status glm_detokenizer_push(glm_detokenizer *d, int32_t id, glm_bytes *out, glm_error *err)
{
    const char *bytes = NULL;
    size_t len = 0;
    glm_status st = glm_tokenizer_token_bytes(d->tok, id, &bytes, &len, err);
    if (st != GLM_OK) return st;
    if (d->n_held == 0) return emit_text(d, (const unsigned char *)bytes, len, out, err);

    /* Complete (or give up on) the held character with at most 3 leading bytes of the token:
     * a character is at most 4 bytes, so what follows starts fresh. */
    unsigned char joined[7];
    size_t n_head = len < 3 ? len : 3;
    memcpy(joined, d->held, d->n_held);
    memcpy(joined + d->n_held, bytes, n_head);
    size_t n_joined = d->n_held + n_head;
    enum glm_utf8_kind kind;
    size_t first = glm_utf8_scan(joined, n_joined, &kind);
    if (kind == GLM_UTF8_TRUNCATED) { /* still incomplete: the whole token extends the prefix */
        memcpy(d->held, joined, n_joined);
        d->n_held = n_joined;
        return GLM_OK;
    }
    size_t held_before = d->n_held;
    d->n_held = 0;
    st = kind == GLM_UTF8_VALID ? glm_bytes_append(out, joined, first, err)
                                : glm_bytes_append(out, replacement, 3, err);
    if (st != GLM_OK) return st;
    /* The held bytes are a valid prefix, so the first sequence ends inside the token; the
     * token's remaining bytes start over. */
    size_t used_of_token = first - held_before;
    return emit_text(d, (const unsigned char *)bytes + used_of_token, len - used_of_token, out,
                     err);
}

glm_status glm_detokenizer_flush(glm_detokenizer *d, glm_bytes *out, glm_error *err)
{
    if (d->n_held == 0) return GLM_OK;
    d->n_held = 0;
    return glm_bytes_append(out, replacement, 3, err);
}
