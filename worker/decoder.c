/* The GLM-4 decoder step, tensor-parallel, over the paged KV cache.
 *
 * ids -> vocab-parallel embedding (+ all-reduce) -> image rows spliced from the pool ->
 * per layer: RMSNorm -> QKV (this rank's heads) -> rotary -> KV store -> paged attention ->
 * dense (row-parallel, all-reduce) -> residual + RMSNorm (fused) -> gate/up -> SwiGLU -> down
 * (row-parallel, all-reduce) -> residual + next norm (fused) ... -> final norm -> the requested
 * rows -> vocab-parallel output layer -> logits gathered to rank 0. */
#include "worker/model_internal.h"
#include "worker/tp_ops.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"

static glm_tensor i32_view(const glm_tensor *t, int64_t n)
{
    return glm_tensor_1d(GLM_I32, n, t->data);
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
        while (t + run < p->n_tokens && p->image_rows[t + run] == p->image_rows[t] + run)
            run++;
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
    glm_tensor resid = glm_rows(&s->resid, T), hnorm = glm_rows(&s->hnorm, T);
    glm_tensor qkv = glm_rows(&s->qkv, T), attn = glm_rows(&s->attn, T);
    glm_tensor delta = glm_rows(&s->delta, T);

    /* hnorm holds RMSNorm(resid) with this layer's input_layernorm (see the end of the loop) */
    glm_op_linear(be, qkv, hnorm, L->qkv_w, cfg->add_qkv_bias ? &L->qkv_b : NULL, GLM_ACT_NONE);
    glm_op_rope_kv_store(be, qkv, i32_view(&s->positions, T), m->kv.k[l], m->kv.v[l],
                         i32_view(&s->slots, T), sp->q_heads, sp->kv_heads, hd, hd / 2,
                         10000.0f * cfg->rope_ratio);
    glm_op_attention_paged(be, attn, qkv, m->kv.k[l], m->kv.v[l], batch, sp->q_heads, sp->kv_heads,
                           hd, 1.0f / sqrtf((float)hd));
    glm_op_linear(be, delta, attn, L->dense_w, NULL, GLM_ACT_NONE);
    glm_status st = glm_tp_allreduce(m->comm, delta, "decoder all-reduce", err);
    if (st) return st;
    glm_op_add_rmsnorm(be, hnorm, resid, delta, L->post_norm, cfg->layernorm_epsilon);

    glm_tensor gate_up = glm_rows(&s->gate_up, T), act = glm_rows(&s->act, T);
    glm_op_linear(be, gate_up, hnorm, L->h_to_4h_w, NULL, GLM_ACT_NONE);
    glm_op_silu_mul(be, act, gate_up);
    glm_op_linear(be, delta, act, L->four_h_to_h_w, NULL, GLM_ACT_NONE);
    st = glm_tp_allreduce(m->comm, delta, "decoder all-reduce", err);
    if (st) return st;
    const glm_tensor *next_norm =
        l + 1 < cfg->num_layers ? &m->w.layers[l + 1].input_norm : &m->w.final_norm;
    glm_op_add_rmsnorm(be, hnorm, resid, delta, *next_norm, cfg->layernorm_epsilon);
    return GLM_OK;
}

static glm_status logits_to_host(glm_model *m, glm_tensor full, float *logits_host, glm_error *err);

/* The row order for reassembling n gathered logit rows (tp > 1), uploaded before the step's ops
 * (outside any graph capture). */
static void upload_reorder(glm_model *m, int64_t n)
{
    int64_t tp = m->plan.tp_size;
    if (tp <= 1 || n == 0) return;
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < tp; r++)
            m->host_reorder[i * tp + r] = (int32_t)(r * n + i);
    glm_tensor reorder = glm_tensor_1d(GLM_I32, n * tp, m->ds.reorder.data);
    upload_i32(m->be, &reorder, m->host_reorder, n * tp);
}

/* Output layer on the requested rows; vocab shards gathered and reassembled into [n, vocab]
 * rows on every rank, then copied to the host on rank 0. */
static glm_status compute_logits(glm_model *m, const glm_step_plan *p, float *logits_host,
                                 glm_tensor *out, glm_error *err)
{
    glm_backend *be = m->be;
    decoder_scratch *s = &m->ds;
    int64_t n = p->n_logit_rows, tp = m->plan.tp_size, vocab_local = m->plan.vocab;
    *out = (glm_tensor){0};
    if (n == 0) return GLM_OK;
    glm_tensor logit_in = glm_rows(&s->logit_in, n), logits = glm_rows(&s->logits, n);
    glm_op_gather_rows(be, logit_in, glm_rows(&s->hnorm, p->n_tokens), i32_view(&s->logit_rows, n));
    glm_op_linear(be, logits, logit_in, m->w.output, NULL, GLM_ACT_NONE);

    /* logits are f32 (model.c): bf16 logits would flip greedy choices closer than its spacing */
    glm_tensor full = glm_tensor_2d(s->logits.dtype, n, vocab_local * tp, s->logits_full.data);
    if (tp > 1) {
        glm_tensor all = glm_rows(&s->logits_all, tp * n);
        glm_status st = m->comm->ops->allgather(m->comm, all.data, logits.data,
                                                (size_t)(n * vocab_local), s->logits.dtype);
        if (st) return glm_fail(err, st, "logits all-gather: %s", m->comm->err.msg);
        /* all is [tp][n][vocab_local]; row i of full is the tp pieces of row i in rank order,
         * i.e. as [n * tp, vocab_local] rows, row i * tp + r comes from all row r * n + i */
        glm_tensor reorder = glm_tensor_1d(GLM_I32, n * tp, s->reorder.data);
        glm_tensor pieces = glm_tensor_2d(s->logits.dtype, n * tp, vocab_local, full.data);
        glm_op_gather_rows(be, pieces, all, reorder);
    } else {
        full = logits;
    }
    *out = full;
    return logits_to_host(m, full, logits_host, err);
}

/* Rank 0 copies rows of logits to the host as float32. */
static glm_status logits_to_host(glm_model *m, glm_tensor full, float *logits_host, glm_error *err)
{
    glm_backend *be = m->be;
    if (logits_host && m->plan.tp_rank == 0) {
        size_t count = (size_t)glm_tensor_numel(&full);
        if (full.dtype == GLM_F32) {
            glm_op_download(be, logits_host, full.data, count * sizeof(float));
        } else {
            void *tmp = malloc(count * glm_dtype_size(full.dtype));
            if (!tmp) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for logits");
            glm_op_download(be, tmp, full.data, count * glm_dtype_size(full.dtype));
            glm_convert(logits_host, GLM_F32, tmp, full.dtype, count);
            free(tmp);
        }
    }
    return GLM_OK;
}

/* Everything of a step after its index arrays are in device memory: embedding, layers, logits
 * (*logits_out: the step's logit rows in backend memory). */
static glm_status embed_layers_logits(glm_model *m, const glm_step_plan *p,
                                      const glm_attn_batch *batch, float *logits_host,
                                      glm_tensor *logits_out, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_model_config *cfg = &m->cfg;
    decoder_scratch *s = &m->ds;
    int64_t T = p->n_tokens;
    glm_tensor resid = glm_rows(&s->resid, T);
    glm_op_embedding(be, resid, m->w.embedding, i32_view(&s->ids, T), m->plan.vocab_first);
    glm_status st = glm_tp_allreduce(m->comm, resid, "decoder all-reduce", err);
    if (st) return st;
    if (p->image_rows) splice_images(m, p, resid);
    glm_op_rmsnorm(be, glm_rows(&s->hnorm, T), resid, m->w.layers[0].input_norm,
                   cfg->layernorm_epsilon);

    for (int l = 0; l < cfg->num_layers; l++) {
        st = decoder_layer(m, l, p, batch, err);
        if (st) return st;
    }
    /* hnorm now holds final_layernorm(resid) */
    return compute_logits(m, p, logits_host, logits_out, err);
}

/* ---- decode steps through CUDA graphs ----
 *
 * A decode-only step (every q_len 1, no image rows) whose logits stay on the device (logits_host
 * NULL: the caller draws tokens on the device sampler) is padded to a bucket of 1, 2, 4, ... 256 rows
 * (capped by max_seqs, max_step_tokens and max_logit_rows) and run as the graph captured for
 * that bucket on its second use (the first runs directly, see graph_state.warmed). Padding rows
 * are dummy sequences: token 0, position 0, KV slot -1 (kv_store skips negative slots), ctx_len 0
 * (decode attention writes zeros, reads no KV block) and a zero block-table row; their logit rows
 * repeat row 0 after the real ones, so the first n_logit_rows rows of the logits are the real
 * rows. Index arrays are uploaded into the model's
 * persistent device buffers (same addresses every step) before the replay, with the block table
 * at its full stride (max_blocks_per_seq of the model) and attention sized for the model's whole
 * context (max_ctx_len = max_blocks_per_seq * block_size, a capacity; the kernels read the real
 * ctx_len from device memory). Graph keys are the bucket plus a base distinct per model, and the
 * capture record lives in the model (m->graphs), so models sharing a backend stay apart. The path
 * needs a backend with graphs (be->caps.graphs; GLM4V_NO_GRAPHS=1 turns them off in the CUDA
 * backend, for measurements) and a communicator whose collectives a graph can hold
 * (comm->caps.graph_capturable: NCCL's, on the backend stream, are captured with the step). A
 * replay's collectives are waited on by the communicator's sync, under the step watchdog. */

#define GRAPH_KEY_BASE 4096
#define GRAPH_MAX_BUCKET 256
#define GRAPH_KEYS_PER_MODEL 512 /* > GRAPH_MAX_BUCKET */

/* A model's decode graphs: which buckets are captured, under which backend keys, and the host
 * staging of the padded index arrays. Owned by the model (m->graphs), freed with it. */
typedef struct graph_state {
    int key_base; /* distinct per model, so two models on one backend never replay each other's */
    bool captured[GRAPH_MAX_BUCKET + 1];
    /* a bucket's first step runs outside any capture, so that one-time work of its shapes (the
     * CUDA backend times cuBLASLt's candidates for each new GEMM shape) can run on the GPU */
    bool warmed[GRAPH_MAX_BUCKET + 1];
    int32_t *host; /* padded index arrays */
    size_t host_cap;
} graph_state;

static graph_state *graph_state_of(glm_model *m)
{
    if (!m->graphs) {
        /* the only process-wide value: a counter that hands each model its own key range */
        static int next_model = 0;
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        graph_state *g = calloc(1, sizeof(*g));
        if (!g) return NULL;
        pthread_mutex_lock(&lock);
        g->key_base = GRAPH_KEY_BASE + (next_model++ % 4096) * GRAPH_KEYS_PER_MODEL;
        pthread_mutex_unlock(&lock);
        m->graphs = g;
    }
    return m->graphs;
}

void glm_decoder_graphs_free(glm_model *m)
{
    graph_state *g = m->graphs;
    if (!g) return;
    for (int b = 1; b <= GRAPH_MAX_BUCKET; b++)
        if (g->captured[b] && m->be->ops->graph_drop)
            m->be->ops->graph_drop(m->be, g->key_base + b);
    free(g->host);
    free(g);
    m->graphs = NULL;
}

static int graph_bucket(const glm_model *m, int n)
{
    int cap = m->opt.max_seqs;
    if (m->opt.max_step_tokens < cap) cap = m->opt.max_step_tokens;
    int logit_cap = m->opt.max_logit_rows > 0 ? m->opt.max_logit_rows : m->opt.max_seqs;
    if (logit_cap < cap) cap = logit_cap;
    if (cap > GRAPH_MAX_BUCKET) cap = GRAPH_MAX_BUCKET;
    int b = 1;
    while (b < n)
        b *= 2;
    if (b > cap) b = cap;
    return b >= n ? b : 0;
}

/* Whether a step takes the padded decode path. With one rank that needs logits_host == NULL
 * too; with several (NCCL) ranks, only rank 0 sees logits_host, so every rank pads whenever the
 * plan allows it (the collectives must match), and rank 0 runs the padded step without a graph
 * when it wants logits on the host. */
static bool graph_eligible(const glm_model *m, const glm_step_plan *p, const float *logits_host)
{
    if (!m->be->caps.graphs || !m->comm->caps.graph_capturable) return false;
    if (logits_host && m->comm->size == 1) return false;
    if (p->n_seqs == 0 || p->n_tokens != p->n_seqs || p->q_start[0] != 0) return false;
    if (p->n_logit_rows > p->n_seqs || p->max_blocks_per_seq > m->max_blocks_per_seq) return false;
    for (int i = 0; i < p->n_seqs; i++)
        if (p->q_start[i + 1] - p->q_start[i] != 1 || p->ctx_len[i] < 1) return false;
    for (int t = 0; t < p->n_tokens; t++)
        if (p->image_rows[t] >= 0) return false;
    return graph_bucket(m, p->n_seqs) > 0;
}

static glm_status forward_graph(glm_model *m, const glm_step_plan *p, float *logits_host,
                                glm_tensor *out, glm_error *err)
{
    glm_backend *be = m->be;
    decoder_scratch *s = &m->ds;
    graph_state *g = graph_state_of(m);
    if (!g) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for decode graph state");
    int n = p->n_seqs, B = graph_bucket(m, n), mb = m->max_blocks_per_seq;
    size_t need = (size_t)6 * (B + 1) + (size_t)B * mb;
    if (g->host_cap < need) {
        int32_t *h = realloc(g->host, need * sizeof(int32_t));
        if (!h) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for decode graph arrays");
        g->host = h;
        g->host_cap = need;
    }
    int32_t *ids = g->host, *pos = ids + B, *slots = pos + B, *lrows = slots + B;
    int32_t *qs = lrows + B, *ctx = qs + B + 1, *table = ctx + B;
    memcpy(ids, p->token_ids, sizeof(int32_t) * n);
    memcpy(pos, p->positions, sizeof(int32_t) * n);
    memcpy(slots, p->slots, sizeof(int32_t) * n);
    memcpy(ctx, p->ctx_len, sizeof(int32_t) * n);
    int nl = p->n_logit_rows;
    memcpy(lrows, p->logit_rows, sizeof(int32_t) * nl);
    for (int i = n; i < B; i++)
        ids[i] = 0, pos[i] = 0, slots[i] = -1, ctx[i] = 0;
    for (int i = nl; i < B; i++)
        lrows[i] = nl > 0 ? lrows[0] : 0;
    for (int i = 0; i <= B; i++)
        qs[i] = i;
    memset(table, 0, sizeof(int32_t) * (size_t)B * mb);
    for (int i = 0; i < n; i++)
        memcpy(table + (size_t)i * mb, p->block_table + (size_t)i * p->max_blocks_per_seq,
               sizeof(int32_t) * p->max_blocks_per_seq);
    upload_i32(be, &s->ids, ids, B);
    upload_i32(be, &s->positions, pos, B);
    upload_i32(be, &s->slots, slots, B);
    upload_i32(be, &s->logit_rows, lrows, B);
    upload_i32(be, &s->q_start, qs, B + 1);
    upload_i32(be, &s->ctx_len, ctx, B);
    upload_i32(be, &s->block_table, table, (int64_t)B * mb);
    upload_reorder(m, B);

    /* the padded plan: only its sizes are read by the ops below (arrays live on the device) */
    glm_step_plan pp = *p;
    pp.n_seqs = B;
    pp.n_tokens = B;
    pp.n_logit_rows = B;
    pp.max_blocks_per_seq = mb;
    pp.image_rows = NULL;
    pp.token_ids = ids, pp.positions = pos, pp.slots = slots, pp.logit_rows = lrows;
    pp.q_start = qs, pp.ctx_len = ctx, pp.block_table = table;
    glm_attn_batch batch = {
        .n_seqs = B,
        .n_tokens = B,
        .block_size = m->kv.block_size,
        .max_blocks_per_seq = mb,
        .max_q_len = 1,
        .max_ctx_len = mb * m->kv.block_size,
        .q_start = s->q_start.data,
        .ctx_len = s->ctx_len.data,
        .block_table = s->block_table.data,
        .q_start_host = qs,
        .ctx_len_host = ctx,
    };
    int key = g->key_base + B;
    glm_status st = GLM_OK;
    glm_tensor full = glm_tensor_2d(s->logits.dtype, B, m->plan.vocab * m->plan.tp_size,
                                    m->plan.tp_size > 1 ? s->logits_full.data : s->logits.data);
    if (logits_host) { /* rank 0 of a TP group that wants host logits: padded, no graph */
        st = embed_layers_logits(m, &pp, &batch, NULL, out, err);
        if (st) return st;
        *out = nl > 0 ? glm_rows(&full, nl) : (glm_tensor){0};
        if (nl > 0) st = logits_to_host(m, *out, logits_host, err);
        if (st) return st;
        return glm_backend_take_error(be, err);
    }
    if (!g->captured[B] || !be->ops->graph_replay(be, key)) {
        st = glm_backend_take_error(be, err);
        if (st) return st;
        if (!g->warmed[B]) {
            g->warmed[B] = true;
            st = embed_layers_logits(m, &pp, &batch, NULL, out, err);
            if (!st) st = glm_backend_take_error(be, err);
        } else if (!be->ops->graph_begin(be, key)) {
            st = glm_backend_take_error(be, err);
            if (st) return st;
            /* no graph slot left: run directly */
            st = embed_layers_logits(m, &pp, &batch, NULL, out, err);
        } else {
            st = embed_layers_logits(m, &pp, &batch, NULL, out, err);
            be->ops->graph_end(be, key);
            if (!st) st = glm_backend_take_error(be, err);
            if (st) return st;
            g->captured[B] = true;
            if (!be->ops->graph_replay(be, key))
                return glm_fail(err, GLM_ERR_BACKEND, "decode graph %d: replay failed", B);
        }
        if (st) return st;
    }
    /* a replay's collectives had nobody waiting on them: wait here, under the step watchdog */
    if (m->comm->ops->sync && (st = m->comm->ops->sync(m->comm, "decode graph replay")))
        return glm_fail(err, st, "decode graph: %s", m->comm->err.msg);
    /* the bucket computed B rows (and a replay set nothing on the host): the real ones first */
    *out = nl > 0 ? glm_rows(&full, nl) : (glm_tensor){0};
    return glm_backend_take_error(be, err);
}

glm_status glm_decoder_forward(glm_model *m, const glm_step_plan *p, float *logits_host,
                               glm_tensor *logits, glm_error *err)
{
    glm_backend *be = m->be;
    decoder_scratch *s = &m->ds;
    int64_t T = p->n_tokens;
    *logits = (glm_tensor){0};
    if (T == 0) return GLM_OK;
    if (graph_eligible(m, p, logits_host)) return forward_graph(m, p, logits_host, logits, err);

    upload_i32(be, &s->ids, p->token_ids, T);
    upload_i32(be, &s->positions, p->positions, T);
    upload_i32(be, &s->slots, p->slots, T);
    upload_i32(be, &s->logit_rows, p->logit_rows, p->n_logit_rows);
    upload_i32(be, &s->q_start, p->q_start, p->n_seqs + 1);
    upload_i32(be, &s->ctx_len, p->ctx_len, p->n_seqs);
    upload_i32(be, &s->block_table, p->block_table, (int64_t)p->n_seqs * p->max_blocks_per_seq);
    upload_reorder(m, p->n_logit_rows);

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
    glm_status st = embed_layers_logits(m, p, &batch, logits_host, logits, err);
    if (st) return st;
    return glm_backend_take_error(be, err);
}
