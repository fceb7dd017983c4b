/* Model lifetime: shard plan -> weights -> scratch -> image pool -> KV cache, freed in reverse. */
#include "worker/model_internal.h"

#include "common/dtype.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_ALIGN 256
#define DEVICE_MARGIN_BYTES ((size_t)1 << 30) /* left free for the runtime and NCCL */
#define HOST_KV_DEFAULT_CAP ((size_t)2 << 30) /* KV default when memory is unbounded */
/* Device memory allocated outside the model after it is built (cuBLASLt workspace, NCCL buffers,
 * decode split-K and sampling scratch grown on first use, graphs): 0.43 GiB per rank measured at
 * TP 2 on an H200 (docs/PERF.md). Taken out of an explicit --gpu-memory budget so that the
 * process, not just the model, keeps to it. */
#define DEVICE_RUNTIME_RESERVE_BYTES ((size_t)512 << 20)

void glm_model_options_default(glm_model_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->max_step_tokens = 2048;
    opt->max_seqs = 64;
    opt->max_images = 1;
    opt->image_pool_slots = 4;
    opt->kv_block_size = 16;
}

/* Carves tensors out of one allocation: a first pass with base NULL only counts bytes. */
typedef struct carver {
    char *base;
    size_t used;
} carver;

static glm_tensor carve(carver *c, glm_dtype dtype, int64_t rows, int64_t cols)
{
    glm_tensor t = glm_tensor_2d(dtype, rows, cols, c->base ? c->base + c->used : NULL);
    size_t bytes = glm_tensor_bytes(&t);
    c->used += (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    return t;
}

static void carve_decoder(glm_model *m, carver *c)
{
    const glm_model_config *cfg = &m->cfg;
    const glm_shard_plan *p = &m->plan;
    glm_dtype a = m->be->act_dtype;
    int64_t T = m->opt.max_step_tokens, h = cfg->hidden_size, hd = cfg->kv_channels;
    int64_t L = m->opt.max_logit_rows, tp = p->tp_size;
    decoder_scratch *s = &m->ds;
    s->resid = carve(c, m->be->resid_dtype, T, h);
    s->hnorm = carve(c, a, T, h);
    s->qkv = carve(c, a, T, (int64_t)(p->q_heads + 2 * p->kv_heads) * hd);
    s->attn = carve(c, a, T, (int64_t)p->q_heads * hd);
    s->delta = carve(c, a, T, h);
    s->gate_up = carve(c, a, T, 2 * (int64_t)p->ffn);
    s->act = carve(c, a, T, p->ffn);
    s->logit_in = carve(c, a, L, h);
    /* the output layer accumulates and writes f32: bf16 logits flip greedy choices whose margin
     * is under bf16's spacing (0.0625 at |logit| 8-16) */
    s->logits = carve(c, GLM_F32, L, p->vocab);
    s->logits_all = carve(c, GLM_F32, tp * L, p->vocab);
    s->logits_full = carve(c, GLM_F32, L, (int64_t)p->vocab * tp);
    s->reorder = carve(c, GLM_I32, 1, tp * L);
    s->ids = carve(c, GLM_I32, 1, T);
    s->positions = carve(c, GLM_I32, 1, T);
    s->slots = carve(c, GLM_I32, 1, T);
    s->logit_rows = carve(c, GLM_I32, 1, L);
    s->q_start = carve(c, GLM_I32, 1, m->opt.max_seqs + 1);
    s->ctx_len = carve(c, GLM_I32, 1, m->opt.max_seqs);
    s->block_table = carve(c, GLM_I32, 1, (int64_t)m->opt.max_seqs * m->max_blocks_per_seq);
}

static void carve_vision(glm_model *m, carver *c)
{
    const glm_vision_config *v = &m->cfg.vision;
    const glm_shard_plan *p = &m->plan;
    glm_dtype a = m->be->act_dtype;
    int64_t n = m->opt.max_images, g = v->image_size / v->patch_size, hv = v->hidden_size;
    int64_t rows = n * (1 + g * g), vhd = hv / v->num_heads, out = n * (g / 2) * (g / 2);
    vision_scratch *s = &m->vs;
    /* float32 as the host has them: patchify converts on the device (no host conversion pass) */
    s->pixels = carve(c, GLM_F32, n * v->in_channels, (int64_t)v->image_size * v->image_size);
    s->patches = carve(c, a, n * g * g, (int64_t)v->in_channels * v->patch_size * v->patch_size);
    s->patch_out = carve(c, a, n * g * g, hv);
    s->x = carve(c, m->be->resid_dtype, rows, hv);
    s->qkv = carve(c, a, rows, 3 * (int64_t)p->v_heads * vhd);
    s->attn = carve(c, a, rows, (int64_t)p->v_heads * vhd);
    s->delta = carve(c, a, rows, hv);
    s->mlp = carve(c, a, rows, p->v_mlp);
    s->tokens = carve(c, a, n * g * g, hv);
    s->cols = carve(c, a, out, 4 * hv);
    s->conv = carve(c, a, out, p->conv_out);
    s->proj = carve(c, a, out, m->cfg.hidden_size);
    s->gate_up = carve(c, a, out, 2 * (int64_t)p->proj_ffn);
    s->act = carve(c, a, out, p->proj_ffn);
    if (m->opt.vision_weight_format == GLM_WEIGHT_FP8) {
        int64_t attn = (int64_t)p->v_heads * vhd, wide = p->v_mlp > attn ? p->v_mlp : attn;
        s->xq = carve(c, GLM_F32, rows, (hv + 3) / 4);
        s->xq_scales = carve(c, GLM_F32, rows, 1);
        s->q8 = carve(c, GLM_F32, rows, (wide + 3) / 4);
        s->q8_scales = carve(c, GLM_F32, rows, 1);
    }
}

static glm_status alloc_from_backend(glm_model *m, size_t bytes, void **out, const char *what,
                                     glm_error *err)
{
    glm_status st = m->be->ops->alloc(m->be, bytes ? bytes : SCRATCH_ALIGN, out);
    if (st) {
        glm_error be_err = {0};
        glm_backend_take_error(m->be, &be_err);
        return glm_fail(err, st, "%s needs %.2f GiB: %s", what, (double)bytes / (1 << 30),
                        be_err.msg);
    }
    return GLM_OK;
}

static glm_status create_scratch(glm_model *m, glm_error *err)
{
    carver c = {0};
    carve_decoder(m, &c);
    if (m->cfg.has_vision) carve_vision(m, &c);
    glm_status st = alloc_from_backend(m, c.used, &m->scratch_memory, "activation scratch", err);
    if (st) return st;
    m->scratch_bytes = c.used;
    c = (carver){.base = m->scratch_memory};
    carve_decoder(m, &c);
    if (m->cfg.has_vision) carve_vision(m, &c);
    return GLM_OK;
}

static glm_status create_image_pool(glm_model *m, glm_error *err)
{
    if (!m->cfg.has_vision) return GLM_OK;
    carver c = {0};
    int64_t rows = (int64_t)m->opt.image_pool_slots * m->image_rows;
    carve(&c, m->be->act_dtype, rows, m->cfg.hidden_size);
    glm_status st = alloc_from_backend(m, c.used, &m->pool_memory, "image embedding pool", err);
    if (st) return st;
    m->image_pool = glm_tensor_2d(m->be->act_dtype, rows, m->cfg.hidden_size, m->pool_memory);
    return GLM_OK;
}

static glm_status create_kv_cache(glm_model *m, glm_error *err)
{
    const glm_model_config *cfg = &m->cfg;
    int bs = m->opt.kv_block_size;
    size_t block_bytes = glm_kv_cache_block_bytes(cfg->num_layers, bs, m->plan.kv_heads,
                                                  cfg->kv_channels, m->be->act_dtype);
    int n_blocks = m->opt.kv_blocks;
    if (n_blocks <= 0) {
        size_t budget = m->opt.kv_memory_bytes;
        size_t used = m->w.arena_bytes + m->scratch_bytes +
                      (m->cfg.has_vision ? glm_tensor_bytes(&m->image_pool) : 0);
        size_t reserve = m->be->host_memory ? 0 : DEVICE_RUNTIME_RESERVE_BYTES;
        if (m->opt.total_memory_bytes > 0) {
            used += reserve;
            if (m->opt.total_memory_bytes <= used)
                return glm_fail(err, GLM_ERR_DEVICE_OOM,
                                "memory budget %.2f GiB is used up by weights, scratch, image "
                                "pool and the runtime's %.2f GiB (%.2f GiB) before the KV cache",
                                (double)m->opt.total_memory_bytes / (1 << 30),
                                (double)reserve / (1 << 30), (double)used / (1 << 30));
            budget = m->opt.total_memory_bytes - used;
        } else if (budget == 0) {
            size_t free_bytes = m->be->ops->free_memory(m->be);
            if (free_bytes == SIZE_MAX) {
                /* host memory: room for max_seqs full-length sequences, within a cap */
                budget = block_bytes * (size_t)m->max_blocks_per_seq * (size_t)m->opt.max_seqs;
                if (budget > HOST_KV_DEFAULT_CAP) budget = HOST_KV_DEFAULT_CAP;
            } else {
                size_t margin =
                    free_bytes / 20 > DEVICE_MARGIN_BYTES ? free_bytes / 20 : DEVICE_MARGIN_BYTES;
                budget = free_bytes > margin ? free_bytes - margin : 0;
            }
        }
        n_blocks = (int)(budget / block_bytes);
        if (n_blocks > (1 << 30) / bs) n_blocks = (1 << 30) / bs;
    }
    if (n_blocks < m->max_blocks_per_seq)
        return glm_fail(err, GLM_ERR_DEVICE_OOM,
                        "KV cache: %d blocks of %d tokens (%.1f MiB each) fit the budget but one "
                        "sequence of seq_length %d needs %d",
                        n_blocks, bs, (double)block_bytes / (1 << 20), cfg->seq_length,
                        m->max_blocks_per_seq);
    return glm_kv_cache_create(&m->kv, cfg->num_layers, n_blocks, bs, m->plan.kv_heads,
                               cfg->kv_channels, m->be, err);
}

glm_status glm_model_create(const glm_model_config *cfg, const glm_model_options *opt,
                            const glm_checkpoint *ck, glm_backend *be, glm_comm *comm,
                            glm_model **out, glm_error *err)
{
    *out = NULL;
    glm_model *m = calloc(1, sizeof(*m));
    if (!m) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    m->cfg = *cfg;
    m->opt = *opt;
    m->be = be;
    m->comm = comm;
    if (m->opt.kv_block_size <= 0) m->opt.kv_block_size = 16;
    if (m->opt.max_logit_rows <= 0) m->opt.max_logit_rows = m->opt.max_seqs;
    if (m->opt.max_images <= 0) m->opt.max_images = 1;
    if (m->opt.image_pool_slots < m->opt.max_images) m->opt.image_pool_slots = m->opt.max_images;
    m->max_blocks_per_seq = (cfg->seq_length + m->opt.kv_block_size - 1) / m->opt.kv_block_size;
    if (cfg->has_vision) m->image_rows = 2 + glm_config_image_tokens(cfg);

    glm_status st = glm_shard_plan_make(cfg, comm->rank, comm->size, &m->plan, err);
    glm_weight_formats formats = {opt->weight_format, opt->vision_weight_format};
    if (!st) {
        if (opt->use_random_weights)
            st = glm_weights_random(&m->w, cfg, &m->plan, &formats, opt->random_seed, be, err);
        else if (!ck)
            st = glm_fail(err, GLM_ERR_INVALID_ARG, "no checkpoint and no random weights");
        else
            st = glm_weights_load(&m->w, cfg, &m->plan, ck, &formats, be, err);
    }
    if (!st) st = create_scratch(m, err);
    if (!st) st = create_image_pool(m, err);
    if (!st) st = create_kv_cache(m, err);
    if (!st && !(m->host_reorder = malloc(sizeof(int32_t) * (size_t)m->plan.tp_size *
                                          (size_t)m->opt.max_logit_rows)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    if (st) {
        glm_model_destroy(m);
        return st;
    }
    *out = m;
    return GLM_OK;
}

void glm_model_destroy(glm_model *m)
{
    if (!m) return;
    glm_decoder_graphs_free(m);
    free(m->host_reorder);
    glm_kv_cache_destroy(&m->kv, m->be);
    if (m->pool_memory) m->be->ops->free(m->be, m->pool_memory);
    if (m->scratch_memory) m->be->ops->free(m->be, m->scratch_memory);
    glm_weights_free(&m->w, m->be);
    free(m);
}

const glm_model_config *glm_model_config_of(const glm_model *m)
{
    return &m->cfg;
}

const glm_shard_plan *glm_model_shard_plan(const glm_model *m)
{
    return &m->plan;
}

int glm_model_kv_blocks(const glm_model *m)
{
    return m->kv.n_blocks;
}

int glm_model_kv_block_size(const glm_model *m)
{
    return m->kv.block_size;
}

int glm_model_max_blocks_per_seq(const glm_model *m)
{
    return m->max_blocks_per_seq;
}

int glm_model_image_rows(const glm_model *m)
{
    return m->image_rows;
}

int glm_model_max_images(const glm_model *m)
{
    return m->opt.max_images;
}

void glm_model_describe_memory(const glm_model *m, char *buf, size_t len)
{
    const double gib = 1 << 30;
    size_t pool = m->cfg.has_vision ? glm_tensor_bytes(&m->image_pool) : 0;
    snprintf(buf, len,
             "rank %d memory (%s): weights %.2f GiB, KV cache %.2f GiB (%d blocks x %d tokens), "
             "scratch %.2f GiB, image pool %.2f GiB (%d slots)",
             m->plan.tp_rank, m->be->name, m->w.arena_bytes / gib, m->kv.bytes / gib,
             m->kv.n_blocks, m->kv.block_size, m->scratch_bytes / gib, pool / gib,
             m->opt.image_pool_slots);
}

glm_status glm_model_encode_images(glm_model *m, const float *pixels_host, int n_images,
                                   const int32_t *slots, glm_error *err)
{
    if (!m->cfg.has_vision)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "this checkpoint has no vision tower");
    if (n_images < 1 || n_images > m->opt.max_images)
        return glm_fail(err, GLM_ERR_LIMIT, "%d images in one vision batch (capacity %d)", n_images,
                        m->opt.max_images);
    for (int i = 0; i < n_images; i++)
        if (slots[i] < 0 || slots[i] >= m->opt.image_pool_slots)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "image pool slot %d out of range", slots[i]);
    const glm_vision_config *v = &m->cfg.vision;
    size_t n = (size_t)n_images * v->in_channels * v->image_size * v->image_size;
    glm_backend *be = m->be;
    /* rank 0 uploads the pixels, then the group broadcasts them in backend memory */
    if (m->plan.tp_rank == 0) glm_op_upload(be, m->vs.pixels.data, pixels_host, n * sizeof(float));
    if (m->comm->size > 1) {
        glm_status st = m->comm->ops->broadcast(m->comm, m->vs.pixels.data, n, GLM_F32, 0);
        if (st) return glm_fail(err, st, "broadcasting pixels: %s", m->comm->err.msg);
    }
    return glm_vision_forward(m, n_images, slots, err);
}

glm_status glm_model_read_image_embeds(glm_model *m, int slot, float *out_host, glm_error *err)
{
    if (!m->cfg.has_vision || slot < 0 || slot >= m->opt.image_pool_slots)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "no image pool slot %d", slot);
    glm_tensor rows =
        glm_tensor_row_view(&m->image_pool, (int64_t)slot * m->image_rows, m->image_rows);
    size_t n = (size_t)glm_tensor_numel(&rows);
    if (m->be->act_dtype == GLM_F32) {
        glm_op_download(m->be, out_host, rows.data, n * sizeof(float));
    } else {
        size_t bytes = n * glm_dtype_size(m->be->act_dtype);
        void *tmp = malloc(bytes);
        if (!tmp) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
        glm_op_download(m->be, tmp, rows.data, bytes);
        glm_convert(out_host, GLM_F32, tmp, m->be->act_dtype, n);
        free(tmp);
    }
    return glm_backend_take_error(m->be, err);
}

glm_status glm_model_step(glm_model *m, const glm_step_plan *plan, glm_step_output *out,
                          glm_error *err)
{
    glm_status st = glm_step_plan_validate(plan, m->opt.max_step_tokens, m->opt.max_seqs,
                                           m->max_blocks_per_seq, m->kv.block_size, m->kv.n_blocks,
                                           m->cfg.has_vision ? (int)m->image_pool.shape[0] : 0,
                                           m->opt.max_logit_rows, err);
    if (st) return st;
    glm_tensor logits;
    st = glm_decoder_forward(m, plan, out ? out->logits_host : NULL, &logits, err);
    if (st || !out || !out->sample || plan->n_logit_rows == 0) return st;
    /* the draw reads the logits where the step left them: only ids (and requested logprobs)
     * cross to the host */
    if (glm_tensor_rows(&logits) != plan->n_logit_rows)
        return glm_fail(err, GLM_ERR_SHAPE, "the step produced %lld logit rows, not %d",
                        (long long)glm_tensor_rows(&logits), plan->n_logit_rows);
    if (!m->be->caps.device_sampler)
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "%s backend cannot sample", m->be->name);
    glm_op_sample(m->be, out->ids_host, out->logprobs_host, logits, out->sample,
                  plan->n_logit_rows, 0);
    return glm_backend_take_error(m->be, err);
}
