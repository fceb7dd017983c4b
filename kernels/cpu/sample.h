/* Token sampling of the CPU backend, and the counter-based random draw every backend must
 * reproduce so that a request's tokens depend only on (seed, step, logits), never on which other
 * requests share its batch or on the backend. */
#ifndef GLM4V_CPU_SAMPLE_H
#define GLM4V_CPU_SAMPLE_H

#include <stdint.h>

/* Row stride of glm_op_sample's logprobs output: per row r, at logprobs + r *
 * GLM_SAMPLE_LOGPROBS_STRIDE, [chosen logprob, id0, lp0, id1, lp1, ...] with
 * GLM_SAMPLE_MAX_LOGPROBS pairs reserved; pairs past params[r].n_logprobs hold (-1, -inf). Ids are
 * stored as floats (exact below 2^24). */
#define GLM_SAMPLE_MAX_LOGPROBS 20
#define GLM_SAMPLE_LOGPROBS_STRIDE (1 + 2 * GLM_SAMPLE_MAX_LOGPROBS)

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static inline uint64_t glm_sample_mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The one uniform number of a draw: u = top 24 bits of mix64(mix64(seed) ^ step) * 2^-24, in
 * [0, 1) and exact in float32. */
static inline float glm_sample_uniform(uint64_t seed, uint64_t step)
{
    uint64_t h = glm_sample_mix64(glm_sample_mix64(seed) ^ step);
    return (float)(h >> 40) * 0x1p-24f;
}

#endif
