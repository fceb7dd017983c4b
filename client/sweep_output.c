/* glm4v-sweep output file: resume scan and the line writer (see sweep_output.h). */
#include "client/sweep_output.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Checks one whole line and records its id. */
static glm_status scan_line(const char *path, const char *text, size_t len, size_t line_no,
                            sweep_idset *done, sweep_resume_info *info, glm_error *err)
{
    cJSON *o = cJSON_ParseWithLength(text, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    glm_status st = GLM_OK;
    if (!cJSON_IsObject(o) || !cJSON_IsString(id)) {
        st = glm_fail(err, GLM_ERR_FORMAT,
                      "%s:%zu is not a result line (a JSON object with a string \"id\"); "
                      "refusing to append to it",
                      path, line_no);
    } else {
        bool added = false;
        st = sweep_idset_add(done, id->valuestring, &added, err);
        info->n_lines++;
        if (!added) info->n_duplicates++;
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        if (e && !cJSON_IsNull(e)) info->n_error_lines++;
    }
    cJSON_Delete(o);
    return st;
}

glm_status sweep_resume_scan(const char *path, sweep_idset *done, sweep_resume_info *info,
                             glm_error *err)
{
    memset(info, 0, sizeof *info);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return GLM_OK;
        return glm_fail(err, GLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    long long whole_end = 0; /* end of the last whole line */
    glm_status st = GLM_OK;
    while (st == GLM_OK && (n = getline(&buf, &cap, f)) > 0) {
        if (buf[n - 1] != '\n') { /* torn: the writer died inside this line */
            info->torn_bytes = n;
            break;
        }
        line_no++;
        st = scan_line(path, buf, (size_t)n - 1, line_no, done, info, err);
        whole_end += n;
    }
    if (st == GLM_OK && ferror(f)) st = glm_fail(err, GLM_ERR_IO, "reading %s", path);
    free(buf);
    fclose(f);
    if (st == GLM_OK && info->torn_bytes > 0 && truncate(path, (off_t)whole_end) != 0)
        st = glm_fail(err, GLM_ERR_IO, "cannot cut the torn last line of %s: %s", path,
                      strerror(errno));
    return st;
}

/* What an ordered writer knows about a row. */
enum { ROW_PENDING = 0, ROW_SKIPPED = 1, ROW_HELD = 2, ROW_WRITTEN = 3 };

struct sweep_output {
    FILE *f;
    bool ordered;
    size_t rows;
    size_t written, held;
    /* ordered mode only */
    unsigned char *state;
    char **lines; /* held lines by row */
    size_t next;  /* first row not yet written or skipped */
};

glm_status sweep_output_open(const char *path, size_t rows, bool ordered, sweep_output **out,
                             glm_error *err)
{
    *out = NULL;
    sweep_output *o = calloc(1, sizeof *o);
    if (!o) return glm_fail(err, GLM_ERR_NOMEM, "output");
    o->ordered = ordered;
    o->rows = rows;
    if (ordered) {
        o->state = calloc(rows + 1, 1);
        o->lines = calloc(rows + 1, sizeof *o->lines);
        if (!o->state || !o->lines) {
            free(o->state);
            free(o->lines);
            free(o);
            return glm_fail(err, GLM_ERR_NOMEM, "output order buffer of %zu rows", rows);
        }
    }
    o->f = fopen(path, "ab");
    if (!o->f) {
        glm_fail(err, GLM_ERR_IO, "cannot open %s for appending: %s", path, strerror(errno));
        free(o->state);
        free(o->lines);
        free(o);
        return GLM_ERR_IO;
    }
    *out = o;
    return GLM_OK;
}

/* One whole line: a single fwrite, then fflush, so a kill leaves at most a torn tail. */
static glm_status put_line(sweep_output *o, const char *json, glm_error *err)
{
    size_t len = strlen(json);
    char *line = malloc(len + 2);
    if (!line) return glm_fail(err, GLM_ERR_NOMEM, "output line");
    memcpy(line, json, len);
    line[len] = '\n';
    size_t put = fwrite(line, 1, len + 1, o->f);
    free(line);
    if (put != len + 1 || fflush(o->f) != 0)
        return glm_fail(err, GLM_ERR_IO, "writing the output: %s", strerror(errno));
    o->written++;
    return GLM_OK;
}

/* Writes held lines from o->next on, as far as the rows are settled. */
static glm_status drain_in_order(sweep_output *o, glm_error *err)
{
    while (o->next < o->rows && o->state[o->next] != ROW_PENDING) {
        size_t r = o->next;
        if (o->state[r] == ROW_HELD) {
            glm_status st = put_line(o, o->lines[r], err);
            if (st != GLM_OK) return st;
            free(o->lines[r]);
            o->lines[r] = NULL;
            o->state[r] = ROW_WRITTEN;
            o->held--;
        }
        o->next++;
    }
    return GLM_OK;
}

void sweep_output_skip(sweep_output *o, size_t row)
{
    if (!o->ordered || row >= o->rows || o->state[row] != ROW_PENDING) return;
    o->state[row] = ROW_SKIPPED;
    glm_error ignored = {0};
    /* a write error here shows up again at the next sweep_output_write */
    (void)drain_in_order(o, &ignored);
}

glm_status sweep_output_write(sweep_output *o, size_t row, const char *json, glm_error *err)
{
    if (!o->ordered) return put_line(o, json, err);
    if (row >= o->rows || o->state[row] != ROW_PENDING)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "row %zu written twice", row);
    o->lines[row] = strdup(json);
    if (!o->lines[row]) return glm_fail(err, GLM_ERR_NOMEM, "held output line");
    o->state[row] = ROW_HELD;
    o->held++;
    return drain_in_order(o, err);
}

size_t sweep_output_written(const sweep_output *o)
{
    return o->written;
}

size_t sweep_output_held(const sweep_output *o)
{
    return o->held;
}

glm_status sweep_output_close(sweep_output *o, glm_error *err)
{
    if (!o) return GLM_OK;
    glm_status st = GLM_OK;
    if (o->ordered)
        for (size_t r = 0; r < o->rows; r++)
            free(o->lines[r]);
    if (fclose(o->f) != 0)
        st = glm_fail(err, GLM_ERR_IO, "closing the output: %s", strerror(errno));
    free(o->state);
    free(o->lines);
    free(o);
    return st;
}
