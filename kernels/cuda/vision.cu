/* Vision-tower data movement: patchify (im2col for the 14x14 patch conv), im2col for the 2x2
 * stride-2 conv, and the cls + position embedding. One thread per output element; these run once
 * per image and move a few MB, so simple indexing is enough. */
#include "kernels/cuda/common.cuh"

/* y [n * g * g, C * p * p], column (c, ky, kx) of patch (gy, gx) = pixels[n, c, gy*p+ky, gx*p+kx]. */
template <typename T>
__global__ void patchify_kernel(T *y, const void *pixels, glm_dtype pixels_dt, int64_t total,
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
    y[i] = from_f32<T>(load_any(pixels, pixels_dt, src));
}

void cuda_patchify(glm_backend *be, glm_tensor y, glm_tensor pixels, int patch)
{
    CUDA_REQUIRE(be, pixels.ndim == 4 && pixels.shape[2] == pixels.shape[3] && patch > 0 &&
                         pixels.shape[2] % patch == 0,
                 "patchify: pixels must be [n, C, S, S] with S a multiple of %d", patch);
    CUDA_REQUIRE(be, (pixels.dtype == GLM_F32 || cuda_is_half(pixels.dtype)) &&
                         cuda_is_half(y.dtype),
                 "patchify: f32/bf16/f16 pixels to a 16-bit y (got %s to %s)",
                 glm_dtype_name(pixels.dtype), glm_dtype_name(y.dtype));
    int64_t n = pixels.shape[0], c = pixels.shape[1], s = pixels.shape[2], g = s / patch;
    CUDA_REQUIRE(be, glm_tensor_rows(&y) == n * g * g && glm_tensor_cols(&y) == c * patch * patch,
                 "patchify: y [%lld,%lld], want [%lld,%lld]", (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y), (long long)(n * g * g),
                 (long long)(c * patch * patch));
    int64_t total = glm_tensor_numel(&y);
    if (total == 0) return;
    GLM_DISPATCH_HALF(y.dtype, T,
                      patchify_kernel<T><<<cuda_blocks(total, 256), 256, 0, cuda_impl(be)->stream>>>(
                          (T *)y.data, pixels.data, pixels.dtype, total, (int)c, (int)s, patch));
    CUDA_CHECK_LAUNCH(be);
}

/* y [n * h * h, C * 4] with h = g / 2; column c*4 + ky*2 + kx = x[n, (2oy+ky) * g + 2ox+kx, c]. */
/* A pure move: one kernel on 16-bit words serves bf16 and fp16. */
__global__ void im2col_2x2_kernel(uint16_t *y, const uint16_t *x, int64_t total, int channels,
                                  int grid)
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
    CUDA_REQUIRE(be, cuda_is_half(x.dtype) && y.dtype == x.dtype,
                 "im2col_2x2: one 16-bit dtype expected (x %s, y %s)", glm_dtype_name(x.dtype),
                 glm_dtype_name(y.dtype));
    CUDA_REQUIRE(be, grid % 2 == 0 && glm_tensor_rows(&x) == (int64_t)n_images * grid * grid &&
                         glm_tensor_rows(&y) == (int64_t)n_images * half * half &&
                         glm_tensor_cols(&y) == 4 * c,
                 "im2col_2x2: x [%lld,%lld], y [%lld,%lld], %d images, grid %d",
                 (long long)glm_tensor_rows(&x), (long long)c, (long long)glm_tensor_rows(&y),
                 (long long)glm_tensor_cols(&y), n_images, grid);
    int64_t total = glm_tensor_numel(&y);
    if (total == 0) return;
    im2col_2x2_kernel<<<cuda_blocks(total, 256), 256, 0, cuda_impl(be)->stream>>>(
        (uint16_t *)y.data, (const uint16_t *)x.data, total, (int)c, grid);
    CUDA_CHECK_LAUNCH(be);
}

template <typename T>
__global__ void vision_embed_kernel(void *y, glm_dtype y_dt, const T *patches, const T *cls,
                                    const T *pos, int64_t total, int n_patches, int channels)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int c = (int)(i % channels);
    int64_t r = i / channels;
    int j = (int)(r % (n_patches + 1));
    int64_t img = r / (n_patches + 1);
    float v = j == 0 ? to_f32(cls[c]) : to_f32(patches[(img * n_patches + j - 1) * channels + c]);
    store_any(y, y_dt, i, v + to_f32(pos[(int64_t)j * channels + c]));
}

void cuda_vision_embed(glm_backend *be, glm_tensor y, glm_tensor patches, glm_tensor cls,
                       glm_tensor pos, int n_images)
{
    int64_t c = glm_tensor_cols(&patches);
    int64_t p = n_images > 0 ? glm_tensor_rows(&patches) / n_images : 0;
    glm_dtype t = patches.dtype;
    CUDA_REQUIRE(be, cuda_is_half(t) && (y.dtype == t || y.dtype == GLM_F32) && cls.dtype == t &&
                         pos.dtype == t,
                 "vision_embed: patches, cls, pos of one 16-bit dtype, y that or f32 (got %s %s "
                 "%s, y %s)",
                 glm_dtype_name(t), glm_dtype_name(cls.dtype), glm_dtype_name(pos.dtype),
                 glm_dtype_name(y.dtype));
    CUDA_REQUIRE(be, n_images > 0 && p * n_images == glm_tensor_rows(&patches) &&
                         glm_tensor_numel(&cls) == c && glm_tensor_rows(&pos) >= 1 + p &&
                         glm_tensor_cols(&pos) == c &&
                         glm_tensor_numel(&y) == (int64_t)n_images * (1 + p) * c,
                 "vision_embed: patches [%lld,%lld] for %d images, pos [%lld,%lld]",
                 (long long)glm_tensor_rows(&patches), (long long)c, n_images,
                 (long long)glm_tensor_rows(&pos), (long long)glm_tensor_cols(&pos));
    int64_t total = glm_tensor_numel(&y);
    GLM_DISPATCH_HALF(t, T,
                      vision_embed_kernel<T><<<cuda_blocks(total, 256), 256, 0,
                                               cuda_impl(be)->stream>>>(
                          y.data, y.dtype, (const T *)patches.data, (const T *)cls.data,
                          (const T *)pos.data, total, (int)p, (int)c));
    CUDA_CHECK_LAUNCH(be);
}
