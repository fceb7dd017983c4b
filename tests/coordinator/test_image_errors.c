/* Error paths of the image decoders: truncation at many cut points, garbage, zero-size and huge
 * headers, limits, unknown formats, empty input, random corruption. Valid inputs are encoded
 * here with libjpeg / libpng / libwebp, so no binary fixtures are committed. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>
#include <zlib.h>

#include "coordinator/image/image.h"
#include "tests/testutil.h"

typedef struct buffer {
    uint8_t *data;
    size_t len;
} buffer;

/* ---- encoders for the fixtures ----------------------------------------------------------------
 */

static void fill_pattern(uint8_t *px, int w, int h, int comps)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comps; c++)
                px[((size_t)y * w + x) * comps + c] = (uint8_t)(x * 7 + y * 3 + c * 60);
}

static buffer encode_jpeg(int w, int h, int comps, int progressive)
{
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    unsigned char *mem = NULL;
    unsigned long mem_len = 0;
    uint8_t *px = malloc((size_t)w * h * comps);
    fill_pattern(px, w, h, comps);
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &mem, &mem_len);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = comps;
    cinfo.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 85, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = px + (size_t)cinfo.next_scanline * w * comps;
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    free(px);
    buffer b = {malloc(mem_len), mem_len};
    memcpy(b.data, mem, mem_len);
    free(mem);
    return b;
}

static void png_append(png_structp png, png_bytep data, size_t n)
{
    buffer *b = png_get_io_ptr(png);
    b->data = realloc(b->data, b->len + n);
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void png_no_flush(png_structp png)
{
    (void)png;
}

static buffer encode_png(int w, int h, int color_type, int interlace)
{
    buffer b = {NULL, 0};
    const int comps = color_type == PNG_COLOR_TYPE_RGB ? 3 : 1;
    uint8_t *px = malloc((size_t)w * h * comps);
    fill_pattern(px, w, h, comps);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) abort();
    png_set_write_fn(png, &b, png_append, png_no_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color_type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++)
            png_write_row(png, px + (size_t)y * w * comps);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(px);
    return b;
}

static buffer encode_webp(int w, int h, int lossless)
{
    uint8_t *px = malloc((size_t)w * h * 3), *out = NULL;
    fill_pattern(px, w, h, 3);
    size_t n = lossless ? WebPEncodeLosslessRGB(px, w, h, w * 3, &out)
                        : WebPEncodeRGB(px, w, h, w * 3, 80, &out);
    free(px);
    buffer b = {malloc(n), n};
    memcpy(b.data, out, n);
    WebPFree(out);
    return b;
}

static buffer copy_buffer(const buffer *src)
{
    buffer b = {malloc(src->len), src->len};
    memcpy(b.data, src->data, src->len);
    return b;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* Rewrites the IHDR size of a PNG, with a valid CRC so libpng would accept the chunk itself. */
static void png_set_size(buffer *b, uint32_t w, uint32_t h)
{
    put_be32(b->data + 16, w);
    put_be32(b->data + 20, h);
    put_be32(b->data + 29, (uint32_t)crc32(0, b->data + 12, 17));
}

/* Rewrites the frame size in a JPEG's SOF0/SOF2 segment. */
static void jpeg_set_size(buffer *b, uint16_t w, uint16_t h)
{
    for (size_t i = 2; i + 9 < b->len; i++) {
        if (b->data[i] == 0xFF && (b->data[i + 1] == 0xC0 || b->data[i + 1] == 0xC2)) {
            b->data[i + 5] = (uint8_t)(h >> 8), b->data[i + 6] = (uint8_t)h;
            b->data[i + 7] = (uint8_t)(w >> 8), b->data[i + 8] = (uint8_t)w;
            return;
        }
    }
    CHECK_MSG(0, "no SOF marker");
}

/* ---- checks -----------------------------------------------------------------------------------
 */

/* Decodes and checks the status; on failure the output must be empty and the message set. */
static void expect_status(const char *what, const uint8_t *data, size_t len,
                          const glm_image_limits *limits, glm_status want)
{
    glm_rgb_image img = {7, 7, (uint8_t *)&img};
    glm_error err = {0};
    glm_status st = glm_image_decode_rgb(data, len, limits, &img, &err);
    CHECK_MSG(st == want, "%s: got %s (%s), want %s", what, glm_status_name(st), err.msg,
              glm_status_name(want));
    if (st != GLM_OK) {
        CHECK_MSG(img.rgb == NULL && img.width == 0 && img.height == 0, "%s: output not reset",
                  what);
        CHECK_MSG(err.msg[0] != '\0' && err.status == st, "%s: no error message", what);
    } else {
        CHECK_MSG(img.rgb && img.width > 0 && img.height > 0, "%s: empty success", what);
    }
    glm_rgb_image_free(&img);
}

static void test_valid(const buffer *b, const char *what, int w, int h)
{
    glm_rgb_image img;
    glm_error err = {0};
    glm_status st = glm_image_decode_rgb(b->data, b->len, NULL, &img, &err);
    CHECK_MSG(st == GLM_OK, "%s: %s", what, err.msg);
    CHECK_MSG(img.width == w && img.height == h, "%s: %dx%d", what, img.width, img.height);
    glm_rgb_image_free(&img);
}

/* Every cut of the file (a spread of points, including just the last byte or two) must fail
 * cleanly with GLM_ERR_FORMAT, except cuts a format tolerates (`ok_from`: PNG without IEND). */
static void test_truncations(const char *what, const buffer *b, size_t ok_from)
{
    const size_t cuts[] = {1, 2, 3, 4, 7, 8, 11, 12, 16, 20, 24, 30, 33, 40, 64, 100, 200};
    char label[128];
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        if (cuts[i] >= b->len) continue;
        snprintf(label, sizeof(label), "%s cut to %zu of %zu", what, cuts[i], b->len);
        expect_status(label, b->data, cuts[i], NULL, GLM_ERR_FORMAT);
    }
    for (int k = 1; k < 8; k++) {
        size_t cut = b->len * k / 8;
        snprintf(label, sizeof(label), "%s cut to %zu of %zu", what, cut, b->len);
        expect_status(label, b->data, cut, NULL, cut >= ok_from ? GLM_OK : GLM_ERR_FORMAT);
    }
    for (size_t drop = 1; drop <= 3; drop++) {
        size_t cut = b->len - drop;
        snprintf(label, sizeof(label), "%s without its last %zu bytes", what, drop);
        expect_status(label, b->data, cut, NULL, cut >= ok_from ? GLM_OK : GLM_ERR_FORMAT);
    }
}

static void test_garbage(void)
{
    test_rng rng;
    test_rng_seed(&rng, 42);
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)test_rng_next(&rng);
    junk[0] = 0x00; /* make sure it is no known magic */
    expect_status("random bytes", junk, sizeof(junk), NULL, GLM_ERR_UNSUPPORTED);
    expect_status("GIF", (const uint8_t *)"GIF89a\x01\x00\x01\x00\x00\x00\x00", 13, NULL,
                  GLM_ERR_UNSUPPORTED);
    expect_status("BMP", (const uint8_t *)"BM\x3a\x00\x00\x00\x00\x00\x00\x00", 10, NULL,
                  GLM_ERR_UNSUPPORTED);
    expect_status("text", (const uint8_t *)"hello", 5, NULL, GLM_ERR_UNSUPPORTED);
    expect_status("one byte", junk, 1, NULL, GLM_ERR_UNSUPPORTED);
    expect_status("empty buffer", junk, 0, NULL, GLM_ERR_FORMAT);
    expect_status("NULL buffer", NULL, 0, NULL, GLM_ERR_FORMAT);

    /* Right magic, garbage body: corrupt, not unsupported. */
    memcpy(junk, "\xFF\xD8\xFF", 3);
    expect_status("JPEG magic + garbage", junk, sizeof(junk), NULL, GLM_ERR_FORMAT);
    memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
    expect_status("PNG magic + garbage", junk, sizeof(junk), NULL, GLM_ERR_FORMAT);
    memcpy(junk, "RIFF\x00\x10\x00\x00WEBP", 12);
    expect_status("WebP magic + garbage", junk, sizeof(junk), NULL, GLM_ERR_FORMAT);
}

static void test_sizes(const buffer *jpeg, const buffer *png, const buffer *webp_lossless)
{
    buffer b = copy_buffer(png);
    png_set_size(&b, 0, 16);
    expect_status("png width 0", b.data, b.len, NULL, GLM_ERR_LIMIT);
    png_set_size(&b, 16, 0);
    expect_status("png height 0", b.data, b.len, NULL, GLM_ERR_LIMIT);
    png_set_size(&b, 100000, 100000);
    expect_status("png 100000x100000", b.data, b.len, NULL, GLM_ERR_LIMIT);
    png_set_size(&b, 0x7fffffff, 1);
    expect_status("png 2^31-1 wide", b.data, b.len, NULL, GLM_ERR_LIMIT);
    png_set_size(&b, 10000, 10000); /* sides fine, 100 Mpx too many */
    expect_status("png 10000x10000", b.data, b.len, NULL, GLM_ERR_LIMIT);
    free(b.data);

    b = copy_buffer(jpeg);
    jpeg_set_size(&b, 65535, 65535);
    expect_status("jpeg 65535x65535", b.data, b.len, NULL, GLM_ERR_LIMIT);
    jpeg_set_size(&b, 64, 0);
    expect_status("jpeg height 0", b.data, b.len, NULL, GLM_ERR_LIMIT);
    jpeg_set_size(&b, 0, 64);
    expect_status("jpeg width 0", b.data, b.len, NULL, GLM_ERR_LIMIT);
    free(b.data);

    /* VP8L header at byte 21: 14 bits width-1, 14 bits height-1: claim 16384x16384. */
    b = copy_buffer(webp_lossless);
    CHECK(b.len > 25 && memcmp(b.data + 12, "VP8L", 4) == 0 && b.data[20] == 0x2f);
    b.data[21] = 0xFF, b.data[22] = 0xFF, b.data[23] = 0xFF;
    b.data[24] = (uint8_t)((b.data[24] & 0xF0) | 0x0F);
    expect_status("webp 16384x16384", b.data, b.len, NULL, GLM_ERR_LIMIT);
    free(b.data);
}

static void test_limits(const buffer *jpeg, const buffer *png, const buffer *webp)
{
    const buffer *all[3] = {jpeg, png, webp};
    const char *names[3] = {"jpeg", "png", "webp"};
    char label[128];
    for (int i = 0; i < 3; i++) {
        glm_image_limits limits = glm_image_limits_default();
        limits.max_file_bytes = all[i]->len - 1;
        snprintf(label, sizeof(label), "%s over the file size limit", names[i]);
        expect_status(label, all[i]->data, all[i]->len, &limits, GLM_ERR_LIMIT);
        limits = glm_image_limits_default();
        limits.max_pixels = 64 * 48 - 1;
        snprintf(label, sizeof(label), "%s over the pixel limit", names[i]);
        expect_status(label, all[i]->data, all[i]->len, &limits, GLM_ERR_LIMIT);
        limits = glm_image_limits_default();
        limits.max_side = 63;
        snprintf(label, sizeof(label), "%s over the side limit", names[i]);
        expect_status(label, all[i]->data, all[i]->len, &limits, GLM_ERR_LIMIT);
        limits.max_side = 64; /* exactly at the limits passes */
        limits.max_pixels = 64 * 48;
        limits.max_file_bytes = all[i]->len;
        snprintf(label, sizeof(label), "%s exactly at the limits", names[i]);
        expect_status(label, all[i]->data, all[i]->len, &limits, GLM_OK);
    }
    glm_image_limits def = glm_image_limits_default();
    CHECK(def.max_file_bytes == 32ull << 20 && def.max_pixels == 40000000ull &&
          def.max_side == 16384);
}

static void test_animated_webp(void)
{
    /* VP8X with the animation flag, an ANIM chunk and no frames. */
    uint8_t b[12 + 18 + 14] = "RIFF\0\0\0\0WEBPVP8X";
    put_be32(b + 4, 0);
    b[4] = sizeof(b) - 8;
    b[16] = 10;
    b[20] = 0x02;           /* animation */
    b[24] = 63, b[27] = 47; /* canvas 64x48 (minus one, 24-bit LE) */
    memcpy(b + 30, "ANIM", 4);
    b[34] = 6;
    expect_status("animated webp", b, sizeof(b), NULL, GLM_ERR_UNSUPPORTED);
}

/* Random byte flips and splices: anything but a crash or leak is acceptable, and a success must
 * have a sane size. Run under valgrind / ASan to make this meaningful. */
static void test_corruption(const buffer *const *inputs, int n_inputs)
{
    test_rng rng;
    test_rng_seed(&rng, 7);
    for (int round = 0; round < 300; round++) {
        const buffer *src = inputs[round % n_inputs];
        buffer b = copy_buffer(src);
        int flips = test_rng_int(&rng, 1, 8);
        for (int f = 0; f < flips; f++)
            b.data[test_rng_int(&rng, 0, (int)b.len - 1)] ^= (uint8_t)test_rng_int(&rng, 1, 255);
        glm_rgb_image img;
        glm_error err = {0};
        glm_status st = glm_image_decode_rgb(b.data, b.len, NULL, &img, &err);
        CHECK_MSG(st == GLM_OK || st == GLM_ERR_FORMAT || st == GLM_ERR_LIMIT ||
                      st == GLM_ERR_UNSUPPORTED,
                  "corruption round %d: %s", round, glm_status_name(st));
        if (st == GLM_OK) CHECK(img.width > 0 && img.height > 0 && img.width <= 16384);
        glm_rgb_image_free(&img);
        free(b.data);
    }
}

static void test_preprocess_errors(const buffer *jpeg)
{
    float *pixels = malloc(sizeof(float) * 3 * 56 * 56);
    glm_error err = {0};
    CHECK(glm_image_preprocess(jpeg->data, jpeg->len, 0, NULL, pixels, &err) ==
          GLM_ERR_INVALID_ARG);
    CHECK(glm_image_preprocess(jpeg->data, 10, 56, NULL, pixels, &err) == GLM_ERR_FORMAT);
    CHECK(strstr(err.msg, "jpeg") != NULL);
    CHECK(glm_image_preprocess((const uint8_t *)"nope", 4, 56, NULL, pixels, &err) ==
          GLM_ERR_UNSUPPORTED);
    CHECK(glm_image_preprocess(jpeg->data, jpeg->len, 56, NULL, pixels, &err) == GLM_OK);
    glm_rgb_image tiny = {1, 1, (uint8_t[3]){1, 2, 3}}, out;
    CHECK(glm_image_resize_bicubic(&tiny, 0, 5, &out, &err) == GLM_ERR_INVALID_ARG);
    free(pixels);
}

int main(void)
{
    buffer jpeg = encode_jpeg(64, 48, 3, 0), jpeg_prog = encode_jpeg(64, 48, 3, 1);
    buffer jpeg_gray = encode_jpeg(64, 48, 1, 0), jpeg_cmyk = encode_jpeg(64, 48, 4, 0);
    buffer png = encode_png(64, 48, PNG_COLOR_TYPE_RGB, 0);
    buffer png_il = encode_png(64, 48, PNG_COLOR_TYPE_GRAY, 1);
    buffer webp = encode_webp(64, 48, 0), webp_ll = encode_webp(64, 48, 1);

    test_valid(&jpeg, "jpeg", 64, 48);
    test_valid(&jpeg_prog, "progressive jpeg", 64, 48);
    test_valid(&jpeg_gray, "grey jpeg", 64, 48);
    test_valid(&jpeg_cmyk, "cmyk jpeg", 64, 48);
    test_valid(&png, "png", 64, 48);
    test_valid(&png_il, "interlaced png", 64, 48);
    test_valid(&webp, "webp", 64, 48);
    test_valid(&webp_ll, "lossless webp", 64, 48);

    /* A PNG stays decodable once all IDAT data is there: IEND (12 bytes) is optional. */
    test_truncations("jpeg", &jpeg, jpeg.len + 1);
    test_truncations("progressive jpeg", &jpeg_prog, jpeg_prog.len + 1);
    test_truncations("cmyk jpeg", &jpeg_cmyk, jpeg_cmyk.len + 1);
    test_truncations("png", &png, png.len - 12);
    test_truncations("interlaced png", &png_il, png_il.len - 12);
    test_truncations("webp", &webp, webp.len + 1);
    test_truncations("lossless webp", &webp_ll, webp_ll.len + 1);
    test_garbage();
    test_sizes(&jpeg, &png, &webp_ll);
    test_limits(&jpeg, &png, &webp);
    test_animated_webp();
    const buffer *inputs[] = {&jpeg, &jpeg_prog, &jpeg_cmyk, &png, &png_il, &webp, &webp_ll};
    test_corruption(inputs, 7);
    test_preprocess_errors(&jpeg);

    free(jpeg.data), free(jpeg_prog.data), free(jpeg_gray.data), free(jpeg_cmyk.data);
    free(png.data), free(png_il.data), free(webp.data), free(webp_ll.data);
    return test_finish("test_image_errors");
}
