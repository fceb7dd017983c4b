/* Tokenizer loading (tiktoken format), the rank table, decoding, and UTF-8 helpers.
 * Encoding lives in tokenizer_encode.c. */
#include "coordinator/text/tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"

static const char *const special_names[GLM_TOKENIZER_N_SPECIAL] = {
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
};

/* ---- growable buffers ------------------------------------------------------------------------ */

void glm_token_ids_free(glm_token_ids *ids)
{
    free(ids->ids);
    ids->ids = NULL;
    ids->n = ids->cap = 0;
}

glm_status glm_token_ids_push(glm_token_ids *ids, int32_t id, glm_error *err)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *grown = realloc(ids->ids, cap * sizeof *grown);
        if (!grown) return glm_fail(err, GLM_ERR_NOMEM, "token ids: cannot grow to %zu", cap);
        ids->ids = grown;
        ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return GLM_OK;
}

void glm_bytes_free(glm_bytes *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

glm_status glm_bytes_append(glm_bytes *buf, const void *data, size_t len, glm_error *err)
{
    if (buf->len + len + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 64;
        while (cap < buf->len + len + 1)
            cap *= 2;
        char *grown = realloc(buf->data, cap);
        if (!grown) return glm_fail(err, GLM_ERR_NOMEM, "byte buffer: cannot grow to %zu", cap);
        buf->data = grown;
        buf->cap = cap;
    }
    if (len) memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0';
    return GLM_OK;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Well-formed sequences per Unicode table 3-7: the second byte's range depends on the lead byte
 * (E0 A0..BF, ED 80..9F, F0 90..BF, F4 80..8F) so overlongs, surrogates and values past U+10FFFF
 * are rejected at the first byte that makes them so. What precedes that byte is one maximal
 * invalid subsequence; the byte itself is looked at again as a new start. */
size_t glm_utf8_scan(const unsigned char *s, size_t n, enum glm_utf8_kind *kind)
{
    unsigned lead = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (lead < 0x80) {
        *kind = GLM_UTF8_VALID;
        return 1;
    }
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        need = 2;
        if (lead == 0xE0) lo = 0xA0;
        if (lead == 0xED) hi = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        need = 3;
        if (lead == 0xF0) lo = 0x90;
        if (lead == 0xF4) hi = 0x8F;
    } else {
        *kind = GLM_UTF8_INVALID;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) {
            *kind = GLM_UTF8_TRUNCATED;
            return i;
        }
        if (s[i] < lo || s[i] > hi) {
            *kind = GLM_UTF8_INVALID;
            return i;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    *kind = GLM_UTF8_VALID;
    return need + 1;
}

glm_status glm_utf8_sanitize(const char *s, size_t n, glm_bytes *out, glm_error *err)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of valid bytes */
    size_t i = 0;
    glm_status st = GLM_OK;
    while (i < n && st == GLM_OK) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        enum glm_utf8_kind kind;
        size_t len = glm_utf8_scan(p + i, n - i, &kind);
        if (kind == GLM_UTF8_VALID) {
            i += len;
            continue;
        }
        st = glm_bytes_append(out, s + run, i - run, err);
        if (st == GLM_OK) st = glm_bytes_append(out, "\xEF\xBF\xBD", 3, err);
        i += len;
        run = i;
    }
    if (st == GLM_OK) st = glm_bytes_append(out, s + run, n - run, err);
    return st;
}

/* ---- rank table ------------------------------------------------------------------------------ */

/* A multiply-xorshift hash over 8-byte words: tokens are short, so speed matters more than
 * resistance to crafted input (the table is built from a trusted file; lookups only read it). */
uint64_t tok_hash(const unsigned char *p, size_t len)
{
    const uint64_t k = 0x9E3779B97F4A7C15ull;
    uint64_t h = (uint64_t)len * k;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= k;
    return h ^ (h >> 32);
}

static uint64_t head_of(const unsigned char *p, size_t len)
{
    uint64_t head = 0;
    memcpy(&head, p, len < 8 ? len : 8);
    return head;
}

static bool slot_holds(const glm_tokenizer *tok, const tok_slot *slot, uint64_t head,
                       const unsigned char *p, size_t len)
{
    return slot->head == head && slot->len == len &&
           (len <= 8 ||
            memcmp(tok->token_bytes + tok->token_offset[slot->rank] + 8, p + 8, len - 8) == 0);
}

int32_t tok_rank_of(const glm_tokenizer *tok, const unsigned char *p, size_t len)
{
    if (len > tok->max_token_len) return -1;
    uint64_t head = head_of(p, len);
    for (size_t i = (size_t)tok_hash(p, len) & tok->slot_mask;; i = (i + 1) & tok->slot_mask) {
        const tok_slot *slot = &tok->slots[i];
        if (slot->rank < 0) return -1;
        if (slot_holds(tok, slot, head, p, len)) return slot->rank;
    }
}

/* Inserts rank; returns the rank already holding the same bytes, or -1 when the bytes are new. */
static int32_t table_insert(glm_tokenizer *tok, int32_t rank)
{
    const unsigned char *p = (const unsigned char *)tok->token_bytes + tok->token_offset[rank];
    size_t len = tok->token_len[rank];
    uint64_t head = head_of(p, len);
    for (size_t i = (size_t)tok_hash(p, len) & tok->slot_mask;; i = (i + 1) & tok->slot_mask) {
        tok_slot *slot = &tok->slots[i];
        if (slot->rank < 0) {
            slot->head = head;
            slot->len = (uint32_t)len;
            slot->rank = rank;
            return -1;
        }
        if (slot_holds(tok, slot, head, p, len)) return slot->rank;
    }
}

/* ---- loading --------------------------------------------------------------------------------- */

static size_t count_lines(const char *data, size_t len)
{
    size_t n = 0;
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if (line_end > p && !(line_end == p + 1 && *p == '\r')) n++;
        p = nl ? nl + 1 : end;
    }
    return n;
}

/* Parses "base64 SP rank" into the arena and records the rank's offset and length. */
static glm_status parse_line(glm_tokenizer *tok, const char *name, size_t line_no, const char *line,
                             size_t len, size_t *arena_used, glm_error *err)
{
    const char *space = memchr(line, ' ', len);
    if (!space)
        return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: expected 'base64 rank'", name, line_no);
    size_t b64_len = (size_t)(space - line);
    char *dst = tok->token_bytes + *arena_used;
    size_t n_bytes = 0;
    if (!glm_base64_decode(line, b64_len, true, (uint8_t *)dst, &n_bytes) || n_bytes == 0)
        return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: bad base64 token '%.*s'", name, line_no,
                        (int)(b64_len < 40 ? b64_len : 40), line);
    const char *digits = space + 1, *end = line + len;
    if (digits == end) return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: missing rank", name, line_no);
    long long rank = 0;
    for (const char *d = digits; d < end; d++) {
        if (*d < '0' || *d > '9' || rank > INT32_MAX)
            return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: bad rank '%.*s'", name, line_no,
                            (int)(end - digits < 20 ? end - digits : 20), digits);
        rank = rank * 10 + (*d - '0');
    }
    if (rank >= tok->n_ranks)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s:%zu: rank %lld but the file has %d tokens: ranks must be 0..%d "
                        "without gaps",
                        name, line_no, rank, tok->n_ranks, tok->n_ranks - 1);
    if (tok->token_len[rank] != UINT32_MAX)
        return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: duplicate rank %lld", name, line_no, rank);
    tok->token_offset[rank] = (uint32_t)*arena_used;
    tok->token_len[rank] = (uint32_t)n_bytes;
    if ((size_t)n_bytes > tok->max_token_len) tok->max_token_len = (size_t)n_bytes;
    *arena_used += (size_t)n_bytes;
    int32_t previous = table_insert(tok, (int32_t)rank);
    if (previous >= 0)
        return glm_fail(err, GLM_ERR_FORMAT, "%s:%zu: token of rank %lld duplicates rank %d", name,
                        line_no, rank, previous);
    return GLM_OK;
}

static glm_status allocate_tables(glm_tokenizer *tok, size_t n_lines, size_t file_len,
                                  glm_error *err)
{
    tok->n_ranks = (int32_t)n_lines;
    tok->token_bytes = malloc(file_len / 4 * 3 + 4);
    tok->token_offset = malloc(n_lines * sizeof *tok->token_offset);
    tok->token_len = malloc(n_lines * sizeof *tok->token_len);
    size_t n_slots = 64;
    while (n_slots < n_lines * 2)
        n_slots *= 2;
    tok->slots = malloc(n_slots * sizeof *tok->slots);
    tok->slot_mask = n_slots - 1;
    if (!tok->token_bytes || !tok->token_offset || !tok->token_len || !tok->slots)
        return glm_fail(err, GLM_ERR_NOMEM, "tokenizer: no memory for %zu tokens", n_lines);
    memset(tok->token_len, 0xFF, n_lines * sizeof *tok->token_len);
    for (size_t i = 0; i < n_slots; i++)
        tok->slots[i].rank = -1;
    return GLM_OK;
}

static glm_status parse_ranks(glm_tokenizer *tok, const char *data, size_t len, const char *name,
                              glm_error *err)
{
    size_t n_lines = count_lines(data, len);
    if (n_lines == 0) return glm_fail(err, GLM_ERR_FORMAT, "%s: no tokens", name);
    if (n_lines > INT32_MAX - GLM_TOKENIZER_N_SPECIAL)
        return glm_fail(err, GLM_ERR_LIMIT, "%s: %zu tokens is too many", name, n_lines);
    glm_status st = allocate_tables(tok, n_lines, len, err);
    size_t arena_used = 0, line_no = 0;
    const char *p = data, *end = data + len;
    while (st == GLM_OK && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        line_no++;
        if (line_end > p && line_end[-1] == '\r') line_end--;
        if (line_end > p)
            st = parse_line(tok, name, line_no, p, (size_t)(line_end - p), &arena_used, err);
        p = nl ? nl + 1 : end;
    }
    for (int b = 0; st == GLM_OK && b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        tok->byte_rank[b] = tok_rank_of(tok, &byte, 1);
        if (tok->byte_rank[b] < 0)
            st = glm_fail(err, GLM_ERR_FORMAT,
                          "%s: byte 0x%02X is not a token (needed to encode "
                          "arbitrary text)",
                          name, b);
    }
    return st;
}

glm_status glm_tokenizer_load_buffer(const char *data, size_t len, const char *name, unsigned flags,
                                     glm_tokenizer **out, glm_error *err)
{
    *out = NULL;
    glm_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return glm_fail(err, GLM_ERR_NOMEM, "%s: no memory for the tokenizer", name);
    tok->flags = flags;
    glm_status st = parse_ranks(tok, data, len, name, err);
    if (st == GLM_OK) st = tok_regex_init(tok, err);
    if (st != GLM_OK) {
        glm_tokenizer_destroy(tok);
        return st;
    }
    *out = tok;
    return GLM_OK;
}

glm_status glm_tokenizer_load_ex(const char *path, unsigned flags, glm_tokenizer **out,
                                 glm_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_IO, "%s: %s", path, strerror(errno));
    char *data = NULL;
    size_t len = 0, cap = 0;
    glm_status st = GLM_OK;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *grown = realloc(data, cap);
            if (!grown) {
                st = glm_fail(err, GLM_ERR_NOMEM, "%s: no memory to read it", path);
                break;
            }
            data = grown;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) st = glm_fail(err, GLM_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (st == GLM_OK) st = glm_tokenizer_load_buffer(data, len, path, flags, out, err);
    free(data);
    return st;
}

glm_status glm_tokenizer_load(const char *path, glm_tokenizer **out, glm_error *err)
{
    return glm_tokenizer_load_ex(path, 0, out, err);
}

void glm_tokenizer_destroy(glm_tokenizer *tok)
{
    if (!tok) return;
    pcre2_code_free(tok->regex);
    free(tok->slots);
    free(tok->token_len);
    free(tok->token_offset);
    free(tok->token_bytes);
    free(tok);
}

/* ---- accessors and decoding ------------------------------------------------------------------ */

int32_t glm_tokenizer_n_ranks(const glm_tokenizer *tok)
{
    return tok->n_ranks;
}

int32_t glm_tokenizer_vocab_size(const glm_tokenizer *tok)
{
    return tok->n_ranks + GLM_TOKENIZER_N_SPECIAL;
}

int32_t glm_tokenizer_special_id(const glm_tokenizer *tok, const char *name)
{
    for (int i = 0; i < GLM_TOKENIZER_N_SPECIAL; i++)
        if (strcmp(special_names[i], name) == 0) return tok->n_ranks + i;
    return -1;
}

bool glm_tokenizer_is_special(const glm_tokenizer *tok, int32_t id)
{
    return id >= tok->n_ranks && id < glm_tokenizer_vocab_size(tok);
}

const char *glm_tokenizer_special_name(int index)
{
    return index >= 0 && index < GLM_TOKENIZER_N_SPECIAL ? special_names[index] : NULL;
}

bool glm_tokenizer_uses_jit(const glm_tokenizer *tok)
{
    return tok->jit;
}

glm_status glm_tokenizer_token_bytes(const glm_tokenizer *tok, int32_t id, const char **bytes,
                                     size_t *len, glm_error *err)
{
    if (id >= 0 && id < tok->n_ranks) {
        *bytes = tok->token_bytes + tok->token_offset[id];
        *len = tok->token_len[id];
        return GLM_OK;
    }
    if (glm_tokenizer_is_special(tok, id)) {
        *bytes = special_names[id - tok->n_ranks];
        *len = strlen(*bytes);
        return GLM_OK;
    }
    return glm_fail(err, GLM_ERR_INVALID_ARG, "token id %d is outside the vocabulary (0..%d)", id,
                    glm_tokenizer_vocab_size(tok) - 1);
}

glm_status glm_tokenizer_decode(const glm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                glm_bytes *out, glm_error *err)
{
    /* Validate every id first so a failure leaves out untouched. */
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= glm_tokenizer_vocab_size(tok))
            return glm_fail(err, GLM_ERR_INVALID_ARG,
                            "token id %d (position %zu) is outside the vocabulary (0..%d)", ids[i],
                            i, glm_tokenizer_vocab_size(tok) - 1);
    size_t old_len = out->len;
    for (size_t i = 0; i < n_ids; i++) {
        const char *bytes = NULL;
        size_t len = 0;
        glm_status st = glm_tokenizer_token_bytes(tok, ids[i], &bytes, &len, err);
        if (st == GLM_OK) st = glm_bytes_append(out, bytes, len, err);
        if (st != GLM_OK) {
            out->len = old_len;
            if (out->data) out->data[old_len] = '\0';
            return st;
        }
    }
    if (out->data == NULL) return glm_bytes_append(out, "", 0, err); /* keep the NUL promise */
    return GLM_OK;
}
