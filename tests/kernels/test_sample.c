/* sample: greedy == argmax (ties to the lowest id), seeded draws reproducible and independent of
 * the batch, top_k = 1 == greedy, draw frequencies match softmax(l / T) (chi-square with fixed
 * seeds), top-k and top-p restrict the support, logprobs == log_softmax of the raw logits. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/sample.h"
#include "tests/kernels/kernel_test.h"

static int32_t sample_one(glm_backend *be, const float *logits, int vocab, glm_sample_params p,
                          uint64_t step)
{
    int32_t id = -7;
    GLM_OP(be, sample, &id, NULL, glm_tensor_2d(GLM_F32, 1, vocab, (void *)logits), &p, 1, step);
    return id;
}

static void check_greedy(glm_backend *be, test_rng *rng)
{
    int vocab = 1000, rows = 6;
    float *logits = kt_random(rng, (size_t)(rows * vocab), 3.0);
    logits[2 * vocab + 10] = logits[2 * vocab + 500] = 100.0f; /* tie: lowest id wins */
    logits[3 * vocab + 7] = NAN;                               /* NaN never wins */
    glm_sample_params params[6];
    for (int r = 0; r < rows; r++)
        params[r] = (glm_sample_params){
            .temperature = r % 2 ? 0.0f : -1.0f, .top_p = 1.0f, .seed = (uint64_t)r};
    int32_t ids[6];
    GLM_OP(be, sample, ids, NULL, glm_tensor_2d(GLM_F32, rows, vocab, logits), params, rows, 3);
    kt_expect_ok(be, "greedy");
    for (int r = 0; r < rows; r++) {
        int best = 0;
        for (int i = 1; i < vocab; i++)
            if (logits[r * vocab + i] > logits[r * vocab + best]) best = i;
        CHECK_MSG(ids[r] == best, "greedy row %d: %d, argmax %d", r, ids[r], best);
    }
    CHECK(ids[2] == 10);
    /* top_k = 1 at any temperature is greedy */
    for (int r = 0; r < rows; r++) {
        glm_sample_params p = {.temperature = 1.5f, .top_k = 1, .top_p = 1.0f, .seed = 99};
        CHECK(sample_one(be, logits + r * vocab, vocab, p, (uint64_t)r) == ids[r]);
    }
    free(logits);
}

static void check_reproducible(glm_backend *be, test_rng *rng)
{
    int vocab = 5000, rows = 5;
    float *logits = kt_random(rng, (size_t)(rows * vocab), 2.0);
    glm_sample_params params[5];
    for (int r = 0; r < rows; r++)
        params[r] = (glm_sample_params){.temperature = 1.0f,
                                        .top_k = r == 1 ? 50 : 0,
                                        .top_p = r == 2 ? 0.9f : 1.0f,
                                        .seed = 1000 + (uint64_t)r};
    int32_t a[5], b[5];
    glm_tensor lt = glm_tensor_2d(GLM_F32, rows, vocab, logits);
    GLM_OP(be, sample, a, NULL, lt, params, rows, 42);
    GLM_OP(be, sample, b, NULL, lt, params, rows, 42);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    /* each row alone gives the same id as inside the batch */
    for (int r = 0; r < rows; r++)
        CHECK_MSG(sample_one(be, logits + r * vocab, vocab, params[r], 42) == a[r], "row %d", r);
    /* another step or seed changes the draw somewhere */
    int changed = 0;
    for (uint64_t step = 43; step < 53; step++)
        changed += sample_one(be, logits, vocab, params[0], step) != a[0];
    CHECK(changed > 0);
    kt_expect_ok(be, "reproducible");
    free(logits);
}

/* Draws n_draws tokens over (seed, step) pairs and returns the chi-square statistic against
 * probabilities expected[]; counts outside support (expected 0) are returned in *outside. */
static double chi_square(glm_backend *be, const float *logits, int vocab, glm_sample_params p,
                         const double *expected, int n_draws, int *outside)
{
    int counts[64] = {0};
    *outside = 0;
    for (int i = 0; i < n_draws; i++) {
        p.seed = 7 + (uint64_t)(i / 1000);
        int32_t id = sample_one(be, logits, vocab, p, (uint64_t)(i % 1000));
        if (id < 0 || id >= vocab) {
            (*outside)++;
            continue;
        }
        counts[id]++;
    }
    double chi2 = 0;
    for (int i = 0; i < vocab; i++) {
        if (expected[i] == 0) {
            *outside += counts[i];
            continue;
        }
        double e = expected[i] * n_draws;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi2;
}

static void softmax_ref(double *p, const float *l, int vocab, double t)
{
    double max = -INFINITY, sum = 0;
    for (int i = 0; i < vocab; i++)
        max = fmax(max, l[i] / t);
    for (int i = 0; i < vocab; i++)
        sum += (p[i] = exp(l[i] / t - max));
    for (int i = 0; i < vocab; i++)
        p[i] /= sum;
}

static void check_distribution(glm_backend *be)
{
    /* 8 ids, distinct logits in a known order: 3 > 0 > 5 > 1 > 7 > 2 > 6 > 4 */
    const float logits[8] = {1.0f, 0.2f, -0.5f, 1.6f, -1.5f, 0.5f, -0.9f, -0.1f};
    double expected[8];
    int n = 20000, outside = 0;
    /* plain temperature sampling: 7 degrees of freedom, 99.99% quantile 29.9 */
    softmax_ref(expected, logits, 8, 0.7);
    glm_sample_params p = {.temperature = 0.7f, .top_p = 1.0f};
    double chi2 = chi_square(be, logits, 8, p, expected, n, &outside);
    CHECK_MSG(chi2 < 29.9 && outside == 0, "temperature 0.7: chi2 %.2f, %d outside", chi2, outside);

    /* top_k = 3 keeps {3, 0, 5}, renormalized; 2 dof, 99.99% quantile 18.4 */
    double full[8];
    softmax_ref(full, logits, 8, 1.0);
    memset(expected, 0, sizeof(expected));
    double kept = full[3] + full[0] + full[5];
    expected[3] = full[3] / kept, expected[0] = full[0] / kept, expected[5] = full[5] / kept;
    p = (glm_sample_params){.temperature = 1.0f, .top_k = 3, .top_p = 1.0f};
    chi2 = chi_square(be, logits, 8, p, expected, n, &outside);
    CHECK_MSG(chi2 < 18.4 && outside == 0, "top_k 3: chi2 %.2f, %d outside", chi2, outside);

    /* top_p: probabilities at T = 1 are 0.390 (id 3), 0.214 (0), 0.130 (5), 0.096 (1), ...;
     * top_p = 0.7 needs 3 ids (0.390 + 0.214 = 0.605 < 0.7 <= 0.735) */
    CHECK(full[3] + full[0] < 0.7 && full[3] + full[0] + full[5] >= 0.7);
    p = (glm_sample_params){.temperature = 1.0f, .top_p = 0.7f};
    chi2 = chi_square(be, logits, 8, p, expected, n, &outside);
    CHECK_MSG(chi2 < 18.4 && outside == 0, "top_p 0.7: chi2 %.2f, %d outside", chi2, outside);

    /* top_k then top_p on the renormalized top-k: top_k 3 gives 3/0/5 = 0.531/0.292/0.177, so
     * top_p 0.8 keeps {3, 0}; 1 dof, 99.99% quantile 15.1 */
    memset(expected, 0, sizeof(expected));
    expected[3] = full[3] / (full[3] + full[0]), expected[0] = full[0] / (full[3] + full[0]);
    p = (glm_sample_params){.temperature = 1.0f, .top_k = 3, .top_p = 0.8f};
    chi2 = chi_square(be, logits, 8, p, expected, n, &outside);
    CHECK_MSG(chi2 < 15.1 && outside == 0, "top_k 3 + top_p 0.8: chi2 %.2f, %d outside", chi2,
              outside);

    /* a tiny top_p keeps only the most likely id */
    p = (glm_sample_params){.temperature = 2.0f, .top_p = 0.01f};
    bool all_best = true;
    for (uint64_t step = 0; step < 200; step++)
        all_best &= sample_one(be, logits, 8, p, step) == 3;
    CHECK(all_best);
    kt_expect_ok(be, "distribution");
}

static void check_logprobs(glm_backend *be, test_rng *rng)
{
    int vocab = 300, rows = 3;
    float *logits = kt_random(rng, (size_t)(rows * vocab), 2.0);
    glm_sample_params params[3] = {
        {.temperature = 0.0f, .top_p = 1.0f, .n_logprobs = 5},
        {.temperature = 0.8f, .top_p = 1.0f, .seed = 5, .n_logprobs = GLM_SAMPLE_MAX_LOGPROBS},
        {.temperature = 1.0f, .top_k = 10, .top_p = 0.9f, .seed = 6, .n_logprobs = 0},
    };
    float *lp = kt_poisoned((size_t)rows * GLM_SAMPLE_LOGPROBS_STRIDE);
    int32_t ids[3];
    GLM_OP(be, sample, ids, lp, glm_tensor_2d(GLM_F32, rows, vocab, logits), params, rows, 9);
    kt_expect_ok(be, "logprobs");
    for (int r = 0; r < rows; r++) {
        const float *l = logits + r * vocab, *out = lp + r * GLM_SAMPLE_LOGPROBS_STRIDE;
        double max = -INFINITY, sum = 0;
        for (int i = 0; i < vocab; i++)
            max = fmax(max, l[i]);
        for (int i = 0; i < vocab; i++)
            sum += exp(l[i] - max);
        double lse = max + log(sum);
        CHECK_MSG(fabs(out[0] - (l[ids[r]] - lse)) < 1e-5, "row %d chosen logprob", r);
        /* the top n, in order of decreasing logit, then (-1, -inf) padding */
        bool used[300] = {false}, ok = true;
        for (int k = 0; k < GLM_SAMPLE_MAX_LOGPROBS; k++) {
            float id = out[1 + 2 * k], v = out[2 + 2 * k];
            if (k >= params[r].n_logprobs) {
                ok &= id == -1.0f && v == -INFINITY;
                continue;
            }
            int best = -1;
            for (int i = 0; i < vocab; i++)
                if (!used[i] && (best < 0 || l[i] > l[best])) best = i;
            if (best < 0) break;
            used[best] = true;
            ok &= id == (float)best && fabs(v - (l[best] - lse)) < 1e-5;
        }
        CHECK_MSG(ok, "row %d top logprobs", r);
    }
    params[0].n_logprobs = GLM_SAMPLE_MAX_LOGPROBS + 1;
    GLM_OP(be, sample, ids, lp, glm_tensor_2d(GLM_F32, rows, vocab, logits), params, rows, 9);
    kt_expect_error(be, GLM_ERR_LIMIT, "too many logprobs");
    GLM_OP(be, sample, ids, lp, glm_tensor_2d(GLM_F32, rows, vocab, logits), params, rows + 1, 9);
    kt_expect_error(be, GLM_ERR_SHAPE, "more rows than logits");
    free(logits), free(lp);
}

/* A row with no finite maximum (every logit NaN, or one +inf: what an overflow upstream leaves)
 * draws nothing: id -1 and a NaN logprob, greedy or not; the rows beside it are drawn as usual. */
static void check_non_finite_rows(glm_backend *be, test_rng *rng)
{
    int vocab = 200, rows = 4;
    float *logits = kt_random(rng, (size_t)(rows * vocab), 2.0);
    for (int i = 0; i < vocab; i++)
        logits[vocab + i] = NAN;
    logits[3 * vocab + 17] = INFINITY;
    glm_sample_params params[4];
    for (int r = 0; r < rows; r++)
        params[r] = (glm_sample_params){
            .temperature = r % 2 ? 0.7f : 0.0f, .top_p = 1.0f, .seed = 9, .n_logprobs = 2};
    int32_t ids[4];
    float *lp = kt_poisoned((size_t)rows * GLM_SAMPLE_LOGPROBS_STRIDE);
    GLM_OP(be, sample, ids, lp, glm_tensor_2d(GLM_F32, rows, vocab, logits), params, rows, 1);
    kt_expect_ok(be, "non-finite rows");
    for (int r = 0; r < rows; r++) {
        const float *out = lp + r * GLM_SAMPLE_LOGPROBS_STRIDE;
        if (r == 1 || r == 3)
            CHECK_MSG(ids[r] == -1 && isnan(out[0]) && out[1] == -1.0f && out[2] == -INFINITY,
                      "row %d: id %d, logprob %g", r, ids[r], out[0]);
        else
            CHECK_MSG(ids[r] >= 0 && ids[r] < vocab && isfinite(out[0]), "row %d: id %d", r,
                      ids[r]);
    }
    free(logits);
    free(lp);
}

/* The draw is fixed by (seed, step): pin a few values so a port (CUDA) can check against them. */
static void check_rng(void)
{
    CHECK(glm_sample_mix64(0) == 0xE220A8397B1DCDAFull);
    float u0 = glm_sample_uniform(0, 0), u1 = glm_sample_uniform(0, 1);
    CHECK(u0 >= 0.0f && u0 < 1.0f && u1 >= 0.0f && u1 < 1.0f && u0 != u1);
    double mean = 0;
    for (uint64_t s = 0; s < 10000; s++)
        mean += glm_sample_uniform(12345, s);
    mean /= 10000;
    CHECK_MSG(fabs(mean - 0.5) < 0.01, "uniform mean %.4f", mean);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 31337);
    glm_backend *be = kt_backend(0);
    check_rng();
    check_greedy(be, &rng);
    check_reproducible(be, &rng);
    check_distribution(be);
    check_logprobs(be, &rng);
    check_non_finite_rows(be, &rng);
    glm_backend_destroy(be);
    return test_finish("test_kernels_sample");
}
