/* WebP decoding with libwebp, matching Pillow's WebPImagePlugin + convert("RGB").
 *
 * Pillow decodes stills through WebPAnimDecoder into non-premultiplied RGBA (or RGBX) and
 * convert("RGB") drops alpha; for a still image that is exactly libwebp's plain RGB decode, so we
 * use WebPDecodeRGBInto. Animated files are refused (GLM_ERR_UNSUPPORTED): decoding the first
 * frame needs libwebpdemux's canvas compositing, which this module does not link. */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>

#include "coordinator/image/image.h"

static glm_status webp_status_to_glm(VP8StatusCode code)
{
    switch (code) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return GLM_ERR_NOMEM;
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return GLM_ERR_UNSUPPORTED;
    default:
        return GLM_ERR_FORMAT;
    }
}

static const char *webp_status_text(VP8StatusCode code)
{
    switch (code) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
        return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
        return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
        return "suspended";
    case VP8_STATUS_USER_ABORT:
        return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return "truncated file";
    default:
        return "unknown error";
    }
}

glm_status glm_image_decode_webp(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                 glm_rgb_image *out, glm_error *err)
{
    WebPDecoderConfig config;
    memset(out, 0, sizeof(*out));
    if (!WebPInitDecoderConfig(&config))
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "webp: libwebp version mismatch");
    VP8StatusCode code = WebPGetFeatures(data, len, &config.input);
    if (code != VP8_STATUS_OK)
        return glm_fail(err, webp_status_to_glm(code), "webp: %s", webp_status_text(code));
    if (config.input.has_animation)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "webp: animated WebP is not supported");
    const int width = config.input.width, height = config.input.height;
    glm_status st = glm_image_check_size("webp", (uint64_t)(width > 0 ? width : 0),
                                         (uint64_t)(height > 0 ? height : 0), limits, err);
    if (st != GLM_OK) return st;

    const size_t bytes = (size_t)width * height * 3;
    uint8_t *rgb = malloc(bytes);
    if (!rgb)
        return glm_fail(err, GLM_ERR_NOMEM, "webp: cannot allocate %dx%d RGB image", width, height);
    config.output.colorspace = MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = rgb;
    config.output.u.RGBA.stride = width * 3;
    config.output.u.RGBA.size = bytes;
    code = WebPDecode(data, len, &config);
    WebPFreeDecBuffer(&config.output); /* external memory: releases nothing of ours */
    if (code != VP8_STATUS_OK) {
        free(rgb);
        return glm_fail(err, webp_status_to_glm(code), "webp: %s", webp_status_text(code));
    }
    out->width = width;
    out->height = height;
    out->rgb = rgb;
    return GLM_OK;
}
