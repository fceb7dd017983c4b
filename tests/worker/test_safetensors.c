/* Safetensors reading and writing: the golden files read back exactly as their JSON headers say
 * (checked here with cJSON, independently of the loader), a write/read round trip, and every
 * malformed file we can think of, each built from a golden file in a temp dir, rejected with the
 * right status and a message that names the file and the tensor. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/dtype.h"
#include "tests/testutil.h"
#include "worker/checkpoint.h"
#include "worker/safetensors.h"

static char *tmp_dir;

/* ---- a file split into header JSON and data area -------------------------------------------- */

typedef struct st_parts {
    unsigned char *file;
    size_t file_len;
    cJSON *header; /* parsed independently of the loader */
    size_t header_len;
    const unsigned char *data;
    size_t data_len;
} st_parts;

static int parts_load(const char *path, st_parts *p)
{
    memset(p, 0, sizeof(*p));
    p->file = test_read_file(path, &p->file_len);
    if (!p->file || p->file_len < 8) return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | p->file[i];
    p->header_len = (size_t)n;
    p->header = cJSON_ParseWithLength((const char *)p->file + 8, p->header_len);
    p->data = p->file + 8 + p->header_len;
    p->data_len = p->file_len - 8 - p->header_len;
    return p->header ? 0 : -1;
}

static void parts_free(st_parts *p)
{
    cJSON_Delete(p->header);
    free(p->file);
}

static char *golden_path(const char *rel)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", test_testdata_dir(), rel);
    return path;
}

/* Writes [8-byte length][header][data] to tmp_dir/name and returns the path. */
static const char *write_raw(const char *name, uint64_t header_len_field, const char *header,
                             size_t header_len, const void *data, size_t data_len)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
    size_t total = 8 + header_len + data_len;
    unsigned char *buf = malloc(total);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(header_len_field >> (8 * i));
    memcpy(buf + 8, header, header_len);
    if (data_len) memcpy(buf + 8 + header_len, data, data_len);
    CHECK(test_write_file(path, buf, total) == 0);
    free(buf);
    return path;
}

/* Writes the golden data area under an edited header. */
static const char *write_with_header(const char *name, const cJSON *header, const st_parts *p)
{
    char *json = cJSON_PrintUnformatted(header);
    size_t len = strlen(json);
    const char *path = write_raw(name, len, json, len, p->data, p->data_len);
    free(json);
    return path;
}

/* Opens path (from disk and from memory) expecting want; the message must name the file and, if
 * given, the tensor. */
static void expect_open(const char *path, glm_status want, const char *tensor, const char *what)
{
    glm_safetensors *st = NULL;
    glm_error err = {0};
    glm_status got = glm_safetensors_open(path, &st, &err);
    CHECK_MSG(got == want, "%s: got %s want %s (%s)", what, glm_status_name(got),
              glm_status_name(want), err.msg);
    CHECK_MSG(st == NULL || got == GLM_OK, "%s: handle returned on failure", what);
    glm_safetensors_close(st);
    if (getenv("GLM4V_TEST_VERBOSE")) printf("%-28s %s\n", what, err.msg);
    CHECK_MSG(strstr(err.msg, path) != NULL, "%s: file not named in '%s'", what, err.msg);
    if (tensor)
        CHECK_MSG(strstr(err.msg, tensor) != NULL, "%s: '%s' not in '%s'", what, tensor, err.msg);

    size_t len = 0;
    unsigned char *bytes = test_read_file(path, &len);
    glm_error err2 = {0};
    got = glm_safetensors_open_memory(bytes, len, path, &st, &err2);
    CHECK_MSG(got == want, "%s (memory): got %s (%s)", what, glm_status_name(got), err2.msg);
    glm_safetensors_close(st);
    free(bytes);
}

/* ---- golden files --------------------------------------------------------------------------- */

static glm_dtype dtype_of(const char *s)
{
    if (!strcmp(s, "F32")) return GLM_F32;
    if (!strcmp(s, "BF16")) return GLM_BF16;
    if (!strcmp(s, "F16")) return GLM_F16;
    if (!strcmp(s, "I32")) return GLM_I32;
    return GLM_I64;
}

static void check_golden_file(const char *rel)
{
    const char *path = golden_path(rel);
    st_parts p;
    CHECK_MSG(parts_load(path, &p) == 0, "cannot read %s", path);
    glm_safetensors *st = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_safetensors_open(path, &st, &err) == GLM_OK, "%s", err.msg);
    if (!st || !p.header) {
        parts_free(&p);
        glm_safetensors_close(st);
        return;
    }
    size_t expected = 0, index = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, p.header)
    {
        if (!strcmp(e->string, "__metadata__")) continue;
        expected++;
        const glm_st_tensor *t = glm_safetensors_find(st, e->string);
        CHECK_MSG(t != NULL, "%s: %s not found", rel, e->string);
        if (!t) continue;
        CHECK(glm_safetensors_at(st, index++) == t); /* header order is kept */
        CHECK(!strcmp(t->name, e->string) && !strcmp(t->file, path) && t->mapped);
        CHECK(t->dtype == dtype_of(cJSON_GetObjectItem(e, "dtype")->valuestring));
        const cJSON *shape = cJSON_GetObjectItem(e, "shape");
        CHECK(t->ndim == cJSON_GetArraySize(shape));
        for (int d = 0; d < t->ndim; d++)
            CHECK(t->shape[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
        const cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
        size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        size_t end = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        CHECK(t->bytes == end - b);
        CHECK(memcmp(t->data, p.data + b, t->bytes) == 0);
    }
    CHECK(expected > 0 && glm_safetensors_count(st) == expected);
    CHECK(glm_safetensors_at(st, expected) == NULL);
    CHECK(glm_safetensors_find(st, "transformer.no.such.tensor") == NULL);
    CHECK(glm_safetensors_find(st, "") == NULL);
    glm_safetensors_close(st);
    parts_free(&p);
}

/* BF16 values converted to F32 by the loader equal the bit pattern shifted into place. */
static void check_bf16_values(void)
{
    const char *path = golden_path("glm4v-tiny-b/model-00001-of-00002.safetensors");
    st_parts p;
    CHECK(parts_load(path, &p) == 0);
    glm_safetensors *st = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_safetensors_open(path, &st, &err) == GLM_OK, "%s", err.msg);
    const char *names[] = {"transformer.embedding.word_embeddings.weight",
                           "transformer.encoder.final_layernorm.weight",
                           "transformer.encoder.layers.0.self_attention.query_key_value.bias"};
    for (size_t k = 0; st && k < sizeof(names) / sizeof(names[0]); k++) {
        const glm_st_tensor *t = glm_safetensors_find(st, names[k]);
        CHECK_MSG(t && t->dtype == GLM_BF16, "%s", names[k]);
        if (!t) continue;
        const cJSON *off = cJSON_GetArrayItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(p.header, names[k]), "data_offsets"), 0);
        const unsigned char *raw = p.data + (size_t)off->valuedouble;
        size_t n = t->bytes / 2;
        int64_t cols = 1;
        for (int d = 1; d < t->ndim; d++)
            cols *= t->shape[d];
        float *out = malloc(n * sizeof(float));
        CHECK(glm_tensor_read_block(t, 0, t->shape[0], 0, cols, out, GLM_F32, &err) == GLM_OK);
        size_t bad = 0, nonzero = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(raw[2 * i] | raw[2 * i + 1] << 8) << 16;
            float want;
            memcpy(&want, &bits, 4);
            bad += memcmp(&want, &out[i], 4) != 0;
            nonzero += want != 0.0f;
        }
        CHECK_MSG(bad == 0 && nonzero > n / 2, "%s: %zu mismatches", names[k], bad);
        free(out);
    }
    glm_safetensors_close(st);
    parts_free(&p);
}

/* ---- round trip ----------------------------------------------------------------------------- */

static size_t count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void test_round_trip(void)
{
    char *dir = test_mkdtemp();
    char path[1024];
    snprintf(path, sizeof(path), "%s/rt.safetensors", dir);
    float f32[24];
    uint16_t bf16[6], f16[5];
    int32_t i32[3] = {-1, 0, 2147483647};
    int64_t i64[2] = {-5, (int64_t)1 << 40};
    for (int i = 0; i < 24; i++)
        f32[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 6; i++)
        bf16[i] = glm_f32_to_bf16((float)i - 2.5f);
    for (int i = 0; i < 5; i++)
        f16[i] = glm_f32_to_f16((float)i * 0.1f);
    glm_st_write_tensor w[] = {
        {.name = "z.last.written.first",
         .dtype = GLM_F32,
         .ndim = 4,
         .shape = {1, 2, 3, 4},
         .data = f32},
        {.name = "b16", .dtype = GLM_BF16, .ndim = 2, .shape = {2, 3}, .data = bf16},
        {.name = "h16", .dtype = GLM_F16, .ndim = 1, .shape = {5}, .data = f16},
        {.name = "i32 \"quoted\" name", .dtype = GLM_I32, .ndim = 1, .shape = {3}, .data = i32},
        {.name = "scalar", .dtype = GLM_I64, .ndim = 0, .shape = {0}, .data = i64},
        {.name = "empty", .dtype = GLM_F32, .ndim = 2, .shape = {0, 7}, .data = NULL},
        {.name = "i64", .dtype = GLM_I64, .ndim = 1, .shape = {2}, .data = i64},
    };
    size_t n = sizeof(w) / sizeof(w[0]);
    glm_error err = {0};
    CHECK_MSG(glm_safetensors_write(path, w, n, &err) == GLM_OK, "%s", err.msg);
    CHECK(count_dir_entries(dir) == 1); /* no temp file left behind */
    glm_safetensors *st = NULL;
    CHECK_MSG(glm_safetensors_open(path, &st, &err) == GLM_OK, "%s", err.msg);
    for (size_t i = 0; st && i < n; i++) {
        const glm_st_tensor *t = glm_safetensors_at(st, i);
        CHECK(t && !strcmp(t->name, w[i].name) && glm_safetensors_find(st, w[i].name) == t);
        if (!t) continue;
        CHECK(t->dtype == w[i].dtype && t->ndim == w[i].ndim);
        size_t bytes = glm_dtype_size(w[i].dtype);
        for (int d = 0; d < w[i].ndim; d++) {
            CHECK(t->shape[d] == w[i].shape[d]);
            bytes *= (size_t)w[i].shape[d];
        }
        CHECK(t->bytes == bytes && (bytes == 0 || memcmp(t->data, w[i].data, bytes) == 0));
        CHECK(((uintptr_t)t->data % 8 == 0) || i > 0); /* data area is 8-byte aligned */
    }
    glm_safetensors_close(st);
    st_parts p;
    CHECK(parts_load(path, &p) == 0 && (8 + p.header_len) % 8 == 0);
    parts_free(&p);

    /* Rewriting replaces the file atomically; a failed write leaves the old one intact. */
    CHECK(glm_safetensors_write(path, w, 2, &err) == GLM_OK);
    glm_st_write_tensor dup[] = {w[1], w[1]};
    CHECK(glm_safetensors_write(path, dup, 2, &err) == GLM_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "b16") != NULL);
    CHECK(glm_safetensors_open(path, &st, &err) == GLM_OK && glm_safetensors_count(st) == 2);
    glm_safetensors_close(st);
    CHECK(count_dir_entries(dir) == 1);
    snprintf(path, sizeof(path), "%s/no/such/dir/x.safetensors", dir);
    CHECK(glm_safetensors_write(path, w, n, &err) == GLM_ERR_IO);
    CHECK(strstr(err.msg, path) != NULL);
    test_rmtree(dir);
    free(dir);
}

/* ---- malformed files ------------------------------------------------------------------------ */

static cJSON *entry_of(cJSON *header, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(header, name);
}

static void set_item(cJSON *obj, const char *key, const char *json)
{
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (json) cJSON_AddItemToObject(obj, key, cJSON_Parse(json));
}

/* One edit of one entry of tiny-a's header: the result must fail with want, naming tensor. */
static void expect_entry_edit(const st_parts *good, const char *tensor, const char *key,
                              const char *json, glm_status want, const char *what)
{
    cJSON *h = cJSON_Duplicate(good->header, 1);
    set_item(entry_of(h, tensor), key, json);
    const char *path = write_with_header("edit.safetensors", h, good);
    cJSON_Delete(h);
    expect_open(path, want, tensor, what);
}

static void test_truncated(const st_parts *good)
{
    size_t cuts[] = {0,
                     4,
                     7,
                     8,
                     8 + good->header_len / 2,
                     8 + good->header_len,
                     8 + good->header_len + good->data_len / 2,
                     good->file_len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/cut%zu.safetensors", tmp_dir, cuts[i]);
        CHECK(test_write_file(path, good->file, cuts[i]) == 0);
        /* Cuts inside the data area are caught by a tensor's offsets: the message names it. */
        expect_open(path, GLM_ERR_FORMAT, cuts[i] > 8 + good->header_len ? "tensor '" : NULL,
                    "truncated");
    }
}

static void test_bad_lengths(const st_parts *good)
{
    const char *hdr = (const char *)good->file + 8;
    const char *path = write_raw("long.safetensors", good->file_len, hdr, good->header_len,
                                 good->data, good->data_len);
    expect_open(path, GLM_ERR_FORMAT, NULL, "header length > file");
    path = write_raw("absurd.safetensors", (uint64_t)1 << 63, hdr, good->header_len, good->data,
                     good->data_len);
    expect_open(path, GLM_ERR_FORMAT, NULL, "header length 2^63");
    path =
        write_raw("max.safetensors", UINT64_MAX, hdr, good->header_len, good->data, good->data_len);
    expect_open(path, GLM_ERR_FORMAT, NULL, "header length 2^64-1");
    path = write_raw("short.safetensors", good->header_len - 1, hdr, good->header_len, good->data,
                     good->data_len);
    expect_open(path, GLM_ERR_FORMAT, NULL, "header length one short");

    /* A header over the 100 MB limit inside a (sparse) file large enough to hold it. */
    char big[1024];
    snprintf(big, sizeof(big), "%s/huge.safetensors", tmp_dir);
    uint64_t n = 100000001;
    unsigned char len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (unsigned char)(n >> (8 * i));
    int fd = open(big, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0 && write(fd, len_le, 8) == 8 && ftruncate(fd, (off_t)(8 + n)) == 0);
    if (fd >= 0) close(fd);
    glm_safetensors *st = NULL;
    glm_error err = {0};
    CHECK(glm_safetensors_open(big, &st, &err) == GLM_ERR_LIMIT && st == NULL);
    CHECK(strstr(err.msg, big) != NULL);
    unlink(big);
}

static void test_bad_json(const st_parts *good)
{
    struct {
        const char *header;
        const char *what;
    } cases[] = {
        {"this is not json", "not JSON"},
        {"", "empty header"},
        {"[1, 2, 3]", "JSON list"},
        {"\"string\"", "JSON string"},
        {"{\"a\": {\"dtype\": \"F32\"", "unterminated"},
        {"{} xyz", "trailing bytes"},
        {"{\"t\": 5}", "entry not an object"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", "one offset"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": \"0,8\"}}", "offsets str"},
        {"{\"t\": {\"dtype\": 3, \"shape\": [2], \"data_offsets\": [0, 8]}}", "dtype not string"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": 2, \"data_offsets\": [0, 8]}}", "shape scalar"},
        {"{\"t\": {\"dtype\": \"F32\", \"shape\": [1e400], \"data_offsets\": [0, 8]}}", "inf dim"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].header);
        const char *path = write_raw("json.safetensors", len, cases[i].header, len, good->data, 64);
        expect_open(path, GLM_ERR_FORMAT, i >= 6 ? "'t'" : NULL, cases[i].what);
    }
    /* Space padding and __metadata__ of any shape are fine; a scalar and an empty tensor too. */
    const char *ok = "{\"__metadata__\": {\"x\": [1, {}]}, \"s\": {\"dtype\": \"I64\", \"shape\": "
                     "[], \"data_offsets\": [0, 8]}, \"e\": {\"dtype\": \"BF16\", \"shape\": [4, "
                     "0], \"data_offsets\": [8, 8]}}       ";
    size_t len = strlen(ok);
    const char *path = write_raw("ok.safetensors", len, ok, len, good->data, 8);
    glm_safetensors *st = NULL;
    glm_error err = {0};
    CHECK_MSG(glm_safetensors_open(path, &st, &err) == GLM_OK, "%s", err.msg);
    CHECK(st && glm_safetensors_count(st) == 2);
    const glm_st_tensor *s = st ? glm_safetensors_find(st, "s") : NULL;
    CHECK(s && s->ndim == 0 && s->bytes == 8);
    glm_safetensors_close(st);
}

static void test_bad_entries(const st_parts *good)
{
    const char *emb = "transformer.embedding.word_embeddings.weight"; /* [416, 64] at [0, 106496] */
    const char *fin = "transformer.encoder.final_layernorm.weight";   /* [64] at [106496, 106752] */
    expect_entry_edit(good, emb, "dtype", NULL, GLM_ERR_FORMAT, "missing dtype");
    expect_entry_edit(good, emb, "shape", NULL, GLM_ERR_FORMAT, "missing shape");
    expect_entry_edit(good, emb, "data_offsets", NULL, GLM_ERR_FORMAT, "missing offsets");
    expect_entry_edit(good, emb, "dtype", "\"Q4_K\"", GLM_ERR_FORMAT, "unknown dtype");
    expect_entry_edit(good, emb, "dtype", "\"F64\"", GLM_ERR_UNSUPPORTED, "F64");
    expect_entry_edit(good, emb, "dtype", "\"U8\"", GLM_ERR_UNSUPPORTED, "U8");
    expect_entry_edit(good, emb, "dtype", "\"BOOL\"", GLM_ERR_UNSUPPORTED, "BOOL");
    expect_entry_edit(good, emb, "dtype", "\"BF16\"", GLM_ERR_FORMAT, "dtype size mismatch");
    expect_entry_edit(good, emb, "shape", "[-416, 64]", GLM_ERR_FORMAT, "negative dim");
    expect_entry_edit(good, emb, "shape", "[416.5, 64]", GLM_ERR_FORMAT, "float dim");
    expect_entry_edit(good, emb, "shape", "[\"416\", 64]", GLM_ERR_FORMAT, "string dim");
    expect_entry_edit(good, emb, "shape", "[416, 63]", GLM_ERR_FORMAT, "numel mismatch");
    expect_entry_edit(good, emb, "shape", "[416, 64, 1, 1, 1]", GLM_ERR_UNSUPPORTED, "5 dims");
    expect_entry_edit(good, emb, "shape", "[4294967296, 4294967296, 4294967296]", GLM_ERR_FORMAT,
                      "numel overflow");
    expect_entry_edit(good, emb, "data_offsets", "[0, 106497]", GLM_ERR_FORMAT, "end off by one");
    expect_entry_edit(good, emb, "data_offsets", "[106496, 0]", GLM_ERR_FORMAT, "begin > end");
    expect_entry_edit(good, emb, "data_offsets", "[-8, 106488]", GLM_ERR_FORMAT, "negative");
    char range[96];
    snprintf(range, sizeof(range), "[%zu, %zu]", good->data_len, good->data_len + 106496);
    expect_entry_edit(good, emb, "data_offsets", range, GLM_ERR_FORMAT, "past the data area");
    expect_entry_edit(good, emb, "data_offsets", "[1e300, 1e300]", GLM_ERR_FORMAT, "huge");
    /* Overlap: the message names both tensors. */
    expect_entry_edit(good, fin, "data_offsets", "[106240, 106496]", GLM_ERR_FORMAT, "overlap");
    cJSON *h = cJSON_Duplicate(good->header, 1);
    set_item(entry_of(h, fin), "data_offsets", "[106240, 106496]");
    const char *path = write_with_header("overlap.safetensors", h, good);
    cJSON_Delete(h);
    expect_open(path, GLM_ERR_FORMAT, emb, "overlap names the other tensor");

    /* Duplicate name: an empty tensor overlaps nothing, so only the name is wrong. */
    h = cJSON_Duplicate(good->header, 1);
    cJSON_AddItemToObject(h, fin,
                          cJSON_Parse("{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}"));
    path = write_with_header("dup.safetensors", h, good);
    cJSON_Delete(h);
    expect_open(path, GLM_ERR_FORMAT, fin, "duplicate name");
}

static void test_not_files(void)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/empty.safetensors", tmp_dir);
    CHECK(test_write_file(path, "", 0) == 0);
    expect_open(path, GLM_ERR_FORMAT, NULL, "empty file");
    expect_open(write_raw("zero.safetensors", 0, "", 0, NULL, 0), GLM_ERR_FORMAT, NULL, "0 hdr");
    snprintf(path, sizeof(path), "%s/absent.safetensors", tmp_dir);
    glm_safetensors *st = NULL;
    glm_error err = {0};
    CHECK(glm_safetensors_open(path, &st, &err) == GLM_ERR_MISSING && st == NULL);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK(glm_safetensors_open(tmp_dir, &st, &err) == GLM_ERR_IO && st == NULL);
    CHECK(strstr(err.msg, tmp_dir) != NULL);
}

int main(void)
{
    tmp_dir = test_mkdtemp();
    CHECK(tmp_dir != NULL);
    if (!tmp_dir) return test_finish("safetensors");
    check_golden_file("glm4v-tiny-a/model.safetensors");
    check_golden_file("glm4v-tiny-b/model-00001-of-00002.safetensors");
    check_golden_file("glm4v-tiny-b/model-00002-of-00002.safetensors");
    check_golden_file("glm4v-tiny-a/golden.safetensors");
    check_bf16_values();
    test_round_trip();
    st_parts good;
    CHECK(parts_load(golden_path("glm4v-tiny-a/model.safetensors"), &good) == 0);
    if (good.header) {
        test_truncated(&good);
        test_bad_lengths(&good);
        test_bad_json(&good);
        test_bad_entries(&good);
    }
    parts_free(&good);
    test_not_files();
    test_rmtree(tmp_dir);
    free(tmp_dir);
    return test_finish("safetensors");
}
