/* Encoding: UTF-8 repair, cl100k pre-tokenization with PCRE2, and byte-pair merging by rank. */
#include "coordinator/text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* The cl100k pattern of MODEL.md,
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * with \s spelled out as the Unicode White_Space set. tiktoken runs it with Rust's regex, whose \s
 * is White_Space; PCRE2's \s under UCP is \p{Z}, \h and \v, which adds U+180E (Mongolian vowel
 * separator, no longer White_Space since Unicode 6.3) and would split text differently there. */
#define WS                                                                                         \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char pretokenize_pattern[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
                                          "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
                                          "|\\p{N}{1,3}"
                                          "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
                                          "|[" WS "]*[\\r\\n]+"
                                          "|[" WS "]+(?![^" WS "])"
                                          "|[" WS "]+";
#undef WS

/* Pieces up to this many bytes merge with tiktoken's own scan (quadratic, but tiny and cache
 * friendly); longer ones use the heap merge, O(n log n) however long the piece. */
#define LINEAR_MERGE_MAX 64

glm_status tok_regex_init(glm_tokenizer *tok, glm_error *err)
{
    int code;
    PCRE2_SIZE offset;
    tok->regex = pcre2_compile((PCRE2_SPTR)pretokenize_pattern, PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP, &code, &offset, NULL);
    if (!tok->regex) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return glm_fail(err, GLM_ERR_BACKEND, "tokenizer: pattern does not compile at %zu: %s",
                        (size_t)offset, (const char *)msg);
    }
    /* Without JIT (not built in, or no executable memory) pcre2_match interprets the same code. */
    tok->jit = !(tok->flags & GLM_TOKENIZER_NO_JIT) &&
               pcre2_jit_compile(tok->regex, PCRE2_JIT_COMPLETE) == 0;
    return GLM_OK;
}

/* ---- byte-pair merging ----------------------------------------------------------------------- */

/* tiktoken's merge loop for short pieces: parts are the current token boundaries; pair_rank[k] is
 * the rank of parts k and k+1 joined (-1: not a token). Merge the lowest, leftmost on ties, until
 * no adjacent pair is a token. */
static glm_status merge_linear(const glm_tokenizer *tok, const unsigned char *piece, size_t len,
                               glm_token_ids *out, glm_error *err)
{
    size_t start[LINEAR_MERGE_MAX + 1];
    int32_t rank[LINEAR_MERGE_MAX], pair_rank[LINEAR_MERGE_MAX];
    size_t n = len;
    for (size_t k = 0; k <= n; k++)
        start[k] = k;
    for (size_t k = 0; k < n; k++) {
        rank[k] = tok->byte_rank[piece[k]];
        pair_rank[k] = k + 1 < n ? tok_rank_of(tok, piece + k, 2) : -1;
    }
    for (;;) {
        size_t best = n;
        for (size_t k = 0; k + 1 < n; k++)
            if (pair_rank[k] >= 0 && (best == n || pair_rank[k] < pair_rank[best])) best = k;
        if (best == n) break;
        rank[best] = pair_rank[best];
        /* drop boundary best+1 */
        memmove(&start[best + 1], &start[best + 2], (n - best - 1) * sizeof start[0]);
        memmove(&rank[best + 1], &rank[best + 2], (n - best - 2) * sizeof rank[0]);
        memmove(&pair_rank[best + 1], &pair_rank[best + 2], (n - best - 2) * sizeof pair_rank[0]);
        n--;
        pair_rank[best] = best + 1 < n
                              ? tok_rank_of(tok, piece + start[best], start[best + 2] - start[best])
                              : -1;
        if (best > 0)
            pair_rank[best - 1] =
                tok_rank_of(tok, piece + start[best - 1], start[best + 1] - start[best - 1]);
    }
    for (size_t k = 0; k < n; k++) {
        glm_status st = glm_token_ids_push(out, rank[k], err);
        if (st != GLM_OK) return st;
    }
    return GLM_OK;
}

/* Heap merge: the same merge order as merge_linear, found with a min-heap of (pair rank, left
 * part) keys over a linked list of parts. A part is named by its first byte's index, which never
 * changes, so the key order (rank, index) is tiktoken's (lowest rank, leftmost). Entries go stale
 * when a neighbour merges; a popped entry counts only if its rank is still its part's pair rank. */
typedef struct merge_state {
    uint32_t *next;     /* [len + 1] index of the following part; len marks the end */
    uint32_t *prev;     /* [len] index of the preceding part; UINT32_MAX for the first */
    int32_t *rank;      /* [len] rank of the part's own bytes */
    int32_t *pair_rank; /* [len] rank of the part joined with the next one, -1 if none */
    uint64_t *heap;     /* (pair_rank << 32 | part) */
    size_t heap_n;
} merge_state;

static void heap_push(merge_state *m, uint64_t key)
{
    size_t i = m->heap_n++;
    while (i > 0 && m->heap[(i - 1) / 2] > key) {
        m->heap[i] = m->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    m->heap[i] = key;
}

static uint64_t heap_pop(merge_state *m)
{
    uint64_t top = m->heap[0], last = m->heap[--m->heap_n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= m->heap_n) break;
        if (child + 1 < m->heap_n && m->heap[child + 1] < m->heap[child]) child++;
        if (m->heap[child] >= last) break;
        m->heap[i] = m->heap[child];
        i = child;
    }
    if (m->heap_n) m->heap[i] = last;
    return top;
}

/* Recomputes part i's pair rank with its current neighbour and queues it. */
static void update_pair(const glm_tokenizer *tok, merge_state *m, const unsigned char *piece,
                        size_t len, uint32_t i)
{
    uint32_t j = m->next[i];
    int32_t r = j < len ? tok_rank_of(tok, piece + i, m->next[j] - i) : -1;
    m->pair_rank[i] = r;
    if (r >= 0) heap_push(m, (uint64_t)r << 32 | i);
}

static glm_status merge_heap(const glm_tokenizer *tok, const unsigned char *piece, size_t len,
                             glm_token_ids *out, glm_error *err)
{
    if (len >= UINT32_MAX / 4)
        return glm_fail(err, GLM_ERR_LIMIT, "tokenizer: a %zu-byte piece is too long", len);
    merge_state m = {0};
    /* Each merge pushes at most two entries and there are fewer than len merges. */
    m.next = malloc((len + 1) * sizeof *m.next);
    m.prev = malloc(len * sizeof *m.prev);
    m.rank = malloc(len * sizeof *m.rank);
    m.pair_rank = malloc(len * sizeof *m.pair_rank);
    m.heap = malloc(3 * len * sizeof *m.heap);
    glm_status st = GLM_OK;
    if (!m.next || !m.prev || !m.rank || !m.pair_rank || !m.heap) {
        st = glm_fail(err, GLM_ERR_NOMEM, "tokenizer: no memory to merge a %zu-byte piece", len);
        goto done;
    }
    for (uint32_t i = 0; i < len; i++) {
        m.next[i] = i + 1;
        m.prev[i] = i ? i - 1 : UINT32_MAX;
        m.rank[i] = tok->byte_rank[piece[i]];
    }
    m.next[len] = (uint32_t)len;
    for (uint32_t i = 0; i < len; i++)
        update_pair(tok, &m, piece, len, i);
    while (m.heap_n) {
        uint64_t key = heap_pop(&m);
        uint32_t i = (uint32_t)key;
        int32_t r = (int32_t)(key >> 32);
        if (m.pair_rank[i] != r) continue; /* stale: part i merged or lost its neighbour */
        uint32_t j = m.next[i];
        m.rank[i] = r;
        m.next[i] = m.next[j];
        if (m.next[j] < len) m.prev[m.next[j]] = i;
        m.pair_rank[j] = -1; /* j is gone: its queued entries are stale */
        update_pair(tok, &m, piece, len, i);
        if (m.prev[i] != UINT32_MAX) update_pair(tok, &m, piece, len, m.prev[i]);
    }
    for (uint32_t i = 0; i < len && st == GLM_OK; i = m.next[i])
        st = glm_token_ids_push(out, m.rank[i], err);
done:
    free(m.heap);
    free(m.pair_rank);
    free(m.rank);
    free(m.prev);
    free(m.next);
    return st;
}

static glm_status encode_piece(const glm_tokenizer *tok, const unsigned char *piece, size_t len,
                               glm_token_ids *out, glm_error *err)
{
    int32_t whole = tok_rank_of(tok, piece, len);
    if (whole >= 0) return glm_token_ids_push(out, whole, err);
    if (len <= LINEAR_MERGE_MAX && !(tok->flags & GLM_TOKENIZER_HEAP_MERGE))
        return merge_linear(tok, piece, len, out, err);
    return merge_heap(tok, piece, len, out, err);
}

/* ---- pre-tokenization ------------------------------------------------------------------------ */

static int match_at(const glm_tokenizer *tok, const char *text, size_t len, size_t offset,
                    pcre2_match_data *md)
{
    int rc;
    if (tok->jit) {
        rc = pcre2_jit_match(tok->regex, (PCRE2_SPTR)text, len, offset, PCRE2_NO_UTF_CHECK, md,
                             NULL);
        /* The default 32 KiB JIT stack can run out on odd input: the interpreter keeps its
         * backtracking state on the heap and gives the same answer. */
        if (rc != PCRE2_ERROR_JIT_STACKLIMIT) return rc;
    }
    return pcre2_match(tok->regex, (PCRE2_SPTR)text, len, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       md, NULL);
}

static glm_status encode_valid_utf8(const glm_tokenizer *tok, const char *text, size_t len,
                                    glm_token_ids *out, glm_error *err)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(tok->regex, NULL);
    if (!md) return glm_fail(err, GLM_ERR_NOMEM, "tokenizer: no memory for match data");
    glm_status st = GLM_OK;
    size_t offset = 0;
    while (offset < len && st == GLM_OK) {
        int rc = match_at(tok, text, len, offset, md);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = glm_fail(err, GLM_ERR_LIMIT, "tokenizer: pre-tokenization failed at byte %zu: %s",
                          offset, (const char *)msg);
            break;
        }
        const PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(md);
        size_t begin = ovector[0], end = ovector[1];
        if (end <= begin) { /* every alternative consumes a character; never loop in place */
            st = glm_fail(err, GLM_ERR_BACKEND, "tokenizer: empty match at byte %zu", begin);
            break;
        }
        st = encode_piece(tok, (const unsigned char *)text + begin, end - begin, out, err);
        offset = end;
    }
    pcre2_match_data_free(md);
    return st;
}

static bool is_valid_utf8(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        enum glm_utf8_kind kind;
        size_t n = glm_utf8_scan(p + i, len - i, &kind);
        if (kind != GLM_UTF8_VALID) return false;
        i += n;
    }
    return true;
}

glm_status glm_tokenizer_encode(const glm_tokenizer *tok, const char *text, size_t len,
                                glm_token_ids *out, glm_error *err)
{
    if (len == 0) return GLM_OK;
    if (is_valid_utf8(text, len)) return encode_valid_utf8(tok, text, len, out, err);
    glm_bytes repaired = {0};
    glm_status st = glm_utf8_sanitize(text, len, &repaired, err);
    if (st == GLM_OK) st = encode_valid_utf8(tok, repaired.data, repaired.len, out, err);
    glm_bytes_free(&repaired);
    return st;
}
