/* GLM-4 tokenizer: tiktoken-format byte-level BPE (tokenizer.model) plus the 14 GLM special tokens.
 *
 * Encoding follows tiktoken's encode_ordinary exactly: the text is split with the cl100k
 * pre-tokenization pattern (PCRE2, UTF + UCP, JIT when available), and each piece is either a
 * whole token or byte-pair merged by rank (always merging the adjacent pair whose concatenation has
 * the lowest rank, the leftmost one on ties). Special tokens are never produced from text: a user
 * typing "<|user|>" gets ordinary tokens; the chat template inserts special ids itself.
 *
 * Invalid UTF-8: tiktoken only ever sees valid text (Python str, JS string), so before
 * pre-tokenization every maximal invalid subsequence of the input is replaced by U+FFFD, exactly as
 * Python's bytes.decode("utf-8", errors="replace") does. Encoding never fails on bad bytes.
 *
 * A loaded tokenizer is read-only: any number of threads may encode and decode with it at once. */
#ifndef GLM4V_TOKENIZER_H
#define GLM4V_TOKENIZER_H

#include "common/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct glm_tokenizer glm_tokenizer;

/* Number of GLM special tokens; their ids are n_ranks + index in glm_tokenizer_special_names. */
#define GLM_TOKENIZER_N_SPECIAL 14

/* Growable array of token ids. Zero-initialize; free with glm_token_ids_free. */
typedef struct glm_token_ids {
    int32_t *ids;
    size_t n, cap;
} glm_token_ids;

/* Growable byte buffer, always NUL-terminated after a successful append (data may be NULL while
 * len is 0). Zero-initialize; free with glm_bytes_free. */
typedef struct glm_bytes {
    char *data;
    size_t len, cap;
} glm_bytes;

void glm_token_ids_free(glm_token_ids *ids);
glm_status glm_token_ids_push(glm_token_ids *ids, int32_t id, glm_error *err);
void glm_bytes_free(glm_bytes *buf);
glm_status glm_bytes_append(glm_bytes *buf, const void *data, size_t len, glm_error *err);

/* Load flags for glm_tokenizer_load_ex. */
enum {
    GLM_TOKENIZER_NO_JIT = 1u << 0,     /* use the PCRE2 interpreter even where JIT works */
    GLM_TOKENIZER_HEAP_MERGE = 1u << 1, /* use the heap merge for every piece (tests) */
};

/* Reads a tiktoken-format file (one "base64(token bytes) rank" per line). Ranks must be exactly
 * 0..n-1, each once, with distinct non-empty tokens, and all 256 single bytes must be tokens. */
glm_status glm_tokenizer_load(const char *path, glm_tokenizer **out, glm_error *err);
glm_status glm_tokenizer_load_ex(const char *path, unsigned flags, glm_tokenizer **out,
                                 glm_error *err);
/* Same, from a buffer in memory (name is used in messages). */
glm_status glm_tokenizer_load_buffer(const char *data, size_t len, const char *name, unsigned flags,
                                     glm_tokenizer **out, glm_error *err);
void glm_tokenizer_destroy(glm_tokenizer *tok);

/* Ordinary BPE ranks (the first special id). */
int32_t glm_tokenizer_n_ranks(const glm_tokenizer *tok);
/* All ids decode accepts: n_ranks + GLM_TOKENIZER_N_SPECIAL. */
int32_t glm_tokenizer_vocab_size(const glm_tokenizer *tok);
/* Id of a special token by name ("<|user|>", "[gMASK]", ...), or -1 when there is none. */
int32_t glm_tokenizer_special_id(const glm_tokenizer *tok, const char *name);
bool glm_tokenizer_is_special(const glm_tokenizer *tok, int32_t id);
/* Name of special token i (0..GLM_TOKENIZER_N_SPECIAL-1), NULL out of range. */
const char *glm_tokenizer_special_name(int index);
/* Whether pre-tokenization runs PCRE2 JIT code. */
bool glm_tokenizer_uses_jit(const glm_tokenizer *tok);

/* Bytes of one id (a special id's bytes are its name); GLM_ERR_INVALID_ARG if id is out of range.
 * The bytes stay valid until glm_tokenizer_destroy. */
glm_status glm_tokenizer_token_bytes(const glm_tokenizer *tok, int32_t id, const char **bytes,
                                     size_t *len, glm_error *err);

/* Appends the ids of ordinary text to out (see the header comment for invalid UTF-8). */
glm_status glm_tokenizer_encode(const glm_tokenizer *tok, const char *text, size_t len,
                                glm_token_ids *out, glm_error *err);

/* Appends the bytes of ids to out. Ids outside 0..vocab_size-1 fail with GLM_ERR_INVALID_ARG and
 * leave out as it was. The bytes need not be valid UTF-8 (a token may hold part of a character). */
glm_status glm_tokenizer_decode(const glm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                glm_bytes *out, glm_error *err);

/* UTF-8 scanning shared by the encoder and the streaming detokenizer. Looks at the sequence that
 * starts at s[0] (n >= 1) and returns its length; *kind says what it is:
 *   GLM_UTF8_VALID      a whole valid character (1..4 bytes),
 *   GLM_UTF8_INVALID    a maximal invalid subsequence (1..3 bytes) to replace by one U+FFFD,
 *   GLM_UTF8_TRUNCATED  a valid prefix that runs into the end of the buffer (1..3 bytes). */
enum glm_utf8_kind { GLM_UTF8_VALID, GLM_UTF8_INVALID, GLM_UTF8_TRUNCATED };
size_t glm_utf8_scan(const unsigned char *s, size_t n, enum glm_utf8_kind *kind);

/* Appends s with each invalid subsequence replaced by U+FFFD (EF BF BD); a truncated tail counts
 * as one invalid subsequence. Same result as Python's decode("utf-8", errors="replace"). */
glm_status glm_utf8_sanitize(const char *s, size_t n, glm_bytes *out, glm_error *err);

#endif
