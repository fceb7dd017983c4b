/* The counter-based random numbers every backend uses, so that a request's sampled tokens depend
 * only on (seed, step, logits): never on which other requests share its batch, nor on the
 * backend. Also the generator behind fill_normal's random weights. Usable from CUDA code. */
#ifndef GLM4V_SAMPLE_RNG_H
#define GLM4V_SAMPLE_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GLM_HOST_DEVICE __host__ __device__
#else
#define GLM_HOST_DEVICE
#endif

/* splitmix64's output function (Steele, Lea, Flood 2014). */
GLM_HOST_DEVICE static inline uint64_t glm_sample_mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The one uniform number of a draw: u = top 24 bits of mix64(mix64(seed) ^ step) * 2^-24, in
 * [0, 1) and exact in float32. */
GLM_HOST_DEVICE static inline float glm_sample_uniform(uint64_t seed, uint64_t step)
{
    uint64_t h = glm_sample_mix64(glm_sample_mix64(seed) ^ step);
    return (float)(h >> 40) * 0x1p-24f;
}

/* Element i of fill_normal(seed): a standard normal from two uniforms (Box-Muller). */
GLM_HOST_DEVICE static inline float glm_fill_normal_value(uint64_t seed, uint64_t i)
{
    uint64_t h = glm_sample_mix64(glm_sample_mix64(seed) ^ i);
    float u1 = ((float)(h >> 40) + 1.0f) * 0x1p-24f; /* (0, 1] */
    float u2 = (float)(h & 0xffffff) * 0x1p-24f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

#endif
