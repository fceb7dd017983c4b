/* libFuzzer harness for the safetensors reader: any byte string is parsed as a whole file from
 * memory (the same validation as a mapped file); whatever opens must be safe to walk and read.
 *
 * scripts/fuzz.sh builds it with libFuzzer (clang, GLM4V_FUZZ=ON, tests/fuzz/CMakeLists.txt).
 * With GLM4V_FUZZ_REPLAY_MAIN (tests/worker/loader_tests.cmake) adds a main that replays the golden files and deterministic
 * mutations of them (a ctest that runs in about a second). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/checkpoint.h"
#include "worker/safetensors.h"

/* Reads the first and last element of every float tensor, and a 2x2 corner block. */
static void walk(const glm_safetensors *st)
{
    for (size_t i = 0; i < glm_safetensors_count(st); i++) {
        const glm_st_tensor *t = glm_safetensors_at(st, i);
        if (glm_safetensors_find(st, t->name) != t) abort(); /* names are unique */
        int64_t rows = t->ndim == 0 ? 1 : t->shape[0], cols = 1;
        for (int d = 1; d < t->ndim; d++)
            cols *= t->shape[d];
        if (rows == 0 || cols == 0) continue;
        float out[4];
        int64_t nr = rows < 2 ? rows : 2, nc = cols < 2 ? cols : 2;
        glm_error err;
        glm_dtype dst = t->dtype == GLM_I32 || t->dtype == GLM_I64 ? t->dtype : GLM_F32;
        int64_t ints[4];
        void *buf = dst == GLM_F32 ? (void *)out : (void *)ints;
        if (glm_tensor_read_block(t, rows - nr, nr, cols - nc, nc, buf, dst, &err) != GLM_OK)
            abort();
        if (glm_tensor_read_block(t, rows, 1, 0, 1, buf, dst, &err) != GLM_ERR_SHAPE) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    glm_safetensors *st = NULL;
    glm_error err;
    if (glm_safetensors_open_memory(data, size, "fuzz.safetensors", &st, &err) == GLM_OK) {
        walk(st);
        glm_safetensors_close(st);
    } else if (st != NULL || !strstr(err.msg, "fuzz.safetensors")) {
        abort(); /* failures return no handle and name the file */
    }
    return 0;
}

#ifdef GLM4V_FUZZ_REPLAY_MAIN
#include <stdio.h>

#include "tests/testutil.h"

/* Mutations aimed at the header: most bytes that matter to the parser live there. */
static void mutate(uint8_t *buf, size_t *len, test_rng *rng)
{
    static const char *tokens[] = {"-1",
                                   "1e999",
                                   "\"",
                                   "{",
                                   "]",
                                   ",",
                                   "0",
                                   "18446744073709551615",
                                   "\"F64\"",
                                   "[]",
                                   "null",
                                   ":",
                                   "9007199254740993"};
    size_t header_end = *len < 8 ? *len : 8 + (size_t)(buf[0] | buf[1] << 8);
    if (header_end > *len) header_end = *len;
    int edits = test_rng_int(rng, 1, 4);
    for (int e = 0; e<edits && * len> 0; e++) {
        size_t at = (size_t)(test_rng_next(rng) % (header_end ? header_end : *len));
        switch (test_rng_int(rng, 0, 4)) {
        case 0:
            buf[at] ^= (uint8_t)(1u << test_rng_int(rng, 0, 7));
            break;
        case 1:
            buf[at] = (uint8_t)test_rng_next(rng);
            break;
        case 2:
            *len = at;
            break;
        case 3: {
            const char *tok = tokens[test_rng_int(rng, 0, sizeof(tokens) / sizeof(tokens[0]) - 1)];
            size_t n = strlen(tok);
            if (at + n <= *len) memcpy(buf + at, tok, n);
            break;
        }
        default:
            buf[test_rng_int(rng, 0, 7) % (*len < 8 ? *len : 8)] = (uint8_t)test_rng_next(rng);
        }
    }
}

static int replay(const char *path, int iterations, test_rng *rng)
{
    size_t len = 0;
    unsigned char *file = test_read_file(path, &len);
    if (!file) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    LLVMFuzzerTestOneInput(file, len);
    unsigned char *buf = malloc(len ? len : 1);
    size_t header_end = len >= 8 ? 8 + (size_t)(file[0] | file[1] << 8 | file[2] << 16) : len;
    for (size_t cut = 0; cut <= header_end + 16 && cut <= len; cut++) {
        memcpy(buf, file, cut); /* a fresh exact-size buffer catches reads past the end */
        unsigned char *exact = malloc(cut ? cut : 1);
        memcpy(exact, buf, cut);
        LLVMFuzzerTestOneInput(exact, cut);
        free(exact);
    }
    for (int i = 0; i < iterations; i++) {
        size_t n = len;
        memcpy(buf, file, len);
        mutate(buf, &n, rng);
        unsigned char *exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
    }
    free(buf);
    free(file);
    return 0;
}

int main(int argc, char **argv)
{
    test_rng rng;
    test_rng_seed(&rng, 20240611);
    int failures = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            failures += replay(argv[i], 0, &rng);
        return failures ? 1 : 0;
    }
    const char *files[] = {"glm4v-tiny-a/model.safetensors",
                           "glm4v-tiny-b/model-00002-of-00002.safetensors",
                           "glm4v-tiny-a/golden.safetensors"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", test_testdata_dir(), files[i]);
        failures += replay(path, 1500, &rng);
    }
    printf("fuzz_safetensors replay: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
#endif
