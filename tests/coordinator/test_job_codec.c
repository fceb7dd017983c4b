/* Job / Chunk / Result codec: round trips, unknown fields, malformed and random bytes, validation,
 * Result JSON and Redis URL parsing. No Redis needed. */
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/result_json.h"
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

static const uint8_t IMAGE[] = {0x89, 'P', 'N', 'G', 0, 1, 2, 3, 0xff};

static glm_job sample_job(glm_message *msgs, const char *const *stops, const int32_t *stop_ids)
{
    msgs[0] = (glm_message){.role = GLM_ROLE_SYSTEM, .content = "be brief"};
    msgs[1] = (glm_message){.role = GLM_ROLE_USER,
                            .content = "what is in the picture? \xe5\x9b\xbe",
                            .image = IMAGE,
                            .image_bytes = sizeof IMAGE,
                            .image_format = "png"};
    glm_job job = {.version = GLM4V_PROTOCOL_VERSION,
                   .id = "job-1",
                   .messages = msgs,
                   .n_messages = 2,
                   .priority = -3,
                   .deadline_unix_ms = 1700000000123ull};
    job.sampling = glm_sampling_defaults();
    job.sampling.max_new_tokens = 77;
    job.sampling.temperature = 0.0f;
    job.sampling.top_p = 0.9f;
    job.sampling.top_k = 40;
    job.sampling.has_seed = true;
    job.sampling.seed = 1234567890123ull;
    job.sampling.stop = stops;
    job.sampling.n_stop = 2;
    job.sampling.stop_ids = stop_ids;
    job.sampling.n_stop_ids = 3;
    job.sampling.has_logprobs = true;
    job.sampling.logprobs = 5;
    job.sampling.ignore_eos = true;
    return job;
}

static void test_job_round_trip(void)
{
    glm_message msgs[2];
    const char *stops[] = {"\n\n", "END"};
    const int32_t stop_ids[] = {151329, 151336, 151338};
    glm_job job = sample_job(msgs, stops, stop_ids);
    uint8_t *bytes;
    size_t len;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    glm_job *d = NULL;
    glm_job_problem pr;
    CHECK(glm_job_decode(bytes, len, &d, &pr) == GLM_OK);
    if (!d) return;
    CHECK(strcmp(d->id, "job-1") == 0);
    CHECK(d->version == GLM4V_PROTOCOL_VERSION);
    CHECK(d->n_messages == 2);
    CHECK(d->messages[0].role == GLM_ROLE_SYSTEM &&
          strcmp(d->messages[0].content, "be brief") == 0);
    CHECK(d->messages[0].image == NULL);
    CHECK(d->messages[1].role == GLM_ROLE_USER);
    CHECK(strcmp(d->messages[1].content, msgs[1].content) == 0);
    CHECK(d->messages[1].image_bytes == sizeof IMAGE &&
          memcmp(d->messages[1].image, IMAGE, sizeof IMAGE) == 0);
    CHECK(strcmp(d->messages[1].image_format, "png") == 0);
    const glm_sampling *s = &d->sampling;
    CHECK(s->max_new_tokens == 77 && s->temperature == 0.0f && s->top_p == 0.9f && s->top_k == 40);
    CHECK(s->has_seed && s->seed == 1234567890123ull);
    CHECK(s->n_stop == 2 && strcmp(s->stop[0], "\n\n") == 0 && strcmp(s->stop[1], "END") == 0);
    CHECK(s->n_stop_ids == 3 && s->stop_ids[2] == 151338);
    CHECK(s->has_logprobs && s->logprobs == 5 && s->ignore_eos);
    CHECK(d->priority == -3 && d->deadline_unix_ms == 1700000000123ull);
    CHECK(glm_job_validate(d, NULL, &pr) == GLM_OK);
    glm_job_free(d);

    /* a job without sampling params takes the defaults */
    glm_job bare = {.id = "bare", .messages = msgs + 1, .n_messages = 1};
    bare.sampling = glm_sampling_defaults();
    free(bytes);
    CHECK(glm_job_encode(&bare, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_job_decode(bytes, len, &d, &pr) == GLM_OK);
    if (d) {
        CHECK(d->sampling.temperature == 1.0f && d->sampling.top_p == 1.0f);
        CHECK(!d->sampling.has_seed && !d->sampling.has_logprobs && d->sampling.top_k == 0);
        glm_job_free(d);
    }
    free(bytes);
}

static void append_varint(uint8_t *buf, size_t *n, uint64_t v)
{
    while (v >= 0x80) {
        buf[(*n)++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[(*n)++] = (uint8_t)v;
}

static void test_unknown_fields(void)
{
    glm_message msgs[2];
    const char *stops[] = {"a", "b"};
    const int32_t ids[] = {1, 2, 3};
    glm_job job = sample_job(msgs, stops, ids);
    job.n_messages = 1; /* no image */
    uint8_t *bytes;
    size_t len;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);

    /* top level: field 99, varint 7 */
    uint8_t buf[4096];
    memcpy(buf, bytes, len);
    size_t n = len;
    append_varint(buf, &n, (99u << 3) | 0);
    append_varint(buf, &n, 7);
    glm_job *d = NULL;
    glm_job_problem pr;
    CHECK(glm_job_decode(buf, n, &d, &pr) != GLM_OK && d == NULL);
    CHECK(pr.code == GLM_EC_UNKNOWN_FIELD);
    CHECK_MSG(strcmp(pr.job_id, "job-1") == 0, "job id '%s'", pr.job_id);
    CHECK(strstr(pr.message, "99") != NULL);

    /* nested: a second SamplingParams (field 4) holding field 42; protobuf merges the two */
    n = len;
    memcpy(buf, bytes, len);
    uint8_t inner[8];
    size_t ni = 0;
    append_varint(inner, &ni, (42u << 3) | 0);
    append_varint(inner, &ni, 1);
    append_varint(buf, &n, (4u << 3) | 2);
    append_varint(buf, &n, ni);
    memcpy(buf + n, inner, ni);
    n += ni;
    CHECK(glm_job_decode(buf, n, &d, &pr) != GLM_OK && d == NULL);
    CHECK(pr.code == GLM_EC_UNKNOWN_FIELD);
    CHECK(strstr(pr.message, "SamplingParams") != NULL);

    /* nested two deep: a Message (field 3) with an ImageInput (field 3) holding field 9 */
    n = len;
    memcpy(buf, bytes, len);
    uint8_t img[8], msg[16];
    size_t nimg = 0, nmsg = 0;
    append_varint(img, &nimg, (9u << 3) | 0);
    append_varint(img, &nimg, 5);
    append_varint(msg, &nmsg, (3u << 3) | 2);
    append_varint(msg, &nmsg, nimg);
    memcpy(msg + nmsg, img, nimg);
    nmsg += nimg;
    append_varint(buf, &n, (3u << 3) | 2);
    append_varint(buf, &n, nmsg);
    memcpy(buf + n, msg, nmsg);
    n += nmsg;
    CHECK(glm_job_decode(buf, n, &d, &pr) != GLM_OK && pr.code == GLM_EC_UNKNOWN_FIELD);
    CHECK(strstr(pr.message, "ImageInput") != NULL);

    /* a newer version is refused, version 0 (unset) too */
    glm_job v2 = job;
    v2.version = GLM4V_PROTOCOL_VERSION + 1;
    free(bytes);
    CHECK(glm_job_encode(&v2, &bytes, &len, NULL) == GLM_OK);
    CHECK(glm_job_decode(bytes, len, &d, &pr) != GLM_OK && pr.code == GLM_EC_UNSUPPORTED_VERSION);
    free(bytes);
    /* Chunk and Result decoders ignore unknown fields (forward compatibility for clients) */
    glm_chunk c = {.id = "x", .text = "hi"};
    CHECK(glm_chunk_encode(&c, &bytes, &len, NULL) == GLM_OK);
    memcpy(buf, bytes, len);
    n = len;
    append_varint(buf, &n, (77u << 3) | 0);
    append_varint(buf, &n, 1);
    glm_chunk *dc = NULL;
    CHECK(glm_chunk_decode(buf, n, &dc, NULL) == GLM_OK && dc && strcmp(dc->text, "hi") == 0);
    glm_chunk_free(dc);
    free(bytes);
}

static void test_malformed_and_random(void)
{
    glm_message msgs[2];
    const char *stops[] = {"a", "b"};
    const int32_t ids[] = {1, 2, 3};
    glm_job job = sample_job(msgs, stops, ids);
    uint8_t *bytes;
    size_t len;
    CHECK(glm_job_encode(&job, &bytes, &len, NULL) == GLM_OK);
    glm_job *d = NULL;
    glm_job_problem pr;
    int truncated_refused = 0;
    for (size_t cut = 1; cut < len; cut++) {
        if (glm_job_decode(bytes, cut, &d, &pr) != GLM_OK) {
            truncated_refused++;
            CHECK(d == NULL);
        } else {
            glm_job_free(d);
        }
    }
    /* cutting inside the image bytes or a string must never parse */
    CHECK(truncated_refused > (int)len / 2);
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(glm_job_decode(garbage, sizeof garbage, &d, &pr) != GLM_OK);
    CHECK(pr.code == GLM_EC_MALFORMED_JOB && pr.job_id[0] == '\0');
    free(bytes);

    test_rng rng;
    test_rng_seed(&rng, 6);
    int refused = 0;
    for (int i = 0; i < 1000; i++) {
        uint8_t buf[512];
        size_t n = (size_t)test_rng_int(&rng, 0, (int)sizeof buf);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)test_rng_next(&rng);
        glm_status st = glm_job_decode(buf, n, &d, &pr);
        if (st == GLM_OK) {
            /* whatever parses must still pass or fail validation cleanly */
            glm_job_validate(d, NULL, &pr);
            glm_job_free(d);
        } else {
            refused++;
            CHECK(d == NULL && pr.code != GLM_EC_OK);
        }
        glm_result *r = NULL;
        if (glm_result_decode(buf, n, &r, NULL) == GLM_OK) glm_result_free(r);
    }
    CHECK_MSG(refused >= 990, "%d of 1000 random strings refused", refused);
}

/* Encodes job, decodes it and validates; returns the problem code. */
static glm_error_code validate_code(const glm_job *job)
{
    uint8_t *bytes;
    size_t len;
    glm_job *d = NULL;
    glm_job_problem pr = {0};
    if (glm_job_encode(job, &bytes, &len, NULL) != GLM_OK) return GLM_EC_INTERNAL;
    if (glm_job_decode(bytes, len, &d, &pr) == GLM_OK) {
        glm_job_validate(d, NULL, &pr);
        glm_job_free(d);
    }
    free(bytes);
    return pr.code;
}

static void test_validation(void)
{
    glm_message msgs[3];
    const char *stops[] = {"a", "b"};
    const int32_t ids[] = {1, 2, 3};
    glm_job base = sample_job(msgs, stops, ids);
    CHECK(validate_code(&base) == GLM_EC_OK);
    glm_job j = base;
#define EXPECT(mutation, code)                                                                     \
    do {                                                                                           \
        j = base;                                                                                  \
        msgs[1].image = IMAGE;                                                                     \
        msgs[1].image_bytes = sizeof IMAGE;                                                        \
        msgs[1].role = GLM_ROLE_USER;                                                              \
        msgs[1].content = "hi";                                                                    \
        mutation;                                                                                  \
        CHECK_MSG(validate_code(&j) == (code), "%s -> %s", #mutation,                              \
                  glm_error_code_name(validate_code(&j)));                                         \
    } while (0)
    EXPECT(j.sampling.temperature = -0.5f, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.temperature = NAN, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.top_p = 0.0f, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.top_p = 1.5f, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.top_k = 1000000, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.logprobs = 1000, GLM_EC_BAD_SAMPLING);
    EXPECT(j.sampling.max_new_tokens = 1000000, GLM_EC_BAD_SAMPLING);
    const int32_t bad_ids[] = {-1};
    EXPECT((j.sampling.stop_ids = bad_ids, j.sampling.n_stop_ids = 1), GLM_EC_BAD_SAMPLING);
    const char *empty_stop[] = {""};
    EXPECT((j.sampling.stop = empty_stop, j.sampling.n_stop = 1), GLM_EC_BAD_SAMPLING);
    EXPECT(j.id = "has space", GLM_EC_INVALID_REQUEST);
    EXPECT(j.id = "", GLM_EC_INVALID_REQUEST);
    EXPECT(j.n_messages = 0, GLM_EC_EMPTY_PROMPT);
    EXPECT((j.messages = msgs + 1, j.n_messages = 1, msgs[1].image = NULL, msgs[1].content = ""),
           GLM_EC_EMPTY_PROMPT);
    EXPECT(msgs[1].role = (glm_role)9, GLM_EC_INVALID_REQUEST);
    EXPECT(msgs[1].content = "bad \xc3\x28 utf8", GLM_EC_INVALID_REQUEST);
    EXPECT(msgs[1].role = GLM_ROLE_ASSISTANT, GLM_EC_INVALID_REQUEST); /* image outside user */
    EXPECT((msgs[2] = msgs[1], j.n_messages = 3), GLM_EC_OK); /* two images: within 4 */
    const glm_image_part four[4] = {{IMAGE, sizeof IMAGE, ""}, {IMAGE, sizeof IMAGE, ""},
                                    {IMAGE, sizeof IMAGE, ""}, {IMAGE, sizeof IMAGE, ""}};
    EXPECT((msgs[1].more_images = four, msgs[1].n_more_images = 4), GLM_EC_TOO_MANY_IMAGES);
    msgs[1].more_images = NULL, msgs[1].n_more_images = 0;
    glm_job_limits lim = glm_job_limits_default();
    lim.max_image_bytes = 4;
    glm_job_problem pr;
    CHECK(glm_job_validate(&base, &lim, &pr) != GLM_OK && pr.code == GLM_EC_IMAGE_TOO_LARGE);
    CHECK(strcmp(pr.job_id, "job-1") == 0);
#undef EXPECT
}

static void test_result_and_chunk(void)
{
    glm_top_logprob tops[3] = {{5, -0.1f}, {6, -2.5f}, {7, -3.0f}};
    glm_token_logprobs lp[2] = {{5, -0.1f, tops, 2}, {7, -3.0f, tops + 2, 1}};
    const int32_t toks[2] = {5, 7};
    glm_chunk c = {.id = "j",
                   .index = 3,
                   .attempt = 2,
                   .text = "ab",
                   .token_ids = toks,
                   .n_tokens = 2,
                   .logprobs = lp,
                   .n_logprobs = 2};
    uint8_t *bytes;
    size_t len;
    CHECK(glm_chunk_encode(&c, &bytes, &len, NULL) == GLM_OK);
    glm_chunk *dc = NULL;
    CHECK(glm_chunk_decode(bytes, len, &dc, NULL) == GLM_OK);
    if (dc) {
        CHECK(dc->index == 3 && dc->attempt == 2 && strcmp(dc->text, "ab") == 0);
        CHECK(dc->n_tokens == 2 && dc->token_ids[1] == 7);
        CHECK(dc->n_logprobs == 2 && dc->logprobs[0].n_top == 2 && dc->logprobs[1].n_top == 1);
        CHECK(dc->logprobs[0].top[1].token_id == 6 && dc->logprobs[0].top[1].logprob == -2.5f);
        CHECK(dc->logprobs[1].top[0].token_id == 7);
    }
    glm_chunk_free(dc);
    free(bytes);

    glm_result r = {.id = "j",
                    .text = "a \"quoted\"\nline",
                    .token_ids = toks,
                    .n_tokens = 2,
                    .finish_reason = GLM_FINISH_STOP_STRING,
                    .usage = {10, 4, 2},
                    .timings = {1.5, 2, 3, 4, 10.5},
                    .server_id = "s1",
                    .attempts = 1,
                    .logprobs = lp,
                    .n_logprobs = 2};
    CHECK(glm_result_encode(&r, &bytes, &len, NULL) == GLM_OK);
    glm_result *dr = NULL;
    CHECK(glm_result_decode(bytes, len, &dr, NULL) == GLM_OK);
    free(bytes);
    if (!dr) return;
    CHECK(strcmp(dr->text, r.text) == 0 && dr->finish_reason == GLM_FINISH_STOP_STRING);
    CHECK(dr->usage.prompt_tokens == 10 && dr->usage.image_tokens == 4);
    CHECK(dr->timings.total_ms == 10.5 && dr->error_code == GLM_EC_OK);
    char *json = glm_result_to_json(dr);
    glm_result_free(dr);
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    CHECK(o != NULL);
    CHECK(json && strchr(json, '\n') == NULL); /* one line */
    if (o) {
        CHECK(strcmp(cJSON_GetObjectItem(o, "text")->valuestring, r.text) == 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "token_ids")) == 2);
        CHECK(strcmp(cJSON_GetObjectItem(o, "finish_reason")->valuestring, "stop_string") == 0);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "completion_tokens")->valueint ==
              2);
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "timings"), "queue_ms")->valuedouble ==
              1.5);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "error")));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "logprobs")) == 2);
    }
    cJSON_Delete(o);
    free(json);

    CHECK(glm_result_encode_error("j", GLM_EC_BAD_IMAGE, "not a PNG", "s1", 2, &bytes, &len,
                                  NULL) == GLM_OK);
    CHECK(glm_result_decode(bytes, len, &dr, NULL) == GLM_OK);
    free(bytes);
    if (!dr) return;
    json = glm_result_to_json(dr);
    o = json ? cJSON_Parse(json) : NULL;
    cJSON *e = o ? cJSON_GetObjectItem(o, "error") : NULL;
    CHECK(e && strcmp(cJSON_GetObjectItem(e, "code")->valuestring, "BAD_IMAGE") == 0);
    CHECK(e && strcmp(cJSON_GetObjectItem(e, "message")->valuestring, "not a PNG") == 0);
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "finish_reason")->valuestring, "error") == 0);
    cJSON_Delete(o);
    free(json);
    glm_result_free(dr);
}

static void test_url(void)
{
    glm_redis_url u;
    glm_error err = {0};
    CHECK(glm_redis_url_parse("redis://127.0.0.1:6380/2", &u, &err) == GLM_OK);
    CHECK(strcmp(u.host, "127.0.0.1") == 0 && u.port == 6380 && u.db == 2 && !u.has_password);
    CHECK(glm_redis_url_parse("redis://:s3cr@t@host", &u, &err) == GLM_OK);
    CHECK(u.has_password && strcmp(u.password, "s3cr@t") == 0 && u.port == 6379 && !u.user[0]);
    CHECK(glm_redis_url_parse("redis://alice:pw@h:1/0", &u, &err) == GLM_OK);
    CHECK(strcmp(u.user, "alice") == 0 && strcmp(u.password, "pw") == 0 && u.port == 1);
    CHECK(glm_redis_url_parse("localhost", &u, &err) == GLM_OK && u.port == 6379);
    CHECK(glm_redis_url_parse("http://h", &u, &err) != GLM_OK);
    CHECK(glm_redis_url_parse("redis://:topsecret@h:99999", &u, &err) != GLM_OK);
    CHECK(strstr(err.msg, "topsecret") == NULL);
    CHECK(glm_redis_url_parse("redis://h/x", &u, &err) != GLM_OK);
}

int main(void)
{
    test_job_round_trip();
    test_unknown_fields();
    test_malformed_and_random();
    test_validation();
    test_result_and_chunk();
    test_url();
    return test_finish("test_job_codec");
}
