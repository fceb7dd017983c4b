/* Sampling one token per row of logits, with optional top-n logprobs.
 *
 * Per row r with p = params[r], l = the raw logits (NaN counts as -inf):
 *  - a row with no finite maximum (every logit NaN or -inf, or one +inf: an activation overflowed
 *    upstream) draws nothing: id -1, and its logprobs are NaN / (-1, -inf); the caller fails
 *    that sequence alone.
 *  - p.temperature <= 0 (or NaN): greedy, the id of the largest logit, ties to the lowest id.
 *  - otherwise candidates are ordered by (logit descending, id ascending); weights are
 *    e_i = expf(l_i / T - max_j(l_j / T)) in float32 (softmax up to its normalizer).
 *    top_k > 0 keeps the first k candidates. top_p < 1 then keeps the shortest prefix of that
 *    order whose summed weight (double) reaches top_p times the weight kept by top-k (at least
 *    one token). With no filter every id is kept.
 *  - the draw: u = glm_sample_uniform(p.seed, step) (sample.h: splitmix64 of seed, xor step,
 *    splitmix64 again, top 24 bits); walk the kept ids in ASCENDING ID order summing e_i in
 *    double; the token is the first id whose running sum exceeds u * (total kept weight), the
 *    last kept id if rounding leaves none. Depends on (seed, step, row) only.
 * Logprobs are log_softmax of the raw logits (log-sum-exp in double); the top n are listed in
 * candidate order. Layout: see GLM_SAMPLE_LOGPROBS_STRIDE in sample.h.
 */
#include "kernels/cpu/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

typedef struct candidate {
    float logit;
    int32_t id;
} candidate;

static bool ranks_before(const candidate *a, const candidate *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int compare_rank(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

static int compare_id(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    return (a->id > b->id) - (a->id < b->id);
}

/* Quickselect: reorders c[0, n) so that c[0, k) are the k best-ranked entries, in any order. */
static void select_best(candidate *c, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        candidate pivot = c[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (ranks_before(&c[i], &pivot))
                i++;
            while (ranks_before(&pivot, &c[j]))
                j--;
            if (i <= j) {
                candidate t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            break;
    }
}

/* Candidates of a row with NaN mapped to -inf, so the ordering is total. */
static void load_candidates(candidate *c, const float *logits, int64_t vocab)
{
    for (int64_t i = 0; i < vocab; i++) {
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
        c[i].id = (int32_t)i;
    }
}

static int32_t argmax(const candidate *c, int64_t vocab)
{
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
        if (c[i].logit > c[best].logit) best = i;
    return c[best].id;
}

/* Draws one id of the row per the rules at the top of the file. c is scratch of vocab entries. */
static int32_t draw(candidate *c, int64_t vocab, const glm_sample_params *p, uint64_t step)
{
    int32_t best = argmax(c, vocab);
    float max_logit = c[best].logit, t = p->temperature;
    if (!isfinite(max_logit)) return -1;
    if (!(t > 0.0f)) return best;
    float z_max = max_logit / t;
    int64_t n_keep = vocab;
    bool filtered = false;
    if (p->top_k > 0 && p->top_k < vocab) {
        n_keep = p->top_k;
        select_best(c, vocab, n_keep);
        filtered = true;
    }
    if (p->top_p < 1.0f) {
        qsort(c, (size_t)n_keep, sizeof(candidate), compare_rank);
        double kept = 0.0;
        for (int64_t i = 0; i < n_keep; i++)
            kept += expf(c[i].logit / t - z_max);
        double target = (double)p->top_p * kept, cum = 0.0;
        int64_t n = 0;
        while (n < n_keep) {
            cum += expf(c[n++].logit / t - z_max);
            if (cum >= target) break;
        }
        n_keep = n > 0 ? n : 1;
        filtered = true;
    }
    if (filtered) qsort(c, (size_t)n_keep, sizeof(candidate), compare_id);
    /* c[0, n_keep) now holds the kept ids in ascending order (all of them when unfiltered). */
    double total = 0.0;
    for (int64_t i = 0; i < n_keep; i++)
        total += expf(c[i].logit / t - z_max);
    double target = (double)glm_sample_uniform(p->seed, step) * total, cum = 0.0;
    for (int64_t i = 0; i < n_keep; i++) {
        cum += expf(c[i].logit / t - z_max);
        if (cum > target) return c[i].id;
    }
    return c[n_keep - 1].id;
}

/* out: [chosen logprob, id0, lp0, ...] for the top n_logprobs ids. c is scratch. */
static void write_logprobs(float *out, candidate *c, const float *logits, int64_t vocab,
                           int32_t chosen, int n_logprobs)
{
    load_candidates(c, logits, vocab);
    float max = c[argmax(c, vocab)].logit;
    double sum = 0.0;
    if (isfinite(max))
        for (int64_t i = 0; i < vocab; i++)
            sum += exp((double)c[i].logit - (double)max);
    /* all -inf (or NaN): every logprob is -inf; a +inf logit makes the rest NaN, as in torch */
    double lse = isfinite(max) ? (double)max + log(sum) : max < 0 ? 0.0 : (double)max;
    out[0] = (float)((double)c[chosen].logit - lse);
    int64_t n = n_logprobs < vocab ? n_logprobs : vocab;
    if (n > 0) {
        select_best(c, vocab, n);
        qsort(c, (size_t)n, sizeof(candidate), compare_rank);
    }
    for (int64_t i = 0; i < GLM_SAMPLE_MAX_LOGPROBS; i++) {
        out[1 + 2 * i] = i < n ? (float)c[i].id : -1.0f;
        out[2 + 2 * i] = i < n ? (float)((double)c[i].logit - lse) : -INFINITY;
    }
}

void cpu_sample(glm_backend *be, int32_t *ids_host, float *logprobs_host, glm_tensor logits,
                const glm_sample_params *params, int n_rows, uint64_t step)
{
    const char *op = "sample";
    if (!cpu_expect_dtype(be, op, "logits", &logits, GLM_F32)) return;
    int64_t vocab = glm_tensor_cols(&logits);
    if (n_rows < 0 || n_rows > glm_tensor_rows(&logits) || vocab < 1 || vocab > INT32_MAX ||
        (n_rows > 0 && (!ids_host || !params))) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %d rows of logits [%lld, %lld]", op, n_rows,
                         (long long)glm_tensor_rows(&logits), (long long)vocab);
        return;
    }
    for (int r = 0; r < n_rows; r++) {
        if (params[r].n_logprobs < 0 || params[r].n_logprobs > GLM_SAMPLE_MAX_LOGPROBS) {
            glm_backend_fail(be, GLM_ERR_LIMIT, "%s: row %d asks for %d logprobs (max %d)", op, r,
                             params[r].n_logprobs, GLM_SAMPLE_MAX_LOGPROBS);
            return;
        }
    }
    const float *ld = logits.data;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1)                                                      \
    num_threads(cpu_threads(be)) if (n_rows > 1 && vocab >= 4096)
    for (int r = 0; r < n_rows; r++) {
        const float *row = ld + (int64_t)r * vocab;
        candidate *c = malloc((size_t)vocab * sizeof(candidate));
        if (!c) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        load_candidates(c, row, vocab);
        ids_host[r] = draw(c, vocab, &params[r], step);
        float *out = logprobs_host ? logprobs_host + (int64_t)r * GLM_SAMPLE_LOGPROBS_STRIDE : NULL;
        if (out && ids_host[r] >= 0) {
            write_logprobs(out, c, row, vocab, ids_host[r], params[r].n_logprobs);
        } else if (out) {
            out[0] = NAN;
            for (int i = 0; i < GLM_SAMPLE_MAX_LOGPROBS; i++) {
                out[1 + 2 * i] = -1.0f;
                out[2 + 2 * i] = -INFINITY;
            }
        }
        free(c);
    }
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory", op);
}
