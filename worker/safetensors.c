/* Safetensors reading: a read-only private mapping of the file plus a table of tensors, built only
 * after every header entry has been checked, so a bad file fails at open with one message naming
 * the file and the tensor instead of crashing later inside a kernel. Writing (tests, tools) is at
 * the end: a temp file renamed into place, so a crash never leaves a half-written checkpoint. */
#include "worker/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers of real checkpoints are ~100 KB; the reference implementation caps them at 100 MB. */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)
/* Largest integer a JSON double holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0

struct glm_safetensors {
    char *path;
    void *map; /* NULL for in-memory files */
    size_t map_bytes;
    const unsigned char *data_area;
    size_t data_bytes;
    glm_st_tensor *tensors; /* header order */
    size_t n_tensors;
    const glm_st_tensor **by_name; /* sorted by name for binary search */
};

/* Byte ranges of the tensors, sorted to find overlaps. */
typedef struct st_range {
    size_t begin, end;
    size_t index;
} st_range;

/* ---- dtype names ---------------------------------------------------------------------------- */

/* 1: supported, 0: a real safetensors dtype we do not load, -1: not a safetensors dtype. */
static int dtype_from_name(const char *s, glm_dtype *out)
{
    static const struct {
        const char *name;
        glm_dtype dtype;
    } known[] = {
        {"F32", GLM_F32}, {"BF16", GLM_BF16}, {"F16", GLM_F16}, {"I32", GLM_I32}, {"I64", GLM_I64}};
    static const char *unsupported[] = {"F64", "U8",   "I8",      "U16",     "I16", "U32",
                                        "U64", "BOOL", "F8_E4M3", "F8_E5M2", "C64"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (!strcmp(s, known[i].name)) {
            *out = known[i].dtype;
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
        if (!strcmp(s, unsupported[i])) return 0;
    return -1;
}

/* ---- header entries ------------------------------------------------------------------------- */

/* A JSON number that is a non-negative integer small enough to be exact in a double. */
static int json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0.0 || v != floor(v) || v > ST_MAX_JSON_INT) return -1;
    *out = (uint64_t)v;
    return 0;
}

static glm_status parse_shape(const glm_safetensors *st, const char *name, const cJSON *shape,
                              glm_st_tensor *t, uint64_t *numel, glm_error *err)
{
    if (!shape)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': missing \"shape\"", st->path,
                        name);
    if (!cJSON_IsArray(shape))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': \"shape\" is not a list",
                        st->path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > GLM_MAX_DIMS)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "%s: tensor '%.200s': %d dims (at most %d)",
                        st->path, name, ndim, GLM_MAX_DIMS);
    t->ndim = ndim;
    uint64_t n = 1;
    bool overflow = false;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t v;
        if (json_uint(dim, &v) != 0)
            return glm_fail(err, GLM_ERR_FORMAT,
                            "%s: tensor '%.200s': shape[%d] is not a non-negative integer",
                            st->path, name, d);
        if (v != 0 && n > UINT64_MAX / v) overflow = true;
        n = overflow ? 0 : n * v;
        t->shape[d++] = (int64_t)v;
    }
    for (; d < GLM_MAX_DIMS; d++)
        t->shape[d] = 1;
    /* A shape whose product overflows can never match its byte range; report it as such below. */
    *numel = overflow ? UINT64_MAX : n;
    return GLM_OK;
}

static glm_status parse_offsets(const glm_safetensors *st, const char *name, const cJSON *offsets,
                                uint64_t numel, glm_st_tensor *t, st_range *range, glm_error *err)
{
    if (!offsets)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': missing \"data_offsets\"",
                        st->path, name);
    uint64_t b, e;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        json_uint(offsets->child, &b) != 0 || json_uint(offsets->child->next, &e) != 0)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: tensor '%.200s': \"data_offsets\" is not [begin, end] of non-negative "
                        "integers",
                        st->path, name);
    if (b > e)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: tensor '%.200s': data_offsets [%llu, %llu] begin after end", st->path,
                        name, (unsigned long long)b, (unsigned long long)e);
    if (e > st->data_bytes)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: tensor '%.200s': data_offsets [%llu, %llu] outside the %zu-byte data "
                        "area",
                        st->path, name, (unsigned long long)b, (unsigned long long)e,
                        st->data_bytes);
    uint64_t elem = glm_dtype_size(t->dtype);
    if (numel == UINT64_MAX || numel > UINT64_MAX / elem || numel * elem != e - b)
        return glm_fail(
            err, GLM_ERR_FORMAT,
            "%s: tensor '%.200s': %llu bytes in data_offsets but shape x %s needs %s%llu", st->path,
            name, (unsigned long long)(e - b), glm_dtype_name(t->dtype),
            numel == UINT64_MAX ? "more than " : "",
            numel == UINT64_MAX ? (unsigned long long)UINT64_MAX
                                : (unsigned long long)(numel * elem));
    t->data = st->data_area + b;
    t->bytes = (size_t)(e - b);
    range->begin = (size_t)b;
    range->end = (size_t)e;
    return GLM_OK;
}

static glm_status parse_entry(glm_safetensors *st, const cJSON *entry, glm_st_tensor *t,
                              st_range *range, glm_error *err)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': entry is not an object",
                        st->path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!dtype)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': missing \"dtype\"", st->path,
                        name);
    if (!cJSON_IsString(dtype))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': \"dtype\" is not a string",
                        st->path, name);
    int known = dtype_from_name(dtype->valuestring, &t->dtype);
    if (known == 0)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "%s: tensor '%.200s': dtype %s is not supported",
                        st->path, name, dtype->valuestring);
    if (known < 0)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': unknown dtype '%.32s'", st->path,
                        name, dtype->valuestring);
    uint64_t numel = 0;
    glm_status s =
        parse_shape(st, name, cJSON_GetObjectItemCaseSensitive(entry, "shape"), t, &numel, err);
    if (s != GLM_OK) return s;
    return parse_offsets(st, name, cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), numel,
                         t, range, err);
}

/* ---- whole-file checks ---------------------------------------------------------------------- */

static int compare_range(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int compare_by_name(const void *a, const void *b)
{
    const glm_st_tensor *x = *(const glm_st_tensor *const *)a;
    const glm_st_tensor *y = *(const glm_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* Sorting by offset makes the overlap check linear after an n log n sort. Empty tensors take no
 * bytes and overlap nothing. */
static glm_status check_overlaps(const glm_safetensors *st, st_range *ranges, glm_error *err)
{
    qsort(ranges, st->n_tensors, sizeof(*ranges), compare_range);
    size_t max_end = 0, max_index = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        if (ranges[i].begin == ranges[i].end) continue;
        if (max_end > ranges[i].begin)
            return glm_fail(err, GLM_ERR_FORMAT,
                            "%s: tensor '%.200s' (bytes %zu..%zu) overlaps tensor '%.200s'",
                            st->path, st->tensors[ranges[i].index].name, ranges[i].begin,
                            ranges[i].end, st->tensors[max_index].name);
        max_end = ranges[i].end;
        max_index = ranges[i].index;
    }
    return GLM_OK;
}

static glm_status build_name_index(glm_safetensors *st, glm_error *err)
{
    st->by_name = malloc((st->n_tensors ? st->n_tensors : 1) * sizeof(*st->by_name));
    if (!st->by_name) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", st->path);
    for (size_t i = 0; i < st->n_tensors; i++)
        st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, st->n_tensors, sizeof(*st->by_name), compare_by_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->by_name[i - 1]->name, st->by_name[i]->name))
            return glm_fail(err, GLM_ERR_FORMAT, "%s: duplicate tensor name '%.200s'", st->path,
                            st->by_name[i]->name);
    return GLM_OK;
}

static glm_status parse_entries(glm_safetensors *st, const cJSON *root, glm_error *err)
{
    size_t n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) if (strcmp(item->string, "__metadata__")) n++;
    st->tensors = calloc(n ? n : 1, sizeof(*st->tensors));
    st_range *ranges = calloc(n ? n : 1, sizeof(*ranges));
    if (!st->tensors || !ranges) {
        free(ranges);
        return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory for %zu tensors", st->path, n);
    }
    glm_status s = GLM_OK;
    cJSON_ArrayForEach(item, root)
    {
        if (!strcmp(item->string, "__metadata__")) continue;
        glm_st_tensor *t = &st->tensors[st->n_tensors];
        t->file = st->path;
        t->mapped = st->map != NULL;
        s = parse_entry(st, item, t, &ranges[st->n_tensors], err);
        if (s != GLM_OK) break;
        t->name = strdup(item->string);
        if (!t->name) {
            s = glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", st->path);
            break;
        }
        ranges[st->n_tensors].index = st->n_tensors;
        st->n_tensors++;
    }
    if (s == GLM_OK) s = check_overlaps(st, ranges, err);
    free(ranges);
    if (s == GLM_OK) s = build_name_index(st, err);
    return s;
}

static bool only_whitespace(const char *p, const char *end)
{
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

/* Checks the length prefix and the JSON header of the file image in st, then fills the table. */
static glm_status parse_file(glm_safetensors *st, const unsigned char *bytes, size_t size,
                             glm_error *err)
{
    if (size < 8)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: %zu bytes is too short for the 8-byte header length", st->path, size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    if (header_len > size - 8)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the %zu-byte file", st->path,
                        (unsigned long long)header_len, size);
    if (header_len > ST_MAX_HEADER_BYTES)
        return glm_fail(err, GLM_ERR_LIMIT, "%s: header length %llu exceeds the %u-byte limit",
                        st->path, (unsigned long long)header_len, ST_MAX_HEADER_BYTES);
    st->data_area = bytes + 8 + header_len;
    st->data_bytes = size - 8 - (size_t)header_len;

    /* cJSON gets a NUL-terminated copy: nothing in the file can make it read past the header. */
    char *text = malloc((size_t)header_len + 1);
    if (!text) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory for the header", st->path);
    memcpy(text, bytes + 8, (size_t)header_len);
    text[header_len] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)header_len, &end, false);
    glm_status s = GLM_OK;
    if (!root)
        s = glm_fail(err, GLM_ERR_FORMAT, "%s: header is not valid JSON (near byte %ld)", st->path,
                     end ? (long)(end - text) + 8 : -1L);
    else if (!only_whitespace(end, text + header_len))
        s = glm_fail(err, GLM_ERR_FORMAT, "%s: trailing bytes after the JSON header", st->path);
    else if (!cJSON_IsObject(root))
        s = glm_fail(err, GLM_ERR_FORMAT, "%s: header is not a JSON object", st->path);
    else
        s = parse_entries(st, root, err);
    cJSON_Delete(root);
    free(text);
    return s;
}

/* ---- public --------------------------------------------------------------------------------- */

static glm_safetensors *alloc_file(const char *path, glm_error *err)
{
    glm_safetensors *st = calloc(1, sizeof(*st));
    if (st) st->path = strdup(path);
    if (!st || !st->path) {
        free(st);
        glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    return st;
}

glm_status glm_safetensors_open_memory(const void *bytes, size_t size, const char *name,
                                       glm_safetensors **out, glm_error *err)
{
    *out = NULL;
    if (!name) name = "<memory>";
    if (!bytes && size) return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: no data", name);
    glm_safetensors *st = alloc_file(name, err);
    if (!st) return GLM_ERR_NOMEM;
    glm_status s = parse_file(st, bytes, size, err);
    if (s != GLM_OK) {
        glm_safetensors_close(st);
        return s;
    }
    *out = st;
    return GLM_OK;
}

glm_status glm_safetensors_open(const char *path, glm_safetensors **out, glm_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        glm_status s = errno == ENOENT ? GLM_ERR_MISSING : GLM_ERR_IO;
        return glm_fail(err, s, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return glm_fail(err, GLM_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: %zu bytes is too short for the 8-byte header length", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file open */
    if (map == MAP_FAILED)
        return glm_fail(err, GLM_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, size,
                        strerror(map_errno));
    /* Loads read each tensor once, front to back: let the kernel read ahead aggressively. */
    madvise(map, size, MADV_SEQUENTIAL);

    glm_safetensors *st = alloc_file(path, err);
    if (!st) {
        munmap(map, size);
        return GLM_ERR_NOMEM;
    }
    st->map = map;
    st->map_bytes = size;
    glm_status s = parse_file(st, map, size, err);
    if (s != GLM_OK) {
        glm_safetensors_close(st);
        return s;
    }
    *out = st;
    return GLM_OK;
}

void glm_safetensors_close(glm_safetensors *st)
{
    if (!st) return;
    if (st->tensors)
        for (size_t i = 0; i < st->n_tensors; i++)
            free((char *)st->tensors[i].name);
    free(st->tensors);
    free(st->by_name);
    if (st->map) munmap(st->map, st->map_bytes);
    free(st->path);
    free(st);
}

size_t glm_safetensors_count(const glm_safetensors *st)
{
    return st->n_tensors;
}

const glm_st_tensor *glm_safetensors_at(const glm_safetensors *st, size_t index)
{
    return index < st->n_tensors ? &st->tensors[index] : NULL;
}

const glm_st_tensor *glm_safetensors_find(const glm_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writing -------------------------------------------------------------------------------- */

static glm_status check_write_tensor(const char *path, const glm_st_write_tensor *t, size_t i,
                                     uint64_t *bytes, glm_error *err)
{
    if (!t->name || !*t->name || !strcmp(t->name, "__metadata__"))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor %zu has no usable name", path, i);
    if (glm_dtype_size(t->dtype) == 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor '%.200s': bad dtype", path, t->name);
    if (t->ndim < 0 || t->ndim > GLM_MAX_DIMS)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor '%.200s': ndim %d", path, t->name,
                        t->ndim);
    uint64_t n = glm_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || (double)t->shape[d] > ST_MAX_JSON_INT ||
            (t->shape[d] && n > UINT64_MAX / (uint64_t)t->shape[d]))
            return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor '%.200s': bad shape[%d]", path,
                            t->name, d);
        n *= (uint64_t)t->shape[d];
    }
    if (n && !t->data)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor '%.200s': no data", path, t->name);
    *bytes = n;
    return GLM_OK;
}

/* Builds the padded header JSON; sizes[i] receives each tensor's byte count. */
static glm_status build_header(const char *path, const glm_st_write_tensor *tensors, size_t n,
                               uint64_t *sizes, char **out, size_t *out_len, glm_error *err)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    if (!root || !meta || !cJSON_AddStringToObject(meta, "format", "pt")) goto nomem;
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const glm_st_write_tensor *t = &tensors[i];
        glm_status s = check_write_tensor(path, t, i, &sizes[i], err);
        if (s != GLM_OK) {
            cJSON_Delete(root);
            return s;
        }
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = entry ? cJSON_AddArrayToObject(entry, "shape") : NULL;
        cJSON *offsets = entry ? cJSON_AddArrayToObject(entry, "data_offsets") : NULL;
        if (!shape || !offsets ||
            !cJSON_AddStringToObject(entry, "dtype", glm_dtype_name(t->dtype)))
            goto nomem;
        for (int d = 0; d < t->ndim; d++)
            if (!cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]))) goto nomem;
        if (!cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset)) ||
            !cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)(offset + sizes[i]))))
            goto nomem;
        offset += sizes[i];
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory for the header", path);
    /* The data area starts 8-byte aligned so readers may load F32/I64 values in place. */
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    char *header = malloc(padded);
    if (!header) {
        free(json);
        return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    memcpy(header, json, len);
    memset(header + len, ' ', padded - len);
    free(json);
    *out = header;
    *out_len = padded;
    return GLM_OK;
nomem:
    cJSON_Delete(root);
    return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory for the header", path);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate names would make the file unreadable; sorting keeps the check n log n. */
static glm_status check_unique_names(const char *path, const glm_st_write_tensor *tensors, size_t n,
                                     glm_error *err)
{
    const char **names = malloc((n ? n : 1) * sizeof(*names));
    if (!names) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        names[i] = tensors[i].name ? tensors[i].name : "";
    qsort(names, n, sizeof(*names), compare_names);
    glm_status s = GLM_OK;
    for (size_t i = 1; i < n && s == GLM_OK; i++)
        if (!strcmp(names[i - 1], names[i]))
            s = glm_fail(err, GLM_ERR_INVALID_ARG, "%s: duplicate tensor name '%.200s'", path,
                         names[i]);
    free(names);
    return s;
}

static int write_all(int fd, const void *buf, uint64_t len)
{
    const char *p = buf;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (uint64_t)w;
    }
    return 0;
}

/* Makes the rename durable; failure here does not undo a complete file, so it is not reported. */
static void sync_parent_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

glm_status glm_safetensors_write(const char *path, const glm_st_write_tensor *tensors, size_t n,
                                 glm_error *err)
{
    if (!path || (n && !tensors)) return glm_fail(err, GLM_ERR_INVALID_ARG, "write: no path");
    uint64_t *sizes = calloc(n ? n : 1, sizeof(*sizes));
    if (!sizes) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", path);
    char *header = NULL;
    size_t header_len = 0;
    glm_status s = check_unique_names(path, tensors, n, err);
    if (s == GLM_OK) s = build_header(path, tensors, n, sizes, &header, &header_len, err);
    if (s != GLM_OK) {
        free(sizes);
        return s;
    }
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(sizes);
        free(header);
        return glm_fail(err, GLM_ERR_IO, "%s: cannot create temp file: %s", path, strerror(errno));
    }
    unsigned char len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    int bad = fchmod(fd, 0644) != 0 || write_all(fd, len_le, 8) != 0 ||
              write_all(fd, header, header_len) != 0;
    for (size_t i = 0; i < n && !bad; i++)
        bad = write_all(fd, tensors[i].data, sizes[i]) != 0;
    int saved = errno;
    if (!bad && fsync(fd) != 0) bad = 1, saved = errno;
    if (close(fd) != 0 && !bad) bad = 1, saved = errno;
    if (!bad && rename(tmp, path) != 0) bad = 1, saved = errno;
    free(sizes);
    free(header);
    if (bad) {
        unlink(tmp);
        return glm_fail(err, GLM_ERR_IO, "%s: write failed: %s", path, strerror(saved));
    }
    sync_parent_dir(path);
    return GLM_OK;
}
