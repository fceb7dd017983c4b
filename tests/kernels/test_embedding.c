/* embedding (vocab shards, -1 image slots), copy_rows and gather_rows, with range errors. */
#include <math.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static void check_embedding(glm_backend *be, test_rng *rng, int64_t vocab_rows, int64_t h,
                            int64_t n, int64_t vocab_start)
{
    float *table = kt_random(rng, (size_t)(vocab_rows * h), 1.0);
    float *y = kt_poisoned((size_t)(n * h)), *ref = malloc((size_t)(n * h) * sizeof(float));
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    for (int64_t t = 0; t < n; t++) {
        /* ids inside the shard, in other shards, and -1 image slots */
        int kind = test_rng_int(rng, 0, 3);
        ids[t] = kind == 0   ? -1
                 : kind == 1 ? test_rng_int(rng, 0, (int)(vocab_start + 2 * vocab_rows))
                             : (int32_t)(vocab_start + test_rng_int(rng, 0, (int)vocab_rows - 1));
        int64_t row = ids[t] - vocab_start;
        for (int64_t i = 0; i < h; i++)
            ref[t * h + i] = row >= 0 && row < vocab_rows ? table[row * h + i] : 0.0f;
    }
    glm_op_embedding(be, glm_tensor_2d(GLM_F32, n, h, y),
                     glm_tensor_2d(GLM_F32, vocab_rows, h, table), glm_tensor_1d(GLM_I32, n, ids),
                     vocab_start);
    kt_expect_ok(be, "embedding");
    kt_equal("embedding", y, ref, (size_t)(n * h));
    free(table), free(y), free(ref), free(ids);
}

static void check_rows(glm_backend *be, test_rng *rng, int64_t src_rows, int64_t cols)
{
    float *src = kt_random(rng, (size_t)(src_rows * cols), 1.0);
    int64_t dst_rows = src_rows + 5;
    float *dst = kt_random(rng, (size_t)(dst_rows * cols), 1.0);
    float *ref = malloc((size_t)(dst_rows * cols) * sizeof(float));
    memcpy(ref, dst, (size_t)(dst_rows * cols) * sizeof(float));
    int64_t n = test_rng_int(rng, 0, (int)src_rows), s0 = test_rng_int(rng, 0, (int)(src_rows - n));
    int64_t d0 = test_rng_int(rng, 0, (int)(dst_rows - n));
    memcpy(ref + d0 * cols, src + s0 * cols, (size_t)(n * cols) * sizeof(float));
    glm_tensor dt = glm_tensor_2d(GLM_F32, dst_rows, cols, dst);
    glm_tensor st = glm_tensor_2d(GLM_F32, src_rows, cols, src);
    glm_op_copy_rows(be, dt, d0, st, s0, n);
    kt_expect_ok(be, "copy_rows");
    kt_equal("copy_rows", dst, ref, (size_t)(dst_rows * cols));
    glm_op_copy_rows(be, dt, dst_rows - n + 1, st, 0, n);
    kt_expect_error(be, GLM_ERR_SHAPE, "copy_rows past dst end");
    glm_op_copy_rows(be, dt, 0, st, src_rows - n + 1, n);
    kt_expect_error(be, GLM_ERR_SHAPE, "copy_rows past src end");
    glm_op_copy_rows(be, dt, -1, st, 0, 1);
    kt_expect_error(be, GLM_ERR_SHAPE, "copy_rows negative row");
    glm_op_copy_rows(be, glm_tensor_2d(GLM_F32, dst_rows * cols, 1, dst), 0, st, 0, 1);
    kt_expect_error(be, cols == 1 ? GLM_OK : GLM_ERR_SHAPE, "copy_rows width");

    /* gather_rows with repeats, then an index past the end and a negative one */
    int64_t n_idx = test_rng_int(rng, 1, 40);
    int32_t *idx = malloc((size_t)n_idx * sizeof(int32_t));
    float *y = kt_poisoned((size_t)(n_idx * cols)), *yref = malloc((size_t)(n_idx * cols) * 4);
    for (int64_t i = 0; i < n_idx; i++) {
        idx[i] = test_rng_int(rng, 0, (int)src_rows - 1);
        memcpy(yref + i * cols, src + idx[i] * cols, (size_t)cols * sizeof(float));
    }
    glm_tensor yt = glm_tensor_2d(GLM_F32, n_idx, cols, y);
    glm_tensor it = glm_tensor_1d(GLM_I32, n_idx, idx);
    glm_op_gather_rows(be, yt, st, it);
    kt_expect_ok(be, "gather_rows");
    kt_equal("gather_rows", y, yref, (size_t)(n_idx * cols));
    idx[n_idx - 1] = (int32_t)src_rows;
    glm_op_gather_rows(be, yt, st, it);
    kt_expect_error(be, GLM_ERR_SHAPE, "gather_rows index past end");
    idx[0] = -1;
    glm_op_gather_rows(be, yt, st, it);
    kt_expect_error(be, GLM_ERR_SHAPE, "gather_rows negative index");
    free(src), free(dst), free(ref), free(idx), free(y), free(yref);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 5);
    glm_backend *be = kt_backend(0);
    const int64_t sizes[] = {1, 3, 17, 33, 100};
    for (int i = 0; i < 20; i++) {
        int64_t v = sizes[test_rng_int(&rng, 0, 4)], h = sizes[test_rng_int(&rng, 0, 4)];
        int64_t n = sizes[test_rng_int(&rng, 0, 4)];
        check_embedding(be, &rng, v, h, n, i % 2 ? 0 : v * test_rng_int(&rng, 1, 3));
        check_rows(be, &rng, v, h);
    }
    check_embedding(be, &rng, 500, 300, 700, 0); /* threaded */
    float buf[16] = {0};
    int32_t ids[2] = {0, 1};
    glm_op_embedding(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 3, buf),
                     glm_tensor_1d(GLM_I32, 2, ids), 0);
    kt_expect_error(be, GLM_ERR_SHAPE, "embedding width");
    glm_op_embedding(be, glm_tensor_2d(GLM_F32, 2, 4, buf), glm_tensor_2d(GLM_F32, 2, 4, buf),
                     glm_tensor_1d(GLM_F32, 2, ids), 0);
    kt_expect_error(be, GLM_ERR_SHAPE, "embedding id dtype");
    glm_backend_destroy(be);
    return test_finish("test_kernels_embedding");
}
