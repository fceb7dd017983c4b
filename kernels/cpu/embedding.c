/* Row movement: embedding lookup (vocab-sharded), copy_rows between tensors, gather_rows by index.
 * Indices are checked before any row moves, so a bad id fails the op without writing anything. */
#include <string.h>

#include "common/dtype.h"
#include "kernels/cpu/cpu_internal.h"

void cpu_embedding(glm_backend *be, glm_tensor y, glm_tensor table, glm_tensor ids,
                   int64_t vocab_start)
{
    const char *op = "embedding";
    if (!cpu_expect_dtype(be, op, "table", &table, GLM_F32)) return;
    int64_t vocab_rows = glm_tensor_rows(&table), h = glm_tensor_cols(&table);
    if (!cpu_expect_dtype(be, op, "ids", &ids, GLM_I32)) return;
    int64_t n = glm_tensor_numel(&ids);
    if (!cpu_expect_matrix(be, op, "y", &y, GLM_F32, n, h)) return;
    const int32_t *idd = ids.data;
    const float *td = table.data;
    float *yd = y.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n * h > 65536)
    for (int64_t t = 0; t < n; t++) {
        int64_t row = (int64_t)idd[t] - vocab_start;
        float *yr = yd + t * h;
        if (row >= 0 && row < vocab_rows)
            memcpy(yr, td + row * h, (size_t)h * sizeof(float));
        else
            memset(yr, 0, (size_t)h * sizeof(float));
    }
}

void cpu_copy_rows(glm_backend *be, glm_tensor dst, int64_t dst_row, glm_tensor src,
                   int64_t src_row, int64_t n_rows)
{
    const char *op = "copy_rows";
    if (!cpu_expect_dtype(be, op, "src", &src, src.dtype) ||
        !cpu_expect_matrix(be, op, "dst", &dst, dst.dtype, -1, glm_tensor_cols(&src)))
        return;
    int64_t dst_rows = glm_tensor_rows(&dst), src_rows = glm_tensor_rows(&src);
    if (n_rows < 0 || dst_row < 0 || src_row < 0 || dst_row > dst_rows - n_rows ||
        src_row > src_rows - n_rows) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "copy_rows: rows [%lld, +%lld) of dst (%lld rows) from [%lld, +%lld) of "
                         "src (%lld rows) out of range",
                         (long long)dst_row, (long long)n_rows, (long long)dst_rows,
                         (long long)src_row, (long long)n_rows, (long long)src_rows);
        return;
    }
    int64_t cols = glm_tensor_cols(&src);
    if (dst.dtype != src.dtype) { /* a residual stream and an activation of another dtype */
        if (glm_convert((char *)dst.data + (size_t)(dst_row * cols) * glm_dtype_size(dst.dtype),
                        dst.dtype,
                        (const char *)src.data +
                            (size_t)(src_row * cols) * glm_dtype_size(src.dtype),
                        src.dtype, (size_t)(n_rows * cols)))
            glm_backend_fail(be, GLM_ERR_SHAPE, "copy_rows: no conversion from %s to %s",
                             glm_dtype_name(src.dtype), glm_dtype_name(dst.dtype));
        return;
    }
    size_t row_bytes = (size_t)cols * glm_dtype_size(src.dtype);
    if (n_rows == 0 || row_bytes == 0) return;
    memmove((char *)dst.data + (size_t)dst_row * row_bytes,
            (const char *)src.data + (size_t)src_row * row_bytes, (size_t)n_rows * row_bytes);
}

void cpu_gather_rows(glm_backend *be, glm_tensor y, glm_tensor x, glm_tensor idx)
{
    const char *op = "gather_rows";
    if (!cpu_expect_dtype(be, op, "x", &x, x.dtype) ||
        !cpu_expect_dtype(be, op, "idx", &idx, GLM_I32))
        return;
    int64_t n = glm_tensor_numel(&idx), x_rows = glm_tensor_rows(&x), c = glm_tensor_cols(&x);
    if (!cpu_expect_matrix(be, op, "y", &y, x.dtype, n, c)) return;
    const int32_t *id = idx.data;
    for (int64_t i = 0; i < n; i++) {
        if (id[i] < 0 || id[i] >= x_rows) {
            glm_backend_fail(be, GLM_ERR_SHAPE, "gather_rows: idx[%lld] = %d outside [0, %lld)",
                             (long long)i, (int)id[i], (long long)x_rows);
            return;
        }
    }
    size_t row_bytes = (size_t)c * glm_dtype_size(x.dtype);
    if (row_bytes == 0) return;
#pragma omp parallel for num_threads(cpu_threads(be)) if ((size_t)n * row_bytes > 262144)
    for (int64_t i = 0; i < n; i++)
        memcpy((char *)y.data + (size_t)i * row_bytes,
               (const char *)x.data + (size_t)id[i] * row_bytes, row_bytes);
}
