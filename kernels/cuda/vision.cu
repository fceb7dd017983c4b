/* Vision-tower data movement: patchify (im2col for the 14x14 patch conv), im2col for the 2x2
 * stride-2 conv, and the cls + position embedding. One thread per output element; these run once
 * per image and move a few MB, so simple indexing is enough. */
#include "kernels/cuda/common.cuh"

/* y [n * g * g, C * p * p], column (c, ky, kx) of patch (gy, gx) = pixels[n, c, gy*p+ky, gx*p+kx]. */
__global__ void patchify_kernel(__nv_bfloat16 *y, const void *pixels, int is_f32, int64_t total,
                                int channels, int size, int patch)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int g = size / patch, width = channels * patch * patch;
    int col = (int)(i % width);
    int64_t row = i / width;
    int kx = col % patch, ky = (col / patch) % patch, c = col / (patch * patch);
    int gx = (int)(row % g), gy = (int)((row / g) % g);
    int64_t img = row / ((int64_t)g * g);
    int64_t src = ((img * channels + c) * size + (int64_t)gy * patch + ky) * size + gx * patch + kx;
    y[i] = __float2bfloat16(load_any(pixels, is_f32, src));
}

void cuda_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch)
{
    CUDA_REQUIRE(be, pixels.ndim == 4 && pixels.shape[2] == pixels.shape[3] && patch > 0 &&
                         pixels.shape[2] % patch == 0,
                 "patchify: pixels must be [n, C, S, S] with S a multiple of %d", patch);
    CUDA_REQUIRE(be, (pixels.dtype == GLM_F32 || pixels.dtype == GLM_BF16) && y.dtype == GLM_BF16,
                 "patchify: f32/bf16 pixels to bf16");
    int64_t n = pixels.shape[0], c = pixels.shape[1], s = pixels.shape[2], g = s / patch;
    CUDA_REQUIRE(be, glm_tensor_rows(&y) == n * g * g && glm_tensor_cols(&y) == c * patch * patch,
                 "patchify: y [%lld,%lld], want [%lld,%lld]", (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y), (long long)(n * g * g),
                 (long long)(c * patch * patch));
    int64_t total = glm_tensor_numel(&y);
    if (total == 0) return;
    patchify_kernel<<<cuda_blocks(total, 256), 256, 0, cuda_impl(be)->stream>>>(
        (__nv_bfloat16 *)y.data, pixels.data, pixels.dtype == GLM_F32, total, (int)c, (int)s,
        patch);
    CUDA_CHECK_LAUNCH(be);
}

/* y [n * h * h, C * 4] with h = g / 2; column c*4 + ky*2 + kx = x[n, (2oy+ky) * g + 2ox+kx, c]. */
__global__ void im2col_2x2_kernel(__nv_bfloat16 *y, const __nv_bfloat16 *x, int64_t total,
                                  int channels, int grid)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int half = grid / 2, width = channels * 4;
    int col = (int)(i % width);
    int64_t row = i / width;
    int kx = col % 2, ky = (col / 2) % 2, c = col / 4;
    int ox = (int)(row % half), oy = (int)((row / half) % half);
    int64_t img = row / ((int64_t)half * half);
    int64_t src_row = img * grid * grid + (int64_t)(2 * oy + ky) * grid + 2 * ox + kx;
    y[i] = x[src_row * channels + c];
}

void cuda_im2col_2x2(glm_backend *be, glm_tensor y, glm_tensor x, int n_images, int grid)
{
    int64_t c = glm_tensor_cols(&x), half = grid / 2;
    CUDA_REQUIRE(be, x.dtype == GLM_BF16 && y.dtype == GLM_BF16, "im2col_2x2: bf16 expected");
    CUDA_REQUIRE(be, grid % 2 == 0 && glm_tensor_rows(&x) == (int64_t)n_images * grid * grid &&
                         glm_tensor_rows(&y) == (int64_t)n_images * half * half &&
                         glm_tensor_cols(&y) == 4 * c,
                 "im2col_2x2: x [%lld,%lld], y [%lld,%lld], %d images, grid %d",
                 (long long)glm_tensor_rows(&x), (long long)c, (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y), n_images, grid);
    int64_t total = glm_tensor_numel(&y);
    if (total == 0) return;
    im2col_2x2_kernel<<<cuda_blocks(total, 256), 256, 0, cuda_impl(be)->stream>>>(
        (__nv_bfloat16 *)y.data, (const __nv_bfloat16 *)x.data, total, (int)c, grid);
    CUDA_CHECK_LAUNCH(be);
}

__global__ void vision_embed_kernel(void *y, int y_f32, const __nv_bfloat16 *patches,
                                    const __nv_bfloat16 *cls, const __nv_bfloat16 *pos,
                                    int64_t total, int n_patches, int channels)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int c = (int)(i % channels);
    int64_t r = i / channels;
    int j = (int)(r % (n_patches + 1));
    int64_t img = r / (n_patches + 1);
    float v = j == 0 ? __bfloat162float(cls[c])
                     : __bfloat162float(patches[(img * n_patches + j - 1) * channels + c]);
    store_any(y, y_f32, i, v + __bfloat162float(pos[(int64_t)j * channels + c]));
}

void cuda_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                       glm_tensor pos, int n_images)
{
    int64_t c = glm_tensor_cols(&patches);
    int64_t p = n_images > 0 ? glm_tensor_rows(&patches) / n_images : 0;
    CUDA_REQUIRE(be, (y.dtype == GLM_BF16 || y.dtype == GLM_F32) && patches.dtype == GLM_BF16 &&
                         cls.dtype == GLM_BF16 && pos.dtype == GLM_BF16,
                 "vision_embed: bf16 expected (y: bf16 or f32)");
    CUDA_REQUIRE(be, n_images > 0 && p * n_images == glm_tensor_rows(&patches) &&
                         glm_tensor_numel(&cls) == c && glm_tensor_rows(&pos) >= 1 + p &&
                         glm_tensor_cols(&pos) == c &&
                         glm_tensor_numel(&y) == (int64_t)n_images * (1 + p) * c,
                 "vision_embed: patches [%lld,%lld] for %d images, pos [%lld,%lld]",
                 (long long)glm_tensor_rows(&patches), (long long)c, n_images,
                 (long long)glm_tensor_rows(&pos), (long long)glm_tensor_cols(&pos));
    int64_t total = glm_tensor_numel(&y);
    vision_embed_kernel<<<cuda_blocks(total, 256), 256, 0, cuda_impl(be)->stream>>>(
        y.data, y.dtype == GLM_F32, (const __nv_bfloat16 *)patches.data,
        (const __nv_bfloat16 *)cls.data, (const __nv_bfloat16 *)pos.data, total, (int)p, (int)c);
    CUDA_CHECK_LAUNCH(be);
}
