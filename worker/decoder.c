/* The GLM-4 decoder step, tensor-parallel, over the paged KV cache.
 *
 * ids -> vocab-parallel embedding (+ all-reduce) -> image rows spliced from the pool ->
 * per layer: RMSNorm -> QKV (this rank's heads) -> rotary -> KV store -> paged attention ->
 * dense (row-parallel, all-reduce) -> residual + RMSNorm (fused) -> gate/up -> SwiGLU -> down
 * (row-parallel, all-reduce) -> residual + next norm (fused) ... -> final norm -> the requested
 * rows -> vocab-parallel output layer -> logits gathered to rank 0. */
#include "worker/model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"

static glm_tensor rows_of(const glm_tensor *t, int64_t n)
{
    return glm_tensor_row_view(t, 0, n);
}

static glm_tensor i32_view(const glm_tensor *t, int64_t n)
{
    return glm_tensor_1d(GLM_I32, n, t->data);
}

static glm_status allreduce(glm_model *m, glm_tensor t, glm_error *err)
{
    if (m->comm->size == 1) return GLM_OK;
    glm_status st =
        m->comm->ops->allreduce_sum(m->comm, t.data, (size_t)glm_tensor_numel(&t), t.dtype);
    if (st) return glm_fail(err, st, "decoder all-reduce: %s", m->comm->err.msg);
    return GLM_OK;
}

static void upload_i32(glm_backend *be, const glm_tensor *dst, const int32_t *src, int64_t n)
{
    if (n > 0) glm_op_upload(be, dst->data, src, (size_t)n * sizeof(int32_t));
}

/* Replaces the embedding rows of image positions by their pool rows, one copy per contiguous
 * run (an image's 1602 vectors are one run). */
static void splice_images(glm_model *m, const glm_step_plan *p, glm_tensor x)
{
    for (int t = 0; t < p->n_tokens;) {
        if (p->image_rows[t] < 0) {
            t++;
            continue;
        }
        int run = 1;
        while (t + run < p->n_tokens && p->image_rows[t + run] == p->image_rows[t] + run) run++;
        glm_op_copy_rows(m->be, x, t, m->image_pool, p->image_rows[t], run);
        t += run;
    }
}

static glm_status decoder_layer(glm_model *m, int l, const glm_step_plan *p,
                                const glm_attn_batch *batch, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_model_config *cfg = &m->cfg;
    const glm_decoder_layer_weights *L = &m->w.layers[l];
    const glm_shard_plan *sp = &m->plan;
    decoder_scratch *s = &m->ds;
    int64_t T = p->n_tokens;
    int hd = cfg->kv_channels;
    glm_tensor resid = rows_of(&s->resid, T), hnorm = rows_of(&s->hnorm, T);
    glm_tensor qkv = rows_of(&s->qkv, T), attn = rows_of(&s->attn, T);
    glm_tensor delta = rows_of(&s->delta, T);

    /* hnorm holds RMSNorm(resid) with this layer's input_layernorm (see the end of the loop) */
    glm_op_linear(be, qkv, hnorm, L->qkv_w, cfg->add_qkv_bias ? &L->qkv_b : NULL, GLM_ACT_NONE);
    glm_op_rope(be, qkv, i32_view(&s->positions, T), sp->q_heads, sp->kv_heads, hd, hd / 2,
                10000.0f * cfg->rope_ratio);
    glm_op_kv_store(be, m->kv.k[l], m->kv.v[l], qkv, i32_view(&s->slots, T), sp->q_heads,
                    sp->kv_heads, hd);
    glm_op_attention_paged(be, attn, qkv, m->kv.k[l], m->kv.v[l], batch, sp->q_heads,
                           sp->kv_heads, hd, 1.0f / sqrtf((float)hd));
    glm_op_linear(be, delta, attn, L->dense_w, NULL, GLM_ACT_NONE);
    glm_status st = allreduce(m, delta, err);
    if (st) return st;
    glm_op_add_rmsnorm(be, hnorm, resid, delta, L->post_norm, cfg->layernorm_epsilon);

    glm_tensor gate_up = rows_of(&s->gate_up, T), act = rows_of(&s->act, T);
    glm_op_linear(be, gate_up, hnorm, L->h_to_4h_w, NULL, GLM_ACT_NONE);
    glm_op_silu_mul(be, act, gate_up);
    glm_op_linear(be, delta, act, L->four_h_to_h_w, NULL, GLM_ACT_NONE);
    st = allreduce(m, delta, err);
    if (st) return st;
    const glm_tensor *next_norm =
        l + 1 < cfg->num_layers ? &m->w.layers[l + 1].input_norm : &m->w.final_norm;
    glm_op_add_rmsnorm(be, hnorm, resid, delta, *next_norm, cfg->layernorm_epsilon);
    return GLM_OK;
}

/* Output layer on the requested rows; vocab shards gathered and reassembled into [n, vocab]
 * rows on every rank, then copied to the host on rank 0. */
static glm_status compute_logits(glm_model *m, const glm_step_plan *p, float *logits_host,
                                 glm_error *err)
{
    glm_backend *be = m->be;
    decoder_scratch *s = &m->ds;
    int64_t n = p->n_logit_rows, tp = m->plan.tp_size, vocab_local = m->plan.vocab;
    m->last_logits = (glm_tensor){0};
    if (n == 0) return GLM_OK;
    glm_tensor logit_in = rows_of(&s->logit_in, n), logits = rows_of(&s->logits, n);
    glm_op_gather_rows(be, logit_in, rows_of(&s->hnorm, p->n_tokens), i32_view(&s->logit_rows, n));
    glm_op_linear(be, logits, logit_in, m->w.output, NULL, GLM_ACT_NONE);

    glm_tensor full = glm_tensor_2d(be->act_dtype, n, vocab_local * tp, s->logits_full.data);
    if (tp > 1) {
        glm_tensor all = rows_of(&s->logits_all, tp * n);
        glm_status st = m->comm->ops->allgather(m->comm, all.data, logits.data,
                                                (size_t)(n * vocab_local), be->act_dtype);
        if (st) return glm_fail(err, st, "logits all-gather: %s", m->comm->err.msg);
        /* all is [tp][n][vocab_local]; row i of full is the tp pieces of row i in rank order,
         * i.e. as [n * tp, vocab_local] rows, row i * tp + r comes from all row r * n + i */
        for (int64_t i = 0; i < n; i++)
            for (int64_t r = 0; r < tp; r++) m->host_reorder[i * tp + r] = (int32_t)(r * n + i);
        glm_tensor reorder = glm_tensor_1d(GLM_I32, n * tp, s->reorder.data);
        upload_i32(be, &reorder, m->host_reorder, n * tp);
        glm_tensor pieces = glm_tensor_2d(be->act_dtype, n * tp, vocab_local, full.data);
        glm_op_gather_rows(be, pieces, all, reorder);
    } else {
        full = logits;
    }
    m->last_logits = full;
    if (logits_host && m->plan.tp_rank == 0) {
        size_t count = (size_t)glm_tensor_numel(&full);
        if (be->act_dtype == GLM_F32) {
            glm_op_download(be, logits_host, full.data, count * sizeof(float));
        } else {
            void *tmp = malloc(count * glm_dtype_size(be->act_dtype));
            if (!tmp) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for logits");
            glm_op_download(be, tmp, full.data, count * glm_dtype_size(be->act_dtype));
            glm_convert(logits_host, GLM_F32, tmp, be->act_dtype, count);
            free(tmp);
        }
    }
    return GLM_OK;
}

glm_status glm_decoder_forward(glm_model *m, const glm_step_plan *p, float *logits_host,
                               glm_error *err)
{
    glm_backend *be = m->be;
    const glm_model_config *cfg = &m->cfg;
    decoder_scratch *s = &m->ds;
    int64_t T = p->n_tokens;
    if (T == 0) return GLM_OK;

    upload_i32(be, &s->ids, p->token_ids, T);
    upload_i32(be, &s->positions, p->positions, T);
    upload_i32(be, &s->slots, p->slots, T);
    upload_i32(be, &s->logit_rows, p->logit_rows, p->n_logit_rows);
    upload_i32(be, &s->q_start, p->q_start, p->n_seqs + 1);
    upload_i32(be, &s->ctx_len, p->ctx_len, p->n_seqs);
    upload_i32(be, &s->block_table, p->block_table, (int64_t)p->n_seqs * p->max_blocks_per_seq);

    int max_q = 0, max_ctx = 0;
    for (int i = 0; i < p->n_seqs; i++) {
        int q = p->q_start[i + 1] - p->q_start[i];
        if (q > max_q) max_q = q;
        if (p->ctx_len[i] > max_ctx) max_ctx = p->ctx_len[i];
    }
    glm_attn_batch batch = {
        .n_seqs = p->n_seqs,
        .n_tokens = p->n_tokens,
        .block_size = m->kv.block_size,
        .max_blocks_per_seq = p->max_blocks_per_seq,
        .max_q_len = max_q,
        .max_ctx_len = max_ctx,
        .q_start = s->q_start.data,
        .ctx_len = s->ctx_len.data,
        .block_table = s->block_table.data,
        .q_start_host = p->q_start,
        .ctx_len_host = p->ctx_len,
    };

    glm_tensor resid = rows_of(&s->resid, T);
    glm_op_embedding(be, resid, m->w.embedding, i32_view(&s->ids, T), m->plan.vocab_first);
    glm_status st = allreduce(m, resid, err);
    if (st) return st;
    splice_images(m, p, resid);
    glm_op_rmsnorm(be, rows_of(&s->hnorm, T), resid, m->w.layers[0].input_norm,
                   cfg->layernorm_epsilon);

    for (int l = 0; l < cfg->num_layers; l++) {
        st = decoder_layer(m, l, p, &batch, err);
        if (st) return st;
    }
    /* hnorm now holds final_layernorm(resid) */
    st = compute_logits(m, p, logits_host, err);
    if (st) return st;
    return glm_backend_take_error(be, err);
}
