/* Private to tokenizer.c (loading, decoding) and tokenizer_encode.c (pre-tokenization, BPE). */
#ifndef GLM4V_TOKENIZER_INTERNAL_H
#define GLM4V_TOKENIZER_INTERNAL_H

#include "coordinator/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* One slot of the open-addressing table from token bytes to rank (rank < 0: empty). The first
 * 8 bytes of the token sit in the slot itself, zero-padded, so most tokens (cl100k's average is
 * about 6 bytes) are compared without touching token_bytes: one cache miss per lookup. */
typedef struct tok_slot {
    uint64_t head;
    uint32_t len;
    int32_t rank;
} tok_slot;

struct glm_tokenizer {
    int32_t n_ranks;
    unsigned flags;
    char *token_bytes;      /* every token's bytes back to back, in file order */
    uint32_t *token_offset; /* [n_ranks] where rank r starts in token_bytes */
    uint32_t *token_len;    /* [n_ranks] */
    size_t max_token_len;   /* longer byte strings cannot be tokens: skip their lookup */
    tok_slot *slots;
    size_t slot_mask; /* slots has slot_mask + 1 entries, a power of two */
    int32_t byte_rank[256];
    pcre2_code *regex;
    bool jit;
};

uint64_t tok_hash(const unsigned char *p, size_t len);
/* Rank of the byte string p[0..len), or -1 when it is not a token. */
int32_t tok_rank_of(const glm_tokenizer *tok, const unsigned char *p, size_t len);

/* Compiles the pre-tokenization pattern into tok->regex (JIT unless flags say no). */
glm_status tok_regex_init(glm_tokenizer *tok, glm_error *err);

#endif
