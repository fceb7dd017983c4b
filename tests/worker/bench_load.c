/* Checkpoint load benchmark (not a test; scripts/bench-load.sh drives it).
 *
 *   bench_load gen DIR [MB]        synthetic bf16 checkpoint: 2 shards + index, ~MB in all
 *   bench_load read DIR cold|warm  plain read() of the shard files into one 16 MB buffer
 *   bench_load load DIR f32|bf16 cold|warm
 *                                  glm_checkpoint_open + glm_tensor_read_block of every tensor:
 *                                  f32 into one host arena for all weights (the CPU backend),
 *                                  bf16 into one staging buffer reused per tensor (the GPU path)
 *   bench_load clean DIR           removes what gen wrote
 *
 * "cold" first drops the shard files from the page cache with posix_fadvise(DONTNEED) (clean
 * pages only, which they are: the writer fsyncs). Each command prints one line of key=value
 * pairs: mb (checkpoint MB moved), s, mbps, rss_mb (peak resident set of this process). Each
 * phase runs in its own process so its peak RSS is its own. With BENCH_LOAD_PREFAULT=1 the F32
 * arena is touched before the clock starts: a fresh 4 GB arena costs a million first-touch page
 * faults (the kernel zeroing pages), which is the arena's cost, not the loader's. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/dtype.h"
#include "worker/checkpoint.h"

#define N_SHARDS 2
#define BIG_PER_SHARD 4
#define ROWS 8192

static const char *shard_name(int i)
{
    return i == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KB on Linux */
}

static void shard_path(char *buf, size_t len, const char *dir, int i)
{
    snprintf(buf, len, "%s/%s", dir, shard_name(i));
}

/* Each shard: BIG_PER_SHARD [ROWS, cols] matrices and as many [ROWS] norm vectors, all bf16. The
 * matrices share one buffer of random values, so generating needs one tensor of memory. */
static int cmd_gen(const char *dir, long total_mb)
{
    size_t big_bytes = (size_t)total_mb * 1024 * 1024 / (N_SHARDS * BIG_PER_SHARD);
    int64_t cols = (int64_t)(big_bytes / 2 / ROWS);
    if (cols < 1) cols = 1;
    size_t n = (size_t)(ROWS * cols);
    uint16_t *values = malloc(n * sizeof(uint16_t));
    if (!values) return fprintf(stderr, "out of memory\n"), 1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        values[i] = glm_f32_to_bf16(((float)(x >> 40) / 16777216.0f - 0.5f) * 0.05f);
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    FILE *index = fopen(path, "w");
    if (!index) {
        fprintf(stderr, "%s: cannot create\n", path);
        free(values);
        return 1;
    }
    fprintf(index, "{\"metadata\": {}, \"weight_map\": {");
    char names[N_SHARDS * BIG_PER_SHARD * 2][64];
    int k = 0;
    for (int s = 0; s < N_SHARDS; s++) {
        glm_st_write_tensor t[BIG_PER_SHARD * 2];
        for (int j = 0; j < BIG_PER_SHARD; j++, k += 2) {
            snprintf(names[k], sizeof(names[k]), "layers.%d.mlp.weight", s * BIG_PER_SHARD + j);
            snprintf(names[k + 1], sizeof(names[k + 1]), "layers.%d.norm.weight",
                     s * BIG_PER_SHARD + j);
            t[2 * j] = (glm_st_write_tensor){.name = names[k],
                                             .dtype = GLM_BF16,
                                             .ndim = 2,
                                             .shape = {ROWS, cols},
                                             .data = values};
            t[2 * j + 1] = (glm_st_write_tensor){.name = names[k + 1],
                                                 .dtype = GLM_BF16,
                                                 .ndim = 1,
                                                 .shape = {ROWS},
                                                 .data = values};
            fprintf(index, "%s\"%s\": \"%s\", \"%s\": \"%s\"", k ? ", " : "", names[k],
                    shard_name(s), names[k + 1], shard_name(s));
        }
        shard_path(path, sizeof(path), dir, s);
        glm_error err;
        if (glm_safetensors_write(path, t, BIG_PER_SHARD * 2, &err) != GLM_OK) {
            fprintf(stderr, "%s\n", err.msg);
            fclose(index);
            free(values);
            return 1;
        }
    }
    fprintf(index, "}}\n");
    fclose(index);
    free(values);
    return 0;
}

static void drop_from_cache(const char *dir)
{
    char path[1024];
    for (int s = 0; s < N_SHARDS; s++) {
        shard_path(path, sizeof(path), dir, s);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static int cmd_read(const char *dir, int cold)
{
    if (cold) drop_from_cache(dir);
    size_t buf_len = 16u << 20;
    char *buf = malloc(buf_len);
    char path[1024];
    double t0 = now_s(), bytes = 0;
    for (int s = 0; s < N_SHARDS; s++) {
        shard_path(path, sizeof(path), dir, s);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "%s: cannot open\n", path);
            free(buf);
            return 1;
        }
        ssize_t r;
        while ((r = read(fd, buf, buf_len)) > 0)
            bytes += (double)r;
        close(fd);
    }
    double s = now_s() - t0;
    printf("mb=%.0f s=%.3f mbps=%.0f rss_mb=%.0f\n", bytes / 1e6, s, bytes / 1e6 / s,
           peak_rss_mb());
    free(buf);
    return 0;
}

static int cmd_load(const char *dir, glm_dtype dst, int cold)
{
    if (cold) drop_from_cache(dir);
    double t0 = now_s(); /* restarted after prefaulting: the open is cheap either way */
    glm_checkpoint *ck = NULL;
    glm_error err;
    if (glm_checkpoint_open(dir, &ck, &err) != GLM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    /* The names come from the index we wrote: walk them the way a loader walks its weights. */
    size_t total_elems = 0, max_elems = 0;
    const glm_st_tensor *tensors[N_SHARDS * BIG_PER_SHARD * 2];
    int n = 0;
    for (int i = 0; i < N_SHARDS * BIG_PER_SHARD; i++) {
        char name[64];
        for (int kind = 0; kind < 2; kind++) {
            snprintf(name, sizeof(name), kind ? "layers.%d.norm.weight" : "layers.%d.mlp.weight",
                     i);
            const glm_st_tensor *t = glm_checkpoint_find(ck, name);
            if (!t) return fprintf(stderr, "%s missing\n", name), 1;
            size_t elems = t->bytes / glm_dtype_size(t->dtype);
            total_elems += elems;
            if (elems > max_elems) max_elems = elems;
            tensors[n++] = t;
        }
    }
    /* f32: every weight stays resident (CPU backend arena); bf16: one staging buffer reused. */
    size_t dst_size = glm_dtype_size(dst);
    size_t buf_elems = dst == GLM_F32 ? total_elems : max_elems;
    unsigned char *buf = malloc(buf_elems * dst_size);
    if (!buf) return fprintf(stderr, "out of memory\n"), 1;
    const char *prefault = getenv("BENCH_LOAD_PREFAULT");
    if (prefault && *prefault == '1') {
        memset(buf, 0, buf_elems * dst_size);
        t0 = now_s();
    }
    double bytes = 0;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        const glm_st_tensor *t = tensors[i];
        int64_t rows = t->shape[0], cols = t->ndim > 1 ? t->shape[1] : 1;
        if (glm_tensor_read_block(t, 0, rows, 0, cols, buf + at * dst_size, dst, &err) != GLM_OK)
            return fprintf(stderr, "%s\n", err.msg), 1;
        if (dst == GLM_F32) at += (size_t)(rows * cols);
        bytes += (double)t->bytes;
    }
    double s = now_s() - t0;
    printf("mb=%.0f s=%.3f mbps=%.0f rss_mb=%.0f\n", bytes / 1e6, s, bytes / 1e6 / s,
           peak_rss_mb());
    free(buf);
    glm_checkpoint_close(ck);
    return 0;
}

static int cmd_clean(const char *dir)
{
    char path[1024];
    int bad = 0;
    for (int s = 0; s < N_SHARDS; s++) {
        shard_path(path, sizeof(path), dir, s);
        bad |= unlink(path) != 0;
    }
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    bad |= unlink(path) != 0;
    return bad;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "gen"))
        return cmd_gen(argv[2], argc > 3 ? atol(argv[3]) : 2048);
    if (argc >= 3 && !strcmp(argv[1], "clean")) return cmd_clean(argv[2]);
    int cold = argc > 3 && !strcmp(argv[argc - 1], "cold");
    if (argc == 4 && !strcmp(argv[1], "read")) return cmd_read(argv[2], cold);
    if (argc == 5 && !strcmp(argv[1], "load") &&
        (!strcmp(argv[3], "f32") || !strcmp(argv[3], "bf16")))
        return cmd_load(argv[2], !strcmp(argv[3], "f32") ? GLM_F32 : GLM_BF16, cold);
    fprintf(stderr, "usage: bench_load gen DIR [MB] | read DIR cold|warm | "
                    "load DIR f32|bf16 cold|warm | clean DIR\n");
    return 2;
}
