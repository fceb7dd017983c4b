/* JPEG decoding with libjpeg(-turbo), matching Pillow's JpegImagePlugin + convert("RGB").
 *
 * Pixel identity with Pillow: Pillow drives the same libjpeg-turbo with its defaults (JDCT_ISLOW,
 * fancy upsampling on, libjpeg's own colour-space guess from JFIF/Adobe markers), so we set the
 * same and the samples come out identical. Mode by component count, as Pillow: 1 -> L (R=G=B),
 * 3 -> RGB (libjpeg converts YCbCr), 4 -> CMYK read as Adobe-inverted "CMYK;I" (libjpeg converts
 * YCCK to CMYK), then Pillow's cmyk2rgb. EXIF orientation is ignored, as in Image.open + convert.
 *
 * Errors: libjpeg reports fatal errors through error_exit, which we turn into a longjmp back to
 * the decoder (libjpeg's default calls exit()). A truncated file makes libjpeg's memory source
 * warn (JWRN_JPEG_EOF) and pad the rest with grey; Pillow raises "image file is truncated" in that
 * case, even when only the EOI marker is missing, so we treat that warning as GLM_ERR_FORMAT too.
 * Other warnings (corrupt entropy data, extraneous bytes) are ignored, as Pillow ignores them. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "coordinator/image/image.h"

/* Progressive files with thousands of tiny scans are a CPU bomb; real encoders emit ~10. */
#define JPEG_MAX_SCANS 500

typedef struct jpeg_guard {
    struct jpeg_error_mgr mgr; /* first, so cinfo->err casts back to the guard */
    jmp_buf jump;
    glm_status status;
    char msg[JMSG_LENGTH_MAX];
} jpeg_guard;

static void fail_with_message(j_common_ptr cinfo, glm_status status)
{
    jpeg_guard *guard = (jpeg_guard *)cinfo->err;
    guard->status = status;
    cinfo->err->format_message(cinfo, guard->msg);
    longjmp(guard->jump, 1);
}

static void on_error_exit(j_common_ptr cinfo)
{
    switch (cinfo->err->msg_code) {
    case JERR_EMPTY_IMAGE:   /* height 0 in SOF (DNL marker), which Pillow rejects as well */
    case JERR_IMAGE_TOO_BIG: /* a side over libjpeg's 65500 */
        fail_with_message(cinfo, GLM_ERR_LIMIT);
        break;
    case JERR_BAD_PRECISION: /* 12-bit samples */
    case JERR_OUT_OF_MEMORY:
        fail_with_message(cinfo, cinfo->err->msg_code == JERR_OUT_OF_MEMORY ? GLM_ERR_NOMEM
                                                                            : GLM_ERR_UNSUPPORTED);
        break;
    default:
        fail_with_message(cinfo, GLM_ERR_FORMAT);
    }
}

static void on_emit_message(j_common_ptr cinfo, int msg_level)
{
    if (msg_level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        fail_with_message(cinfo, GLM_ERR_FORMAT);
    if (msg_level < 0) cinfo->err->num_warnings++;
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print from a library */
}

static void on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
    if (dinfo->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_guard *guard = (jpeg_guard *)cinfo->err;
        guard->status = GLM_ERR_LIMIT;
        snprintf(guard->msg, sizeof(guard->msg), "more than %d scans", JPEG_MAX_SCANS);
        longjmp(guard->jump, 1);
    }
}

/* Pillow's MULDIV255: a * b / 255 rounded, in integers. */
static inline int muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* libjpeg's CMYK samples as stored in Adobe files; Pillow inverts them ("CMYK;I") and then
 * applies cmyk2rgb: nk = 255 - k, out = clip(nk - c * nk / 255). With stored values the inverted
 * k cancels: nk is the stored k. */
static void cmyk_row_to_rgb(const uint8_t *cmyk, int width, uint8_t *rgb)
{
    for (int x = 0; x < width; x++) {
        int nk = cmyk[4 * x + 3];
        for (int c = 0; c < 3; c++) {
            int v = nk - muldiv255(255 - cmyk[4 * x + c], nk);
            rgb[3 * x + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static void gray_row_to_rgb(const uint8_t *gray, int width, uint8_t *rgb)
{
    for (int x = 0; x < width; x++)
        rgb[3 * x + 0] = rgb[3 * x + 1] = rgb[3 * x + 2] = gray[x];
}

/* Reads all scanlines into img->rgb. RGB output lands directly in the image; grey and CMYK pass
 * through a strip buffer of rec_outbuf_height rows. */
static void read_scanlines(j_decompress_ptr cinfo, uint8_t *strip, glm_rgb_image *img)
{
    const int width = img->width, comps = cinfo->output_components;
    JSAMPROW rows[16];
    int max_rows = cinfo->rec_outbuf_height < 16 ? cinfo->rec_outbuf_height : 16;
    if (max_rows < 1) max_rows = 1;
    while (cinfo->output_scanline < cinfo->output_height) {
        int y0 = (int)cinfo->output_scanline;
        int n = max_rows;
        if (n > img->height - y0) n = img->height - y0;
        for (int i = 0; i < n; i++)
            rows[i] = comps == 3 ? img->rgb + (size_t)(y0 + i) * 3 * width
                                 : strip + (size_t)i * comps * width;
        int got = (int)jpeg_read_scanlines(cinfo, rows, (JDIMENSION)n);
        for (int i = 0; i < got && comps != 3; i++) {
            uint8_t *dst = img->rgb + (size_t)(y0 + i) * 3 * width;
            if (comps == 1)
                gray_row_to_rgb(rows[i], width, dst);
            else
                cmyk_row_to_rgb(rows[i], width, dst);
        }
    }
}

glm_status glm_image_decode_jpeg(const uint8_t *data, size_t len, const glm_image_limits *limits,
                                 glm_rgb_image *out, glm_error *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress;
    jpeg_guard guard;
    /* volatile: assigned after setjmp and read after the longjmp */
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile strip = NULL;

    memset(out, 0, sizeof(*out));
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&guard.mgr);
    guard.mgr.error_exit = on_error_exit;
    guard.mgr.emit_message = on_emit_message;
    guard.mgr.output_message = on_output_message;
    guard.status = GLM_OK;
    guard.msg[0] = '\0';
    if (setjmp(guard.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(strip);
        return glm_fail(err, guard.status, "jpeg: %s", guard.msg);
    }

    jpeg_create_decompress(&cinfo);
    progress.progress_monitor = on_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        jpeg_destroy_decompress(&cinfo);
        return glm_fail(err, GLM_ERR_FORMAT, "jpeg: no image in file (tables only)");
    }

    glm_status st =
        glm_image_check_size("jpeg", cinfo.image_width, cinfo.image_height, limits, err);
    if (st != GLM_OK) {
        jpeg_destroy_decompress(&cinfo);
        return st;
    }
    switch (cinfo.num_components) {
    case 1:
        cinfo.out_color_space = JCS_GRAYSCALE;
        break;
    case 3:
        cinfo.out_color_space = JCS_RGB;
        break;
    case 4:
        cinfo.out_color_space = JCS_CMYK;
        break;
    default:
        jpeg_destroy_decompress(&cinfo);
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "jpeg: cannot handle %d-component images",
                        cinfo.num_components);
    }
    cinfo.dct_method = JDCT_ISLOW;    /* Pillow's default; the fast IDCTs change pixels */
    cinfo.do_fancy_upsampling = TRUE; /* likewise */
    cinfo.do_block_smoothing = TRUE;  /* libjpeg default, used by Pillow for progressive files */
    cinfo.scale_num = cinfo.scale_denom = 1;

    jpeg_start_decompress(&cinfo);
    const int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
    rgb = malloc((size_t)width * height * 3);
    if (cinfo.output_components != 3) strip = malloc((size_t)width * cinfo.output_components * 16);
    if (!rgb || (cinfo.output_components != 3 && !strip)) {
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        free(strip);
        return glm_fail(err, GLM_ERR_NOMEM, "jpeg: cannot allocate %dx%d RGB image", width, height);
    }
    glm_rgb_image img = {width, height, rgb};
    read_scanlines(&cinfo, strip, &img);
    jpeg_finish_decompress(&cinfo); /* reads up to EOI: a missing EOI is a truncated file */
    jpeg_destroy_decompress(&cinfo);
    free(strip);
    *out = img;
    return GLM_OK;
}
