/* A checkpoint folder: one safetensors file or the shards an HF index names, opened once each and
 * cross-checked against the index, with one sorted name table over all shards. Tensor copies go
 * straight from the mapping into the caller's buffer, block by block, converting dtype on the way,
 * so a tensor-parallel rank touches only its slice and nothing is held twice. */
#include "worker/checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dtype.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
/* The real index is ~100 KB. */
#define INDEX_MAX_BYTES (64u << 20)
/* Blocks smaller than this are not worth a madvise call. */
#define RELEASE_MIN_BYTES (1u << 20)

struct glm_checkpoint {
    char *dir;
    glm_safetensors **shards;
    char **shard_names; /* sorted, as the index spells them */
    size_t n_shards;
    const glm_st_tensor **by_name; /* every tensor of every shard, sorted by name */
    size_t n_tensors;
};

static int compare_tensor_names(const void *a, const void *b)
{
    const glm_st_tensor *x = *(const glm_st_tensor *const *)a;
    const glm_st_tensor *y = *(const glm_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- shards --------------------------------------------------------------------------------- */

static glm_status open_shard(glm_checkpoint *ck, size_t i, const char *name, glm_error *err)
{
    size_t len = strlen(ck->dir) + strlen(name) + 2;
    char *path = malloc(len);
    if (!path) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", ck->dir);
    snprintf(path, len, "%s/%s", ck->dir, name);
    glm_status s = glm_safetensors_open(path, &ck->shards[i], err);
    free(path);
    return s;
}

/* One table over all shards: lookups are a binary search and a tensor stored twice is caught. */
static glm_status build_name_table(glm_checkpoint *ck, glm_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < ck->n_shards; i++)
        n += glm_safetensors_count(ck->shards[i]);
    ck->by_name = malloc((n ? n : 1) * sizeof(*ck->by_name));
    if (!ck->by_name) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", ck->dir);
    for (size_t i = 0; i < ck->n_shards; i++)
        for (size_t j = 0; j < glm_safetensors_count(ck->shards[i]); j++)
            ck->by_name[ck->n_tensors++] = glm_safetensors_at(ck->shards[i], j);
    qsort(ck->by_name, n, sizeof(*ck->by_name), compare_tensor_names);
    for (size_t i = 1; i < n; i++) {
        const glm_st_tensor *a = ck->by_name[i - 1], *b = ck->by_name[i];
        if (!strcmp(a->name, b->name))
            return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s' is stored in both %s and %s",
                            ck->dir, a->name, a->file, b->file);
    }
    return GLM_OK;
}

/* Shard names come from a file we did not write: they must name a file inside the folder. */
static bool shard_name_is_safe(const char *name)
{
    if (!*name || name[0] == '/' || strchr(name, '\\')) return false;
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.')) return false;
        p += n;
        if (*p == '/') p++;
    }
    return true;
}

/* ---- the index ------------------------------------------------------------------------------ */

static char *read_small_file(const char *path, size_t limit, size_t *len, glm_status *status,
                             glm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *status = glm_fail(err, errno == ENOENT ? GLM_ERR_MISSING : GLM_ERR_IO,
                           "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(limit + 1);
    size_t n = buf ? fread(buf, 1, limit + 1, f) : 0;
    int bad = !buf || ferror(f) || n > limit;
    if (bad)
        *status = glm_fail(err,
                           !buf        ? GLM_ERR_NOMEM
                           : n > limit ? GLM_ERR_LIMIT
                                       : GLM_ERR_IO,
                           "%s: cannot read (limit %zu bytes)", path, limit);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Collects the distinct shard names of weight_map into ck->shard_names (sorted). */
static glm_status collect_shards(glm_checkpoint *ck, const char *index_path, const cJSON *map,
                                 glm_error *err)
{
    size_t n = (size_t)cJSON_GetArraySize(map), k = 0;
    if (n == 0) return glm_fail(err, GLM_ERR_FORMAT, "%s: weight_map is empty", index_path);
    ck->shard_names = calloc(n, sizeof(*ck->shard_names));
    if (!ck->shard_names) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", index_path);
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        if (!cJSON_IsString(item))
            return glm_fail(err, GLM_ERR_FORMAT, "%s: tensor '%.200s': shard name is not a string",
                            index_path, item->string);
        if (!shard_name_is_safe(item->valuestring))
            return glm_fail(err, GLM_ERR_FORMAT,
                            "%s: tensor '%.200s': shard '%.200s' is not a file inside %s",
                            index_path, item->string, item->valuestring, ck->dir);
        ck->shard_names[k++] = item->valuestring; /* borrowed until deduplicated below */
    }
    qsort(ck->shard_names, n, sizeof(*ck->shard_names), compare_strings);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++)
        if (unique == 0 || strcmp(ck->shard_names[unique - 1], ck->shard_names[i]))
            ck->shard_names[unique++] = ck->shard_names[i];
    for (size_t i = 0; i < unique; i++) {
        ck->shard_names[i] = strdup(ck->shard_names[i]);
        ck->n_shards = i + 1; /* close frees what was copied so far */
        if (!ck->shard_names[i]) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", ck->dir);
    }
    for (size_t i = unique; i < n; i++)
        ck->shard_names[i] = NULL;
    return GLM_OK;
}

static size_t shard_index(const glm_checkpoint *ck, const char *name)
{
    const char *key = name;
    const char **hit =
        bsearch(&key, ck->shard_names, ck->n_shards, sizeof(*ck->shard_names), compare_strings);
    return hit ? (size_t)(hit - (const char **)ck->shard_names) : ck->n_shards;
}

/* Every tensor the index maps must be in the shard it names. */
static glm_status check_weight_map(const glm_checkpoint *ck, const char *index_path,
                                   const cJSON *map, glm_error *err)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        size_t s = shard_index(ck, item->valuestring);
        if (s < ck->n_shards && glm_safetensors_find(ck->shards[s], item->string)) continue;
        const glm_st_tensor *actual = glm_checkpoint_find(ck, item->string);
        if (!actual)
            return glm_fail(err, GLM_ERR_MISSING,
                            "%s: tensor '%.200s' is mapped to %s, which does not contain it (nor "
                            "does any other shard)",
                            index_path, item->string, item->valuestring);
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: tensor '%.200s' is mapped to %s but is stored in %s", index_path,
                        item->string, item->valuestring, actual->file);
    }
    return GLM_OK;
}

static glm_status open_from_index(glm_checkpoint *ck, const char *index_path, glm_error *err)
{
    size_t len = 0;
    glm_status s = GLM_OK;
    char *text = read_small_file(index_path, INDEX_MAX_BYTES, &len, &s, err);
    if (!text) return s;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return glm_fail(err, GLM_ERR_FORMAT, "%s: not a JSON object", index_path);
    }
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!map)
        s = glm_fail(err, GLM_ERR_MISSING, "%s: missing key 'weight_map'", index_path);
    else if (!cJSON_IsObject(map))
        s = glm_fail(err, GLM_ERR_FORMAT, "%s: key 'weight_map' is not an object", index_path);
    else
        s = collect_shards(ck, index_path, map, err);
    if (s == GLM_OK) {
        ck->shards = calloc(ck->n_shards ? ck->n_shards : 1, sizeof(*ck->shards));
        if (!ck->shards) s = glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", index_path);
    }
    for (size_t i = 0; s == GLM_OK && i < ck->n_shards; i++) {
        s = open_shard(ck, i, ck->shard_names[i], err);
        if (s != GLM_OK) glm_error_prefix(err, "%s names shard %s", index_path, ck->shard_names[i]);
    }
    if (s == GLM_OK) s = build_name_table(ck, err);
    if (s == GLM_OK) s = check_weight_map(ck, index_path, map, err);
    cJSON_Delete(root);
    return s;
}

static glm_status open_single(glm_checkpoint *ck, glm_error *err)
{
    ck->shards = calloc(1, sizeof(*ck->shards));
    ck->shard_names = calloc(1, sizeof(*ck->shard_names));
    if (!ck->shards || !ck->shard_names) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    ck->shard_names[0] = strdup(SINGLE_NAME);
    if (!ck->shard_names[0]) return glm_fail(err, GLM_ERR_NOMEM, "out of memory");
    ck->n_shards = 1;
    glm_status s = open_shard(ck, 0, SINGLE_NAME, err);
    return s == GLM_OK ? build_name_table(ck, err) : s;
}

/* ---- public --------------------------------------------------------------------------------- */

glm_status glm_checkpoint_open(const char *model_dir, glm_checkpoint **out, glm_error *err)
{
    *out = NULL;
    if (!model_dir) return glm_fail(err, GLM_ERR_INVALID_ARG, "checkpoint: no folder given");
    glm_checkpoint *ck = calloc(1, sizeof(*ck));
    if (!ck || !(ck->dir = strdup(model_dir))) {
        free(ck);
        return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", model_dir);
    }
    char path[4096];
    struct stat sb;
    glm_status s;
    snprintf(path, sizeof(path), "%s/%s", model_dir, INDEX_NAME);
    if (stat(path, &sb) == 0) {
        s = open_from_index(ck, path, err);
    } else {
        snprintf(path, sizeof(path), "%s/%s", model_dir, SINGLE_NAME);
        if (stat(path, &sb) == 0)
            s = open_single(ck, err);
        else
            s = glm_fail(err, GLM_ERR_MISSING, "%s: neither %s nor %s found", model_dir, INDEX_NAME,
                         SINGLE_NAME);
    }
    if (s != GLM_OK) {
        glm_checkpoint_close(ck);
        return s;
    }
    *out = ck;
    return GLM_OK;
}

void glm_checkpoint_close(glm_checkpoint *ck)
{
    if (!ck) return;
    for (size_t i = 0; i < ck->n_shards; i++) {
        if (ck->shards) glm_safetensors_close(ck->shards[i]);
        free(ck->shard_names[i]);
    }
    free(ck->shards);
    free(ck->shard_names);
    free(ck->by_name);
    free(ck->dir);
    free(ck);
}

const glm_st_tensor *glm_checkpoint_find(const glm_checkpoint *ck, const char *name)
{
    size_t lo = 0, hi = ck->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->by_name[mid]->name, name);
        if (c == 0) return ck->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used +=
            (size_t)snprintf(buf + used, len - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

glm_status glm_checkpoint_expect(const glm_checkpoint *ck, const char *name, int ndim,
                                 const int64_t *shape, const glm_st_tensor **out, glm_error *err)
{
    if (out) *out = NULL;
    const glm_st_tensor *t = glm_checkpoint_find(ck, name);
    if (!t) return glm_fail(err, GLM_ERR_MISSING, "%s: tensor '%.200s' not found", ck->dir, name);
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char have[128], want[128];
        format_shape(have, sizeof(have), t->ndim, t->shape);
        format_shape(want, sizeof(want), ndim, shape);
        return glm_fail(err, GLM_ERR_SHAPE, "%s: tensor '%.200s' has shape %s, expected %s",
                        t->file, name, have, want);
    }
    if (out) *out = t;
    return GLM_OK;
}

/* ---- block reads ---------------------------------------------------------------------------- */

/* Converts n values; loads and stores go through memcpy because a safetensors data area need not
 * be aligned to the element size (the header length is arbitrary). Returns -1 for a pair we do
 * not convert (integers only copy to their own type). Adds to *n_overflow the finite values that
 * an F16 destination cannot hold (|v| > 65504 would become infinite): the caller refuses them. */
static int convert_run(unsigned char *dst, glm_dtype dd, const unsigned char *src, glm_dtype sd,
                       size_t n, size_t *n_overflow)
{
    if (dd == sd) {
        memcpy(dst, src, n * glm_dtype_size(sd));
        return 0;
    }
    if (sd == GLM_BF16 && dd == GLM_F32) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            float f = glm_bf16_to_f32(h);
            memcpy(dst + 4 * i, &f, 4);
        }
        return 0;
    }
    if (sd == GLM_F32 && dd == GLM_BF16) {
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, src + 4 * i, 4);
            uint16_t h = glm_f32_to_bf16(f);
            memcpy(dst + 2 * i, &h, 2);
        }
        return 0;
    }
    bool float_src = sd == GLM_F32 || sd == GLM_BF16 || sd == GLM_F16;
    bool float_dst = dd == GLM_F32 || dd == GLM_BF16 || dd == GLM_F16;
    if (!float_src || !float_dst) return -1;
    for (size_t i = 0; i < n; i++) {
        float f;
        uint16_t h;
        if (sd == GLM_F32) {
            memcpy(&f, src + 4 * i, 4);
        } else {
            memcpy(&h, src + 2 * i, 2);
            f = sd == GLM_BF16 ? glm_bf16_to_f32(h) : glm_f16_to_f32(h);
        }
        if (dd == GLM_F16 && isfinite(f) && fabsf(f) > 65504.f) ++*n_overflow;
        if (dd == GLM_F32) {
            memcpy(dst + 4 * i, &f, 4);
        } else {
            h = dd == GLM_BF16 ? glm_f32_to_bf16(f) : glm_f32_to_f16(f);
            memcpy(dst + 2 * i, &h, 2);
        }
    }
    return 0;
}

/* Drops the mapping's pages that lie wholly inside [p, p + len): the data now lives in the
 * caller's buffer, and the page cache still holds the file for any other reader. Safe because
 * the mapping is private and read-only: a later access just faults the page back in. */
static void release_pages(const void *p, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || len < RELEASE_MIN_BYTES) return;
    uintptr_t begin = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~((uintptr_t)page - 1);
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

glm_status glm_tensor_read_block(const glm_st_tensor *t, int64_t row0, int64_t n_rows, int64_t col0,
                                 int64_t n_cols, void *dst, glm_dtype dst_dtype, glm_error *err)
{
    if (!t) return glm_fail(err, GLM_ERR_INVALID_ARG, "read_block: no tensor");
    int64_t rows = t->ndim == 0 ? 1 : t->shape[0], cols = 1;
    for (int d = 1; d < t->ndim; d++)
        cols *= t->shape[d];
    if (row0 < 0 || n_rows < 0 || col0 < 0 || n_cols < 0 || row0 > rows - n_rows ||
        col0 > cols - n_cols)
        return glm_fail(err, GLM_ERR_SHAPE,
                        "%s: tensor '%.200s': block rows [%lld, +%lld) x cols [%lld, +%lld) is "
                        "outside its [%lld, %lld] matrix view",
                        t->file, t->name, (long long)row0, (long long)n_rows, (long long)col0,
                        (long long)n_cols, (long long)rows, (long long)cols);
    if (n_rows == 0 || n_cols == 0) return GLM_OK;
    if (!dst)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: tensor '%.200s': no destination", t->file,
                        t->name);
    size_t ssize = glm_dtype_size(t->dtype), dsize = glm_dtype_size(dst_dtype);
    const unsigned char *src =
        (const unsigned char *)t->data + ((size_t)row0 * (size_t)cols + (size_t)col0) * ssize;
    unsigned char *out = dst;
    /* Whole rows are contiguous in the file: one run instead of n_rows. */
    bool whole_rows = n_cols == cols;
    size_t runs = whole_rows ? 1 : (size_t)n_rows;
    size_t run_len = whole_rows ? (size_t)n_rows * (size_t)cols : (size_t)n_cols;
    size_t n_overflow = 0;
    for (size_t r = 0; r < runs; r++) {
        if (convert_run(out + r * run_len * dsize, dst_dtype, src + r * (size_t)cols * ssize,
                        t->dtype, run_len, &n_overflow) != 0)
            return glm_fail(err, GLM_ERR_UNSUPPORTED,
                            "%s: tensor '%.200s': cannot convert %s to %s", t->file, t->name,
                            glm_dtype_name(t->dtype), glm_dtype_name(dst_dtype));
    }
    if (n_overflow)
        return glm_fail(err, GLM_ERR_UNSUPPORTED,
                        "%s: tensor '%.200s': %zu values are outside the F16 range (|v| > 65504); "
                        "load this checkpoint with bf16 storage (--dtype bf16)",
                        t->file, t->name, n_overflow);
    if (t->mapped) {
        size_t span = ((size_t)(n_rows - 1) * (size_t)cols + (size_t)n_cols) * ssize;
        release_pages(src, span);
    }
    return GLM_OK;
}
