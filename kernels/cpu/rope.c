/* GLM rotary embedding, in place on the q and k heads of fused qkv rows.
 *
 * Within each head only the first rope_dim dims rotate, as interleaved pairs (d[2i], d[2i+1]):
 *   out0 = x0 cos - x1 sin,  out1 = x1 cos + x0 sin,  angle = pos * inv_freq[i].
 * The angle follows the float32 arithmetic of the reference (ChatGLM's RotaryEmbedding):
 *   inv_freq[i] = 1 / theta^((float)(2i) / rope_dim)   all float32
 *   angle       = (float)pos * inv_freq[i]             float32, then cosf / sinf
 * so a large position rounds exactly as it does there. */
#include <math.h>

#include "kernels/cpu/cpu_internal.h"

#define ROPE_MAX_DIM 1024

void cpu_rope(glm_backend *be, glm_tensor qkv, glm_tensor positions, int n_q_heads, int n_kv_heads,
              int head_dim, int rope_dim, float theta)
{
    const char *op = "rope";
    if (n_q_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || rope_dim < 0 || rope_dim % 2 ||
        rope_dim > head_dim || rope_dim > ROPE_MAX_DIM || !(theta > 0.0f)) {
        glm_backend_fail(be, GLM_ERR_SHAPE,
                         "rope: bad heads %d/%d, head_dim %d, rope_dim %d, theta %g", n_q_heads,
                         n_kv_heads, head_dim, rope_dim, (double)theta);
        return;
    }
    int64_t width = (int64_t)(n_q_heads + 2 * n_kv_heads) * head_dim;
    if (!cpu_expect_dtype(be, op, "positions", &positions, GLM_I32)) return;
    int64_t n_tokens = glm_tensor_numel(&positions);
    if (!cpu_expect_matrix(be, op, "qkv", &qkv, GLM_F32, n_tokens, width)) return;
    if (rope_dim == 0 || n_tokens == 0) return;

    int half = rope_dim / 2;
    float inv_freq[ROPE_MAX_DIM / 2];
    for (int i = 0; i < half; i++)
        inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)rope_dim);

    const int32_t *pos = positions.data;
    float *data = qkv.data;
    int n_rot_heads = n_q_heads + n_kv_heads; /* q heads then k heads, contiguous */
#pragma omp parallel for num_threads(cpu_threads(be)) if (n_tokens * n_rot_heads * half > 16384)
    for (int64_t t = 0; t < n_tokens; t++) {
        float cs[ROPE_MAX_DIM]; /* cos, sin per pair */
        float p = (float)pos[t];
        for (int i = 0; i < half; i++) {
            float angle = p * inv_freq[i];
            cs[2 * i] = cosf(angle);
            cs[2 * i + 1] = sinf(angle);
        }
        float *row = data + t * width;
        for (int h = 0; h < n_rot_heads; h++) {
            float *x = row + (int64_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float x0 = x[2 * i], x1 = x[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
                x[2 * i] = x0 * c - x1 * s;
                x[2 * i + 1] = x1 * c + x0 * s;
            }
        }
    }
}
