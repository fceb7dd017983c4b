/* Chunk and Result text with NUL bytes (proto/glm4v.proto: text is `bytes`): the codec carries
 * every byte with its length, the Result JSON writes a NUL as \u0000, and the change is wire
 * compatible both ways with the `string text` of before (glm4v_text_v1.proto, generated here: an
 * old reader and an old writer). No Redis needed. */
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/result_json.h"
#include "tests/coordinator/queue/glm4v_text_v1.pb-c.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <string.h>

/* UTF-8 with NULs at the start, inside and at the end, a control byte, a quote and a backslash */
static const char TEXT[] = "\0a\xc3\xa9\0\x16\"\\z\0";
#define TEXT_BYTES (sizeof TEXT - 1)

static void test_chunk_round_trip(void)
{
    const int32_t ids[] = {0};
    glm_chunk c = {.id = "j",
                   .index = 2,
                   .text = TEXT,
                   .text_bytes = TEXT_BYTES,
                   .token_ids = ids,
                   .n_tokens = 1};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_chunk_encode(&c, &bytes, &len, NULL) == GLM_OK);
    glm_chunk *d = NULL;
    CHECK(glm_chunk_decode(bytes, len, &d, NULL) == GLM_OK);
    free(bytes);
    if (!d) return;
    CHECK_MSG(d->text_bytes == TEXT_BYTES, "%zu bytes", d->text_bytes);
    CHECK(glm_chunk_text_bytes(d) == TEXT_BYTES);
    CHECK(memcmp(d->text, TEXT, TEXT_BYTES) == 0);
    CHECK(d->text[TEXT_BYTES] == '\0'); /* still a C string past its end */
    glm_chunk_free(d);

    /* a text that is one NUL byte (the token alone) is not an empty text */
    c.text = "";
    c.text_bytes = 1;
    CHECK(glm_chunk_encode(&c, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_chunk_decode(bytes, len, &d, NULL) == GLM_OK);
    free(bytes);
    if (d) CHECK(d->text_bytes == 1 && d->text[0] == '\0');
    glm_chunk_free(d);
}

static void test_result_round_trip_and_json(void)
{
    glm_result r = {.id = "j",
                    .text = TEXT,
                    .text_bytes = TEXT_BYTES,
                    .finish_reason = GLM_FINISH_STOP,
                    .usage = {.prompt_tokens = 48, .image_tokens = 33, .completion_tokens = 5},
                    .server_id = "s"};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    glm_result *d = NULL;
    CHECK(glm_result_decode(bytes, len, &d, NULL) == GLM_OK);
    free(bytes);
    if (!d) return;
    CHECK_MSG(d->text_bytes == TEXT_BYTES, "%zu bytes", d->text_bytes);
    CHECK(glm_result_text_bytes(d) == TEXT_BYTES);
    CHECK(memcmp(d->text, TEXT, TEXT_BYTES) == 0 && d->text[TEXT_BYTES] == '\0');
    CHECK(d->usage.prompt_tokens == 48 && d->usage.image_tokens == 33);

    char *json = glm_result_to_json(d);
    CHECK(json != NULL);
    const char *want = "\"text\":\"\\u0000a\xc3\xa9\\u0000\\u0016\\\"\\\\z\\u0000\"";
    CHECK_MSG(json && strstr(json, want), "%s", json ? json : "(null)");
    /* the rest of the line is still JSON that parses, with the fields after the text */
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    CHECK(o && cJSON_IsString(cJSON_GetObjectItem(o, "text")) &&
          cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "prompt_tokens")->valueint == 48);
    cJSON_Delete(o);
    free(json);
    glm_result_free(d);

    /* a hand-built Result that leaves text_bytes 0: its C string, as before */
    glm_result plain = {.id = "p", .text = "hello", .server_id = "s"};
    CHECK(glm_result_text_bytes(&plain) == 5);
    CHECK(glm_result_encode(&plain, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_result_decode(bytes, len, &d, NULL) == GLM_OK);
    free(bytes);
    if (d) CHECK(d->text_bytes == 5 && strcmp(d->text, "hello") == 0);
    glm_result_free(d);

    /* an error Result: empty text, not a missing one */
    CHECK(glm_result_encode_error("e", GLM_EC_BAD_IMAGE, "bad", "s", 1, &bytes, &len, NULL) ==
          GLM_OK);
    CHECK(glm_result_decode(bytes, len, &d, NULL) == GLM_OK);
    free(bytes);
    if (d) CHECK(d->text_bytes == 0 && d->text && d->text[0] == '\0');
    glm_result_free(d);
}

/* Text without NULs prints exactly as cJSON prints it (lines written before the change and after
 * it agree), for every ASCII byte and some multi-byte characters. */
static void test_quote_matches_cjson(void)
{
    char s[160];
    size_t n = 0;
    for (int c = 1; c < 128; c++)
        s[n++] = (char)c;
    memcpy(s + n, "\xe5\x9b\xbe\xf0\x9f\x98\x80\xef\xbf\xbd", 10);
    n += 10;
    s[n] = '\0';
    char *ours = glm_json_quote_bytes(s, n);
    cJSON *str = cJSON_CreateString(s);
    char *theirs = str ? cJSON_PrintUnformatted(str) : NULL;
    CHECK_MSG(ours && theirs && strcmp(ours, theirs) == 0, "\n  ours   %s\n  cJSON  %s",
              ours ? ours : "(null)", theirs ? theirs : "(null)");
    free(ours);
    free(theirs);
    cJSON_Delete(str);
    char *empty = glm_json_quote_bytes("", 0);
    CHECK(empty && strcmp(empty, "\"\"") == 0);
    free(empty);
}

/* Old readers and writers (string text) against today's codec (bytes text). */
static void test_wire_compatibility(void)
{
    /* a NUL-free Chunk: today's bytes are exactly the old writer's */
    const int32_t ids[] = {5, 6};
    glm_chunk c = {.id = "j", .index = 3, .text = "h\xc3\xa9llo", .token_ids = ids, .n_tokens = 2};
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(glm_chunk_encode(&c, &bytes, &len, NULL) == GLM_OK);
    Glm4vV1__Chunk old_chunk;
    glm4v_v1__chunk__init(&old_chunk);
    old_chunk.id = "j";
    old_chunk.has_index = 1;
    old_chunk.index = 3;
    old_chunk.text = "h\xc3\xa9llo";
    old_chunk.n_token_ids = 2;
    old_chunk.token_ids = (int32_t *)ids;
    size_t old_len = glm4v_v1__chunk__get_packed_size(&old_chunk);
    uint8_t *old_bytes = malloc(old_len);
    if (old_bytes) glm4v_v1__chunk__pack(&old_chunk, old_bytes);
    CHECK_MSG(old_bytes && old_len == len && memcmp(old_bytes, bytes, len) == 0,
              "%zu bytes today, %zu before", len, old_len);
    free(bytes);

    /* the old writer's bytes decode today, length and all */
    glm_chunk *d = NULL;
    CHECK(old_bytes && glm_chunk_decode(old_bytes, old_len, &d, NULL) == GLM_OK);
    if (d) CHECK(d->text_bytes == 6 && strcmp(d->text, "h\xc3\xa9llo") == 0 && d->index == 3);
    glm_chunk_free(d);
    free(old_bytes);

    /* an old reader reads today's Result: it parses; a NUL-free text is whole, a text with NULs
     * ends at its first NUL (what old readers always showed), never a refusal */
    glm_result r = {.id = "j", .text = "abc", .server_id = "s", .token_ids = ids, .n_tokens = 2};
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    Glm4vV1__Result *old = glm4v_v1__result__unpack(NULL, len, bytes);
    CHECK(old && old->text && strcmp(old->text, "abc") == 0 && old->n_token_ids == 2);
    if (old) glm4v_v1__result__free_unpacked(old, NULL);
    free(bytes);
    r.text = TEXT + 1; /* "a\xc3\xa9\0..." */
    r.text_bytes = TEXT_BYTES - 1;
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    old = glm4v_v1__result__unpack(NULL, len, bytes);
    CHECK(old && old->text && strcmp(old->text, "a\xc3\xa9") == 0 && strcmp(old->id, "j") == 0);
    if (old) glm4v_v1__result__free_unpacked(old, NULL);
    free(bytes);

    /* today's reader on an old writer's Result */
    Glm4vV1__Result w;
    glm4v_v1__result__init(&w);
    w.id = "o";
    w.text = "old text";
    len = glm4v_v1__result__get_packed_size(&w);
    bytes = malloc(len);
    if (bytes) glm4v_v1__result__pack(&w, bytes);
    glm_result *dr = NULL;
    CHECK(bytes && glm_result_decode(bytes, len, &dr, NULL) == GLM_OK);
    if (dr) CHECK(dr->text_bytes == 8 && strcmp(dr->text, "old text") == 0);
    glm_result_free(dr);
    free(bytes);
}

int main(void)
{
    test_chunk_round_trip();
    test_result_round_trip_and_json();
    test_quote_matches_cjson();
    test_wire_compatibility();
    return test_finish("test_result_text");
}
