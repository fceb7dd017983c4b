#include "common/dtype.h"

#include <math.h>
#include <string.h>

size_t glm_dtype_size(glm_dtype dtype)
{
    switch (dtype) {
    case GLM_F32:
        return 4;
    case GLM_BF16:
        return 2;
    case GLM_F16:
        return 2;
    case GLM_I32:
        return 4;
    case GLM_I64:
        return 8;
    }
    return 0;
}

const char *glm_dtype_name(glm_dtype dtype)
{
    switch (dtype) {
    case GLM_F32:
        return "F32";
    case GLM_BF16:
        return "BF16";
    case GLM_F16:
        return "F16";
    case GLM_I32:
        return "I32";
    case GLM_I64:
        return "I64";
    }
    return "?";
}

float glm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    union {
        uint32_t u;
        float f;
    } v;
    if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24 */
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    } else if (exp == 31) {
        v.u = sign | 0x7f800000u | (mant << 13);
    } else {
        v.u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    return v.f;
}

uint16_t glm_f32_to_f16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;
    if (a < 6.103515625e-05f) { /* subnormal half: round a / 2^-24 to nearest even */
        float m = nearbyintf(a * 16777216.0f);
        return sign | (uint16_t)m;
    }
    uint32_t u = v.u & 0x7fffffffu;
    uint32_t rounding = 0xfffu + ((u >> 13) & 1u);
    u += rounding;
    return sign | (uint16_t)(((u >> 23) - 112) << 10 | ((u >> 13) & 0x3ff));
}

static float load_float(const void *src, glm_dtype dtype, size_t i)
{
    switch (dtype) {
    case GLM_F32:
        return ((const float *)src)[i];
    case GLM_BF16:
        return glm_bf16_to_f32(((const uint16_t *)src)[i]);
    case GLM_F16:
        return glm_f16_to_f32(((const uint16_t *)src)[i]);
    default:
        return 0.0f;
    }
}

int glm_convert(void *dst, glm_dtype dst_dtype, const void *src, glm_dtype src_dtype, size_t n)
{
    int float_src = src_dtype == GLM_F32 || src_dtype == GLM_BF16 || src_dtype == GLM_F16;
    int float_dst = dst_dtype == GLM_F32 || dst_dtype == GLM_BF16 || dst_dtype == GLM_F16;
    if (!float_src || !float_dst) return -1;
    if (src_dtype == dst_dtype) {
        memcpy(dst, src, n * glm_dtype_size(src_dtype));
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float x = load_float(src, src_dtype, i);
        switch (dst_dtype) {
        case GLM_F32:
            ((float *)dst)[i] = x;
            break;
        case GLM_BF16:
            ((uint16_t *)dst)[i] = glm_f32_to_bf16(x);
            break;
        case GLM_F16:
            ((uint16_t *)dst)[i] = glm_f32_to_f16(x);
            break;
        default:
            return -1;
        }
    }
    return 0;
}
