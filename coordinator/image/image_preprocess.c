/* CLIP normalization and the one-call preprocessing pipeline (decode -> RGB -> resize ->
 * normalize), as the GLM-4V processor does with Pillow and torchvision:
 *   Resize((S, S), BICUBIC) -> ToTensor() -> Normalize(mean, std). */
#include <stdlib.h>

#include "coordinator/image/image.h"

static const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* torchvision computes in float32: ToTensor divides by 255, Normalize subtracts the mean and then
 * divides by the std (both as float32 tensors). Every step here is one correctly rounded float32
 * operation in the same order (no FMA contraction is possible: there is no multiply-add), so the
 * result is bit-identical. Only 256 inputs per channel exist, hence the table. */
static void build_normalize_table(float table[3][256])
{
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)v / 255.0f;
            table[c][v] = (x - CLIP_MEAN[c]) / CLIP_STD[c];
        }
}

void glm_image_normalize_clip(const glm_rgb_image *img, float *out)
{
    float table[3][256];
    build_normalize_table(table);
    const size_t plane = (size_t)img->width * img->height;
    float *r = out, *g = out + plane, *b = out + 2 * plane;
    const uint8_t *src = img->rgb;
    for (size_t i = 0; i < plane; i++) {
        r[i] = table[0][src[3 * i + 0]];
        g[i] = table[1][src[3 * i + 1]];
        b[i] = table[2][src[3 * i + 2]];
    }
}

glm_status glm_image_preprocess(const uint8_t *data, size_t len, int image_size,
                                const glm_image_limits *limits, float *pixels, glm_error *err)
{
    glm_rgb_image decoded = {0}, resized = {0};
    if (image_size <= 0 || !pixels)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "image: bad output size %d", image_size);
    glm_status st = glm_image_decode_rgb(data, len, limits, &decoded, err);
    if (st != GLM_OK) return st;
    st = glm_image_resize_bicubic(&decoded, image_size, image_size, &resized, err);
    glm_rgb_image_free(&decoded);
    if (st != GLM_OK) return st;
    glm_image_normalize_clip(&resized, pixels);
    glm_rgb_image_free(&resized);
    return GLM_OK;
}
