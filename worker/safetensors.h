/* Safetensors files: validated, memory-mapped reading and plain writing.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the data area. Offsets are relative
 * to the data area. Opening validates everything before any tensor is used: header length within
 * the file, JSON well formed, known dtypes, offsets inside the data area, in order and not
 * overlapping, byte length == product(shape) * dtype size. */
#ifndef GLM4V_SAFETENSORS_H
#define GLM4V_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/tensor.h"

typedef struct glm_st_tensor {
    const char *name;
    glm_dtype dtype;
    int ndim;
    int64_t shape[GLM_MAX_DIMS];
    const void *data; /* inside the mapping; valid until the file is closed */
    size_t bytes;
    const char *file; /* path of the file that holds it, for messages */
    bool mapped; /* data lies in a read-only file mapping: pages may be dropped after reading */
} glm_st_tensor;

typedef struct glm_safetensors glm_safetensors;

glm_status glm_safetensors_open(const char *path, glm_safetensors **out, glm_error *err);
/* Same validation over a file image already in memory (bytes[0..size) is the whole file; the
 * caller keeps it alive until close). name is used in messages. Used by tests and the fuzzer. */
glm_status glm_safetensors_open_memory(const void *bytes, size_t size, const char *name,
                                       glm_safetensors **out, glm_error *err);
void glm_safetensors_close(glm_safetensors *st);
size_t glm_safetensors_count(const glm_safetensors *st);
const glm_st_tensor *glm_safetensors_at(const glm_safetensors *st, size_t index);
/* NULL when absent. */
const glm_st_tensor *glm_safetensors_find(const glm_safetensors *st, const char *name);

/* Writes tensors (host memory) to path in safetensors format, tensors in the given order. */
typedef struct glm_st_write_tensor {
    const char *name;
    glm_dtype dtype;
    int ndim;
    int64_t shape[GLM_MAX_DIMS];
    const void *data;
} glm_st_write_tensor;
glm_status glm_safetensors_write(const char *path, const glm_st_write_tensor *tensors, size_t n,
                                 glm_error *err);

#endif
