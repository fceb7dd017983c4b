/* GLM rotary: interleaved pairs over the first rope_dim dims of each q and k head, v untouched.
 * The reference forms inv_freq and the angle in float32 exactly as the documented semantics
 * (and the PyTorch model) do, then rotates in double. */
#include <math.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static void check_case(glm_backend *be, test_rng *rng, int64_t n_tokens, int nq, int nkv, int hd,
                       int rope_dim, float theta, int max_pos)
{
    int64_t width = (int64_t)(nq + 2 * nkv) * hd;
    size_t n = (size_t)(n_tokens * width);
    float *qkv = kt_random(rng, n, 1.0), *orig = malloc(n * sizeof(float));
    memcpy(orig, qkv, n * sizeof(float));
    int32_t *pos = malloc((size_t)n_tokens * sizeof(int32_t));
    for (int64_t t = 0; t < n_tokens; t++)
        pos[t] = test_rng_int(rng, 0, max_pos);
    double *ref = kt_doubles(n);
    for (size_t i = 0; i < n; i++)
        ref[i] = orig[i];
    for (int64_t t = 0; t < n_tokens; t++)
        for (int h = 0; h < nq + nkv; h++) {
            double *x = ref + t * width + (int64_t)h * hd;
            for (int i = 0; i < rope_dim / 2; i++) {
                float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)rope_dim);
                float angle = (float)pos[t] * inv_freq;
                double c = cos((double)angle), s = sin((double)angle);
                double x0 = x[2 * i], x1 = x[2 * i + 1];
                x[2 * i] = x0 * c - x1 * s;
                x[2 * i + 1] = x1 * c + x0 * s;
            }
        }
    glm_op_rope(be, glm_tensor_2d(GLM_F32, n_tokens, width, qkv),
                glm_tensor_1d(GLM_I32, n_tokens, pos), nq, nkv, hd, rope_dim, theta);
    kt_expect_ok(be, "rope");
    char what[128];
    snprintf(what, sizeof(what), "rope T=%lld nq=%d nkv=%d hd=%d rope_dim=%d", (long long)n_tokens,
             nq, nkv, hd, rope_dim);
    kt_close(what, qkv, ref, n, 1e-6, 1e-6);
    /* unrotated dims and the v heads are bit-exact copies */
    bool untouched = true;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t c = 0; c < width; c++) {
            int64_t h = c / hd, d = c % hd;
            if (h >= nq + nkv || d >= rope_dim)
                untouched &= memcmp(&qkv[t * width + c], &orig[t * width + c], 4) == 0;
        }
    CHECK_MSG(untouched, "%s: dims outside the rotation changed", what);
    free(qkv), free(orig), free(pos), free(ref);
}

/* Independent of the reference above: position 0 is the identity, and rotating by p then by q
 * over a pure pair equals a single rotation by p + q in the closed form. */
static void check_identity(glm_backend *be)
{
    float row[3 * 8];
    for (int i = 0; i < 24; i++)
        row[i] = (float)(i + 1);
    float copy[24];
    memcpy(copy, row, sizeof(row));
    int32_t pos = 0;
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 1, 24, row), glm_tensor_1d(GLM_I32, 1, &pos), 1, 1, 8, 8,
                10000.0f);
    kt_equal("rope at position 0", row, copy, 24);
    /* pair 0 has inv_freq 1: angle = pos exactly */
    float pair[3 * 2] = {1.0f, 0.0f, 0.0f, 1.0f, 5.0f, 6.0f};
    pos = 1;
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 1, 6, pair), glm_tensor_1d(GLM_I32, 1, &pos), 1, 1, 2, 2,
                10000.0f);
    double ref[6] = {cos(1.0), sin(1.0), -sin(1.0), cos(1.0), 5.0, 6.0};
    kt_close("rope of unit vectors", pair, ref, 6, 1e-7, 1e-7);
}

static void check_errors(glm_backend *be)
{
    float buf[64] = {0};
    int32_t pos[2] = {0, 1};
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 2, 16, buf), glm_tensor_1d(GLM_I32, 2, pos), 2, 1, 4, 3,
                10000.0f);
    kt_expect_error(be, GLM_ERR_SHAPE, "rope odd rope_dim");
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 2, 16, buf), glm_tensor_1d(GLM_I32, 2, pos), 2, 1, 4, 8,
                10000.0f);
    kt_expect_error(be, GLM_ERR_SHAPE, "rope rope_dim > head_dim");
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 2, 12, buf), glm_tensor_1d(GLM_I32, 2, pos), 2, 1, 4, 4,
                10000.0f);
    kt_expect_error(be, GLM_ERR_SHAPE, "rope qkv width");
    glm_op_rope(be, glm_tensor_2d(GLM_F32, 2, 16, buf), glm_tensor_1d(GLM_I32, 1, pos), 2, 1, 4, 4,
                10000.0f);
    kt_expect_error(be, GLM_ERR_SHAPE, "rope positions length");
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 321);
    glm_backend *be = kt_backend(0);
    /* the real model: 32 q / 2 kv heads of 128, 64 rotating dims, large positions */
    check_case(be, &rng, 33, 32, 2, 128, 64, 10000.0f, 8191);
    /* tiny checkpoints: heads of 24 with rope_ratio 4 */
    check_case(be, &rng, 17, 8, 2, 24, 12, 40000.0f, 2047);
    check_case(be, &rng, 1, 4, 4, 16, 16, 10000.0f, 100);
    check_case(be, &rng, 3, 6, 3, 112, 56, 10000.0f, 5000);
    check_case(be, &rng, 100, 2, 1, 8, 0, 10000.0f, 50);
    for (int i = 0; i < 10; i++) {
        int nkv = test_rng_int(&rng, 1, 3), hd = 2 * test_rng_int(&rng, 1, 40);
        int rope_dim = 2 * test_rng_int(&rng, 0, hd / 2);
        check_case(be, &rng, test_rng_int(&rng, 1, 40), nkv * test_rng_int(&rng, 1, 4), nkv, hd,
                   rope_dim, 10000.0f, 4096);
    }
    check_identity(be);
    check_errors(be);
    glm_backend_destroy(be);
    return test_finish("test_kernels_rope");
}
