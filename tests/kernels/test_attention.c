/* kv_store + attention_paged over shuffled block tables (decode rows, prefill chunks with prior
 * context, GQA ratios, head dims 16/24/112/128), attention_full (vision), and the index checks.
 * The reference takes each key from where it came from (pre-filled cache slot or this step's qkv
 * row), so it checks kv_store and the block-table addressing together. */
#include <math.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

/* out[hd] = softmax(scale q.k_j) v_j over keys[j], vals[j], in double */
static void attend_ref(double *out, const float *q, const float **keys, const float **vals, int n,
                       int hd, double scale)
{
    double *s = kt_doubles((size_t)n), max = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++) {
        double d = 0;
        for (int i = 0; i < hd; i++)
            d += (double)q[i] * keys[j][i];
        s[j] = d * scale;
        if (s[j] > max) max = s[j];
    }
    for (int j = 0; j < n; j++)
        sum += (s[j] = exp(s[j] - max));
    for (int i = 0; i < hd; i++) {
        double acc = 0;
        for (int j = 0; j < n; j++)
            acc += s[j] * vals[j][i];
        out[i] = acc / sum;
    }
    free(s);
}

typedef struct paged_case {
    int n_seqs, nq, nkv, hd, block_size, max_blocks;
    int q_len[8], ctx[8];
} paged_case;

static void shuffle(test_rng *rng, int32_t *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = test_rng_int(rng, 0, i);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void check_paged(glm_backend *be, test_rng *rng, const paged_case *c)
{
    int n_seqs = c->n_seqs, bs = c->block_size, hd = c->hd;
    int64_t kv_width = (int64_t)c->nkv * hd, q_width = (int64_t)c->nq * hd;
    int64_t width = q_width + 2 * kv_width;
    int32_t q_start[9] = {0}, ctx_len[8];
    int n_blocks_used = 0;
    for (int s = 0; s < n_seqs; s++) {
        q_start[s + 1] = q_start[s] + c->q_len[s];
        ctx_len[s] = c->ctx[s];
        n_blocks_used += (c->ctx[s] + bs - 1) / bs;
    }
    int n_tokens = q_start[n_seqs];
    /* a pool with spare blocks, handed out in shuffled order */
    int pool = n_blocks_used + 3;
    int64_t n_slots = (int64_t)pool * bs;
    int32_t *blocks = malloc((size_t)pool * sizeof(int32_t));
    for (int i = 0; i < pool; i++)
        blocks[i] = i;
    shuffle(rng, blocks, pool);
    int32_t *table = malloc((size_t)(n_seqs * c->max_blocks) * sizeof(int32_t));
    int next = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int b = 0; b < c->max_blocks; b++)
            table[s * c->max_blocks + b] = b * bs < c->ctx[s] ? blocks[next++] : 9999999;

    float *k_cache = kt_random(rng, (size_t)(n_slots * kv_width), 1.0);
    float *v_cache = kt_random(rng, (size_t)(n_slots * kv_width), 1.0);
    float *k_orig = malloc((size_t)(n_slots * kv_width) * sizeof(float));
    float *v_orig = malloc((size_t)(n_slots * kv_width) * sizeof(float));
    memcpy(k_orig, k_cache, (size_t)(n_slots * kv_width) * sizeof(float));
    memcpy(v_orig, v_cache, (size_t)(n_slots * kv_width) * sizeof(float));
    float *qkv = kt_random(rng, (size_t)(n_tokens * width), 1.0);
    int32_t *slots = malloc((size_t)(n_tokens ? n_tokens : 1) * sizeof(int32_t));
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < c->q_len[s]; i++) {
            int j = c->ctx[s] - c->q_len[s] + i;
            slots[q_start[s] + i] = table[s * c->max_blocks + j / bs] * bs + j % bs;
        }

    glm_tensor kt = glm_tensor_2d(GLM_F32, n_slots, kv_width, k_cache);
    glm_tensor vt = glm_tensor_2d(GLM_F32, n_slots, kv_width, v_cache);
    glm_tensor qkvt = glm_tensor_2d(GLM_F32, n_tokens, width, qkv);
    glm_op_kv_store(be, kt, vt, qkvt, glm_tensor_1d(GLM_I32, n_tokens, slots), c->nq, c->nkv, hd);
    kt_expect_ok(be, "kv_store");

    float *out = kt_poisoned((size_t)(n_tokens * q_width));
    int max_q = 0, max_ctx = 0;
    for (int s = 0; s < n_seqs; s++) {
        if (c->q_len[s] > max_q) max_q = c->q_len[s];
        if (c->ctx[s] > max_ctx) max_ctx = c->ctx[s];
    }
    glm_attn_batch batch = {.n_seqs = n_seqs,
                            .n_tokens = n_tokens,
                            .block_size = bs,
                            .max_blocks_per_seq = c->max_blocks,
                            .max_q_len = max_q + 1,
                            .max_ctx_len = max_ctx + 5,
                            .q_start = q_start,
                            .ctx_len = ctx_len,
                            .block_table = table,
                            .q_start_host = q_start,
                            .ctx_len_host = ctx_len};
    float scale = 1.0f / sqrtf((float)hd);
    glm_tensor outt = glm_tensor_2d(GLM_F32, n_tokens, q_width, out);
    glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
    kt_expect_ok(be, "attention_paged");

    double *ref = kt_doubles((size_t)(n_tokens * q_width));
    const float **keys = malloc((size_t)(max_ctx + 1) * sizeof(*keys));
    const float **vals = malloc((size_t)(max_ctx + 1) * sizeof(*vals));
    int group = c->nq / c->nkv;
    for (int s = 0; s < n_seqs; s++) {
        int first_new = c->ctx[s] - c->q_len[s];
        for (int h = 0; h < c->nq; h++) {
            int g = h / group;
            for (int j = 0; j < c->ctx[s]; j++) {
                if (j >= first_new) {
                    const float *row = qkv + (int64_t)(q_start[s] + j - first_new) * width;
                    keys[j] = row + q_width + (int64_t)g * hd;
                    vals[j] = row + q_width + kv_width + (int64_t)g * hd;
                } else {
                    int64_t slot = (int64_t)table[s * c->max_blocks + j / bs] * bs + j % bs;
                    keys[j] = k_orig + slot * kv_width + (int64_t)g * hd;
                    vals[j] = v_orig + slot * kv_width + (int64_t)g * hd;
                }
            }
            for (int i = 0; i < c->q_len[s]; i++) {
                int64_t t = q_start[s] + i;
                attend_ref(ref + t * q_width + (int64_t)h * hd, qkv + t * width + (int64_t)h * hd,
                           keys, vals, first_new + i + 1, hd, scale);
            }
        }
    }
    char what[160];
    snprintf(what, sizeof(what), "attention_paged seqs=%d nq=%d nkv=%d hd=%d bs=%d", n_seqs, c->nq,
             c->nkv, hd, bs);
    kt_close(what, out, ref, (size_t)(n_tokens * q_width), 1e-5, 2e-6);

    /* ---- the same batch made invalid in one place at a time; out must stay untouched ---- */
    if (n_tokens > 0) {
        kt_poison(out, (size_t)(n_tokens * q_width));
        int32_t saved = table[0];
        table[0] = pool; /* block past the cache */
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged block past the cache");
        table[0] = -1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged negative block");
        table[0] = saved;
        CHECK(isnan(out[0]));

        ctx_len[0] = c->max_blocks * bs + 1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged ctx past the block table");
        ctx_len[0] = c->q_len[0] - 1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, c->q_len[0] > 0 ? GLM_ERR_SHAPE : GLM_OK,
                        "attention_paged ctx < q_len");
        ctx_len[0] = c->ctx[0];

        batch.n_tokens = n_tokens + 1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged n_tokens");
        batch.n_tokens = n_tokens;
        q_start[n_seqs] += 1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged q_start end");
        q_start[n_seqs] -= 1;
        glm_op_attention_paged(be, outt, qkvt, kt, vt, &batch, c->nq + 1, c->nkv, hd, scale);
        kt_expect_error(be, GLM_ERR_SHAPE, "attention_paged head count");

        slots[n_tokens - 1] = (int32_t)n_slots;
        glm_op_kv_store(be, kt, vt, qkvt, glm_tensor_1d(GLM_I32, n_tokens, slots), c->nq, c->nkv,
                        hd);
        kt_expect_error(be, GLM_ERR_SHAPE, "kv_store slot past the cache");
        slots[n_tokens - 1] = -1;
        glm_op_kv_store(be, kt, vt, qkvt, glm_tensor_1d(GLM_I32, n_tokens, slots), c->nq, c->nkv,
                        hd);
        kt_expect_error(be, GLM_ERR_SHAPE, "kv_store negative slot");
        CHECK(isnan(out[0]));
    }
    free(blocks), free(table), free(k_cache), free(v_cache), free(k_orig), free(v_orig);
    free(qkv), free(slots), free(out), free(ref), free(keys), free(vals);
}

static void random_paged(glm_backend *be, test_rng *rng, int nq, int nkv, int hd)
{
    paged_case c = {.nq = nq, .nkv = nkv, .hd = hd};
    const int block_sizes[] = {1, 3, 4, 16};
    c.block_size = block_sizes[test_rng_int(rng, 0, 3)];
    c.n_seqs = test_rng_int(rng, 1, 5);
    int max_ctx = 0;
    for (int s = 0; s < c.n_seqs; s++) {
        int kind = test_rng_int(rng, 0, 2);
        if (kind == 0) { /* decode */
            c.q_len[s] = 1;
            c.ctx[s] = test_rng_int(rng, 1, 90);
        } else if (kind == 1) { /* first prefill chunk */
            c.q_len[s] = test_rng_int(rng, 1, 20);
            c.ctx[s] = c.q_len[s];
        } else { /* later chunk after prior context */
            c.q_len[s] = test_rng_int(rng, 1, 20);
            c.ctx[s] = c.q_len[s] + test_rng_int(rng, 1, 60);
        }
        if (c.ctx[s] > max_ctx) max_ctx = c.ctx[s];
    }
    c.max_blocks = (max_ctx + c.block_size - 1) / c.block_size + test_rng_int(rng, 0, 2);
    check_paged(be, rng, &c);
}

static void check_full(glm_backend *be, test_rng *rng, int n_seqs, int seq_len, int n_heads, int hd)
{
    int64_t q_width = (int64_t)n_heads * hd, width = 3 * q_width, rows = (int64_t)n_seqs * seq_len;
    float *qkv = kt_random(rng, (size_t)(rows * width), 1.0);
    float *out = kt_poisoned((size_t)(rows * q_width));
    double *ref = kt_doubles((size_t)(rows * q_width));
    const float **keys = malloc((size_t)seq_len * sizeof(*keys));
    const float **vals = malloc((size_t)seq_len * sizeof(*vals));
    float scale = 1.0f / sqrtf((float)hd);
    for (int s = 0; s < n_seqs; s++)
        for (int h = 0; h < n_heads; h++) {
            for (int j = 0; j < seq_len; j++) {
                const float *row = qkv + ((int64_t)s * seq_len + j) * width;
                keys[j] = row + q_width + (int64_t)h * hd;
                vals[j] = row + 2 * q_width + (int64_t)h * hd;
            }
            for (int i = 0; i < seq_len; i++) {
                int64_t t = (int64_t)s * seq_len + i;
                attend_ref(ref + t * q_width + (int64_t)h * hd, qkv + t * width + (int64_t)h * hd,
                           keys, vals, seq_len, hd, scale);
            }
        }
    glm_op_attention_full(be, glm_tensor_2d(GLM_F32, rows, q_width, out),
                          glm_tensor_2d(GLM_F32, rows, width, qkv), n_seqs, seq_len, n_heads, hd,
                          scale);
    kt_expect_ok(be, "attention_full");
    char what[128];
    snprintf(what, sizeof(what), "attention_full seqs=%d len=%d heads=%d hd=%d", n_seqs, seq_len,
             n_heads, hd);
    kt_close(what, out, ref, (size_t)(rows * q_width), 1e-5, 2e-6);
    glm_op_attention_full(be, glm_tensor_2d(GLM_F32, rows, q_width, out),
                          glm_tensor_2d(GLM_F32, rows, width, qkv), n_seqs + 1, seq_len, n_heads,
                          hd, scale);
    kt_expect_error(be, GLM_ERR_SHAPE, "attention_full rows");
    free(qkv), free(out), free(ref), free(keys), free(vals);
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, 2024);
    glm_backend *be = kt_backend(0);
    const int head_dims[] = {16, 24, 112, 128};
    const int ratios[][2] = {{1, 1}, {4, 1}, {8, 2}, {6, 3}, {4, 4}, {16, 1}};
    for (int i = 0; i < 24; i++)
        random_paged(be, &rng, ratios[i % 6][0], ratios[i % 6][1], head_dims[i % 4]);
    /* one long decode context with a block size that does not divide it */
    paged_case c = {.n_seqs = 2,
                    .nq = 4,
                    .nkv = 2,
                    .hd = 128,
                    .block_size = 7,
                    .max_blocks = 300,
                    .q_len = {1, 5},
                    .ctx = {2000, 900}};
    check_paged(be, &rng, &c);
    check_full(be, &rng, 1, 1, 1, 16);
    check_full(be, &rng, 2, 10, 4, 112);
    check_full(be, &rng, 3, 37, 4, 12);
    check_full(be, &rng, 1, 65, 2, 24);
    glm_backend_destroy(be);
    return test_finish("test_kernels_attention");
}
