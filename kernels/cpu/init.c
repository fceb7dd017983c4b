/* Random weight initialisation: element i of the tensor is mean + std * N(0,1) drawn from the
 * counter-based generator of kernels/sample_rng.h, so every backend makes the same values. */
#include "kernels/cpu/cpu_internal.h"
#include "kernels/sample_rng.h"

void cpu_fill_normal(glm_backend *be, glm_tensor t, uint64_t seed, float mean, float std)
{
    if (!cpu_expect_dtype(be, "fill_normal", "t", &t, GLM_F32)) return;
    float *x = t.data;
    int64_t n = glm_tensor_numel(&t);
#pragma omp parallel for schedule(static) num_threads(cpu_threads(be))
    for (int64_t i = 0; i < n; i++)
        x[i] = std == 0.0f ? mean : mean + std * glm_fill_normal_value(seed, (uint64_t)i);
}
