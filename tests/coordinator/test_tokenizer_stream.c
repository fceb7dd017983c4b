/* Streaming detokenizer: characters split across 2-4 tokens, invalid bytes, flush, and the
 * invariant that what has been emitted is always the repaired text of all but the held bytes. */
#include "coordinator/text/detokenizer.h"
#include "tests/testutil.h"

#include <string.h>

void test_detokenizer(const glm_tokenizer *tok);

/* Id of the ordinary token with exactly these bytes, or -1. */
static int32_t find_token(const glm_tokenizer *tok, const char *bytes, size_t len)
{
    for (int32_t id = 0; id < glm_tokenizer_n_ranks(tok); id++) {
        const char *b;
        size_t n;
        glm_tokenizer_token_bytes(tok, id, &b, &n, NULL);
        if (n == len && memcmp(b, bytes, len) == 0) return id;
    }
    return -1;
}

static int32_t byte_token(const glm_tokenizer *tok, unsigned char byte)
{
    return find_token(tok, (const char *)&byte, 1);
}

/* Pushes ids one by one; after push k the output must equal expected[k] (cumulative). */
static void expect_stream(const glm_tokenizer *tok, const int32_t *ids, size_t n,
                          const char *const *expected, const char *after_flush, const char *what)
{
    glm_detokenizer d;
    glm_detokenizer_init(&d, tok);
    glm_bytes out = {0};
    glm_error err = {0};
    for (size_t k = 0; k < n; k++) {
        CHECK(glm_detokenizer_push(&d, ids[k], &out, &err) == GLM_OK);
        size_t want = strlen(expected[k]);
        CHECK_MSG(out.len == want && memcmp(out.data ? out.data : "", expected[k], want) == 0,
                  "%s: after token %zu got '%.*s', want '%s'", what, k, (int)out.len,
                  out.data ? out.data : "", expected[k]);
    }
    CHECK(glm_detokenizer_flush(&d, &out, &err) == GLM_OK);
    CHECK_MSG(out.len == strlen(after_flush) && memcmp(out.data, after_flush, out.len) == 0,
              "%s: after flush", what);
    CHECK(glm_detokenizer_pending(&d) == 0);
    glm_bytes_free(&out);
}

static void test_split_characters(const glm_tokenizer *tok)
{
    /* emoji U+1F600 over 4 byte tokens */
    int32_t emoji[] = {byte_token(tok, 0xF0), byte_token(tok, 0x9F), byte_token(tok, 0x98),
                       byte_token(tok, 0x80)};
    const char *emoji_out[] = {"", "", "", "\xF0\x9F\x98\x80"};
    expect_stream(tok, emoji, 4, emoji_out, "\xF0\x9F\x98\x80", "emoji in 4 tokens");

    /* 图 (E5 9B BE) over 3 tokens, then é (C3 A9) over 2, then ASCII */
    int32_t cjk[] = {byte_token(tok, 0xE5), byte_token(tok, 0x9B), byte_token(tok, 0xBE),
                     byte_token(tok, 0xC3), byte_token(tok, 0xA9), byte_token(tok, 'x')};
    const char *cjk_out[] = {
        "", "", "\xE5\x9B\xBE", "\xE5\x9B\xBE", "\xE5\x9B\xBE\xC3\xA9", "\xE5\x9B\xBE\xC3\xA9x"};
    expect_stream(tok, cjk, 6, cjk_out, cjk_out[5], "CJK in 3 tokens, Latin in 2");

    /* multi-byte tokens that end or start mid-character: " \xD0" + "\xBA\xD0\xB0\xD0\xBA" is
     * " как"; "，阳光明\xE5" needs two more bytes for 好-like characters (E5 A5 BD) */
    int32_t space_d0 = find_token(tok, " \xD0", 2);
    int32_t kak_tail = find_token(tok, "\xBA\xD0\xB0\xD0\xBA", 5);
    int32_t sunny = find_token(tok, "\xEF\xBC\x8C\xE9\x98\xB3\xE5\x85\x89\xE6\x98\x8E\xE5", 13);
    if (space_d0 >= 0 && kak_tail >= 0 && sunny >= 0) {
        int32_t ids[] = {space_d0, kak_tail, sunny, byte_token(tok, 0xA5), byte_token(tok, 0xBD)};
        const char *outs[] = {" ", " \xD0\xBA\xD0\xB0\xD0\xBA",
                              " \xD0\xBA\xD0\xB0\xD0\xBA\xEF\xBC\x8C\xE9\x98\xB3\xE5\x85\x89\xE6"
                              "\x98\x8E",
                              " \xD0\xBA\xD0\xB0\xD0\xBA\xEF\xBC\x8C\xE9\x98\xB3\xE5\x85\x89\xE6"
                              "\x98\x8E",
                              " \xD0\xBA\xD0\xB0\xD0\xBA\xEF\xBC\x8C\xE9\x98\xB3\xE5\x85\x89\xE6"
                              "\x98\x8E\xE5\xA5\xBD"};
        expect_stream(tok, ids, 5, outs, outs[4], "tokens split mid-character");
    } else {
        CHECK_MSG(0, "glm4v-tiny-b vocabulary lacks the split-character tokens this test uses");
    }
}

static void test_invalid_sequences(const glm_tokenizer *tok)
{
    /* C3 then 'A': the C3 can never complete */
    int32_t a[] = {byte_token(tok, 0xC3), byte_token(tok, 'A')};
    const char *a_out[] = {"", "\xEF\xBF\xBD"
                               "A"};
    expect_stream(tok, a, 2, a_out, a_out[1], "C3 A");
    /* a lone continuation byte flows out at once */
    int32_t b[] = {byte_token(tok, 0x80), byte_token(tok, 'b')};
    const char *b_out[] = {"\xEF\xBF\xBD", "\xEF\xBF\xBD"
                                           "b"};
    expect_stream(tok, b, 2, b_out, b_out[1], "lone 80");
    /* F0 9F then 'A': one U+FFFD for the maximal subpart F0 9F */
    int32_t c[] = {byte_token(tok, 0xF0), byte_token(tok, 0x9F), byte_token(tok, 'A')};
    const char *c_out[] = {"", "",
                           "\xEF\xBF\xBD"
                           "A"};
    expect_stream(tok, c, 3, c_out, c_out[2], "F0 9F A");
    /* ED A0: a surrogate is invalid as soon as its second byte shows it */
    int32_t s[] = {byte_token(tok, 0xED), byte_token(tok, 0xA0), byte_token(tok, 0x80)};
    const char *s_out[] = {"", "\xEF\xBF\xBD\xEF\xBF\xBD", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"};
    expect_stream(tok, s, 3, s_out, s_out[2], "ED A0 80");
    /* an incomplete character at the end becomes one U+FFFD on flush */
    int32_t e[] = {byte_token(tok, 'z'), byte_token(tok, 0xE4), byte_token(tok, 0xB8)};
    const char *e_out[] = {"z", "z", "z"};
    expect_stream(tok, e, 3, e_out, "z\xEF\xBF\xBD", "truncated at end");

    /* an unknown id fails and changes nothing; the detokenizer goes on */
    glm_detokenizer d;
    glm_detokenizer_init(&d, tok);
    glm_bytes out = {0};
    glm_error err = {0};
    CHECK(glm_detokenizer_push(&d, byte_token(tok, 0xE5), &out, &err) == GLM_OK);
    CHECK(glm_detokenizer_push(&d, glm_tokenizer_vocab_size(tok), &out, &err) ==
          GLM_ERR_INVALID_ARG);
    CHECK(glm_detokenizer_push(&d, -1, &out, &err) == GLM_ERR_INVALID_ARG);
    CHECK(glm_detokenizer_pending(&d) == 1 && out.len == 0);
    CHECK(glm_detokenizer_push(&d, byte_token(tok, 0x9B), &out, &err) == GLM_OK);
    CHECK(glm_detokenizer_push(&d, byte_token(tok, 0xBE), &out, &err) == GLM_OK);
    CHECK(out.len == 3 && memcmp(out.data, "\xE5\x9B\xBE", 3) == 0);
    /* special ids stream their names */
    CHECK(glm_detokenizer_push(&d, glm_tokenizer_special_id(tok, "<|user|>"), &out, &err) ==
          GLM_OK);
    CHECK(out.len == 11 && memcmp(out.data + 3, "<|user|>", 8) == 0);
    glm_bytes_free(&out);
}

/* Random id sequences (real encodings, byte-by-byte spellings, random ids): after every push the
 * output is valid UTF-8 and equals the repaired decode of everything but the held bytes; at the
 * end it equals the repaired decode of all ids. */
static void test_stream_invariant(const glm_tokenizer *tok)
{
    static const char *atoms[] = {"a",
                                  " ",
                                  "\n",
                                  "\xE5\x9B\xBE",
                                  "\xE7\x89\x87",
                                  "\xC3\xA9",
                                  "\xF0\x9F\x98\x80",
                                  "\xD0\xBA\xD0\xB0\xD0\xBA",
                                  "\xEF\xBC\x8C",
                                  "\xE9\x98\xB3",
                                  "!"};
    test_rng rng;
    test_rng_seed(&rng, 11);
    glm_error err = {0};
    int failures = 0;
    for (int trial = 0; trial < 400 && failures < 3; trial++) {
        glm_bytes text = {0};
        glm_token_ids ids = {0};
        int n_atoms = test_rng_int(&rng, 0, 30);
        for (int i = 0; i < n_atoms; i++) {
            const char *a = atoms[test_rng_int(&rng, 0, sizeof atoms / sizeof atoms[0] - 1)];
            glm_bytes_append(&text, a, strlen(a), NULL);
        }
        int mode = trial % 3;
        if (mode == 0) {
            glm_tokenizer_encode(tok, text.data ? text.data : "", text.len, &ids, &err);
        } else if (mode == 1) {
            for (size_t i = 0; i < text.len; i++)
                glm_token_ids_push(&ids, byte_token(tok, (unsigned char)text.data[i]), NULL);
        } else {
            int n = test_rng_int(&rng, 0, 40);
            for (int i = 0; i < n; i++)
                glm_token_ids_push(&ids, test_rng_int(&rng, 0, glm_tokenizer_vocab_size(tok) - 1),
                                   NULL);
        }
        glm_detokenizer d;
        glm_detokenizer_init(&d, tok);
        glm_bytes out = {0}, prefix = {0}, repaired = {0};
        for (size_t k = 0; k < ids.n; k++) {
            glm_detokenizer_push(&d, ids.ids[k], &out, &err);
            glm_tokenizer_decode(tok, &ids.ids[k], 1, &prefix, &err);
            size_t held = glm_detokenizer_pending(&d);
            repaired.len = 0;
            glm_utf8_sanitize(prefix.data, prefix.len - held, &repaired, &err);
            glm_bytes_append(&repaired, "", 0, NULL);
            if (held > 3 || out.len != repaired.len ||
                memcmp(out.data ? out.data : "", repaired.data, out.len) != 0) {
                failures++;
                CHECK_MSG(0, "stream trial %d (mode %d) diverges at token %zu", trial, mode, k);
                break;
            }
        }
        glm_detokenizer_flush(&d, &out, &err);
        repaired.len = 0;
        glm_utf8_sanitize(prefix.data ? prefix.data : "", prefix.len, &repaired, &err);
        glm_bytes_append(&repaired, "", 0, NULL);
        CHECK_MSG(out.len == repaired.len &&
                      memcmp(out.data ? out.data : "", repaired.data, out.len) == 0,
                  "stream trial %d (mode %d): flushed text differs", trial, mode);
        glm_bytes_free(&out);
        glm_bytes_free(&prefix);
        glm_bytes_free(&repaired);
        glm_bytes_free(&text);
        glm_token_ids_free(&ids);
    }
}

void test_detokenizer(const glm_tokenizer *tok)
{
    test_split_characters(tok);
    test_invalid_sequences(tok);
    test_stream_invariant(tok);
}
