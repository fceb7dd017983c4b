/* Elementwise ops: add, scale, exact GELU, SwiGLU's silu(a) * b. Float32, OpenMP over elements
 * (or rows) once an array is large enough to pay for waking the threads. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_internal.h"

#define ELEMENTWISE_PARALLEL_MIN 65536

float cpu_gelu_scalar(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}

static bool same_shape(glm_backend *be, const char *op, const char *name, const glm_tensor *t,
                       const glm_tensor *ref)
{
    if (glm_tensor_rows(t) != glm_tensor_rows(ref) || glm_tensor_cols(t) != glm_tensor_cols(ref)) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %s is [%lld, %lld], expected [%lld, %lld]", op,
                         name, (long long)glm_tensor_rows(t), (long long)glm_tensor_cols(t),
                         (long long)glm_tensor_rows(ref), (long long)glm_tensor_cols(ref));
        return false;
    }
    return true;
}

void cpu_add(glm_backend *be, glm_tensor y, glm_tensor a, glm_tensor b)
{
    if (!cpu_expect_dtype(be, "add", "y", &y, GLM_F32) ||
        !cpu_expect_dtype(be, "add", "a", &a, GLM_F32) ||
        !cpu_expect_dtype(be, "add", "b", &b, GLM_F32) || !same_shape(be, "add", "a", &a, &y) ||
        !same_shape(be, "add", "b", &b, &y))
        return;
    int64_t n = glm_tensor_numel(&y);
    float *yd = y.data;
    const float *ad = a.data, *bd = b.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n > ELEMENTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        yd[i] = ad[i] + bd[i];
}

void cpu_scale(glm_backend *be, glm_tensor x, float s)
{
    if (!cpu_expect_dtype(be, "scale", "x", &x, GLM_F32)) return;
    int64_t n = glm_tensor_numel(&x);
    float *xd = x.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n > ELEMENTWISE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        xd[i] *= s;
}

void cpu_gelu(glm_backend *be, glm_tensor y, glm_tensor x)
{
    if (!cpu_expect_dtype(be, "gelu", "y", &y, GLM_F32) ||
        !cpu_expect_dtype(be, "gelu", "x", &x, GLM_F32) || !same_shape(be, "gelu", "x", &x, &y))
        return;
    int64_t n = glm_tensor_numel(&y);
    float *yd = y.data;
    const float *xd = x.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (n > ELEMENTWISE_PARALLEL_MIN / 8)
    for (int64_t i = 0; i < n; i++)
        yd[i] = cpu_gelu_scalar(xd[i]);
}

/* silu(a) = a / (1 + exp(-a)), as torch computes it in float32. */
void cpu_silu_mul(glm_backend *be, glm_tensor y, glm_tensor x)
{
    if (!cpu_expect_dtype(be, "silu_mul", "y", &y, GLM_F32)) return;
    int64_t rows = glm_tensor_rows(&y), f = glm_tensor_cols(&y);
    if (!cpu_expect_matrix(be, "silu_mul", "x", &x, GLM_F32, rows, 2 * f)) return;
    float *yd = y.data;
    const float *xd = x.data;
#pragma omp parallel for num_threads(cpu_threads(be)) if (rows * f > ELEMENTWISE_PARALLEL_MIN / 8)
    for (int64_t r = 0; r < rows; r++) {
        const float *a = xd + r * 2 * f, *b = a + f;
        float *yr = yd + r * f;
        for (int64_t i = 0; i < f; i++)
            yr[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
    }
}

void cpu_gelu_q8(glm_backend *be, glm_weight q, glm_tensor x)
{
    if (!cpu_expect_dtype(be, "gelu_q8", "x", &x, GLM_F32)) return;
    int64_t rows = glm_tensor_rows(&x), k = glm_tensor_cols(&x);
    if (!cpu_expect_act_fp8(be, "gelu_q8", &q, rows, k)) return;
    const float *xd = x.data;
    uint8_t *codes = q.data;
    bool failed = false;
#pragma omp parallel num_threads(cpu_threads(be)) if (rows * k > ELEMENTWISE_PARALLEL_MIN / 8)
    {
        float *g = malloc((size_t)k * sizeof(float));
        if (!g) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for
        for (int64_t r = 0; r < rows; r++) {
            if (!g) continue;
            for (int64_t i = 0; i < k; i++)
                g[i] = cpu_gelu_scalar(xd[r * k + i]);
            q.scales[r] = cpu_fp8_quantize_codes(g, k, codes + r * k);
        }
        free(g);
    }
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "gelu_q8: out of memory for a row");
}
