#include "kernels/tensor.h"

#include <assert.h>

static glm_tensor make(glm_dtype dtype, int ndim, const int64_t *shape, void *data)
{
    glm_tensor t = {.dtype = dtype, .ndim = ndim, .data = data};
    for (int i = 0; i < ndim; i++)
        t.shape[i] = shape[i];
    for (int i = ndim; i < GLM_MAX_DIMS; i++)
        t.shape[i] = 1;
    return t;
}

glm_tensor glm_tensor_1d(glm_dtype dtype, int64_t n0, void *data)
{
    int64_t s[] = {n0};
    return make(dtype, 1, s, data);
}

glm_tensor glm_tensor_2d(glm_dtype dtype, int64_t n0, int64_t n1, void *data)
{
    int64_t s[] = {n0, n1};
    return make(dtype, 2, s, data);
}

glm_tensor glm_tensor_3d(glm_dtype dtype, int64_t n0, int64_t n1, int64_t n2, void *data)
{
    int64_t s[] = {n0, n1, n2};
    return make(dtype, 3, s, data);
}

glm_tensor glm_tensor_4d(glm_dtype dtype, int64_t n0, int64_t n1, int64_t n2, int64_t n3,
                         void *data)
{
    int64_t s[] = {n0, n1, n2, n3};
    return make(dtype, 4, s, data);
}

int64_t glm_tensor_numel(const glm_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t glm_tensor_bytes(const glm_tensor *t)
{
    return (size_t)glm_tensor_numel(t) * glm_dtype_size(t->dtype);
}

int64_t glm_tensor_cols(const glm_tensor *t)
{
    return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

int64_t glm_tensor_rows(const glm_tensor *t)
{
    int64_t cols = glm_tensor_cols(t);
    return cols ? glm_tensor_numel(t) / cols : 0;
}

glm_tensor glm_tensor_row_view(const glm_tensor *t, int64_t first, int64_t count)
{
    int64_t cols = glm_tensor_cols(t);
    assert(first >= 0 && first + count <= glm_tensor_rows(t));
    char *base = (char *)t->data + (size_t)(first * cols) * glm_dtype_size(t->dtype);
    return glm_tensor_2d(t->dtype, count, cols, base);
}
