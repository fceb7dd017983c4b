/* Vision-tower data movement: im2col for the 14x14 patch conv and for the 2x2 stride-2 conv over
 * the patch grid, and the cls + position embedding. Pure copies and adds, one output row per
 * iteration, so the following GEMM sees contiguous rows. */
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

void cpu_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch)
{
    const char *op = "patchify";
    if (!cpu_expect_dtype(be, op, "pixels", &pixels, GLM_F32)) return;
    if (pixels.ndim != 4 || patch <= 0 || pixels.shape[2] != pixels.shape[3] ||
        pixels.shape[2] % patch) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "%s: pixels must be [n, C, S, S] with S a multiple of patch %d", op,
                         patch);
        return;
    }
    int64_t n = pixels.shape[0], c = pixels.shape[1], size = pixels.shape[2];
    int64_t g = size / patch, p = patch, cols = c * p * p;
    if (!cpu_expect_matrix(be, op, "y", &y, GLM_F32, n * g * g, cols)) return;
    const float *src = pixels.data;
    float *dst = y.data;
    int64_t n_rows = n * g * g;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n_rows * cols > 65536)
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t img = r / (g * g), gy = (r / g) % g, gx = r % g;
        float *out = dst + r * cols;
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t ky = 0; ky < p; ky++) {
                const float *in = src + ((img * c + ch) * size + gy * p + ky) * size + gx * p;
                memcpy(out + (ch * p + ky) * p, in, (size_t)p * sizeof(float));
            }
    }
}

void cpu_im2col_2x2(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid)
{
    const char *op = "im2col_2x2";
    if (n_images < 0 || grid <= 0 || grid % 2) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %d images, grid %d (must be even)", op, n_images,
                         grid);
        return;
    }
    if (!cpu_expect_dtype(be, op, "x", &x, GLM_F32)) return;
    int64_t g = grid, h = g / 2, c = glm_tensor_cols(&x);
    if (!cpu_expect_matrix(be, op, "x", &x, GLM_F32, n_images * g * g, c) ||
        !cpu_expect_matrix(be, op, "y", &y, GLM_F32, n_images * h * h, 4 * c))
        return;
    const float *src = x.data;
    float *dst = y.data;
    int64_t n_rows = n_images * h * h;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n_rows * c > 65536)
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t img = r / (h * h), oy = (r / h) % h, ox = r % h;
        float *out = dst + r * 4 * c;
        for (int ky = 0; ky < 2; ky++)
            for (int kx = 0; kx < 2; kx++) {
                const float *in = src + (img * g * g + (2 * oy + ky) * g + 2 * ox + kx) * c;
                for (int64_t ch = 0; ch < c; ch++)
                    out[ch * 4 + ky * 2 + kx] = in[ch];
            }
    }
}

void cpu_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                      glm_tensor pos, int n_images)
{
    const char *op = "vision_embed";
    if (!cpu_expect_dtype(be, op, "patches", &patches, GLM_F32)) return;
    int64_t c = glm_tensor_cols(&patches);
    if (n_images <= 0 || glm_tensor_rows(&patches) % n_images) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %lld patch rows for %d images", op,
                         (long long)glm_tensor_rows(&patches), n_images);
        return;
    }
    int64_t p = glm_tensor_rows(&patches) / n_images;
    if (!cpu_expect_matrix(be, op, "cls", &cls, GLM_F32, 1, c) ||
        !cpu_expect_matrix(be, op, "y", &y, GLM_F32, n_images * (1 + p), c) ||
        !cpu_expect_matrix(be, op, "pos", &pos, GLM_F32, -1, c))
        return;
    if (glm_tensor_rows(&pos) < 1 + p) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: pos has %lld rows, need %lld", op,
                         (long long)glm_tensor_rows(&pos), (long long)(1 + p));
        return;
    }
    const float *pd = patches.data, *cd = cls.data, *posd = pos.data;
    float *yd = y.data;
    int64_t n_rows = n_images * (1 + p);
#pragma omp parallel for num_threads(cpu_threads(be)) if (n_rows * c > 65536)
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t img = r / (1 + p), j = r % (1 + p);
        const float *src = j == 0 ? cd : pd + (img * p + j - 1) * c;
        const float *pe = posd + j * c;
        float *out = yd + r * c;
        for (int64_t i = 0; i < c; i++)
            out[i] = src[i] + pe[i];
    }
}
