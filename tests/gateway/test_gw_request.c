/* Request JSON -> Job: what maps where (text parts joined, the image of a user turn, sampling),
 * and what is refused with which HTTP status: n > 1, tools, bad ranges, a ninth image, images
 * anywhere but data URIs and allow-listed http(s) hosts (file://, paths, other hosts), images
 * and bodies over the limit. Also base64 (CR/LF-wrapped data URIs too), the host allow-list, API
 * keys (reloaded) and error objects. */
#include "client/gateway/gw_auth.h"
#include "client/gateway/gw_request.h"
#include "common/base64.h"
#include "tests/testutil.h"

#include <stdio.h>
#include <string.h>

/* "\x89PNG" + 4 bytes, base64 */
#define PNG_B64 "iVBORw0KGgo="

static gw_request_limits limits(void)
{
    gw_request_limits l = {.job = glm_job_limits_default(), .model_name = "glm-4v-9b"};
    l.image = (gw_image_policy){.max_image_bytes = 64,
                                .fetch_timeout_ms = 1000,
                                .allow_hosts = {"images.example", "127.0.0.1:9"},
                                .n_allow_hosts = 2};
    return l;
}

static int parse(const char *json, gw_request *r, gw_error *e)
{
    gw_request_limits l = limits();
    return gw_request_parse(json, strlen(json), &l, r, e);
}

static void test_maps_fields(void)
{
    gw_request r;
    gw_error e;
    int rc = parse("{\"model\":\"glm-4v-9b\",\"messages\":["
                   "{\"role\":\"system\",\"content\":\"be brief\"},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                   "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64," PNG_B64
                   "\"}},{\"type\":\"text\",\"text\":\"b\"}]}],"
                   "\"temperature\":0,\"top_p\":0.5,\"max_tokens\":7,\"seed\":42,"
                   "\"stop\":[\"x\",\"yz\"],\"logprobs\":true,\"top_logprobs\":3,"
                   "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"n\":1}",
                   &r, &e);
    CHECK_MSG(rc == 0, "%d %s", rc, e.message);
    if (rc) return;
    CHECK(r.job.n_messages == 2);
    CHECK(r.job.messages[0].role == GLM_ROLE_SYSTEM);
    CHECK(strcmp(r.job.messages[1].content, "a\nb") == 0);
    CHECK(r.job.messages[1].image_bytes == 8 && memcmp(r.job.messages[1].image, "\x89PNG", 4) == 0);
    CHECK(r.job.messages[0].image == NULL);
    CHECK(r.job.sampling.temperature == 0 && r.job.sampling.top_p == 0.5f);
    CHECK(r.job.sampling.max_new_tokens == 7 && r.job.sampling.has_seed &&
          r.job.sampling.seed == 42);
    CHECK(r.job.sampling.n_stop == 2 && strcmp(r.job.sampling.stop[1], "yz") == 0);
    CHECK(r.job.sampling.has_logprobs && r.job.sampling.logprobs == 3);
    CHECK(r.stream && r.include_usage && r.logprobs && r.top_logprobs == 3);
    gw_request_free(&r);

    /* several images (issue 22): two in the first user turn, one in the third, in order */
    rc = parse("{\"model\":\"glm-4v-9b\",\"messages\":["
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
               "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64," PNG_B64
               "\"}},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
               "iVBORw0KGgoA\"}}]},{\"role\":\"assistant\",\"content\":\"ok\"},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
               "\"data:image/png;base64," PNG_B64 "\"}}]}]}",
               &r, &e);
    CHECK_MSG(rc == 0, "%d %s", rc, e.message);
    if (rc) return;
    CHECK(r.job.n_messages == 3 && glm_message_n_images(&r.job.messages[0]) == 2);
    CHECK(r.job.messages[0].image_bytes == 8 && r.job.messages[0].more_images[0].bytes == 9);
    CHECK(glm_message_n_images(&r.job.messages[1]) == 0);
    CHECK(glm_message_n_images(&r.job.messages[2]) == 1 && !r.job.messages[2].more_images);
    glm_job_problem problem;
    r.job.id = "gw-multi";
    glm_job_limits lim = glm_job_limits_default();
    CHECK(glm_job_validate(&r.job, &lim, &problem) == GLM_OK);
    lim.max_images = 2; /* a gateway or server allowing two refuses the third */
    CHECK(glm_job_validate(&r.job, &lim, &problem) != GLM_OK &&
          problem.code == GLM_EC_TOO_MANY_IMAGES);
    gw_request_free(&r);

    /* unset fields keep the protocol's defaults; max_completion_tokens wins over max_tokens */
    rc = parse("{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
               "\"max_tokens\":5,\"max_completion_tokens\":9}",
               &r, &e);
    CHECK(rc == 0);
    if (rc) return;
    glm_sampling d = glm_sampling_defaults();
    CHECK(r.job.sampling.temperature == d.temperature && !r.job.sampling.has_seed &&
          !r.job.sampling.has_logprobs && r.job.sampling.max_new_tokens == 9 && !r.stream);
    gw_request_free(&r);
}

typedef struct refusal {
    const char *body;
    int status;
    const char *needle; /* in the message */
} refusal;

static void test_refusals(void)
{
#define MSG(x) "{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":" x "}]"
#define IMG(url) "{\"type\":\"image_url\",\"image_url\":{\"url\":\"" url "\"}}"
#define IMG3                                                                                       \
    IMG("data:image/png;base64," PNG_B64)                                                          \
    "," IMG("data:image/png;base64," PNG_B64) "," IMG("data:image/png;base64," PNG_B64)
    static const refusal cases[] = {
        {"not json", 400, "JSON"},
        {"{\"model\":\"glm-4v-9b\"}", 400, "messages"},
        {"{\"model\":\"other\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404,
         "does not exist"},
        {MSG("\"x\"") ",\"n\":2}", 400, "n = 1"},
        {MSG("\"x\"") ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools"},
        {MSG("\"x\"") ",\"tool_choice\":\"auto\"}", 400, "tool_choice"},
        {MSG("\"x\"") ",\"tool_choice\":\"required\"}", 400, "tool_choice"},
        {MSG("\"x\"") ",\"tool_choice\":{\"type\":\"function\"}}", 400, "tool_choice"},
        {MSG("\"x\"") ",\"seed\":1.5}", 400, "seed"},
        {MSG("\"x\"") ",\"seed\":1e300}", 400, "seed"},
        {MSG("\"x\"") ",\"temperature\":3}", 400, "temperature"},
        {MSG("\"x\"") ",\"top_p\":0}", 400, "top_p"},
        {MSG("\"x\"") ",\"max_tokens\":0}", 400, "max_tokens"},
        {MSG("\"x\"") ",\"max_tokens\":1.5}", 400, "max_tokens"},
        {MSG("\"x\"") ",\"max_completion_tokens\":0}", 400, "max_completion_tokens must"},
        {MSG("\"x\"") ",\"top_logprobs\":2}", 400, "logprobs"},
        {MSG("\"x\"") ",\"stream_options\":{\"include_usage\":true}}", 400, "stream"},
        {MSG("\"x\"") ",\"presence_penalty\":1}", 400, "presence_penalty"},
        {MSG("\"x\"") ",\"stop\":[\"\"]}", 400, "stop"},
        {"{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400,
         "tool"},
        {"{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"assistant\",\"content\":null,"
         "\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\"}]}]}",
         400, "tool calls"},
        {MSG("[" IMG3 "," IMG3 "," IMG3 "]") "}", 400, "more than 8 images"},
        /* five images over the 4 per prompt: refused before any is fetched (127.0.0.1:9 is
         * allow-listed and refuses connections: a fetch would fail with "could not be fetched") */
        {MSG("[" IMG("http://127.0.0.1:9/a.png") "," IMG("http://127.0.0.1:9/b.png") "," IMG(
             "http://127.0.0.1:9/c.png") "," IMG("http://127.0.0.1:9/d.png") "," IMG("http://"
                                                                                     "127.0.0.1:9/"
                                                                                     "e.png") "]") "}",
         400, "5 images > the limit of 4 per prompt"},
        {MSG("[" IMG("file:///etc/passwd") "]") "}", 400, "never files"},
        {MSG("[" IMG("/etc/passwd") "]") "}", 400, "never files"},
        {MSG("[" IMG("ftp://images.example/a.png") "]") "}", 400, "never files"},
        {MSG("[" IMG("http://evil.example/a.png") "]") "}", 400, "allow-list"},
        {MSG("[" IMG("http://127.0.0.1:10/a.png") "]") "}", 400, "allow-list"},
        {MSG("[" IMG("data:text/plain;base64," PNG_B64) "]") "}", 400, "data URIs"},
        {MSG("[" IMG("data:image/png;base64,!!!!") "]") "}", 400, "base64"},
        {MSG("[" IMG("data:image/png;base64,"
                     "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                     "QUFBQUFBQUFBQUFBQUFBQUFB") "]") "}",
         413, "limit"},
        {"{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"assistant\",\"content\":[" IMG(
             "data:image/png;base64," PNG_B64) "]}]}",
         400, "user"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gw_request r;
        gw_error e = {0};
        int rc = parse(cases[i].body, &r, &e);
        CHECK_MSG(rc == cases[i].status && e.http_status == rc &&
                      strstr(e.message, cases[i].needle) != NULL,
                  "case %zu: %d '%s'", i, rc, e.message);
        if (rc == 0) gw_request_free(&r);
    }
}

/* Shapes the OpenAI reference allows and SDK users send, which the gateway refused: a negative
 * seed (the reference's seed is any 64-bit integer; the bits are kept, so -1 and 2^64 - 1 are
 * the same seed) and tool_choice "none" (no tool is called: what the cluster does anyway). */
static void test_accepted_shapes(void)
{
    static const struct {
        const char *extra;
        bool has_seed;
        uint64_t seed;
    } cases[] = {
        {",\"seed\":-1", true, UINT64_MAX},
        {",\"seed\":-9007199254740991", true, (uint64_t)-9007199254740991LL},
        {",\"seed\":0", true, 0},
        {",\"tool_choice\":\"none\"", false, 0},
        {",\"tool_choice\":\"none\",\"tools\":[]", false, 0},
        /* an assistant turn as other OpenAI-compatible servers return it (vLLM: tool_calls []) */
        {"{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
         "{\"role\":\"assistant\",\"content\":\"b\",\"tool_calls\":[],\"function_call\":null,"
         "\"refusal\":null},{\"role\":\"user\",\"content\":\"c\"}]}",
         false, 0},
        {",\"parallel_tool_calls\":false,\"user\":\"u1\",\"metadata\":{\"a\":\"b\"}", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char body[512];
        if (cases[i].extra[0] == '{') /* a whole body */
            snprintf(body, sizeof body, "%s", cases[i].extra);
        else
            snprintf(body, sizeof body,
                     "{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":"
                     "\"x\"}]%s}",
                     cases[i].extra);
        gw_request r;
        gw_error e = {0};
        int rc = parse(body, &r, &e);
        CHECK_MSG(rc == 0, "case %zu (%s): %d '%s'", i, cases[i].extra, rc, e.message);
        if (rc) continue;
        CHECK_MSG(r.job.sampling.has_seed == cases[i].has_seed &&
                      (!cases[i].has_seed || r.job.sampling.seed == cases[i].seed),
                  "case %zu: seed %d %llu", i, r.job.sampling.has_seed,
                  (unsigned long long)r.job.sampling.seed);
        gw_request_free(&r);
    }
}

static void test_base64_and_hosts(void)
{
    uint8_t out[16];
    size_t n = 0;
    /* data URIs: the final '=' may be left out (common/base64.c; tests/kernels/test_base64.c) */
    CHECK(glm_base64_decode("aGVsbG8=", 8, false, out, &n) && n == 5 && !memcmp(out, "hello", 5));
    CHECK(glm_base64_decode("aGVsbG8", 7, false, out, &n) && n == 5);
    CHECK(!glm_base64_decode("aGV sbG8", 8, false, out, &n));
    CHECK(!glm_base64_decode("a", 1, false, out, &n));
    gw_request_limits l = limits();
    CHECK(gw_image_host_allowed("http://images.example/a.png", &l.image));
    CHECK(gw_image_host_allowed("https://IMAGES.example:8443/a.png", &l.image));
    CHECK(gw_image_host_allowed("http://127.0.0.1:9/a.png", &l.image));
    CHECK(!gw_image_host_allowed("http://127.0.0.1/a.png", &l.image));
    CHECK(!gw_image_host_allowed("http://images.example.evil.com/a.png", &l.image));
    CHECK(!gw_image_host_allowed("http://evil.com/?x=images.example", &l.image));
    CHECK(!gw_image_host_allowed("http://images.example@evil.com/a.png", &l.image));
    CHECK(!gw_image_host_allowed("file://images.example/etc/passwd", &l.image));
    CHECK(!gw_image_host_allowed("ftp://images.example/a.png", &l.image));
}

/* Image data in MIME-wrapped lines (RFC 2045: CRLF every 76 columns; here every 4, so breaks stand
 * inside groups and the limit check must not count them): accepted with the same bytes as one
 * unbroken line; any other whitespace is still refused. */
static void test_wrapped_base64(void)
{
    /* 63 bytes: under the 64-byte limit of limits() only when the breaks are not counted */
    static const char b64[] =
        "CzBVep/E6Q4zWH2ix+wRNluApcrvFDleg6jN8hc8YYar0PUaP2SJrtP4HUJnjLHW+yBFao+02f4jSG2St9wB";
    uint8_t want[63];
    for (size_t i = 0; i < sizeof want; i++)
        want[i] = (uint8_t)((i * 37 + 11) % 256);
    static const char *const breaks[] = {"\\r\\n", "\\n", "\\r"}; /* JSON escapes */
    for (size_t b = 0; b < sizeof breaks / sizeof *breaks; b++) {
        char wrapped[512] = "", body[1024];
        size_t o = 0;
        for (size_t i = 0; i < sizeof b64 - 1; i += 4)
            o += (size_t)snprintf(wrapped + o, sizeof wrapped - o, "%.4s%s", b64 + i, breaks[b]);
        snprintf(body, sizeof body,
                 "{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":[{"
                 "\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}}]}]}",
                 wrapped);
        gw_request r;
        gw_error e = {0};
        int rc = parse(body, &r, &e);
        CHECK_MSG(rc == 0, "breaks %s: %d '%s'", breaks[b], rc, e.message);
        if (rc) continue;
        CHECK_MSG(r.job.messages[0].image_bytes == sizeof want &&
                      memcmp(r.job.messages[0].image, want, sizeof want) == 0,
                  "breaks %s: %zu bytes", breaks[b], r.job.messages[0].image_bytes);
        gw_request_free(&r);
    }
    static const char *const refused[] = {"iVBO Rw0KGgo=", "iVBO\\tRw0KGgo=", "iVBORw0KGgo= "};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"model\":\"glm-4v-9b\",\"messages\":[{\"role\":\"user\",\"content\":[{"
                 "\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}}]}]}",
                 refused[i]);
        gw_request r;
        gw_error e = {0};
        int rc = parse(body, &r, &e);
        CHECK_MSG(rc == 400 && strstr(e.message, "base64"), "'%s': %d '%s'", refused[i], rc,
                  e.message);
        if (rc == 0) gw_request_free(&r);
    }
}

static void test_api_keys(void)
{
    CHECK(gw_ct_equal("abc", 3, "abc", 3));
    CHECK(!gw_ct_equal("abd", 3, "abc", 3));
    CHECK(!gw_ct_equal("ab", 2, "abc", 3));
    CHECK(!gw_ct_equal("abcd", 4, "abc", 3));
    CHECK(!gw_ct_equal("", 0, "abc", 3));
    char *dir = test_mkdtemp();
    char path[512];
    snprintf(path, sizeof path, "%s/keys", dir);
    const char *keys = "# comment\n\n  sk-one  \nsk-two\r\n";
    test_write_file(path, keys, strlen(keys));
    gw_auth *a = NULL;
    glm_error err = {0};
    CHECK(gw_auth_load(path, &a, &err) == GLM_OK);
    if (a) {
        CHECK(gw_auth_check(a, "Bearer sk-one"));
        CHECK(gw_auth_check(a, "Bearer sk-two"));
        CHECK(!gw_auth_check(a, "Bearer sk-on"));
        CHECK(!gw_auth_check(a, "Bearer sk-one2"));
        CHECK(!gw_auth_check(a, "Basic sk-one"));
        CHECK(!gw_auth_check(a, "Bearer # comment"));
        CHECK(!gw_auth_check(a, NULL));
        /* a reload swaps the whole set; a file that is empty, gone or holds a key too long keeps
         * the keys in force */
        size_t n = 0;
        test_write_file(path, "sk-three\n", 9);
        CHECK(gw_auth_reload(a, path, &n, &err) == GLM_OK && n == 1);
        CHECK(gw_auth_check(a, "Bearer sk-three"));
        CHECK(!gw_auth_check(a, "Bearer sk-one"));
        test_write_file(path, "# none\n", 7);
        CHECK(gw_auth_reload(a, path, &n, &err) == GLM_ERR_MISSING && strstr(err.msg, "no key"));
        char long_key[600];
        memset(long_key, 'k', sizeof long_key - 1);
        long_key[sizeof long_key - 1] = '\n';
        test_write_file(path, long_key, sizeof long_key);
        CHECK(gw_auth_reload(a, path, &n, &err) == GLM_ERR_FORMAT);
        remove(path);
        CHECK(gw_auth_reload(a, path, &n, &err) == GLM_ERR_IO && strstr(err.msg, "cannot read"));
        CHECK(gw_auth_check(a, "Bearer sk-three"));
        CHECK(!gw_auth_check(a, "Bearer sk-one"));
        gw_auth_destroy(a);
    }
    test_write_file(path, "# none\n", 7);
    CHECK(gw_auth_load(path, &a, &err) != GLM_OK && a == NULL);
    test_rmtree(dir);
    free(dir);
}

static void test_error_mapping(void)
{
    gw_error e;
    gw_error_from_result(&e, GLM_EC_BAD_IMAGE, GLM_FINISH_ERROR, "bad");
    CHECK(e.http_status == 400 && strcmp(e.code, "BAD_IMAGE") == 0);
    gw_error_from_result(&e, GLM_EC_IMAGE_TOO_LARGE, GLM_FINISH_ERROR, "big");
    CHECK(e.http_status == 413);
    gw_error_from_result(&e, GLM_EC_DEADLINE_EXCEEDED, GLM_FINISH_ERROR, "late");
    CHECK(e.http_status == 504);
    gw_error_from_result(&e, GLM_EC_INTERNAL, GLM_FINISH_ERROR, "boom");
    CHECK(e.http_status == 500);
    gw_error_from_result(&e, GLM_EC_REDIS_REFUSED, GLM_FINISH_ERROR, "oom");
    CHECK(e.http_status == 503);
    gw_error_from_result(&e, GLM_EC_OK, GLM_FINISH_ABORTED, "");
    CHECK(e.http_status == 503);
    /* the openai SDKs retry every 5xx twice unless told not to (x-should-retry: false): a job the
     * servers gave up on as a poison (it crashed them) or failed for good must not run again */
    static const glm_error_code final_codes[] = {GLM_EC_POISON, GLM_EC_INTERNAL,
                                                 GLM_EC_MALFORMED_JOB, GLM_EC_UNKNOWN_FIELD,
                                                 GLM_EC_UNSUPPORTED_VERSION};
    for (size_t i = 0; i < sizeof final_codes / sizeof *final_codes; i++) {
        gw_error_from_result(&e, final_codes[i], GLM_FINISH_ERROR, "x");
        CHECK_MSG(e.http_status == 500 && e.no_retry, "code %d", (int)final_codes[i]);
    }
    static const glm_error_code retry_codes[] = {GLM_EC_REDIS_REFUSED, GLM_EC_DEADLINE_EXCEEDED,
                                                 GLM_EC_CANCELLED, GLM_EC_ID_CONFLICT,
                                                 GLM_EC_BAD_IMAGE};
    for (size_t i = 0; i < sizeof retry_codes / sizeof *retry_codes; i++) {
        gw_error_from_result(&e, retry_codes[i], GLM_FINISH_ERROR, "x");
        CHECK_MSG(!e.no_retry, "code %d", (int)retry_codes[i]);
    }
    gw_error_from_result(&e, GLM_EC_POISON, GLM_FINISH_ERROR, "x");
    gw_fail(&e, 502, "server_error", NULL, NULL, "later"); /* every fill resets it */
    CHECK(!e.no_retry);
    gw_error_from_result(&e, GLM_EC_OK, GLM_FINISH_ABORTED, "");
    char *json = gw_error_json(&e);
    CHECK(json && strstr(json, "\"error\":{\"message\":") && strstr(json, "\"param\":null"));
    free(json);
}

int main(void)
{
    test_maps_fields();
    test_refusals();
    test_accepted_shapes();
    test_base64_and_hosts();
    test_wrapped_base64();
    test_api_keys();
    test_error_mapping();
    return test_finish("test_gw_request");
}
