/* patchify, im2col_2x2 and vision_embed: pure data movement, so outputs must match exactly. */
#include <string.h>

#include "tests/kernels/kernel_test.h"

static void check_patchify(glm_backend *be, test_rng *rng, int n, int c, int g, int p)
{
    int s = g * p;
    size_t n_in = (size_t)n * c * s * s, n_out = (size_t)n * g * g * c * p * p;
    float *pix = kt_random(rng, n_in, 1.0), *y = kt_poisoned(n_out), *ref = malloc(n_out * 4);
    for (int i = 0; i < n; i++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++)
                for (int ch = 0; ch < c; ch++)
                    for (int ky = 0; ky < p; ky++)
                        for (int kx = 0; kx < p; kx++) {
                            size_t row = ((size_t)i * g + gy) * g + gx;
                            size_t col = ((size_t)ch * p + ky) * p + kx;
                            size_t src = (((size_t)i * c + ch) * s + gy * p + ky) * s + gx * p + kx;
                            ref[row * c * p * p + col] = pix[src];
                        }
    glm_op_patchify(be, glm_tensor_2d(GLM_F32, (int64_t)n * g * g, (int64_t)c * p * p, y),
                    glm_tensor_4d(GLM_F32, n, c, s, s, pix), p);
    kt_expect_ok(be, "patchify");
    kt_equal("patchify", y, ref, n_out);
    glm_op_patchify(be, glm_tensor_2d(GLM_F32, (int64_t)n * g * g, (int64_t)c * p * p, y),
                    glm_tensor_4d(GLM_F32, n, c, s, s, pix), p + 1);
    kt_expect_error(be, GLM_ERR_SHAPE, "patchify patch does not divide");
    free(pix), free(y), free(ref);
}

static void check_im2col(glm_backend *be, test_rng *rng, int n, int g, int c)
{
    int h = g / 2;
    size_t n_in = (size_t)n * g * g * c, n_out = (size_t)n * h * h * 4 * c;
    float *x = kt_random(rng, n_in, 1.0), *y = kt_poisoned(n_out), *ref = malloc(n_out * 4);
    for (int i = 0; i < n; i++)
        for (int oy = 0; oy < h; oy++)
            for (int ox = 0; ox < h; ox++)
                for (int ch = 0; ch < c; ch++)
                    for (int ky = 0; ky < 2; ky++)
                        for (int kx = 0; kx < 2; kx++) {
                            size_t row = ((size_t)i * h + oy) * h + ox;
                            size_t src = ((size_t)i * g + 2 * oy + ky) * g + 2 * ox + kx;
                            ref[row * 4 * c + (size_t)ch * 4 + ky * 2 + kx] = x[src * c + ch];
                        }
    glm_op_im2col_2x2(be, glm_tensor_2d(GLM_F32, (int64_t)n * h * h, 4 * c, y),
                      glm_tensor_2d(GLM_F32, (int64_t)n * g * g, c, x), n, g);
    kt_expect_ok(be, "im2col_2x2");
    kt_equal("im2col_2x2", y, ref, n_out);
    glm_op_im2col_2x2(be, glm_tensor_2d(GLM_F32, (int64_t)n * h * h, 4 * c, y),
                      glm_tensor_2d(GLM_F32, (int64_t)n * g * g, c, x), n, g + 1);
    kt_expect_error(be, GLM_ERR_SHAPE, "im2col_2x2 odd grid");
    free(x), free(y), free(ref);
}

static void check_embed(glm_backend *be, test_rng *rng, int n, int p, int c, int extra_pos)
{
    float *patches = kt_random(rng, (size_t)n * p * c, 1.0), *cls = kt_random(rng, (size_t)c, 1.0);
    float *pos = kt_random(rng, (size_t)(1 + p + extra_pos) * c, 1.0);
    size_t n_out = (size_t)n * (1 + p) * c;
    float *y = kt_poisoned(n_out), *ref = malloc(n_out * 4);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= p; j++)
            for (int k = 0; k < c; k++) {
                float src = j == 0 ? cls[k] : patches[((size_t)i * p + j - 1) * c + k];
                ref[((size_t)i * (1 + p) + j) * c + k] = src + pos[(size_t)j * c + k];
            }
    glm_tensor yt = glm_tensor_3d(GLM_F32, n, 1 + p, c, y);
    glm_tensor pt = glm_tensor_2d(GLM_F32, (int64_t)n * p, c, patches);
    glm_tensor ct = glm_tensor_2d(GLM_F32, 1, c, cls);
    glm_op_vision_embed(be, yt, pt, ct, glm_tensor_2d(GLM_F32, 1 + p + extra_pos, c, pos), n);
    kt_expect_ok(be, "vision_embed");
    kt_equal("vision_embed", y, ref, n_out);
    glm_op_vision_embed(be, yt, pt, ct, glm_tensor_2d(GLM_F32, p, c, pos), n);
    kt_expect_error(be, GLM_ERR_SHAPE, "vision_embed short pos table");
    glm_op_vision_embed(be, yt, pt, glm_tensor_1d(GLM_F32, c + 1, cls),
                        glm_tensor_2d(GLM_F32, 1 + p, c, pos), n);
    kt_expect_error(be, GLM_ERR_SHAPE, "vision_embed cls width");
    free(patches), free(cls), free(pos), free(y), free(ref);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 11);
    glm_backend *be = kt_backend(0);
    check_patchify(be, &rng, 1, 3, 6, 14); /* the tiny checkpoints: 84 px, patch 14 */
    check_patchify(be, &rng, 2, 3, 3, 5);
    check_patchify(be, &rng, 3, 1, 1, 1);
    check_patchify(be, &rng, 1, 2, 20, 4); /* threaded */
    check_im2col(be, &rng, 1, 6, 48);
    check_im2col(be, &rng, 3, 2, 1);
    check_im2col(be, &rng, 2, 10, 17);
    check_im2col(be, &rng, 1, 80, 33); /* threaded */
    check_embed(be, &rng, 1, 36, 48, 0);
    check_embed(be, &rng, 3, 4, 17, 2);
    check_embed(be, &rng, 2, 1, 1, 0);
    check_embed(be, &rng, 2, 400, 100, 1); /* threaded */
    glm_backend_destroy(be);
    return test_finish("test_kernels_vision");
}
