/* glm4v-sweep input lines (see sweep_input.h). */
#include "client/sweep_input.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool sweep_line_is_blank(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)text[i])) return false;
    return true;
}

/* An integral JSON number in [lo, hi] (hi at most 2^53, where doubles stop being exact). */
static bool get_integer(const cJSON *v, double lo, double hi, double *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || floor(d) != d) return false;
    *out = d;
    return true;
}

static glm_status parse_id(const cJSON *root, sweep_line *l, glm_error *err)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    double n;
    if (cJSON_IsString(id)) {
        if (!glm_job_id_valid(id->valuestring))
            return glm_fail(err, GLM_ERR_FORMAT, "\"id\" must be 1..%d bytes of [A-Za-z0-9._:@/-]",
                            GLM_JOB_ID_MAX);
        snprintf(l->id, sizeof l->id, "%s", id->valuestring);
    } else if (get_integer(id, 0, 9007199254740992.0, &n)) {
        snprintf(l->id, sizeof l->id, "%.0f", n);
    } else {
        return glm_fail(err, GLM_ERR_FORMAT,
                        id ? "\"id\" must be a string or a non-negative integer" : "no \"id\"");
    }
    return GLM_OK;
}

static glm_status parse_role(const char *name, glm_role *role, glm_error *err)
{
    static const struct {
        const char *name;
        glm_role role;
    } roles[] = {{"system", GLM_ROLE_SYSTEM},
                 {"user", GLM_ROLE_USER},
                 {"assistant", GLM_ROLE_ASSISTANT},
                 {"observation", GLM_ROLE_OBSERVATION}};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(name, roles[i].name) == 0) {
            *role = roles[i].role;
            return GLM_OK;
        }
    return glm_fail(err, GLM_ERR_FORMAT,
                    "unknown role \"%.40s\" (system, user, assistant, observation)", name);
}

/* A path string or a non-empty list of them ("image" of a line or of a message): appended to the
 * line's images, all going to message `message`. */
static glm_status parse_images(const cJSON *v, size_t message, sweep_line *l, glm_error *err)
{
    const cJSON *one = cJSON_IsArray(v) ? v->child : v;
    if (cJSON_IsArray(v) && !one)
        return glm_fail(err, GLM_ERR_FORMAT, "\"image\" must not be an empty list");
    for (; one; one = cJSON_IsArray(v) ? one->next : NULL) {
        if (!cJSON_IsString(one) || !one->valuestring[0])
            return glm_fail(err, GLM_ERR_FORMAT,
                            "\"image\" must be a path string, a list of them, or null");
        if (l->n_images == SWEEP_MAX_IMAGES)
            return glm_fail(err, GLM_ERR_FORMAT, "more than %d images", SWEEP_MAX_IMAGES);
        l->image_message[l->n_images] = message;
        l->images[l->n_images++] = one->valuestring;
    }
    l->image = l->images[0];
    return GLM_OK;
}

/* "prompt": "..." or "messages": [{"role", "content"}, ...], after the optional "system". */
static glm_status parse_messages(const cJSON *root, sweep_line *l, glm_error *err)
{
    const cJSON *system = cJSON_GetObjectItemCaseSensitive(root, "system");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (system && !cJSON_IsNull(system)) {
        if (!cJSON_IsString(system))
            return glm_fail(err, GLM_ERR_FORMAT, "\"system\" not a string");
        l->system = system->valuestring;
        l->roles[l->n_messages] = GLM_ROLE_SYSTEM;
        l->contents[l->n_messages++] = system->valuestring;
    }
    if (prompt && msgs)
        return glm_fail(err, GLM_ERR_FORMAT, "both \"prompt\" and \"messages\"; give one");
    if (prompt) {
        if (!cJSON_IsString(prompt))
            return glm_fail(err, GLM_ERR_FORMAT, "\"prompt\" not a string");
        l->roles[l->n_messages] = GLM_ROLE_USER;
        l->contents[l->n_messages++] = prompt->valuestring;
        return GLM_OK;
    }
    if (!msgs) return glm_fail(err, GLM_ERR_FORMAT, "neither \"prompt\" nor \"messages\"");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return glm_fail(err, GLM_ERR_FORMAT, "\"messages\" must be a non-empty array");
    if (l->n_messages + (size_t)cJSON_GetArraySize(msgs) > SWEEP_MAX_MESSAGES)
        return glm_fail(err, GLM_ERR_FORMAT, "more than %d messages", SWEEP_MAX_MESSAGES);
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role) || !cJSON_IsString(content))
            return glm_fail(err, GLM_ERR_FORMAT,
                            "messages[%zu] must be {\"role\": string, \"content\": string}", i);
        glm_status st = parse_role(role->valuestring, &l->roles[l->n_messages], err);
        if (st != GLM_OK) return glm_error_prefix(err, "messages[%zu]", i);
        /* a message's own images (several images in any user turn) */
        const cJSON *image = cJSON_GetObjectItemCaseSensitive(m, "image");
        if (image && !cJSON_IsNull(image)) {
            if (l->roles[l->n_messages] != GLM_ROLE_USER)
                return glm_fail(err, GLM_ERR_FORMAT,
                                "messages[%zu]: only user messages carry "
                                "images",
                                i);
            if ((st = parse_images(image, l->n_messages, l, err)))
                return glm_error_prefix(err, "messages[%zu]", i);
        }
        l->contents[l->n_messages++] = content->valuestring;
        i++;
    }
    return GLM_OK;
}

static glm_status parse_stop(const cJSON *v, sweep_overrides *o, glm_error *err)
{
    if (cJSON_IsString(v)) {
        o->stop[o->n_stop++] = v->valuestring;
        return GLM_OK;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > SWEEP_MAX_STOPS)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "\"stop\" must be a string or an array of at most %d strings",
                        SWEEP_MAX_STOPS);
    const cJSON *s;
    cJSON_ArrayForEach(s, v)
    {
        if (!cJSON_IsString(s)) return glm_fail(err, GLM_ERR_FORMAT, "\"stop\" holds a non-string");
        o->stop[o->n_stop++] = s->valuestring;
    }
    return GLM_OK;
}

/* Sampling overrides; absent or null keys keep the command-line defaults. */
static glm_status parse_overrides(const cJSON *root, sweep_overrides *o, glm_error *err)
{
    const cJSON *v;
    double d;
#define FIELD(name) ((v = cJSON_GetObjectItemCaseSensitive(root, name)) && !cJSON_IsNull(v))
    if (FIELD("max_new_tokens")) {
        if (!get_integer(v, 1, 1 << 20, &d))
            return glm_fail(err, GLM_ERR_FORMAT, "\"max_new_tokens\" must be an integer >= 1");
        o->has_max_new_tokens = true;
        o->max_new_tokens = (uint32_t)d;
    }
    if (FIELD("temperature")) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 100))
            return glm_fail(err, GLM_ERR_FORMAT, "\"temperature\" must be a number in [0, 100]");
        o->has_temperature = true;
        o->temperature = (float)v->valuedouble;
    }
    if (FIELD("top_p")) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
            return glm_fail(err, GLM_ERR_FORMAT, "\"top_p\" must be a number in (0, 1]");
        o->has_top_p = true;
        o->top_p = (float)v->valuedouble;
    }
    if (FIELD("top_k")) {
        if (!get_integer(v, 0, 1 << 20, &d))
            return glm_fail(err, GLM_ERR_FORMAT, "\"top_k\" must be an integer >= 0");
        o->has_top_k = true;
        o->top_k = (uint32_t)d;
    }
    if (FIELD("seed")) {
        /* a decimal string carries all 64 bits; a JSON number only 53 */
        char *end = NULL;
        errno = 0;
        if (cJSON_IsString(v) && isdigit((unsigned char)v->valuestring[0]))
            o->seed = strtoull(v->valuestring, &end, 10);
        else if (get_integer(v, 0, 9007199254740992.0, &d))
            o->seed = (uint64_t)d;
        else
            end = (char *)"x";
        if (errno || (end && *end))
            return glm_fail(err, GLM_ERR_FORMAT,
                            "\"seed\" must be a non-negative integer (or its decimal string)");
        o->has_seed = true;
    }
    if (FIELD("stop")) return parse_stop(v, o, err);
#undef FIELD
    return GLM_OK;
}

glm_status sweep_line_parse(const char *text, size_t len, sweep_line *out, glm_error *err)
{
    memset(out, 0, sizeof *out);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) return glm_fail(err, GLM_ERR_FORMAT, "not valid JSON");
    out->json = root;
    glm_status st = GLM_OK;
    if (end && !sweep_line_is_blank(end, len - (size_t)(end - text)))
        st = glm_fail(err, GLM_ERR_FORMAT, "text after the JSON object");
    else if (!cJSON_IsObject(root))
        st = glm_fail(err, GLM_ERR_FORMAT, "not a JSON object");
    if (st == GLM_OK) st = parse_id(root, out, err);
    if (st == GLM_OK) st = parse_messages(root, out, err);
    if (st == GLM_OK) st = parse_overrides(root, &out->over, err);
    const cJSON *image = cJSON_GetObjectItemCaseSensitive(root, "image");
    if (st == GLM_OK && image && !cJSON_IsNull(image)) {
        /* the line's images go with its first user message */
        size_t first_user = out->n_messages;
        for (size_t i = out->n_messages; i-- > 0;)
            if (out->roles[i] == GLM_ROLE_USER) first_user = i;
        if (out->n_images > 0)
            st = glm_fail(err, GLM_ERR_FORMAT,
                          "images both on the line and in its messages; give them in one place");
        else if (first_user == out->n_messages)
            st = glm_fail(err, GLM_ERR_FORMAT, "an image needs a user message");
        else
            st = parse_images(image, first_user, out, err);
    }
    if (st != GLM_OK) sweep_line_free(out);
    return st;
}

void sweep_line_free(sweep_line *line)
{
    cJSON_Delete(line->json);
    memset(line, 0, sizeof *line);
}

/* One malformed line: "path:LINE: why" on report_to, {"line", "error", "input"} on errors_file. */
static void report_malformed(const char *path, long line_no, const char *text, size_t len,
                             const char *why, FILE *report_to, FILE *errors_file)
{
    if (report_to) fprintf(report_to, "glm4v-sweep: %s:%ld: skipped: %s\n", path, line_no, why);
    if (!errors_file) return;
    cJSON *o = cJSON_CreateObject();
    char *input = strndup(text, len > 4096 ? 4096 : len); /* keep the errors file readable */
    char *json = NULL;
    if (o && input && cJSON_AddNumberToObject(o, "line", (double)line_no) &&
        cJSON_AddStringToObject(o, "error", why) && cJSON_AddStringToObject(o, "input", input))
        json = cJSON_PrintUnformatted(o);
    if (json) fprintf(errors_file, "%s\n", json);
    fflush(errors_file);
    free(json);
    free(input);
    cJSON_Delete(o);
}

static glm_status keep_row(sweep_input *in, const sweep_line *l, long line_no, off_t offset,
                           size_t len, glm_error *err)
{
    if (in->n_rows == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 1024;
        sweep_row *rows = realloc(in->rows, cap * sizeof *rows);
        if (!rows) return glm_fail(err, GLM_ERR_NOMEM, "input rows");
        in->rows = rows;
        in->cap = cap;
    }
    sweep_row *r = &in->rows[in->n_rows];
    r->id = strdup(l->id);
    r->image = l->image ? strdup(l->image) : NULL;
    if (!r->id || (l->image && !r->image)) {
        free(r->id);
        free(r->image);
        return glm_fail(err, GLM_ERR_NOMEM, "input rows");
    }
    r->line_no = line_no;
    r->offset = offset;
    r->len = len;
    in->n_rows++;
    return GLM_OK;
}

/* Checks one non-blank line and keeps it as a row, or reports it. */
static glm_status check_line(sweep_input *in, const char *path, const char *job_id_prefix,
                             const char *text, size_t len, long line_no, off_t offset,
                             FILE *report_to, FILE *errors_file, glm_error *err)
{
    sweep_line l;
    glm_error why = {0};
    if (sweep_line_parse(text, len, &l, &why) != GLM_OK) {
        in->n_malformed++;
        report_malformed(path, line_no, text, len, why.msg, report_to, errors_file);
        return GLM_OK;
    }
    char job_id[2 * GLM_JOB_ID_MAX + 2];
    snprintf(job_id, sizeof job_id, "%s%s", job_id_prefix, l.id);
    bool added = false;
    glm_status st = GLM_OK;
    if (!glm_job_id_valid(job_id))
        glm_fail(&why, GLM_ERR_FORMAT, "job id \"%s\" (--job-prefix + id) too long", job_id);
    else if ((st = sweep_idset_add(&in->ids, l.id, &added, err)) == GLM_OK && !added)
        glm_fail(&why, GLM_ERR_FORMAT, "duplicate id \"%s\"", l.id);
    else if (st == GLM_OK)
        st = keep_row(in, &l, line_no, offset, len, err);
    sweep_line_free(&l);
    if (why.msg[0]) {
        in->n_malformed++;
        report_malformed(path, line_no, text, len, why.msg, report_to, errors_file);
    }
    return st; /* not OK only when out of memory */
}

glm_status sweep_input_load(const char *path, const char *job_id_prefix, FILE *report_to,
                            FILE *errors_file, sweep_input *in, glm_error *err)
{
    memset(in, 0, sizeof *in);
    FILE *f = fopen(path, "rb");
    if (!f) return glm_fail(err, GLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t offset = 0;
    glm_status st = GLM_OK;
    while (st == GLM_OK && (n = getline(&buf, &cap, f)) > 0) {
        size_t len = (size_t)n;
        in->n_lines++;
        off_t line_offset = offset;
        offset += n;
        if (buf[len - 1] == '\n') len--;
        if (len && buf[len - 1] == '\r') len--;
        if (sweep_line_is_blank(buf, len)) continue;
        st = check_line(in, path, job_id_prefix, buf, len, (long)in->n_lines, line_offset,
                        report_to, errors_file, err);
    }
    if (st == GLM_OK && ferror(f)) st = glm_fail(err, GLM_ERR_IO, "reading %s", path);
    free(buf);
    fclose(f);
    if (st != GLM_OK) sweep_input_free(in);
    return st;
}

void sweep_input_free(sweep_input *in)
{
    for (size_t i = 0; i < in->n_rows; i++) {
        free(in->rows[i].id);
        free(in->rows[i].image);
    }
    free(in->rows);
    sweep_idset_free(&in->ids);
    memset(in, 0, sizeof *in);
}

glm_status sweep_input_reread(int fd, const sweep_row *row, sweep_line *out, glm_error *err)
{
    char *buf = malloc(row->len + 1);
    if (!buf) return glm_fail(err, GLM_ERR_NOMEM, "line %ld", row->line_no);
    ssize_t got = pread(fd, buf, row->len, row->offset);
    glm_status st;
    if (got != (ssize_t)row->len)
        st = glm_fail(err, GLM_ERR_IO, "input line %ld changed or unreadable", row->line_no);
    else
        st = sweep_line_parse(buf, row->len, out, err);
    /* the file changed under us when the line no longer parses to the same id */
    if (st == GLM_OK && strcmp(out->id, row->id) != 0) {
        sweep_line_free(out);
        st = glm_fail(err, GLM_ERR_IO, "input line %ld changed since it was read", row->line_no);
    }
    free(buf);
    return st;
}
