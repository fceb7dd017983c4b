/* libFuzzer harness for the image pipeline: arbitrary bytes -> glm_image_preprocess at 56x56
 * (decode with every format's error paths, RGB conversion, resize, normalize).
 *
 * Build (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_image.c \
 *     coordinator/image/image_decode.c coordinator/image/image_decode_jpeg.c coordinator/image/image_decode_png.c \
 *     coordinator/image/image_decode_webp.c coordinator/image/image_resize.c coordinator/image/image_preprocess.c \
 *     common/status.c -ljpeg -lpng -lwebp -lm -o fuzz_image
 * Limits are tightened so that a run explores formats instead of allocating large images. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "coordinator/image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float pixels[3 * 56 * 56];
    glm_image_limits limits = glm_image_limits_default();
    limits.max_pixels = 4u << 20;
    limits.max_side = 8192;
    glm_error err;
    glm_image_preprocess(data, size, 56, &limits, pixels, &err);
    return 0;
}
