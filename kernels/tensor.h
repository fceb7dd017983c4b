/* The tensor struct every op takes: dtype, shape, and a pointer into backend memory.
 *
 * Tensors are contiguous and row-major; a view of whole rows is a tensor whose data points into
 * another. Tensors never own memory: weights live in the model's arena, activations in its
 * scratch, so copying a glm_tensor by value is free and safe. */
#ifndef GLM4V_TENSOR_H
#define GLM4V_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h" /* glm_dtype */

#define GLM_MAX_DIMS 4

typedef struct glm_tensor {
    glm_dtype dtype;
    int ndim;
    int64_t shape[GLM_MAX_DIMS];
    void *data; /* backend memory: host for the CPU backend, device for CUDA */
} glm_tensor;

glm_tensor glm_tensor_1d(glm_dtype dtype, int64_t n0, void *data);
glm_tensor glm_tensor_2d(glm_dtype dtype, int64_t n0, int64_t n1, void *data);
glm_tensor glm_tensor_3d(glm_dtype dtype, int64_t n0, int64_t n1, int64_t n2, void *data);
glm_tensor glm_tensor_4d(glm_dtype dtype, int64_t n0, int64_t n1, int64_t n2, int64_t n3,
                         void *data);

int64_t glm_tensor_numel(const glm_tensor *t);
size_t glm_tensor_bytes(const glm_tensor *t);
/* Product of all dims but the last: the number of rows of the row-major matrix view. */
int64_t glm_tensor_rows(const glm_tensor *t);
int64_t glm_tensor_cols(const glm_tensor *t);
/* Rows [first, first + count) of t seen as a [rows, cols] matrix. */
glm_tensor glm_tensor_row_view(const glm_tensor *t, int64_t first, int64_t count);

#endif
