/* Timing helper for scripts/bench-image.sh: decode, resize and normalize one file several times
 * and print the median milliseconds of each stage and of glm_image_preprocess.
 * Usage: test_image_bench FILE [SIZE=1120] [RUNS=7] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "coordinator/image/image.h"
#include "tests/testutil.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [SIZE] [RUNS]\n", argv[0]);
        return 2;
    }
    const int size = argc > 2 ? atoi(argv[2]) : 1120;
    int runs = argc > 3 ? atoi(argv[3]) : 7;
    if (runs < 1 || runs > 100) runs = 7;
    size_t len = 0;
    uint8_t *data = test_read_file(argv[1], &len);
    if (!data) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    float *pixels = malloc(sizeof(float) * 3 * size * size);
    double t_decode[100] = {0}, t_resize[100] = {0}, t_norm[100] = {0}, t_total[100] = {0};
    glm_error err = {0};
    for (int r = 0; r < runs; r++) {
        glm_rgb_image img, out;
        double t0 = now_ms();
        if (glm_image_decode_rgb(data, len, NULL, &img, &err) != GLM_OK) {
            fprintf(stderr, "%s: %s\n", argv[1], err.msg);
            return 1;
        }
        double t1 = now_ms();
        if (glm_image_resize_bicubic(&img, size, size, &out, &err) != GLM_OK) return 1;
        double t2 = now_ms();
        glm_image_normalize_clip(&out, pixels);
        double t3 = now_ms();
        glm_rgb_image_free(&img);
        glm_rgb_image_free(&out);
        double t4 = now_ms();
        if (glm_image_preprocess(data, len, size, NULL, pixels, &err) != GLM_OK) return 1;
        double t5 = now_ms();
        t_decode[r] = t1 - t0, t_resize[r] = t2 - t1, t_norm[r] = t3 - t2, t_total[r] = t5 - t4;
    }
    printf("decode_ms=%.2f resize_ms=%.2f normalize_ms=%.2f preprocess_ms=%.2f\n",
           median(t_decode, runs), median(t_resize, runs), median(t_norm, runs),
           median(t_total, runs));
    free(pixels);
    free(data);
    return 0;
}
