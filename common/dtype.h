/* The element types of tensors, the formats of linear weights, and host-side conversions between
 * the float formats that checkpoints and backends use. Everything above common/ (kernels, worker,
 * coordinator) takes glm_dtype and glm_weight_format from here. */
#ifndef GLM4V_DTYPE_H
#define GLM4V_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum glm_dtype {
    GLM_F32 = 0,
    GLM_BF16,
    GLM_F16,
    GLM_I32,
    GLM_I64,
} glm_dtype;

size_t glm_dtype_size(glm_dtype dtype);
const char *glm_dtype_name(glm_dtype dtype);

/* How a linear layer's weight is stored (the semantics of each: kernels/weight_format.h). */
typedef enum glm_weight_format {
    GLM_WEIGHT_DENSE = 0, /* bit 0 of glm_backend_caps.weight_formats: GLM_WEIGHT_FORMATS_16BIT */
    GLM_WEIGHT_FP8,
    GLM_WEIGHT_INT8,
    GLM_WEIGHT_INT4,
    GLM_WEIGHT_N_FORMATS
} glm_weight_format;

static inline float glm_bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

/* Round to nearest even, as PyTorch does; NaN stays NaN. */
static inline uint16_t glm_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

float glm_f16_to_f32(uint16_t h);
uint16_t glm_f32_to_f16(float f);

/* Converts n elements from src (src_dtype) to dst (dst_dtype); float types only.
 * Returns 0 on success, -1 for an unsupported pair. */
int glm_convert(void *dst, glm_dtype dst_dtype, const void *src, glm_dtype src_dtype, size_t n);

#endif
