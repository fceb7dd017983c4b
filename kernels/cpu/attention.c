/* Attention: kv_store into the paged cache, causal decoder attention over it, and the
 * bidirectional per-sequence attention of the vision tower.
 *
 * Both attentions reduce to one routine, attend(): one query vector against n keys whose rows
 * are listed in a row-index array (cache slots for the paged cache, token rows for vision), with
 * float32 softmax after max subtraction. Work items are (query row, head) pairs spread over the
 * threads; each thread mallocs its score and row-index scratch once per call, sized by the
 * longest sequence of the call, and rebuilds the row list only when it moves to another sequence.
 * Everything is validated on the host before the parallel region, so a bad block table or
 * q_start fails the op without reading outside the cache.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

#define ATTN_MAX_HEAD_DIM 1024

/* out[hd] = softmax_j(scale * q . k_j) v_j over the n keys at k_base + rows[j] * stride. */
static void attend(const float *q, const float *k_base, const float *v_base, int64_t stride,
                   const int64_t *rows, int64_t n, int hd, float scale, float *scores, float *out)
{
    float max = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        float s = scale * cpu_dot(q, k_base + rows[j] * stride, hd);
        scores[j] = s;
        if (s > max) max = s;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        float e = expf(scores[j] - max);
        scores[j] = e;
        sum += e;
    }
    float acc[ATTN_MAX_HEAD_DIM];
    memset(acc, 0, (size_t)hd * sizeof(float));
    for (int64_t j = 0; j < n; j++)
        cpu_axpy(acc, scores[j], v_base + rows[j] * stride, hd);
    float inv = n > 0 ? 1.0f / sum : 0.0f;
    for (int d = 0; d < hd; d++)
        out[d] = acc[d] * inv;
}

static bool check_heads(glm_backend *be, const char *op, int n_q_heads, int n_kv_heads,
                        int head_dim)
{
    if (n_q_heads <= 0 || n_kv_heads <= 0 || n_q_heads % n_kv_heads || head_dim <= 0 ||
        head_dim > ATTN_MAX_HEAD_DIM) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: bad heads: %d q, %d kv, head_dim %d", op,
                         n_q_heads, n_kv_heads, head_dim);
        return false;
    }
    return true;
}

void cpu_kv_store(glm_backend *be, glm_tensor k_cache, glm_tensor v_cache, glm_tensor qkv,
                  glm_tensor slots, int n_q_heads, int n_kv_heads, int head_dim)
{
    const char *op = "kv_store";
    if (!check_heads(be, op, n_q_heads, n_kv_heads, head_dim)) return;
    int64_t kv_width = (int64_t)n_kv_heads * head_dim;
    int64_t width = (int64_t)n_q_heads * head_dim + 2 * kv_width;
    if (!cpu_expect_dtype(be, op, "slots", &slots, GLM_I32)) return;
    int64_t n = glm_tensor_numel(&slots);
    if (!cpu_expect_matrix(be, op, "qkv", &qkv, GLM_F32, n, width) ||
        !cpu_expect_matrix(be, op, "k_cache", &k_cache, GLM_F32, -1, kv_width))
        return;
    int64_t n_slots = glm_tensor_rows(&k_cache);
    if (!cpu_expect_matrix(be, op, "v_cache", &v_cache, GLM_F32, n_slots, kv_width)) return;
    const int32_t *sd = slots.data;
    for (int64_t t = 0; t < n; t++) {
        if (sd[t] < 0 || sd[t] >= n_slots) {
            glm_backend_fail(be, GLM_ERR_SHAPE, "kv_store: slots[%lld] = %d outside [0, %lld)",
                             (long long)t, (int)sd[t], (long long)n_slots);
            return;
        }
    }
    const float *src = qkv.data;
    float *kd = k_cache.data, *vd = v_cache.data;
    size_t bytes = (size_t)kv_width * sizeof(float);
    for (int64_t t = 0; t < n; t++) {
        const float *k = src + t * width + (int64_t)n_q_heads * head_dim;
        memcpy(kd + (int64_t)sd[t] * kv_width, k, bytes);
        memcpy(vd + (int64_t)sd[t] * kv_width, k + kv_width, bytes);
    }
}

/* Checks batch against itself and the cache; returns the longest ctx_len, or -1 after failing. */
static int64_t check_batch(glm_backend *be, const glm_attn_batch *b, int64_t n_tokens,
                           int64_t n_slots)
{
    const char *op = "attention_paged";
    if (!b || b->n_seqs < 0 || b->block_size <= 0 || b->max_blocks_per_seq < 0 ||
        b->n_tokens != n_tokens || (b->n_seqs > 0 && (!b->q_start || !b->ctx_len)) ||
        (b->n_seqs == 0 && n_tokens != 0)) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: malformed batch (n_tokens %lld vs qkv rows %lld)",
                         op, b ? (long long)b->n_tokens : -1LL, (long long)n_tokens);
        return -1;
    }
    if (b->n_seqs > 0 && b->q_start[0] != 0) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: q_start[0] = %d", op, (int)b->q_start[0]);
        return -1;
    }
    int64_t max_ctx = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        int64_t q_len = (int64_t)b->q_start[s + 1] - b->q_start[s], ctx = b->ctx_len[s];
        int64_t capacity = (int64_t)b->max_blocks_per_seq * b->block_size;
        if (q_len < 0 || q_len > b->max_q_len || ctx < q_len || ctx > capacity ||
            ctx > b->max_ctx_len) {
            glm_backend_fail(be, GLM_ERR_SHAPE,
                             "%s: seq %d has q_len %lld, ctx_len %lld (max_q_len %d, max_ctx_len "
                             "%d, capacity %lld)",
                             op, s, (long long)q_len, (long long)ctx, b->max_q_len, b->max_ctx_len,
                             (long long)capacity);
            return -1;
        }
        if ((b->q_start_host && b->q_start_host[s + 1] != b->q_start[s + 1]) ||
            (b->ctx_len_host && b->ctx_len_host[s] != b->ctx_len[s])) {
            glm_backend_fail(be, GLM_ERR_SHAPE, "%s: host and backend copies of seq %d differ", op,
                             s);
            return -1;
        }
        int64_t n_blocks = (ctx + b->block_size - 1) / b->block_size;
        for (int64_t i = 0; i < n_blocks; i++) {
            if (!b->block_table) {
                glm_backend_fail(be, GLM_ERR_SHAPE, "%s: no block table", op);
                return -1;
            }
            int64_t block = b->block_table[(int64_t)s * b->max_blocks_per_seq + i];
            int64_t used =
                ctx - i * b->block_size < b->block_size ? ctx - i * b->block_size : b->block_size;
            if (block < 0 || block * b->block_size + used > n_slots) {
                glm_backend_fail(be, GLM_ERR_SHAPE,
                                 "%s: seq %d block %lld = %lld outside a cache of %lld slots", op,
                                 s, (long long)i, (long long)block, (long long)n_slots);
                return -1;
            }
        }
        if (ctx > max_ctx) max_ctx = ctx;
    }
    if (b->n_seqs > 0 && b->q_start[b->n_seqs] != n_tokens) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: q_start[%d] = %d, expected n_tokens %lld", op,
                         b->n_seqs, (int)b->q_start[b->n_seqs], (long long)n_tokens);
        return -1;
    }
    return max_ctx;
}

void cpu_attention_paged(glm_backend *be, glm_tensor out, glm_tensor qkv, glm_tensor k_cache,
                         glm_tensor v_cache, const glm_attn_batch *batch, int n_q_heads,
                         int n_kv_heads, int head_dim, float scale)
{
    const char *op = "attention_paged";
    if (!check_heads(be, op, n_q_heads, n_kv_heads, head_dim)) return;
    int64_t kv_width = (int64_t)n_kv_heads * head_dim, q_width = (int64_t)n_q_heads * head_dim;
    int64_t width = q_width + 2 * kv_width;
    if (!cpu_expect_dtype(be, op, "qkv", &qkv, GLM_F32)) return;
    int64_t n_tokens = glm_tensor_rows(&qkv);
    if (!cpu_expect_matrix(be, op, "qkv", &qkv, GLM_F32, n_tokens, width) ||
        !cpu_expect_matrix(be, op, "out", &out, GLM_F32, n_tokens, q_width) ||
        !cpu_expect_matrix(be, op, "k_cache", &k_cache, GLM_F32, -1, kv_width))
        return;
    int64_t n_slots = glm_tensor_rows(&k_cache);
    if (!cpu_expect_matrix(be, op, "v_cache", &v_cache, GLM_F32, n_slots, kv_width)) return;
    int64_t max_ctx = check_batch(be, batch, n_tokens, n_slots);
    if (max_ctx < 0 || n_tokens == 0) return;

    int *token_seq = malloc((size_t)n_tokens * sizeof(int));
    if (!token_seq) {
        glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory", op);
        return;
    }
    for (int s = 0; s < batch->n_seqs; s++)
        for (int32_t t = batch->q_start[s]; t < batch->q_start[s + 1]; t++)
            token_seq[t] = s;

    const float *qd = qkv.data, *kd = k_cache.data, *vd = v_cache.data;
    float *od = out.data;
    int group = n_q_heads / n_kv_heads, bs = batch->block_size;
    int64_t n_items = n_tokens * n_q_heads;
    int failed = 0;
    double work = (double)n_items * (double)max_ctx * head_dim;
#pragma omp parallel num_threads(cpu_threads(be)) if (work > 65536.0)
    {
        float *scores = malloc((size_t)(max_ctx ? max_ctx : 1) * sizeof(float));
        int64_t *rows = malloc((size_t)(max_ctx ? max_ctx : 1) * sizeof(int64_t));
        int cur_seq = -1;
        if (!scores || !rows) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t item = 0; item < n_items; item++) {
            if (!scores || !rows) continue;
            int64_t t = item / n_q_heads;
            int h = (int)(item % n_q_heads), s = token_seq[t];
            int64_t ctx = batch->ctx_len[s], q_len = batch->q_start[s + 1] - batch->q_start[s];
            if (s != cur_seq) {
                const int32_t *table = batch->block_table + (int64_t)s * batch->max_blocks_per_seq;
                for (int64_t j = 0; j < ctx; j++)
                    rows[j] = (int64_t)table[j / bs] * bs + j % bs;
                cur_seq = s;
            }
            int64_t n_keys = ctx - q_len + (t - batch->q_start[s]) + 1;
            int g = h / group;
            attend(qd + t * width + (int64_t)h * head_dim, kd + (int64_t)g * head_dim,
                   vd + (int64_t)g * head_dim, kv_width, rows, n_keys, head_dim, scale, scores,
                   od + t * q_width + (int64_t)h * head_dim);
        }
        free(scores);
        free(rows);
    }
    free(token_seq);
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory", op);
}

void cpu_attention_full(glm_backend *be, glm_tensor out, glm_tensor qkv, int n_seqs, int seq_len,
                        int n_heads, int head_dim, float scale)
{
    const char *op = "attention_full";
    if (!check_heads(be, op, n_heads, n_heads, head_dim)) return;
    if (n_seqs < 0 || seq_len < 0) {
        glm_backend_fail(be, GLM_ERR_SHAPE, "%s: %d seqs of %d rows", op, n_seqs, seq_len);
        return;
    }
    int64_t q_width = (int64_t)n_heads * head_dim, width = 3 * q_width;
    int64_t n_rows = (int64_t)n_seqs * seq_len;
    if (!cpu_expect_matrix(be, op, "qkv", &qkv, GLM_F32, n_rows, width) ||
        !cpu_expect_matrix(be, op, "out", &out, GLM_F32, n_rows, q_width))
        return;
    if (n_rows == 0) return;

    const float *qd = qkv.data;
    float *od = out.data;
    int64_t n_items = n_rows * n_heads;
    int failed = 0;
    double work = (double)n_items * (double)seq_len * head_dim;
#pragma omp parallel num_threads(cpu_threads(be)) if (work > 65536.0)
    {
        float *scores = malloc((size_t)seq_len * sizeof(float));
        int64_t *rows = malloc((size_t)seq_len * sizeof(int64_t));
        int cur_seq = -1;
        if (!scores || !rows) {
#pragma omp atomic write
            failed = 1;
        }
        /* items ordered (seq, head, query) so neighbouring items read the same keys */
#pragma omp for schedule(static)
        for (int64_t item = 0; item < n_items; item++) {
            if (!scores || !rows) continue;
            int s = (int)(item / ((int64_t)n_heads * seq_len));
            int64_t rem = item % ((int64_t)n_heads * seq_len);
            int h = (int)(rem / seq_len);
            int64_t i = rem % seq_len, t = (int64_t)s * seq_len + i;
            if (s != cur_seq) {
                for (int64_t j = 0; j < seq_len; j++)
                    rows[j] = (int64_t)s * seq_len + j;
                cur_seq = s;
            }
            const float *q = qd + t * width + (int64_t)h * head_dim;
            attend(q, qd + q_width + (int64_t)h * head_dim,
                   qd + 2 * q_width + (int64_t)h * head_dim, width, rows, seq_len, head_dim, scale,
                   scores, od + t * q_width + (int64_t)h * head_dim);
        }
        free(scores);
        free(rows);
    }
    if (failed) glm_backend_fail(be, GLM_ERR_NOMEM, "%s: out of memory", op);
}
