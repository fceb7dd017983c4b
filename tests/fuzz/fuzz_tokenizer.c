/* libFuzzer harness for the tokenizer, detokenizer and chat template.
 *
 * The input bytes are encoded as text (any bytes: invalid UTF-8 is repaired), decoded back,
 * compared with the repaired input, and streamed through the detokenizer token by token and
 * byte token by byte token; they are also read as little-endian 16-bit ids (valid or not) for
 * decode and the detokenizer, used as one user message of the chat template, and parsed as a
 * tokenizer.model.
 *
 * Tokenizer file: $GLM4V_FUZZ_TOKENIZER, else $GLM4V_TESTDATA/glm4v-tiny-b/tokenizer.model, else
 * GLM4V_FUZZ_TESTDATA (a compile-time default, ../shared/testdata unless defined)/glm4v-tiny-b.
 * Build: clang -fsanitize=fuzzer,address,undefined with coordinator/text/tokenizer.c,
 * tokenizer_encode.c, detokenizer.c, chat_template.c, common/status.c and -lpcre2-8. */
#include "coordinator/text/chat_template.h"
#include "coordinator/text/detokenizer.h"
#include "coordinator/text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef GLM4V_FUZZ_TESTDATA
#define GLM4V_FUZZ_TESTDATA "../shared/testdata"
#endif

/* Loaded once and kept for the life of the fuzzing process (libFuzzer has no teardown hook). */
static glm_tokenizer *fuzz_tok;
static int32_t byte_id[256]; /* id of each single-byte token */

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_tokenizer: %s: %s\n", what, detail);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[4096];
    const char *explicit_path = getenv("GLM4V_FUZZ_TOKENIZER");
    const char *testdata = getenv("GLM4V_TESTDATA");
    if (explicit_path && *explicit_path)
        snprintf(path, sizeof path, "%s", explicit_path);
    else
        snprintf(path, sizeof path, "%s/glm4v-tiny-b/tokenizer.model",
                 testdata && *testdata ? testdata : GLM4V_FUZZ_TESTDATA);
    glm_error err = {0};
    if (glm_tokenizer_load(path, &fuzz_tok, &err) != GLM_OK) die("cannot load tokenizer", err.msg);
    for (int b = 0; b < 256; b++) {
        glm_token_ids ids = {0};
        char byte = (char)b;
        /* a lone byte >= 0x80 encodes as U+FFFD, so find those by scanning the ranks */
        byte_id[b] = -1;
        if (b < 0x80 && glm_tokenizer_encode(fuzz_tok, &byte, 1, &ids, &err) == GLM_OK &&
            ids.n == 1)
            byte_id[b] = ids.ids[0];
        for (int32_t r = 0; byte_id[b] < 0 && r < glm_tokenizer_n_ranks(fuzz_tok); r++) {
            const char *bytes;
            size_t len;
            glm_tokenizer_token_bytes(fuzz_tok, r, &bytes, &len, NULL);
            if (len == 1 && bytes[0] == byte) byte_id[b] = r;
        }
        if (byte_id[b] < 0) die("tokenizer", "a byte has no token");
        glm_token_ids_free(&ids);
    }
    return 0;
}

static void check_same(const glm_bytes *a, const glm_bytes *b, const char *what)
{
    if (a->len != b->len || (a->len && memcmp(a->data, b->data, a->len) != 0)) die(what, "differ");
}

/* Streams ids through a detokenizer; the text must equal the repaired decode. */
static void check_stream(const int32_t *ids, size_t n, const glm_bytes *expected)
{
    glm_detokenizer d;
    glm_detokenizer_init(&d, fuzz_tok);
    glm_bytes out = {0};
    glm_error err = {0};
    for (size_t i = 0; i < n; i++) {
        if (glm_detokenizer_push(&d, ids[i], &out, &err) != GLM_OK) die("push", err.msg);
        if (glm_detokenizer_pending(&d) > 3) die("push", "holds more than 3 bytes");
    }
    if (glm_detokenizer_flush(&d, &out, &err) != GLM_OK) die("flush", err.msg);
    check_same(&out, expected, "streamed text vs repaired decode");
    glm_bytes_free(&out);
}

static void fuzz_text(const char *data, size_t size)
{
    glm_error err = {0};
    glm_token_ids ids = {0};
    glm_bytes repaired = {0}, decoded = {0};
    if (glm_utf8_sanitize(data, size, &repaired, &err) != GLM_OK) die("sanitize", err.msg);
    if (glm_tokenizer_encode(fuzz_tok, data, size, &ids, &err) != GLM_OK) die("encode", err.msg);
    for (size_t i = 0; i < ids.n; i++)
        if (ids.ids[i] < 0 || ids.ids[i] >= glm_tokenizer_n_ranks(fuzz_tok))
            die("encode", "produced a special or out-of-range id");
    if (glm_tokenizer_decode(fuzz_tok, ids.ids, ids.n, &decoded, &err) != GLM_OK)
        die("decode", err.msg);
    check_same(&decoded, &repaired, "decode(encode(x)) vs repaired x");
    check_stream(ids.ids, ids.n, &repaired);

    /* the input's bytes one token each: the detokenizer must repair exactly like sanitize */
    glm_token_ids byte_ids = {0};
    for (size_t i = 0; i < size; i++)
        glm_token_ids_push(&byte_ids, byte_id[(unsigned char)data[i]], NULL);
    check_stream(byte_ids.ids, byte_ids.n, &repaired);
    glm_token_ids_free(&byte_ids);
    glm_token_ids_free(&ids);
    glm_bytes_free(&repaired);
    glm_bytes_free(&decoded);
}

static void fuzz_ids(const unsigned char *data, size_t size)
{
    size_t n = size / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int all_valid = 1;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8) - 8; /* some negative ids too */
        all_valid &= ids[i] >= 0 && ids[i] < glm_tokenizer_vocab_size(fuzz_tok);
    }
    glm_bytes decoded = {0}, repaired = {0};
    glm_error err = {0};
    glm_status st = glm_tokenizer_decode(fuzz_tok, ids, n, &decoded, &err);
    if (all_valid != (st == GLM_OK)) die("decode of raw ids", "status disagrees with the ids");
    if (st == GLM_OK) {
        glm_utf8_sanitize(decoded.data ? decoded.data : "", decoded.len, &repaired, &err);
        check_stream(ids, n, &repaired);
    } else if (st != GLM_ERR_INVALID_ARG || decoded.len != 0) {
        die("decode of raw ids", "bad ids must fail with INVALID_ARG and leave out empty");
    }
    glm_bytes_free(&decoded);
    glm_bytes_free(&repaired);
    free(ids);
}

static void fuzz_chat(const char *data, size_t size)
{
    glm_chat_message msg = {GLM_CHAT_USER, data, size, size % 2 == 1, 0};
    glm_chat_prompt prompt = {0};
    glm_error err = {0};
    if (glm_chat_template_apply(fuzz_tok, &msg, 1, true, &prompt, &err) != GLM_OK)
        die("chat template", err.msg);
    if (msg.has_image &&
        (prompt.n_images != 1 || prompt.ids.ids[prompt.boi_index[0]] !=
                                     glm_tokenizer_special_id(fuzz_tok, "<|begin_of_image|>")))
        die("chat template", "boi index is wrong");
    glm_chat_prompt_free(&prompt);
}

/* The same bytes as a tokenizer.model: the parser must reject or load them without faults. */
static void fuzz_load(const char *data, size_t size)
{
    glm_tokenizer *tok = NULL;
    glm_error err = {0};
    if (glm_tokenizer_load_buffer(data, size, "fuzz", 0, &tok, &err) == GLM_OK) {
        glm_token_ids ids = {0};
        glm_tokenizer_encode(tok, data, size, &ids, &err);
        glm_token_ids_free(&ids);
    } else if (tok != NULL) {
        die("load_buffer", "failed but returned a tokenizer");
    }
    glm_tokenizer_destroy(tok);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (!fuzz_tok) LLVMFuzzerInitialize(NULL, NULL);
    fuzz_text((const char *)data, size);
    fuzz_ids(data, size);
    fuzz_chat((const char *)data, size);
    fuzz_load((const char *)data, size);
    return 0;
}
