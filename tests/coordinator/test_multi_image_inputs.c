/* Several images in one conversation, the inputs (issue 22):
 *  - the wire format: Message.more_images round-trips in order, a one-image job keeps the bytes
 *    and the fingerprint it had (no more_images field written), more_images without an image,
 *    an empty second image and images past the limit are refused naming what;
 *  - JSON conversations (job_messages.c): golden-multi-image.json's messages rebuilt by the chat
 *    template into exactly the golden ids, on both tiny checkpoints; malformed ones refused;
 *  - glm4v-sweep lines: "image" as a list, images inside messages, and their refusals; the job a
 *    line becomes puts each image in its message.
 *
 *   test_multi_image_inputs TESTDATA_DIR */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/sweep_input.h"
#include "client/sweep_job.h"
#include "coordinator/queue/job_codec.h"
#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/job_messages.h"
#include "coordinator/text/chat_template.h"
#include "tests/testutil.h"

static const uint8_t A[] = {1, 2, 3}, B[] = {4, 5, 6, 7}, C[] = {8};

static glm_job job_of(glm_message *msgs, size_t n)
{
    glm_job j = {
        .version = GLM4V_PROTOCOL_VERSION, .id = "multi-1", .messages = msgs, .n_messages = n};
    j.sampling = glm_sampling_defaults();
    return j;
}

static glm_job *round_trip(const glm_job *j, uint8_t **bytes, size_t *len)
{
    glm_job *d = NULL;
    glm_job_problem pr;
    CHECK(glm_job_encode(j, bytes, len, NULL) == GLM_OK);
    CHECK(glm_job_decode(*bytes, *len, &d, &pr) == GLM_OK);
    return d;
}

static void test_wire(void)
{
    const glm_image_part more[2] = {{B, sizeof B, "png"}, {C, sizeof C, ""}};
    glm_message msgs[3] = {
        {.role = GLM_ROLE_USER,
         .content = "two",
         .image = A,
         .image_bytes = sizeof A,
         .image_format = "",
         .more_images = more,
         .n_more_images = 1},
        {.role = GLM_ROLE_ASSISTANT, .content = "ok"},
        {.role = GLM_ROLE_USER,
         .content = "one more",
         .image = C,
         .image_bytes = sizeof C,
         .image_format = ""},
    };
    glm_job j = job_of(msgs, 3);
    uint8_t *bytes = NULL;
    size_t len = 0;
    glm_job *d = round_trip(&j, &bytes, &len);
    if (d) {
        CHECK(glm_message_n_images(&d->messages[0]) == 2);
        glm_image_part p = glm_message_image(&d->messages[0], 1);
        CHECK(p.bytes == sizeof B && memcmp(p.data, B, sizeof B) == 0 &&
              strcmp(p.format, "png") == 0);
        CHECK(glm_message_n_images(&d->messages[1]) == 0 &&
              glm_message_n_images(&d->messages[2]) == 1);
        glm_job_problem pr;
        CHECK(glm_job_validate(d, NULL, &pr) == GLM_OK);
        char f1[GLM_FINGERPRINT_LEN + 1], f2[GLM_FINGERPRINT_LEN + 1];
        glm_job_fingerprint(d, f1);
        msgs[0].more_images = &more[1]; /* another second image: another job */
        glm_job_fingerprint(&j, f2);
        CHECK(strcmp(f1, f2) != 0);
        msgs[0].more_images = more;
        glm_job_fingerprint(&j, f2);
        CHECK(strcmp(f1, f2) == 0);
        glm_job_free(d);
    }
    free(bytes);

    /* one image: exactly the bytes and fingerprint of a message that never had more_images (the
     * field is written only when set), so old servers and old Results see no difference */
    glm_message one = {.role = GLM_ROLE_USER,
                       .content = "x",
                       .image = A,
                       .image_bytes = sizeof A,
                       .image_format = ""};
    glm_job j1 = job_of(&one, 1);
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    CHECK(glm_job_encode(&j1, &b1, &l1, NULL) == GLM_OK);
    one.more_images = more; /* a stale pointer with a zero count changes nothing */
    CHECK(glm_job_encode(&j1, &b2, &l2, NULL) == GLM_OK);
    CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0);
    one.n_more_images = 1;
    free(b2);
    CHECK(glm_job_encode(&j1, &b2, &l2, NULL) == GLM_OK);
    CHECK(l2 == l1 + 4 + sizeof B + 5); /* tag, length, ImageInput{data B, format "png"} */
    free(b1);
    free(b2);

    /* refusals, each naming what */
    glm_job_problem pr;
    glm_message bad = {.role = GLM_ROLE_USER,
                       .content = "x",
                       .image_format = "",
                       .more_images = more,
                       .n_more_images = 1};
    glm_job jb = job_of(&bad, 1);
    CHECK(glm_job_validate(&jb, NULL, &pr) != GLM_OK && pr.code == GLM_EC_INVALID_REQUEST &&
          strstr(pr.message, "more_images"));
    const glm_image_part empty[1] = {{B, 0, ""}};
    glm_message e = {.role = GLM_ROLE_USER,
                     .content = "x",
                     .image = A,
                     .image_bytes = sizeof A,
                     .image_format = "",
                     .more_images = empty,
                     .n_more_images = 1};
    glm_job je = job_of(&e, 1);
    CHECK(glm_job_validate(&je, NULL, &pr) != GLM_OK && pr.code == GLM_EC_BAD_IMAGE &&
          strstr(pr.message, "image 2"));
    glm_job_limits lim = glm_job_limits_default();
    CHECK(lim.max_images == 4);
    lim.max_images = 2;
    CHECK(glm_job_validate(&j, &lim, &pr) != GLM_OK && pr.code == GLM_EC_TOO_MANY_IMAGES);
    lim.max_images = 3;
    CHECK(glm_job_validate(&j, &lim, &pr) == GLM_OK);
}

static void refused(const char *json, const char *why)
{
    glm_json_messages m;
    glm_error err = {0};
    glm_status st = glm_json_messages_parse(json, strlen(json), &m, &err);
    CHECK_MSG(st != GLM_OK, "accepted: %s", json);
    if (st == GLM_OK) glm_json_messages_free(&m);
    CHECK_MSG(strstr(err.msg, why) != NULL, "%s: '%s' lacks '%s'", json, err.msg, why);
}

static glm_chat_role chat_role(glm_role r)
{
    return r == GLM_ROLE_SYSTEM        ? GLM_CHAT_SYSTEM
           : r == GLM_ROLE_ASSISTANT   ? GLM_CHAT_ASSISTANT
           : r == GLM_ROLE_OBSERVATION ? GLM_CHAT_OBSERVATION
                                       : GLM_CHAT_USER;
}

/* Every case's messages through the template give its golden input_ids. */
static void test_golden_messages(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.model", dir);
    glm_tokenizer *tok = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_tokenizer_load(path, &tok, &err) == GLM_OK, "%s", err.msg);
    snprintf(path, sizeof(path), "%s/golden-multi-image.json", dir);
    size_t len = 0;
    char *text = (char *)test_read_file(path, &len);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    CHECK(tok && cJSON_GetArraySize(cases) == 3);
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        if (!tok) break;
        const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
        char *msgs_json = cJSON_PrintUnformatted(c); /* the case object: {"messages": [...]} */
        glm_json_messages m;
        CHECK_MSG(glm_json_messages_parse(msgs_json, strlen(msgs_json), &m, &err) == GLM_OK,
                  "%s: %s", name, err.msg);
        free(msgs_json);
        glm_chat_message cm[16];
        for (size_t i = 0; i < m.n_messages && i < 16; i++)
            cm[i] = (glm_chat_message){.role = chat_role(m.messages[i].role),
                                       .content = m.messages[i].text,
                                       .content_len = strlen(m.messages[i].text),
                                       .has_image = m.messages[i].n_images > 0,
                                       .n_images = m.messages[i].n_images};
        glm_chat_prompt prompt = {0};
        CHECK(glm_chat_template_apply(tok, cm, m.n_messages, true, &prompt, &err) == GLM_OK);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "input_ids");
        int n = cJSON_GetArraySize(want);
        bool same = (int)prompt.ids.n == n;
        for (int i = 0; same && i < n; i++)
            same = prompt.ids.ids[i] == cJSON_GetArrayItem(want, i)->valueint;
        CHECK_MSG(same, "%s %s: the template's %zu ids differ from the golden %d", dir, name,
                  prompt.ids.n, n);
        CHECK((int)prompt.n_images == cJSON_GetObjectItemCaseSensitive(c, "n_images")->valueint &&
              (int)m.n_images == (int)prompt.n_images);
        printf("%s %s: %zu ids, %zu images, template == golden: %s\n", dir, name, prompt.ids.n,
               prompt.n_images, same ? "yes" : "NO");
        glm_chat_prompt_free(&prompt);
        glm_json_messages_free(&m);
    }
    cJSON_Delete(root);
    free(text);
    glm_tokenizer_destroy(tok);

    refused("[]", "non-empty list");
    refused("{\"messages\": 3}", "non-empty list");
    refused("[{\"role\": \"robot\", \"content\": \"x\"}]", "role");
    refused("[{\"role\": \"assistant\", \"content\": [{\"image\": 0}]}]", "only user messages");
    refused("[{\"role\": \"user\", \"content\": [{\"image\": -1}]}]", "index");
    refused("[{\"role\": \"user\", \"content\": [{\"video\": 1}]}]", "part 0");
    refused("[{\"role\": \"user\", \"content\": [{\"image\": 0}, {\"image\": 1}, {\"image\": 2}, "
            "{\"image\": 3}, {\"image\": 4}, {\"image\": 5}, {\"image\": 6}, {\"image\": 7}, "
            "{\"image\": 8}]}]",
            "more than 8 images");
    refused("[{\"role\": \"user\", \"content\": 7}]", "string or a list");
}

static void test_sweep_lines(void)
{
    const char *line = "{\"id\": \"s\", \"image\": [\"a.png\", \"b.jpg\"], \"messages\": ["
                       "{\"role\": \"assistant\", \"content\": \"x\"},"
                       "{\"role\": \"user\", \"content\": \"both?\"}]}";
    sweep_line l;
    glm_error err = {0};
    CHECK_MSG(sweep_line_parse(line, strlen(line), &l, &err) == GLM_OK, "%s", err.msg);
    CHECK(l.n_images == 2 && strcmp(l.image, "a.png") == 0 && strcmp(l.images[1], "b.jpg") == 0);
    CHECK(l.image_message[0] == 1 && l.image_message[1] == 1);
    const glm_image_part parts[2] = {{A, sizeof A, ""}, {B, sizeof B, ""}};
    glm_sampling s = glm_sampling_defaults();
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(sweep_job_encode(&l, "s", &s, parts, 2, &bytes, &len, &err) == GLM_OK);
    glm_job *d = NULL;
    glm_job_problem pr;
    CHECK(bytes && glm_job_decode(bytes, len, &d, &pr) == GLM_OK);
    if (d) {
        CHECK(glm_message_n_images(&d->messages[0]) == 0);
        CHECK(glm_message_n_images(&d->messages[1]) == 2 &&
              glm_message_image(&d->messages[1], 1).bytes == sizeof B);
        glm_job_free(d);
    }
    free(bytes);
    sweep_line_free(&l);

    /* images in two user turns, given in the messages */
    line = "{\"id\": \"t\", \"messages\": [{\"role\": \"user\", \"content\": \"a\", \"image\": "
           "\"a.png\"},"
           "{\"role\": \"assistant\", \"content\": \"b\"},"
           "{\"role\": \"user\", \"content\": \"c\", \"image\": [\"b.png\", \"c.png\"]}]}";
    CHECK_MSG(sweep_line_parse(line, strlen(line), &l, &err) == GLM_OK, "%s", err.msg);
    CHECK(l.n_images == 3 && l.image_message[0] == 0 && l.image_message[1] == 2 &&
          l.image_message[2] == 2 && strcmp(l.image, "a.png") == 0);
    sweep_line_free(&l);

    const char *bad[][2] = {
        {"{\"id\": 1, \"prompt\": \"x\", \"image\": []}", "empty list"},
        {"{\"id\": 1, \"prompt\": \"x\", \"image\": [\"a\", 3]}", "list of them"},
        {"{\"id\": 1, \"image\": \"a\", \"messages\": [{\"role\": \"user\", \"content\": \"x\", "
         "\"image\": \"b\"}]}",
         "one place"},
        {"{\"id\": 1, \"messages\": [{\"role\": \"assistant\", \"content\": \"x\", \"image\": "
         "\"b\"}]}",
         "only user messages"},
        {"{\"id\": 1, \"prompt\": \"x\", \"image\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\","
         "\"8\",\"9\"]}",
         "more than 8 images"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        glm_status st = sweep_line_parse(bad[i][0], strlen(bad[i][0]), &l, &err);
        CHECK_MSG(st != GLM_OK, "accepted: %s", bad[i][0]);
        if (st == GLM_OK) sweep_line_free(&l);
        CHECK_MSG(strstr(err.msg, bad[i][1]) != NULL, "%s: '%s' lacks '%s'", bad[i][0], err.msg,
                  bad[i][1]);
    }
}

int main(int argc, char **argv)
{
    const char *data = argc > 1 ? argv[1] : test_testdata_dir();
    char dir[4096];
    test_wire();
    for (int m = 0; m < 2; m++) {
        snprintf(dir, sizeof(dir), "%s/glm4v-tiny-%c", data, "ab"[m]);
        test_golden_messages(dir);
    }
    test_sweep_lines();
    return test_finish("multi_image_inputs");
}
