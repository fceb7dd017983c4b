/* The attempt follower (see gw_follow.h). */
#include "client/gateway/gw_follow.h"

#include <stdlib.h>
#include <string.h>

void gw_follower_init(gw_follower *f)
{
    memset(f, 0, sizeof *f);
}

void gw_follower_free(gw_follower *f)
{
    free(f->sent_ids);
    free(f->sent_text);
    free(f->att_text);
    memset(f, 0, sizeof *f);
}

static bool grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t nc = need * 2 + 16;
    void *g = realloc(*buf, nc * elem);
    if (!g) return false;
    *buf = g;
    *cap = nc;
    return true;
}

/* True when a (na items) and b (nb items) agree on their common prefix. */
static bool ids_agree(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    return n == 0 || memcmp(a, b, n * sizeof *a) == 0;
}

static bool text_agrees(const char *a, size_t na, const char *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    return n == 0 || memcmp(a, b, n) == 0;
}

/* Records as sent and fills d with: tokens ids[k..n) where the first k are already sent (the
 * caller checked they agree), and the text beyond sent_text of full_text. */
static gw_follow_outcome emit(gw_follower *f, const int32_t *ids, size_t n, size_t k,
                              const char *full_text, size_t full_len, gw_delta *d)
{
    memset(d, 0, sizeof *d);
    if (n > k) {
        if (!grow((void **)&f->sent_ids, &f->cap_sent_ids, f->n_sent_ids + (n - k),
                  sizeof *f->sent_ids))
            return GW_FOLLOW_NOMEM;
        memcpy(f->sent_ids + f->n_sent_ids, ids + k, (n - k) * sizeof *ids);
        f->n_sent_ids += n - k;
        d->first = k;
        d->n_tokens = n - k;
    }
    if (full_len > f->n_sent_text &&
        text_agrees(full_text, f->n_sent_text, f->sent_text, f->n_sent_text)) {
        size_t add = full_len - f->n_sent_text;
        if (!grow((void **)&f->sent_text, &f->cap_sent_text, full_len + 1, 1))
            return GW_FOLLOW_NOMEM;
        memcpy(f->sent_text + f->n_sent_text, full_text + f->n_sent_text, add);
        d->text = f->sent_text + f->n_sent_text;
        d->text_len = add;
        f->n_sent_text = full_len;
        f->sent_text[full_len] = '\0';
    }
    return GW_FOLLOW_OK;
}

gw_follow_outcome gw_follower_on_chunk(gw_follower *f, const glm_chunk *c, gw_delta *d)
{
    memset(d, 0, sizeof *d);
    /* the same attempt from index 0 again: a job handed back by a draining replica keeps its
     * delivery count, so the replica that takes it over streams under the same number (taken
     * for a lost chunk, this stopped the live stream until the Result) */
    bool restarted = c->attempt == f->attempt && c->index == 0 && (f->next_index > 0 || f->gap);
    if (c->attempt > f->attempt || restarted) { /* another replica took the job over: from 0 */
        if (f->next_index > 0 || f->n_sent_ids > 0) f->restarts++;
        f->attempt = c->attempt;
        f->next_index = 0;
        f->n_att_ids = 0;
        f->n_att_text = 0;
        f->gap = false;
    }
    if (c->attempt < f->attempt || f->gap) return GW_FOLLOW_OK;
    if (c->index != f->next_index) {
        f->gap = true;
        return GW_FOLLOW_OK;
    }
    f->next_index++;
    /* This chunk covers tokens [pos, pos + n) of the attempt; the client has [0, n_sent_ids). */
    size_t pos = f->n_att_ids, n = c->n_tokens;
    f->n_att_ids += n;
    size_t tlen = glm_chunk_text_bytes(c); /* NUL bytes are text: never strlen */
    if (!grow((void **)&f->att_text, &f->cap_att_text, f->n_att_text + tlen + 1, 1))
        return GW_FOLLOW_NOMEM;
    if (tlen) memcpy(f->att_text + f->n_att_text, c->text, tlen);
    f->n_att_text += tlen;
    f->att_text[f->n_att_text] = '\0';

    size_t already = f->n_sent_ids > pos ? f->n_sent_ids - pos : 0; /* of this chunk's tokens */
    if (already > n) already = n;
    if (f->n_sent_ids < pos) { /* cannot happen while indices are contiguous; be safe */
        f->gap = true;
        return GW_FOLLOW_OK;
    }
    if (!ids_agree(c->token_ids, already, f->sent_ids + pos, already)) return GW_FOLLOW_DIVERGED;
    return emit(f, c->token_ids, n, already, f->att_text, f->n_att_text, d);
}

gw_follow_outcome gw_follower_on_result(gw_follower *f, const glm_result *r, gw_delta *d)
{
    memset(d, 0, sizeof *d);
    if (r->n_tokens < f->n_sent_ids ||
        !ids_agree(r->token_ids, f->n_sent_ids, f->sent_ids, f->n_sent_ids))
        return GW_FOLLOW_DIVERGED;
    const char *text = r->text ? r->text : "";
    return emit(f, r->token_ids, r->n_tokens, f->n_sent_ids, text, glm_result_text_bytes(r), d);
}
