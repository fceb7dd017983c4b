/* Tokenizer and chat template: golden ids of both test checkpoints, file validation, UTF-8 repair,
 * special-token injection, long pieces, and the PCRE2 interpreter / heap merge agreeing with the
 * default path. The streaming detokenizer is tested in test_tokenizer_stream.c. */
#include "coordinator/text/chat_template.h"
#include "coordinator/text/tokenizer.h"
#include "tests/testutil.h"

#include <cJSON.h>
#include <string.h>
#include <time.h>

void test_detokenizer(const glm_tokenizer *tok); /* test_tokenizer_stream.c */

static const char *const folders[] = {"glm4v-tiny-a", "glm4v-tiny-b"};

static int ids_equal_json(const glm_token_ids *ids, const cJSON *array)
{
    if (!cJSON_IsArray(array) || (size_t)cJSON_GetArraySize(array) != ids->n) return 0;
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, array)
    {
        if (!cJSON_IsNumber(v) || v->valueint != ids->ids[i++]) return 0;
    }
    return 1;
}

static cJSON *load_golden(const char *folder)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/golden.json", test_testdata_dir(), folder);
    size_t len;
    unsigned char *data = test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s", path);
    if (!data) return NULL;
    cJSON *json = cJSON_ParseWithLength((const char *)data, len);
    free(data);
    CHECK_MSG(json != NULL, "%s is not JSON", path);
    return json;
}

/* Special ids, tokenizer samples and the text/image prompts of one golden folder. */
static void test_golden_folder(const char *folder)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/tokenizer.model", test_testdata_dir(), folder);
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    CHECK_MSG(glm_tokenizer_load(path, &tok, &err) == GLM_OK, "%s", err.msg);
    cJSON *golden = load_golden(folder);
    if (!tok || !golden) goto done;

    const cJSON *info = cJSON_GetObjectItem(golden, "tokenizer");
    CHECK(glm_tokenizer_n_ranks(tok) == cJSON_GetObjectItem(info, "n_ranks")->valueint);
    CHECK(glm_tokenizer_vocab_size(tok) == glm_tokenizer_n_ranks(tok) + GLM_TOKENIZER_N_SPECIAL);
    const cJSON *special;
    int n_specials = 0;
    cJSON_ArrayForEach(special, cJSON_GetObjectItem(info, "specials"))
    {
        n_specials++;
        CHECK_MSG(glm_tokenizer_special_id(tok, special->string) == special->valueint, "%s %s",
                  folder, special->string);
    }
    CHECK(n_specials == GLM_TOKENIZER_N_SPECIAL);
    CHECK(glm_tokenizer_special_id(tok, "<|nonsense|>") == -1);

    const cJSON *sample;
    cJSON_ArrayForEach(sample, cJSON_GetObjectItem(info, "samples"))
    {
        const char *text = cJSON_GetObjectItem(sample, "text")->valuestring;
        glm_token_ids ids = {0};
        glm_bytes back = {0};
        CHECK(glm_tokenizer_encode(tok, text, strlen(text), &ids, &err) == GLM_OK);
        CHECK_MSG(ids_equal_json(&ids, cJSON_GetObjectItem(sample, "ids")), "%s sample '%s'",
                  folder, text);
        CHECK(glm_tokenizer_decode(tok, ids.ids, ids.n, &back, &err) == GLM_OK);
        CHECK_MSG(back.len == strlen(text) && memcmp(back.data, text, back.len) == 0,
                  "%s sample '%s' round trip", folder, text);
        glm_token_ids_free(&ids);
        glm_bytes_free(&back);
    }

    const cJSON *eos;
    int eos_ok = 1;
    cJSON_ArrayForEach(eos, cJSON_GetObjectItem(golden, "eos_token_id"))
    {
        eos_ok &= eos->valueint == glm_tokenizer_special_id(tok, "<|endoftext|>") ||
                  eos->valueint == glm_tokenizer_special_id(tok, "<|user|>") ||
                  eos->valueint == glm_tokenizer_special_id(tok, "<|observation|>");
    }
    CHECK(eos_ok);

    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(golden, "cases"))
    {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        if (strcmp(name, "random") == 0) continue; /* random ids, no prompt behind them */
        n_cases++;
        const char *prompt_text = "Describe the picture in detail.";
        glm_chat_message msg = {GLM_CHAT_USER, prompt_text, strlen(prompt_text),
                                cJSON_IsTrue(cJSON_GetObjectItem(c, "uses_image")), 0};
        glm_chat_prompt prompt = {0};
        CHECK_MSG(glm_chat_template_apply(tok, &msg, 1, true, &prompt, &err) == GLM_OK, "%s",
                  err.msg);
        CHECK_MSG(ids_equal_json(&prompt.ids, cJSON_GetObjectItem(c, "input_ids")),
                  "%s case %s: prompt ids differ from golden.json", folder, name);
        CHECK(prompt.n_images == (msg.has_image ? 1u : 0u));
        if (msg.has_image) {
            CHECK(prompt.boi_index[0] == 4);
            CHECK(prompt.ids.ids[prompt.boi_index[0]] ==
                  glm_tokenizer_special_id(tok, "<|begin_of_image|>"));
        }
        glm_chat_prompt_free(&prompt);
    }
    CHECK_MSG(n_cases == 2, "%s: expected the text and image cases", folder);
done:
    cJSON_Delete(golden);
    glm_tokenizer_destroy(tok);
}

/* A tokenizer.model with all 256 bytes plus extra lines, written to dir/name. */
static glm_status load_with_extra(const char *dir, const char *extra, int skip_byte,
                                  glm_tokenizer **tok, glm_error *err)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    glm_bytes file = {0};
    int rank = 0;
    for (int b = 0; b < 256; b++) {
        if (b == skip_byte) continue;
        char line[32];
        snprintf(line, sizeof line, "%c%c== %d\n", alphabet[b >> 2], alphabet[(b & 3) << 4],
                 rank++);
        glm_bytes_append(&file, line, strlen(line), NULL);
    }
    glm_bytes_append(&file, extra, strlen(extra), NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    test_write_file(path, file.data, file.len);
    glm_bytes_free(&file);
    return glm_tokenizer_load(path, tok, err);
}

static void expect_load_error(const char *dir, const char *extra, int skip_byte,
                              const char *message_part)
{
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    glm_status st = load_with_extra(dir, extra, skip_byte, &tok, &err);
    CHECK_MSG(st == GLM_ERR_FORMAT && tok == NULL, "'%s' loaded (status %d)", extra, st);
    CHECK_MSG(strstr(err.msg, message_part) != NULL, "'%s': message '%s' lacks '%s'", extra,
              err.msg, message_part);
    glm_tokenizer_destroy(tok);
}

static void test_file_validation(void)
{
    char *dir = test_mkdtemp();
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    /* "YWI=" is "ab", "Y2Q=" is "cd" */
    CHECK(load_with_extra(dir, "YWI= 256\r\n\nY2Q= 257\n", -1, &tok, &err) == GLM_OK);
    if (tok) {
        CHECK(glm_tokenizer_n_ranks(tok) == 258);
        glm_token_ids ids = {0};
        glm_tokenizer_encode(tok, "abcd", 4, &ids, &err);
        CHECK(ids.n == 2 && ids.ids[0] == 256 && ids.ids[1] == 257);
        glm_token_ids_free(&ids);
    }
    glm_tokenizer_destroy(tok);
    expect_load_error(dir, "YW!= 256\n", -1, "bad base64");
    expect_load_error(dir, "YWI 256\n", -1, "bad base64");
    expect_load_error(dir, "YW=I 256\n", -1, "bad base64");
    expect_load_error(dir, " 256\n", -1, "bad base64");
    expect_load_error(dir, "YWI=\n", -1, "expected 'base64 rank'");
    expect_load_error(dir, "YWI= 25x\n", -1, "bad rank");
    expect_load_error(dir, "YWI= \n", -1, "missing rank");
    expect_load_error(dir, "YWI= 99999999999\n", -1, "bad rank");
    expect_load_error(dir, "YWI= 256\nY2Q= 256\n", -1, "duplicate rank");
    expect_load_error(dir, "YWI= 256\nYWI= 257\n", -1, "duplicates rank 256");
    expect_load_error(dir, "YWI= 256\nY2Q= 258\n", -1, "without gaps");
    expect_load_error(dir, "", 'x', "byte 0x78 is not a token");
    char path[1024];
    snprintf(path, sizeof path, "%s/empty.model", dir);
    test_write_file(path, "", 0);
    CHECK(glm_tokenizer_load(path, &tok, &err) == GLM_ERR_FORMAT && tok == NULL);
    snprintf(path, sizeof path, "%s/missing.model", dir);
    CHECK(glm_tokenizer_load(path, &tok, &err) == GLM_ERR_IO && tok == NULL);
    CHECK(strstr(err.msg, "missing.model") != NULL);
    test_rmtree(dir);
    free(dir);
}

static void test_utf8_repair(const glm_tokenizer *tok)
{
    /* expected values from Python: bytes.decode("utf-8", errors="replace").encode() */
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"\x80", 1, "\xEF\xBF\xBD"},
        {"a\xFF"
         "b",
         3,
         "a\xEF\xBF\xBD"
         "b"},
        {"\xC3", 1, "\xEF\xBF\xBD"},
        {"\xC3"
         "A",
         2,
         "\xEF\xBF\xBD"
         "A"},
        {"\xE4\xB8", 2, "\xEF\xBF\xBD"},
        {"\xE4\xB8\xAD"
         "Z",
         4,
         "\xE4\xB8\xAD"
         "Z"},
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xE0\x80\xAF", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xF0\x9F\x98", 3, "\xEF\xBF\xBD"},
        {"\xF0\x9F\x98"
         "A",
         4,
         "\xEF\xBF\xBD"
         "A"},
        {"\xF4\x90\x80\x80", 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xF5\x80", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xC0\xAF", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xF0\x9F\x98\x80\x80", 5, "\xF0\x9F\x98\x80\xEF\xBF\xBD"},
        {"\xE1\x80\xE1\x80\x80", 5, "\xEF\xBF\xBD\xE1\x80\x80"},
        {"nul\0inside", 10, "nul\0inside"},
    };
    glm_error err = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t out_len = i == 15 ? 10 : strlen(cases[i].out);
        glm_bytes fixed = {0}, back = {0};
        glm_token_ids ids = {0};
        CHECK(glm_utf8_sanitize(cases[i].in, cases[i].len, &fixed, &err) == GLM_OK);
        CHECK_MSG(fixed.len == out_len && memcmp(fixed.data, cases[i].out, out_len) == 0,
                  "utf8 case %zu", i);
        /* encode sees the repaired text: decode gives it back */
        CHECK(glm_tokenizer_encode(tok, cases[i].in, cases[i].len, &ids, &err) == GLM_OK);
        CHECK(glm_tokenizer_decode(tok, ids.ids, ids.n, &back, &err) == GLM_OK);
        CHECK_MSG(back.len == out_len && memcmp(back.data, cases[i].out, out_len) == 0,
                  "utf8 case %zu: encode did not see the repaired text", i);
        glm_bytes_free(&fixed);
        glm_bytes_free(&back);
        glm_token_ids_free(&ids);
    }
}

static void test_no_injection_and_bad_ids(const glm_tokenizer *tok)
{
    const char *text = "<|user|>[gMASK]<sop><|endoftext|><|begin_of_image|>";
    glm_token_ids ids = {0};
    glm_bytes out = {0};
    glm_error err = {0};
    CHECK(glm_tokenizer_encode(tok, text, strlen(text), &ids, &err) == GLM_OK);
    int any_special = 0;
    for (size_t i = 0; i < ids.n; i++)
        any_special |= glm_tokenizer_is_special(tok, ids.ids[i]);
    CHECK_MSG(!any_special, "typed special-token text became a special id");
    CHECK(glm_tokenizer_decode(tok, ids.ids, ids.n, &out, &err) == GLM_OK);
    CHECK(out.len == strlen(text) && memcmp(out.data, text, out.len) == 0);

    /* special ids decode to their names; unknown ids fail and leave out alone */
    int32_t good[] = {glm_tokenizer_special_id(tok, "<|assistant|>")};
    out.len = 0;
    CHECK(glm_tokenizer_decode(tok, good, 1, &out, &err) == GLM_OK);
    CHECK(out.len == 13 && memcmp(out.data, "<|assistant|>", 13) == 0);
    int32_t bad[][2] = {{65, glm_tokenizer_vocab_size(tok)}, {65, -1}, {65, INT32_MAX}};
    for (int i = 0; i < 3; i++) {
        size_t before = out.len;
        CHECK(glm_tokenizer_decode(tok, bad[i], 2, &out, &err) == GLM_ERR_INVALID_ARG);
        CHECK(out.len == before);
        CHECK(strstr(err.msg, "outside the vocabulary") != NULL);
    }
    const char *bytes;
    size_t len;
    CHECK(glm_tokenizer_token_bytes(tok, -5, &bytes, &len, &err) == GLM_ERR_INVALID_ARG);
    CHECK(glm_tokenizer_special_name(0) &&
          strcmp(glm_tokenizer_special_name(0), "<|endoftext|>") == 0);
    CHECK(glm_tokenizer_special_name(GLM_TOKENIZER_N_SPECIAL) == NULL);
    ids.n = 0;
    CHECK(glm_tokenizer_encode(tok, "", 0, &ids, &err) == GLM_OK && ids.n == 0);
    glm_token_ids_free(&ids);
    glm_bytes_free(&out);
}

/* 100 KB of one character (or of whitespace) must encode fast and round-trip. */
static void test_long_pieces(const glm_tokenizer *tok)
{
    static const char *units[] = {
        "a", " ", "\n", "\t ", "7", "!", "\xE5\x9B\xBE", "\xF0\x9F\x98\x80", " \n", "\xE3\x80\x80"};
    const size_t target = 100 * 1000;
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        glm_bytes text = {0}, back = {0};
        glm_token_ids ids = {0};
        glm_error err = {0};
        while (text.len < target)
            glm_bytes_append(&text, units[u], strlen(units[u]), NULL);
        clock_t t0 = clock();
        CHECK(glm_tokenizer_encode(tok, text.data, text.len, &ids, &err) == GLM_OK);
        double seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
        /* generous: ~10 ms natively; valgrind runs this 20-50x slower */
        CHECK_MSG(seconds < 5.0, "100 KB of unit %zu took %.2f s", u, seconds);
        CHECK(glm_tokenizer_decode(tok, ids.ids, ids.n, &back, &err) == GLM_OK);
        CHECK_MSG(back.len == text.len && memcmp(back.data, text.data, text.len) == 0,
                  "100 KB of unit %zu does not round-trip", u);
        glm_bytes_free(&text);
        glm_bytes_free(&back);
        glm_token_ids_free(&ids);
    }
}

/* Random mixed text: the interpreter and the heap merge give the default path's ids. */
static void test_variants_agree(const char *path)
{
    static const char *atoms[] = {"a",
                                  "b",
                                  "e",
                                  "the",
                                  " ",
                                  "  ",
                                  "\n",
                                  "\r\n",
                                  "\t",
                                  "'s",
                                  "'LL",
                                  "1",
                                  "42",
                                  "!",
                                  "?!",
                                  ".",
                                  "\xE5\x9B\xBE",
                                  "\xE7\x89\x87",
                                  "\xF0\x9F\x98\x80",
                                  "\xC3\xA9",
                                  "\xE3\x80\x80",
                                  "\xC2\xA0",
                                  "\xE1\xA0\x8E",
                                  "\xFF",
                                  "\xE4\xB8",
                                  "D",
                                  "es",
                                  "cribe"};
    glm_error err = {0};
    glm_tokenizer *fast = NULL, *slow = NULL;
    CHECK(glm_tokenizer_load(path, &fast, &err) == GLM_OK);
    CHECK(glm_tokenizer_load_ex(path, GLM_TOKENIZER_NO_JIT | GLM_TOKENIZER_HEAP_MERGE, &slow,
                                &err) == GLM_OK);
    if (!fast || !slow) goto done;
    CHECK(!glm_tokenizer_uses_jit(slow));
    test_rng rng;
    test_rng_seed(&rng, 7);
    int disagreements = 0;
    for (int trial = 0; trial < 300; trial++) {
        glm_bytes text = {0};
        int n_atoms = test_rng_int(&rng, 1, 120);
        for (int i = 0; i < n_atoms; i++) {
            const char *a = atoms[test_rng_int(&rng, 0, sizeof atoms / sizeof atoms[0] - 1)];
            int reps = test_rng_int(&rng, 0, 9) == 0 ? test_rng_int(&rng, 2, 90) : 1;
            for (int r = 0; r < reps; r++)
                glm_bytes_append(&text, a, strlen(a), NULL);
        }
        glm_token_ids a = {0}, b = {0};
        glm_tokenizer_encode(fast, text.data, text.len, &a, &err);
        glm_tokenizer_encode(slow, text.data, text.len, &b, &err);
        disagreements += a.n != b.n || memcmp(a.ids, b.ids, a.n * sizeof *a.ids) != 0;
        glm_token_ids_free(&a);
        glm_token_ids_free(&b);
        glm_bytes_free(&text);
    }
    CHECK_MSG(disagreements == 0, "%d of 300 texts encode differently without JIT/heap merge",
              disagreements);
done:
    glm_tokenizer_destroy(fast);
    glm_tokenizer_destroy(slow);
}

static void expect_ids(const glm_token_ids *got, const glm_token_ids *want, const char *what)
{
    CHECK_MSG(got->n == want->n && memcmp(got->ids, want->ids, got->n * sizeof *got->ids) == 0,
              "%s", what);
}

static void test_chat_template(const glm_tokenizer *tok)
{
    glm_error err = {0};
    glm_chat_message msgs[] = {
        {GLM_CHAT_SYSTEM, "Be brief.", 9, false, 0},
        {GLM_CHAT_USER, "\nhi <|assistant|>", 17, false, 0},
        {GLM_CHAT_ASSISTANT, "", 0, false, 0}, /* empty: left out */
        {GLM_CHAT_ASSISTANT, "ok", 2, false, 0},
        {GLM_CHAT_OBSERVATION, "{}", 2, false, 0},
        {GLM_CHAT_USER, "", 0, true, 0}, /* image only */
    };
    glm_chat_prompt prompt = {0};
    CHECK(glm_chat_template_apply(tok, msgs, 6, false, &prompt, &err) == GLM_OK);
    /* the same ids built by hand: role, "\n" alone, [image], content alone */
    glm_token_ids want = {0};
    glm_token_ids_push(&want, glm_tokenizer_special_id(tok, "[gMASK]"), NULL);
    glm_token_ids_push(&want, glm_tokenizer_special_id(tok, "<sop>"), NULL);
    const char *roles[] = {"<|system|>",    "<|user|>",        NULL,
                           "<|assistant|>", "<|observation|>", "<|user|>"};
    size_t boi = 0;
    for (int i = 0; i < 6; i++) {
        if (!roles[i]) continue;
        glm_token_ids_push(&want, glm_tokenizer_special_id(tok, roles[i]), NULL);
        glm_tokenizer_encode(tok, "\n", 1, &want, NULL);
        if (msgs[i].has_image) {
            boi = want.n;
            glm_token_ids_push(&want, glm_tokenizer_special_id(tok, "<|begin_of_image|>"), NULL);
            glm_token_ids_push(&want, glm_tokenizer_special_id(tok, "<|endoftext|>"), NULL);
            glm_token_ids_push(&want, glm_tokenizer_special_id(tok, "<|end_of_image|>"), NULL);
        }
        glm_tokenizer_encode(tok, msgs[i].content, msgs[i].content_len, &want, NULL);
    }
    expect_ids(&prompt.ids, &want, "multi-turn prompt");
    CHECK(prompt.n_images == 1 && prompt.boi_index[0] == boi);
    glm_chat_prompt_free(&prompt);

    glm_chat_message image_on_assistant = {GLM_CHAT_ASSISTANT, "x", 1, true, 0};
    CHECK(glm_chat_template_apply(tok, &image_on_assistant, 1, true, &prompt, &err) ==
          GLM_ERR_INVALID_ARG);
    CHECK(prompt.ids.n == 0 && prompt.ids.ids == NULL);
    glm_chat_message bad_role = {(glm_chat_role)9, "x", 1, false, 0};
    CHECK(glm_chat_template_apply(tok, &bad_role, 1, true, &prompt, &err) == GLM_ERR_INVALID_ARG);
    glm_chat_message many[GLM_CHAT_MAX_IMAGES + 1];
    for (int i = 0; i <= GLM_CHAT_MAX_IMAGES; i++)
        many[i] = (glm_chat_message){GLM_CHAT_USER, "x", 1, true, 0};
    CHECK(glm_chat_template_apply(tok, many, GLM_CHAT_MAX_IMAGES, true, &prompt, &err) == GLM_OK);
    CHECK(prompt.n_images == GLM_CHAT_MAX_IMAGES);
    glm_chat_prompt_free(&prompt);
    CHECK(glm_chat_template_apply(tok, many, GLM_CHAT_MAX_IMAGES + 1, true, &prompt, &err) ==
          GLM_ERR_LIMIT);

    glm_chat_role role;
    CHECK(glm_chat_role_from_name("observation", &role, &err) == GLM_OK &&
          role == GLM_CHAT_OBSERVATION);
    CHECK(glm_chat_role_from_name("tool", &role, &err) == GLM_ERR_INVALID_ARG);
    CHECK(strcmp(glm_chat_role_name(GLM_CHAT_ASSISTANT), "assistant") == 0);
    CHECK(glm_chat_role_name((glm_chat_role)7) == NULL);
    glm_token_ids_free(&want);
}

int main(void)
{
    for (size_t i = 0; i < sizeof folders / sizeof folders[0]; i++)
        test_golden_folder(folders[i]);
    test_file_validation();

    char path[1024];
    snprintf(path, sizeof path, "%s/glm4v-tiny-b/tokenizer.model", test_testdata_dir());
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    CHECK_MSG(glm_tokenizer_load(path, &tok, &err) == GLM_OK, "%s", err.msg);
    if (tok) {
        test_utf8_repair(tok);
        test_no_injection_and_bad_ids(tok);
        test_long_pieces(tok);
        test_chat_template(tok);
        test_detokenizer(tok);
    }
    glm_tokenizer_destroy(tok);
    test_variants_agree(path);
    return test_finish("tokenizer");
}
