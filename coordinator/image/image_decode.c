/* Image decoding entry point: limits, magic-byte sniffing, dispatch to the per-format decoders. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/image/image.h"

static const uint8_t JPEG_MAGIC[3] = {0xFF, 0xD8, 0xFF};
static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

glm_image_limits glm_image_limits_default(void)
{
    glm_image_limits limits = {
        .max_file_bytes = 32ull << 20,
        .max_pixels = 40000000ull,
        .max_side = 16384,
    };
    return limits;
}

void glm_rgb_image_free(glm_rgb_image *img)
{
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

glm_image_format glm_image_sniff(const uint8_t *data, size_t len)
{
    if (len >= sizeof(JPEG_MAGIC) && memcmp(data, JPEG_MAGIC, sizeof(JPEG_MAGIC)) == 0)
        return GLM_IMAGE_JPEG;
    if (len >= sizeof(PNG_MAGIC) && memcmp(data, PNG_MAGIC, sizeof(PNG_MAGIC)) == 0)
        return GLM_IMAGE_PNG;
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return GLM_IMAGE_WEBP;
    return GLM_IMAGE_UNKNOWN;
}

/* A buffer shorter than a signature that starts like one is a truncated file of that format, not
 * an unknown format: report it as corrupt so callers see "truncated", not "unsupported". */
static int is_signature_prefix(const uint8_t *data, size_t len)
{
    static const uint8_t riff[4] = {'R', 'I', 'F', 'F'};
    if (len < sizeof(JPEG_MAGIC) && memcmp(data, JPEG_MAGIC, len) == 0) return 1;
    if (len < sizeof(PNG_MAGIC) && memcmp(data, PNG_MAGIC, len) == 0) return 1;
    if (len < 12 && memcmp(data, riff, len < 4 ? len : 4) == 0) return 1;
    return 0;
}

glm_status glm_image_check_size(const char *format, uint64_t width, uint64_t height,
                                const glm_image_limits *limits, glm_error *err)
{
    if (width == 0 || height == 0)
        return glm_fail(err, GLM_ERR_LIMIT, "%s: zero-size image (%llux%llu)", format,
                        (unsigned long long)width, (unsigned long long)height);
    if (width > (uint64_t)limits->max_side || height > (uint64_t)limits->max_side)
        return glm_fail(err, GLM_ERR_LIMIT, "%s: image is %llux%llu, a side exceeds the limit %d",
                        format, (unsigned long long)width, (unsigned long long)height,
                        limits->max_side);
    if (width * height > limits->max_pixels)
        return glm_fail(
            err, GLM_ERR_LIMIT, "%s: image is %llux%llu = %llu pixels, over the limit of %llu",
            format, (unsigned long long)width, (unsigned long long)height,
            (unsigned long long)(width * height), (unsigned long long)limits->max_pixels);
    return GLM_OK;
}

glm_status glm_image_decode_rgb(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                glm_rgb_image *out, glm_error *err)
{
    glm_image_limits defaults = glm_image_limits_default();
    if (!out) return glm_fail(err, GLM_ERR_INVALID_ARG, "image: no output image");
    memset(out, 0, sizeof(*out));
    if (!limits) limits = &defaults;
    if (!data || len == 0) return glm_fail(err, GLM_ERR_FORMAT, "image: empty image data");
    if ((uint64_t)len > limits->max_file_bytes)
        return glm_fail(err, GLM_ERR_LIMIT, "image: file is %zu bytes, over the limit of %llu", len,
                        (unsigned long long)limits->max_file_bytes);

    switch (glm_image_sniff(data, len)) {
    case GLM_IMAGE_JPEG:
        return glm_image_decode_jpeg(data, len, limits, out, err);
    case GLM_IMAGE_PNG:
        return glm_image_decode_png(data, len, limits, out, err);
    case GLM_IMAGE_WEBP:
        return glm_image_decode_webp(data, len, limits, out, err);
    case GLM_IMAGE_UNKNOWN:
        break;
    }
    if (is_signature_prefix(data, len))
        return glm_fail(err, GLM_ERR_FORMAT, "image: truncated file (%zu bytes)", len);
    return glm_fail(err, GLM_ERR_UNSUPPORTED,
                    "image: unknown format (first bytes %02x %02x %02x %02x); "
                    "supported: JPEG, PNG, WebP",
                    data[0], len > 1 ? data[1] : 0, len > 2 ? data[2] : 0, len > 3 ? data[3] : 0);
}
