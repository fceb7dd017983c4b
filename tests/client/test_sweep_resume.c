/* glm4v-sweep output: the resume reader (whole lines, a torn last line cut away, a foreign file
 * refused untouched), the completion-order and input-order writers, and the summary percentile. */
#include "client/sweep_output.h"
#include "client/sweep_progress.h"
#include "tests/testutil.h"

#include <string.h>

static char *slurp(const char *path)
{
    size_t len = 0;
    char *s = (char *)test_read_file(path, &len);
    if (!s) return NULL;
    char *z = realloc(s, len + 1);
    if (!z) {
        free(s);
        return NULL;
    }
    z[len] = '\0';
    return z;
}

#define LINE_A "{\"id\":\"a\",\"text\":\"x\",\"token_ids\":[1,2],\"error\":null}\n"
#define LINE_B "{\"id\":\"b\",\"text\":\"\",\"token_ids\":[],\"error\":{\"code\":\"BAD_IMAGE\"}}\n"

static void test_scan(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/out.jsonl", dir);
    sweep_idset done = {0};
    sweep_resume_info info;
    glm_error err = {0};

    /* no file yet: nothing done */
    CHECK(sweep_resume_scan(path, &done, &info, &err) == GLM_OK);
    CHECK(done.count == 0 && info.n_lines == 0 && info.torn_bytes == 0);

    /* whole lines plus a torn tail (the writer was killed inside a line) */
    const char *torn = LINE_A LINE_B "{\"id\":\"c\",\"text\":\"par";
    CHECK(test_write_file(path, torn, strlen(torn)) == 0);
    CHECK(sweep_resume_scan(path, &done, &info, &err) == GLM_OK);
    CHECK(info.n_lines == 2 && info.n_error_lines == 1);
    CHECK(info.torn_bytes == (long long)strlen("{\"id\":\"c\",\"text\":\"par"));
    CHECK(sweep_idset_has(&done, "a") && sweep_idset_has(&done, "b") &&
          !sweep_idset_has(&done, "c"));
    char *now = slurp(path);
    CHECK(now && strcmp(now, LINE_A LINE_B) == 0); /* cut back to the last whole line */
    free(now);

    /* a complete last line missing only its newline is treated as torn too */
    sweep_idset_free(&done);
    const char *no_nl = LINE_A "{\"id\":\"b\"}";
    CHECK(test_write_file(path, no_nl, strlen(no_nl)) == 0);
    CHECK(sweep_resume_scan(path, &done, &info, &err) == GLM_OK);
    CHECK(done.count == 1 && info.torn_bytes == 10);
    now = slurp(path);
    CHECK(now && strcmp(now, LINE_A) == 0);
    free(now);

    /* a whole line that is not ours: refused, file untouched */
    sweep_idset_free(&done);
    const char *foreign = LINE_A "hello world\n" LINE_B "{\"torn";
    CHECK(test_write_file(path, foreign, strlen(foreign)) == 0);
    CHECK(sweep_resume_scan(path, &done, &info, &err) == GLM_ERR_FORMAT);
    CHECK(strstr(err.msg, ":2 ") != NULL);
    now = slurp(path);
    CHECK(now && strcmp(now, foreign) == 0);
    free(now);
    sweep_idset_free(&done);

    /* duplicates (two runs racing on one file) are counted, the id once */
    const char *dup = LINE_A LINE_A;
    CHECK(test_write_file(path, dup, strlen(dup)) == 0);
    CHECK(sweep_resume_scan(path, &done, &info, &err) == GLM_OK);
    CHECK(done.count == 1 && info.n_lines == 2 && info.n_duplicates == 1);
    sweep_idset_free(&done);
}

static void test_writers(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/w.jsonl", dir);
    glm_error err = {0};
    sweep_output *o = NULL;

    /* completion order: lines appear as given, appended to what is there */
    CHECK(test_write_file(path, "{\"id\":\"old\"}\n", 13) == 0);
    CHECK(sweep_output_open(path, 3, false, &o, &err) == GLM_OK);
    CHECK(sweep_output_write(o, 2, "{\"id\":\"r2\"}", &err) == GLM_OK);
    char *now = slurp(path); /* flushed at once, before close */
    CHECK(now && strcmp(now, "{\"id\":\"old\"}\n{\"id\":\"r2\"}\n") == 0);
    free(now);
    CHECK(sweep_output_write(o, 0, "{\"id\":\"r0\"}", &err) == GLM_OK);
    CHECK(sweep_output_written(o) == 2 && sweep_output_close(o, &err) == GLM_OK);

    /* input order: held until earlier rows are written or skipped */
    CHECK(test_write_file(path, "", 0) == 0);
    CHECK(sweep_output_open(path, 5, true, &o, &err) == GLM_OK);
    sweep_output_skip(o, 1); /* already in the file */
    CHECK(sweep_output_write(o, 2, "{\"id\":\"r2\"}", &err) == GLM_OK);
    CHECK(sweep_output_write(o, 4, "{\"id\":\"r4\"}", &err) == GLM_OK);
    CHECK(sweep_output_written(o) == 0 && sweep_output_held(o) == 2);
    CHECK(sweep_output_write(o, 0, "{\"id\":\"r0\"}", &err) == GLM_OK);
    CHECK(sweep_output_written(o) == 2 && sweep_output_held(o) == 1);
    CHECK(sweep_output_write(o, 2, "{\"id\":\"again\"}", &err) != GLM_OK);
    now = slurp(path);
    CHECK(now && strcmp(now, "{\"id\":\"r0\"}\n{\"id\":\"r2\"}\n") == 0);
    free(now);
    /* row 3 never comes (interrupted): r4 stays held and is dropped at close */
    CHECK(sweep_output_close(o, &err) == GLM_OK);
    now = slurp(path);
    CHECK(now && strcmp(now, "{\"id\":\"r0\"}\n{\"id\":\"r2\"}\n") == 0);
    free(now);
}

static void test_percentile(void)
{
    double v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i + 1;
    CHECK(sweep_percentile(v, 100, 50) == 50 && sweep_percentile(v, 100, 90) == 90);
    CHECK(sweep_percentile(v, 100, 99) == 99 && sweep_percentile(v, 100, 100) == 100);
    CHECK(sweep_percentile(v, 1, 99) == 1 && sweep_percentile(v, 0, 50) == 0);
    double w[] = {10, 20, 30};
    CHECK(sweep_percentile(w, 3, 50) == 20 && sweep_percentile(w, 3, 90) == 30);
}

int main(void)
{
    char *dir = test_mkdtemp();
    test_scan(dir);
    test_writers(dir);
    test_percentile();
    test_rmtree(dir);
    free(dir);
    return test_finish("sweep_resume");
}
