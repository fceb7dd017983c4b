/* Image preprocessing for the vision tower: decode (JPEG, PNG, WebP) from memory, convert to RGB
 * with Pillow's convert("RGB") semantics, resize with Pillow's bicubic filter, normalize with the
 * CLIP mean/std into planar float32 [3, S, S].
 *
 * Everything is bit-compatible with the Python reference (Pillow 9.4 + torchvision): decoded RGB is
 * identical, resized RGB is Pillow's fixed-point ImagingResample, normalization is float32 in
 * torchvision's order. See tests/coordinator/pillow/ for the comparison. */
#ifndef GLM4V_IMAGE_H
#define GLM4V_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Bounds checked on the encoded header before any pixel buffer is allocated. */
typedef struct glm_image_limits {
    uint64_t max_file_bytes; /* encoded size */
    uint64_t max_pixels;     /* width * height */
    int max_side;            /* max(width, height) */
} glm_image_limits;

/* 32 MiB files, 40 Mpx, 16384 px per side. 40 Mpx covers every common camera output (7680x5120 is
 * 39.3 Mpx) while bounding a request's peak memory to ~120 MB of RGB plus at most ~320 MB of
 * libjpeg coefficient buffers for a progressive CMYK JPEG. The model sees 1120x1120 (1.25 Mpx), so
 * larger inputs only cost memory and time; Pillow's own bomb warning (89 Mpx) is too generous for
 * a server decoding untrusted uploads concurrently. */
glm_image_limits glm_image_limits_default(void);

/* Interleaved 8-bit RGB, rows packed (stride = 3 * width). Owned by the caller once filled. */
typedef struct glm_rgb_image {
    int width, height;
    uint8_t *rgb;
} glm_rgb_image;

void glm_rgb_image_free(glm_rgb_image *img); /* frees rgb and zeroes the struct; NULL is fine */

typedef enum glm_image_format {
    GLM_IMAGE_UNKNOWN = 0,
    GLM_IMAGE_JPEG,
    GLM_IMAGE_PNG,
    GLM_IMAGE_WEBP,
} glm_image_format;

/* Recognizes the format from its magic bytes. */
glm_image_format glm_image_sniff(const uint8_t *data, size_t len);

/* Decodes an encoded image held in memory to RGB (Pillow's Image.open(...).convert("RGB")).
 * limits may be NULL for the defaults. Returns GLM_ERR_UNSUPPORTED for unknown formats,
 * GLM_ERR_FORMAT for corrupt or truncated data, GLM_ERR_LIMIT for size limits and zero-size
 * images, GLM_ERR_NOMEM. On failure *out is zeroed. EXIF orientation is not applied (neither
 * does Pillow's open + convert). */
glm_status glm_image_decode_rgb(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                glm_rgb_image *out, glm_error *err);

/* The per-format decoders behind glm_image_decode_rgb (same contract, limits non-NULL; the file
 * size limit is checked by glm_image_decode_rgb only). */
glm_status glm_image_decode_jpeg(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                 glm_rgb_image *out, glm_error *err);
glm_status glm_image_decode_png(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                glm_rgb_image *out, glm_error *err);
glm_status glm_image_decode_webp(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                 glm_rgb_image *out, glm_error *err);

/* GLM_ERR_LIMIT unless 0 < width, height <= max_side and width * height <= max_pixels. */
glm_status glm_image_check_size(const char *format, uint64_t width, uint64_t height,
                                const glm_image_limits *limits, glm_error *err);

/* Pillow's Image.resize((out_w, out_h), Image.BICUBIC) on an RGB image, bit-exact: separable
 * fixed-point filter, horizontal pass first, each pass skipped when that side keeps its size. */
glm_status glm_image_resize_bicubic(const glm_rgb_image *in, int out_w, int out_h,
                                    glm_rgb_image *out, glm_error *err);

/* ToTensor + Normalize(CLIP mean, std) in float32: out[c][y][x] = (v / 255 - mean[c]) / std[c],
 * out is planar [3, height, width]. */
void glm_image_normalize_clip(const glm_rgb_image *img, float *out);

/* Decode + convert RGB + resize to image_size x image_size + normalize, into pixels[3][S][S]. */
glm_status glm_image_preprocess(const uint8_t *data, size_t len, int image_size,
                                const glm_image_limits *limits, float *pixels, glm_error *err);

#endif
