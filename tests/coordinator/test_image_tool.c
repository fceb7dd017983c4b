/* Pipe helper for the Pillow comparison (tests/coordinator/pillow/compare_pillow.py).
 *
 * Reads requests from stdin until EOF; each request is
 *   u64 byte_count, the encoded image bytes, i32 n_sizes, i32 sizes[n_sizes]
 * and answers on stdout with
 *   i32 status (glm_status); on failure u32 message length + message; on success
 *   i32 width, i32 height, u8 decoded[height][width][3], then per size:
 *   u8 resized[S][S][3], f32 pixels[3][S][S] (normalize(resize(decode))).
 * For the first size the tool also checks that glm_image_preprocess gives the same floats; a
 * mismatch is reported as status -1. All integers are little-endian (host order). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/image/image.h"

static int read_exact(void *dst, size_t n)
{
    return fread(dst, 1, n, stdin) == n;
}

static void write_exact(const void *src, size_t n)
{
    if (fwrite(src, 1, n, stdout) != n) {
        fprintf(stderr, "test_image_tool: short write\n");
        exit(2);
    }
}

static void write_i32(int32_t v)
{
    write_exact(&v, sizeof(v));
}

static void write_failure(const glm_error *err)
{
    uint32_t n = (uint32_t)strlen(err->msg);
    write_i32(err->status);
    write_exact(&n, sizeof(n));
    write_exact(err->msg, n);
}

static int answer(const uint8_t *data, size_t len, const int32_t *sizes, int n_sizes)
{
    glm_image_limits limits = glm_image_limits_default();
    glm_error err = {0};
    glm_rgb_image decoded = {0};
    if (glm_image_decode_rgb(data, len, &limits, &decoded, &err) != GLM_OK) {
        write_failure(&err);
        return 1;
    }
    int ok = 1;
    for (int i = 0; i < n_sizes && ok; i++) {
        glm_rgb_image resized = {0};
        const size_t plane = (size_t)sizes[i] * sizes[i];
        float *expect = malloc(sizeof(float) * 3 * plane);
        float *pixels = malloc(sizeof(float) * 3 * plane);
        ok = expect && pixels &&
             glm_image_resize_bicubic(&decoded, sizes[i], sizes[i], &resized, &err) == GLM_OK;
        if (ok) glm_image_normalize_clip(&resized, pixels);
        if (ok && i == 0) {
            ok = glm_image_preprocess(data, len, sizes[i], &limits, expect, &err) == GLM_OK &&
                 memcmp(expect, pixels, sizeof(float) * 3 * plane) == 0;
            if (!ok) glm_fail(&err, (glm_status)-1, "preprocess != normalize(resize(decode))");
        }
        if (i == 0 && ok) {
            write_i32(GLM_OK);
            write_i32(decoded.width);
            write_i32(decoded.height);
            write_exact(decoded.rgb, (size_t)decoded.width * decoded.height * 3);
        }
        if (ok) {
            write_exact(resized.rgb, plane * 3);
            write_exact(pixels, sizeof(float) * 3 * plane);
        } else if (i == 0) {
            write_failure(&err);
        } else {
            fprintf(stderr, "test_image_tool: size %d failed after success: %s\n", sizes[i],
                    err.msg);
            exit(2);
        }
        glm_rgb_image_free(&resized);
        free(expect);
        free(pixels);
    }
    glm_rgb_image_free(&decoded);
    return ok;
}

int main(void)
{
    uint64_t len;
    while (read_exact(&len, sizeof(len))) {
        int32_t n_sizes, sizes[16];
        uint8_t *data = malloc(len ? len : 1);
        if (!data || !read_exact(data, len) || !read_exact(&n_sizes, sizeof(n_sizes)) ||
            n_sizes < 1 || n_sizes > 16 || !read_exact(sizes, sizeof(int32_t) * n_sizes)) {
            fprintf(stderr, "test_image_tool: malformed request\n");
            return 2;
        }
        answer(data, len, sizes, n_sizes);
        fflush(stdout);
        free(data);
    }
    return 0;
}
