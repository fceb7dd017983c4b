/* Row movement: embedding lookup (vocab-sharded), copy_rows, gather_rows; rows converted between
 * the 16-bit storage type and an f32 residual stream where the dtypes differ.
 *
 * One block per output row; threads copy the row in the widest unit (16, 4 or 2 bytes) that the
 * row size and pointers allow. Rows that fall outside this rank's vocab shard are zeroed. */
#include "kernels/cuda/common.cuh"

#define ROW_THREADS 128

static int copy_unit(size_t row_bytes, const void *a, const void *b)
{
    uintptr_t m = (uintptr_t)a | (uintptr_t)b | (uintptr_t)row_bytes;
    if (m % 16 == 0) return 16;
    if (m % 4 == 0) return 4;
    if (m % 2 == 0) return 2;
    return 1;
}

template <typename U>
__device__ __forceinline__ void copy_row(char *dst, const char *src, size_t row_bytes)
{
    size_t n = row_bytes / sizeof(U);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        ((U *)dst)[i] = src ? ((const U *)src)[i] : U{};
}

/* Grid: one block per output row r; src row = index[r] - index_base when it is in [0, n_src),
 * else the row is zeroed. */
__global__ void gather_kernel(char *dst, const char *src, const int32_t *index, int64_t index_base,
                              int64_t n_src, size_t row_bytes, int unit)
{
    int64_t r = blockIdx.x;
    int64_t s = (int64_t)index[r] - index_base;
    const char *srow = (index[r] >= 0 && s >= 0 && s < n_src) ? src + s * row_bytes : NULL;
    char *drow = dst + r * row_bytes;
    switch (unit) {
    case 16: copy_row<uint4>(drow, srow, row_bytes); break;
    case 4: copy_row<uint32_t>(drow, srow, row_bytes); break;
    case 2: copy_row<uint16_t>(drow, srow, row_bytes); break;
    default: copy_row<uint8_t>(drow, srow, row_bytes); break;
    }
}

/* The converting variant of gather_kernel (and of copy_rows): rows move between a 16-bit tensor
 * and an f32 residual stream. index NULL: row r comes from src row r. */
__global__ void gather_convert_kernel(void *dst, glm_dtype dst_dt, const void *src,
                                      glm_dtype src_dt, const int32_t *index, int64_t index_base,
                                      int64_t n_src, int64_t cols)
{
    int64_t r = blockIdx.x;
    int64_t s = index ? (int64_t)index[r] - index_base : r;
    bool valid = (!index || index[r] >= 0) && s >= 0 && s < n_src;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        store_any(dst, dst_dt, r * cols + c, valid ? load_any(src, src_dt, s * cols + c) : 0.f);
}

static void launch_gather(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx,
                          int64_t base)
{
    int64_t n = glm_tensor_numel(&idx);
    if (n == 0) return;
    if (y.dtype != x.dtype) {
        gather_convert_kernel<<<(unsigned)n, ROW_THREADS, 0, cuda_impl(be)->stream>>>(
            y.data, y.dtype, x.data, x.dtype, (const int32_t *)idx.data,
            base, glm_tensor_rows(&x), glm_tensor_cols(&x));
        CUDA_CHECK_LAUNCH(be);
        return;
    }
    size_t row_bytes = (size_t)glm_tensor_cols(&x) * glm_dtype_size(x.dtype);
    gather_kernel<<<(unsigned)n, ROW_THREADS, 0, cuda_impl(be)->stream>>>(
        (char *)y.data, (const char *)x.data, (const int32_t *)idx.data, base, glm_tensor_rows(&x),
        row_bytes, copy_unit(row_bytes, x.data, y.data));
    CUDA_CHECK_LAUNCH(be);
}

void cuda_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                    int64_t vocab_start)
{
    CUDA_REQUIRE(be, ids.dtype == GLM_I32, "embedding: ids must be i32");
    CUDA_REQUIRE(be, cuda_is_half(table.dtype) && (y.dtype == table.dtype || y.dtype == GLM_F32),
                 "embedding: y %s, table %s", glm_dtype_name(y.dtype), glm_dtype_name(table.dtype));
    CUDA_REQUIRE(be, glm_tensor_rows(&y) == glm_tensor_numel(&ids) &&
                         glm_tensor_cols(&y) == glm_tensor_cols(&table),
                 "embedding: y [%lld,%lld] for %lld ids, table width %lld",
                 (long long)glm_tensor_rows(&y), (long long)glm_tensor_cols(&y),
                 (long long)glm_tensor_numel(&ids), (long long)glm_tensor_cols(&table));
    launch_gather(be, y, table, ids, vocab_start);
}

void cuda_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx)
{
    CUDA_REQUIRE(be, idx.dtype == GLM_I32, "gather_rows: idx must be i32");
    CUDA_REQUIRE(be, y.dtype == x.dtype && glm_tensor_cols(&y) == glm_tensor_cols(&x) &&
                         glm_tensor_rows(&y) == glm_tensor_numel(&idx),
                 "gather_rows: y [%lld,%lld], x width %lld, %lld indices",
                 (long long)glm_tensor_rows(&y), (long long)glm_tensor_cols(&y),
                 (long long)glm_tensor_cols(&x), (long long)glm_tensor_numel(&idx));
    launch_gather(be, y, x, idx, 0);
}

void cuda_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                    int64_t src_row, int64_t n_rows)
{
    int64_t cols = glm_tensor_cols(&dst);
    CUDA_REQUIRE(be, glm_tensor_cols(&src) == cols, "copy_rows: row widths %lld and %lld",
                 (long long)cols, (long long)glm_tensor_cols(&src));
    CUDA_REQUIRE(be, dst.dtype == src.dtype || (dst.dtype == GLM_F32 && cuda_is_half(src.dtype)) ||
                         (src.dtype == GLM_F32 && cuda_is_half(dst.dtype)),
                 "copy_rows: %s to %s", glm_dtype_name(src.dtype), glm_dtype_name(dst.dtype));
    CUDA_REQUIRE(be, dst_row >= 0 && src_row >= 0 && n_rows >= 0 &&
                         dst_row + n_rows <= glm_tensor_rows(&dst) &&
                         src_row + n_rows <= glm_tensor_rows(&src),
                 "copy_rows: rows [%lld,+%lld) of %lld from [%lld,+%lld) of %lld",
                 (long long)dst_row, (long long)n_rows, (long long)glm_tensor_rows(&dst),
                 (long long)src_row, (long long)n_rows, (long long)glm_tensor_rows(&src));
    if (n_rows == 0) return;
    if (dst.dtype != src.dtype) {
        size_t de = glm_dtype_size(dst.dtype), se = glm_dtype_size(src.dtype);
        gather_convert_kernel<<<(unsigned)n_rows, ROW_THREADS, 0, cuda_impl(be)->stream>>>(
            (char *)dst.data + (size_t)(dst_row * cols) * de, dst.dtype,
            (const char *)src.data + (size_t)(src_row * cols) * se, src.dtype, NULL, 0,
            n_rows, cols);
        CUDA_CHECK_LAUNCH(be);
        return;
    }
    size_t row_bytes = (size_t)cols * glm_dtype_size(dst.dtype);
    CUDA_CHECK(be, cudaMemcpyAsync((char *)dst.data + dst_row * row_bytes,
                                   (const char *)src.data + src_row * row_bytes,
                                   (size_t)n_rows * row_bytes, cudaMemcpyDeviceToDevice,
                                   cuda_impl(be)->stream));
}
