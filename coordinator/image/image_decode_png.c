/* PNG decoding with libpng, matching Pillow's PngImagePlugin + convert("RGB").
 *
 * libpng only inflates, unfilters and de-interlaces (plus png_set_packing: one sample per byte
 * for bit depths below 8, values unscaled); the conversion to RGB is ours, because Pillow's
 * differs from libpng's transforms in a few places (checked by experiment with Pillow 9.4):
 *   grey 1/2/4/8 bit  -> R=G=B, low depths scaled by 255/85/17 (Pillow's "1", "L;2", "L;4")
 *   grey 16 bit       -> Pillow opens mode "I" and convert("RGB") clips: min(v, 255), not v >> 8
 *   RGB/RGBA/LA 16 bit-> high byte of each sample ("RGB;16B", ...)
 *   palette           -> lookup; indices past the PLTE entries map to the grey ramp (i, i, i),
 *                        Pillow's palette initialisation
 *   alpha, tRNS       -> dropped, no compositing
 * Gamma, sBIT and colour profiles are ignored, as Pillow ignores them.
 *
 * Errors: png_error lands in on_png_error, which longjmps back (never abort/exit). The IHDR is
 * checked against the limits before libpng allocates rows. Unlike Pillow, libpng rejects a bad
 * CRC on a critical chunk and a palette image without PLTE; both are corrupt files. A file cut
 * after the last IDAT byte it needs decodes (Pillow also does not require IEND). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "coordinator/image/image.h"

typedef struct png_reader {
    const uint8_t *data;
    size_t len, pos;
    jmp_buf jump;
    glm_status status; /* what a png_error means: GLM_ERR_FORMAT unless set before calling */
    char msg[256];
} png_reader;

static void on_png_error(png_structp png, png_const_charp msg)
{
    png_reader *reader = png_get_error_ptr(png);
    snprintf(reader->msg, sizeof(reader->msg), "%s", msg);
    longjmp(reader->jump, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* ancillary-chunk problems: Pillow ignores them too */
    (void)msg;
}

static void read_from_memory(png_structp png, png_bytep dst, size_t n)
{
    png_reader *reader = png_get_io_ptr(png);
    if (n > reader->len - reader->pos) png_error(png, "truncated file");
    memcpy(dst, reader->data + reader->pos, n);
    reader->pos += n;
}

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Palette expanded to 256 entries the way Pillow does: missing entries are the grey ramp. */
static void build_palette(png_structp png, png_infop info, uint8_t table[256][3])
{
    png_colorp plte = NULL;
    int n_plte = 0;
    for (int i = 0; i < 256; i++)
        table[i][0] = table[i][1] = table[i][2] = (uint8_t)i;
    if (png_get_PLTE(png, info, &plte, &n_plte) != PNG_INFO_PLTE) return;
    for (int i = 0; i < n_plte && i < 256; i++) {
        table[i][0] = plte[i].red;
        table[i][1] = plte[i].green;
        table[i][2] = plte[i].blue;
    }
}

typedef struct png_layout {
    int color_type, bit_depth;
    uint8_t palette[256][3];
} png_layout;

/* One decoded row (libpng's layout after png_set_packing) to RGB, per the table above. */
static void png_row_to_rgb(const png_layout *layout, const uint8_t *src, int width, uint8_t *dst)
{
    const int depth = layout->bit_depth;
    switch (layout->color_type) {
    case PNG_COLOR_TYPE_GRAY: {
        const int scale = depth == 1 ? 255 : depth == 2 ? 85 : depth == 4 ? 17 : 1;
        for (int x = 0; x < width; x++) {
            int v = depth == 16 ? (src[2 * x] ? 255 : src[2 * x + 1]) : src[x] * scale;
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = (uint8_t)v;
        }
        break;
    }
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        const int step = depth == 16 ? 4 : 2;
        for (int x = 0; x < width; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[step * x];
        break;
    }
    case PNG_COLOR_TYPE_PALETTE:
        for (int x = 0; x < width; x++)
            memcpy(dst + 3 * x, layout->palette[src[x]], 3);
        break;
    case PNG_COLOR_TYPE_RGB:
        if (depth == 8) {
            memcpy(dst, src, (size_t)width * 3);
            break;
        }
        for (int i = 0; i < 3 * width; i++)
            dst[i] = src[2 * i];
        break;
    case PNG_COLOR_TYPE_RGB_ALPHA: {
        const int bytes = depth == 16 ? 2 : 1;
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++)
                dst[3 * x + c] = src[bytes * (4 * x + c)];
        break;
    }
    }
}

/* Rejects zero-size or oversized images from the raw IHDR bytes, before libpng (whose own checks
 * would report a zero width as a format error) and before any allocation. */
static glm_status check_ihdr(const uint8_t *data, size_t len, const glm_image_limits *limits,
                             glm_error *err)
{
    if (len < 24 || memcmp(data + 12, "IHDR", 4) != 0) return GLM_OK; /* libpng will complain */
    return glm_image_check_size("png", read_be32(data + 16), read_be32(data + 20), limits, err);
}

glm_status glm_image_decode_png(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                glm_rgb_image *out, glm_error *err)
{
    png_reader reader = {.data = data, .len = len, .pos = 0, .status = GLM_ERR_FORMAT};
    png_structp png = NULL;
    png_infop info = NULL;
    /* volatile: assigned after setjmp and freed after the longjmp */
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile raw = NULL;
    png_layout *volatile layout = NULL;
    png_bytep *volatile rows = NULL;
    glm_status st;

    memset(out, 0, sizeof(*out));
    if ((st = check_ihdr(data, len, limits, err)) != GLM_OK) return st;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, on_png_error, on_png_warning);
    if (png) info = png_create_info_struct(png);
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return glm_fail(err, GLM_ERR_NOMEM, "png: cannot create decoder");
    }
    if (setjmp(reader.jump)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rgb);
        free(raw);
        free(layout);
        free(rows);
        return glm_fail(err, reader.status, "png: %s", reader.msg);
    }
    png_set_read_fn(png, &reader, read_from_memory);
    /* Our limits decide size errors (GLM_ERR_LIMIT); lift libpng's 1e6 default above them. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_read_info(png, info);

    png_uint_32 width32, height32;
    int bit_depth, color_type, interlace;
    png_get_IHDR(png, info, &width32, &height32, &bit_depth, &color_type, &interlace, NULL, NULL);
    if ((st = glm_image_check_size("png", width32, height32, limits, err)) != GLM_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return st;
    }
    const int width = (int)width32, height = (int)height32;
    if (bit_depth < 8) png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);

    layout = malloc(sizeof(*layout));
    rgb = malloc((size_t)width * height * 3);
    /* Interlaced rows are completed over 7 passes, so they need the whole raw image. */
    raw = malloc(passes > 1 ? rowbytes * height : rowbytes);
    if (passes > 1) rows = malloc(sizeof(png_bytep) * height);
    if (!layout || !rgb || !raw || (passes > 1 && !rows)) {
        reader.status = GLM_ERR_NOMEM;
        png_error(png, "out of memory");
    }
    layout->color_type = color_type;
    layout->bit_depth = bit_depth;
    build_palette(png, info, layout->palette);

    if (passes > 1) {
        for (int y = 0; y < height; y++)
            rows[y] = raw + rowbytes * y;
        for (int pass = 0; pass < passes; pass++)
            for (int y = 0; y < height; y++)
                png_read_row(png, rows[y], NULL);
        for (int y = 0; y < height; y++)
            png_row_to_rgb(layout, raw + rowbytes * y, width, rgb + (size_t)y * 3 * width);
    } else {
        for (int y = 0; y < height; y++) {
            png_read_row(png, raw, NULL);
            png_row_to_rgb(layout, raw, width, rgb + (size_t)y * 3 * width);
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(raw);
    free(layout);
    free(rows);
    out->width = width;
    out->height = height;
    out->rgb = rgb;
    return GLM_OK;
}
