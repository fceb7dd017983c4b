/* glm4v-sweep input: the line parser (every malformed kind), the loader (line numbers, duplicates,
 * blank lines, the errors file), re-reading a row, submission order and per-row sampling. */
#include "client/sweep_input.h"
#include "client/sweep_job.h"
#include "client/sweep_order.h"
#include "tests/testutil.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static bool parses(const char *text, sweep_line *l, glm_error *err)
{
    memset(err, 0, sizeof *err);
    return sweep_line_parse(text, strlen(text), l, err) == GLM_OK;
}

/* A line that must be refused, with a reason that mentions `why`. */
static void check_refused(const char *text, const char *why)
{
    sweep_line l;
    glm_error err;
    bool ok = parses(text, &l, &err);
    CHECK_MSG(!ok, "accepted: %s", text);
    if (ok) sweep_line_free(&l);
    CHECK_MSG(strstr(err.msg, why) != NULL, "%s: reason '%s' lacks '%s'", text, err.msg, why);
}

static void test_good_lines(void)
{
    sweep_line l;
    glm_error err;
    CHECK(parses("{\"id\": \"a-1\", \"image\": \"x/y.jpg\", \"prompt\": \"What?\"}", &l, &err));
    CHECK(strcmp(l.id, "a-1") == 0 && strcmp(l.image, "x/y.jpg") == 0);
    CHECK(l.n_messages == 1 && l.roles[0] == GLM_ROLE_USER && strcmp(l.contents[0], "What?") == 0);
    CHECK(!l.over.has_seed && !l.over.has_temperature && l.over.n_stop == 0);
    sweep_line_free(&l);

    /* integer id, null image, system, messages, every override; unknown keys are ignored */
    CHECK(parses("{\"id\": 42, \"image\": null, \"system\": \"Be brief.\", \"answer\": \"B\","
                 " \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"},"
                 " {\"role\": \"assistant\", \"content\": \"Hello\"},"
                 " {\"role\": \"user\", \"content\": \"Again\"}],"
                 " \"max_new_tokens\": 7, \"temperature\": 0.5, \"top_p\": 0.9, \"top_k\": 3,"
                 " \"seed\": \"18446744073709551615\", \"stop\": [\"x\", \"yz\"]}",
                 &l, &err));
    CHECK(strcmp(l.id, "42") == 0 && l.image == NULL);
    CHECK(l.n_messages == 4 && l.roles[0] == GLM_ROLE_SYSTEM && l.roles[2] == GLM_ROLE_ASSISTANT);
    CHECK(strcmp(l.contents[3], "Again") == 0);
    CHECK(l.over.has_max_new_tokens && l.over.max_new_tokens == 7);
    CHECK(l.over.has_temperature && l.over.temperature == 0.5f);
    CHECK(l.over.has_top_p && l.over.has_top_k && l.over.top_k == 3);
    CHECK(l.over.has_seed && l.over.seed == UINT64_MAX);
    CHECK(l.over.n_stop == 2 && strcmp(l.over.stop[1], "yz") == 0);
    sweep_line_free(&l);

    CHECK(parses("  {\"id\":\"s\",\"prompt\":\"p\",\"stop\":\"END\",\"seed\":5}  ", &l, &err));
    CHECK(l.over.n_stop == 1 && l.over.seed == 5);
    sweep_line_free(&l);
}

static void test_malformed_lines(void)
{
    check_refused("{\"id\": \"a\", \"prompt\": \"p\"", "JSON");
    check_refused("[1, 2]", "object");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\"} x", "after");
    check_refused("{\"prompt\": \"p\"}", "id");
    check_refused("{\"id\": \"\", \"prompt\": \"p\"}", "id");
    check_refused("{\"id\": \"a b\", \"prompt\": \"p\"}", "id");
    check_refused("{\"id\": 1.5, \"prompt\": \"p\"}", "id");
    check_refused("{\"id\": true, \"prompt\": \"p\"}", "id");
    check_refused("{\"id\": \"a\"}", "neither");
    check_refused("{\"id\": \"a\", \"prompt\": 3}", "prompt");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"messages\": []}", "both");
    check_refused("{\"id\": \"a\", \"messages\": []}", "non-empty");
    check_refused("{\"id\": \"a\", \"messages\": [{\"role\": \"user\"}]}", "messages[0]");
    check_refused("{\"id\": \"a\", \"messages\": [{\"role\": \"bot\", \"content\": \"c\"}]}",
                  "unknown role");
    check_refused("{\"id\": \"a\", \"image\": 5, \"prompt\": \"p\"}", "image");
    check_refused("{\"id\": \"a\", \"image\": \"i.png\", \"messages\": [{\"role\": \"system\","
                  " \"content\": \"c\"}]}",
                  "user message");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"system\": 1}", "system");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"max_new_tokens\": 0}", "max_new_tokens");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"max_new_tokens\": \"4\"}",
                  "max_new_tokens");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"temperature\": -1}", "temperature");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"top_p\": 0}", "top_p");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"top_k\": -2}", "top_k");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"seed\": -1}", "seed");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"seed\": \"12x\"}", "seed");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"stop\": [1]}", "stop");
    check_refused("{\"id\": \"a\", \"prompt\": \"p\", \"stop\": {}}", "stop");
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0, c;
    while (f && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f) fclose(f);
    return n;
}

static void test_load(const char *dir)
{
    char path[512], errors_path[512];
    snprintf(path, sizeof path, "%s/q.jsonl", dir);
    snprintf(errors_path, sizeof errors_path, "%s/q.errors", dir);
    const char *text =
        "{\"id\": \"b\", \"image\": \"2.png\", \"prompt\": \"one\"}\n"   /* 1 */
        "\n"                                                             /* 2 */
        "{\"id\": \"a\", \"image\": \"1.png\", \"prompt\": \"two\"}\r\n" /* 3 */
        "not json\n"                                                     /* 4 */
        "{\"id\": \"b\", \"prompt\": \"dup\"}\n"                         /* 5 */
        "{\"id\": \"t\", \"prompt\": \"text only\"}\n"                   /* 6 */
        "{\"id\": \"c\", \"image\": \"2.png\", \"prompt\": \"three\"}\n" /* 7 */
        "{\"id\": \"" /* 8: a job id over 128 bytes with the prefix */
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", \"prompt\": \"p\"}\n"
        "{\"id\": \"z\", \"image\": \"1.png\", \"prompt\": \"last, no newline\"}";
    CHECK(test_write_file(path, text, strlen(text)) == 0);
    FILE *errors = fopen(errors_path, "w");
    sweep_input in;
    glm_error err = {0};
    CHECK(sweep_input_load(path, "pre-", NULL, errors, &in, &err) == GLM_OK);
    fclose(errors);
    CHECK_MSG(in.n_rows == 5, "%zu rows", in.n_rows);
    CHECK(in.n_lines == 9 && in.n_malformed == 3);
    CHECK(count_lines(errors_path) == 3);
    size_t len = 0;
    char *logged = (char *)test_read_file(errors_path, &len);
    CHECK(logged && strstr(logged, "\"line\":4") && strstr(logged, "\"line\":5") &&
          strstr(logged, "duplicate id") && strstr(logged, "\"line\":8"));
    free(logged);
    if (in.n_rows == 5) {
        CHECK(strcmp(in.rows[1].id, "a") == 0 && in.rows[1].line_no == 3);
        CHECK(in.rows[2].image == NULL && strcmp(in.rows[4].id, "z") == 0);

        int fd = open(path, O_RDONLY);
        sweep_line l;
        CHECK(sweep_input_reread(fd, &in.rows[1], &l, &err) == GLM_OK);
        CHECK(strcmp(l.contents[0], "two") == 0);
        sweep_line_free(&l);
        CHECK(sweep_input_reread(fd, &in.rows[4], &l, &err) == GLM_OK);
        CHECK(strcmp(l.contents[0], "last, no newline") == 0);
        sweep_line_free(&l);
        close(fd);

        /* text-only first, then by image path, input order within an image */
        size_t order[5];
        CHECK(sweep_order_submission(&in, NULL, order) == 5);
        CHECK(order[0] == 2 && order[1] == 1 && order[2] == 4 && order[3] == 0 && order[4] == 3);
        sweep_idset skip = {0};
        bool added;
        sweep_idset_add(&skip, "a", &added, &err);
        sweep_idset_add(&skip, "t", &added, &err);
        CHECK(sweep_order_submission(&in, &skip, order) == 3);
        CHECK(order[0] == 4 && order[1] == 0 && order[2] == 3);
        sweep_idset_free(&skip);
    }
    sweep_input_free(&in);
    CHECK(sweep_input_load("/nonexistent/q.jsonl", "", NULL, NULL, &in, &err) == GLM_ERR_IO);
}

static void test_sampling(void)
{
    glm_sampling defaults = glm_sampling_defaults();
    defaults.temperature = 0;
    defaults.max_new_tokens = 9;
    const char *stops[] = {"STOP"};
    defaults.stop = stops;
    defaults.n_stop = 1;
    sweep_line l;
    glm_error err;
    CHECK(parses("{\"id\": \"row-1\", \"prompt\": \"p\"}", &l, &err));
    glm_sampling s1 = sweep_job_sampling(&defaults, 0, &l),
                 s2 = sweep_job_sampling(&defaults, 0, &l);
    CHECK(s1.has_seed && s1.seed == s2.seed);
    CHECK(s1.seed == (sweep_fnv1a64("row-1") & SWEEP_SEED_MASK) && s1.seed < (1ull << 63));
    CHECK(sweep_job_sampling(&defaults, 77, &l).seed ==
          ((sweep_fnv1a64("row-1") ^ 77) & SWEEP_SEED_MASK));
    CHECK(s1.max_new_tokens == 9 && s1.temperature == 0 && s1.n_stop == 1);
    sweep_line_free(&l);
    CHECK(parses("{\"id\": \"row-2\", \"prompt\": \"p\", \"seed\": 3, \"temperature\": 1,"
                 " \"stop\": [\"a\", \"b\"], \"max_new_tokens\": 2}",
                 &l, &err));
    glm_sampling s3 = sweep_job_sampling(&defaults, 77, &l);
    CHECK(s3.seed == 3 && s3.temperature == 1 && s3.n_stop == 2 && s3.max_new_tokens == 2);
    CHECK(sweep_fnv1a64("row-1") != sweep_fnv1a64("row-2"));
    /* the documented hash: FNV-1a 64 of "a" */
    CHECK(sweep_fnv1a64("a") == 0xaf63dc4c8601ec8cull);
    sweep_line_free(&l);
}

int main(void)
{
    char *dir = test_mkdtemp();
    test_good_lines();
    test_malformed_lines();
    test_load(dir);
    test_sampling();
    test_rmtree(dir);
    free(dir);
    return test_finish("sweep_input");
}
