/* A Hugging Face checkpoint folder: model.safetensors, or shards listed by
 * model.safetensors.index.json. Tensors are looked up by their HF names, checked against the
 * shapes the config implies, and copied out (whole or as a row/column slice for tensor
 * parallelism) converted to the backend's dtype, straight from the mapping: the checkpoint is
 * never held in memory twice. */
#ifndef GLM4V_CHECKPOINT_H
#define GLM4V_CHECKPOINT_H

#include "common/status.h"
#include "worker/safetensors.h"

typedef struct glm_checkpoint glm_checkpoint;

/* Opens DIR/model.safetensors.index.json (every shard it names must exist and every tensor it
 * maps must be in the named shard) or else DIR/model.safetensors. */
glm_status glm_checkpoint_open(const char *model_dir, glm_checkpoint **out, glm_error *err);
void glm_checkpoint_close(glm_checkpoint *ck);

/* NULL when absent. */
const glm_st_tensor *glm_checkpoint_find(const glm_checkpoint *ck, const char *name);

/* The tensor called name, which must exist with exactly this shape; otherwise GLM_ERR_MISSING
 * or GLM_ERR_SHAPE with a message naming the file, the tensor, and both shapes. */
glm_status glm_checkpoint_expect(const glm_checkpoint *ck, const char *name, int ndim,
                                 const int64_t *shape, const glm_st_tensor **out, glm_error *err);

/* Copies the block rows [row0, row0 + n_rows) x cols [col0, col0 + n_cols) of t, seen as a matrix
 * [shape[0], numel / shape[0]] (a 1-D tensor is one column: [shape[0], 1]), into dst (host memory,
 * row-major [n_rows, n_cols]) converted to dst_dtype (F32, BF16 or F16). */
glm_status glm_tensor_read_block(const glm_st_tensor *t, int64_t row0, int64_t n_rows, int64_t col0,
                                 int64_t n_cols, void *dst, glm_dtype dst_dtype, glm_error *err);

#endif
