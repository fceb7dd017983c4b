/* Weight loading: a table of specs (HF name, full shape, the row/column blocks this rank owns)
 * is built once from the shard plan, then used twice: to size the arena and to fill it. The
 * same table drives random initialisation, so a benchmark model has exactly the real layout. */
#include "worker/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCKS 3
#define STAGING_BYTES ((size_t)64 << 20) /* host staging per upload, bounds loader memory */
#define ARENA_ALIGN 256

typedef struct block {
    int64_t row0, n_rows, col0, n_cols;
} block;

typedef struct weight_spec {
    char name[160];
    glm_tensor *dst;
    int ndim; /* of the checkpoint tensor */
    int64_t shape[GLM_MAX_DIMS];
    int n_blocks; /* concatenated along rows into dst */
    block blocks[MAX_BLOCKS];
    float init_mean, init_std; /* for random weights */
    size_t offset;             /* in the arena */
} weight_spec;

typedef struct spec_list {
    weight_spec *items;
    size_t count, cap;
    glm_status status;
} spec_list;

static weight_spec *spec_add(spec_list *l, glm_tensor *dst, int ndim, const int64_t *shape,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#include <stdarg.h>

static weight_spec *spec_add(spec_list *l, glm_tensor *dst, int ndim, const int64_t *shape,
                             const char *fmt, ...)
{
    if (l->status) return NULL;
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        weight_spec *items = realloc(l->items, cap * sizeof(*items));
        if (!items) {
            l->status = GLM_ERR_NOMEM;
            return NULL;
        }
        l->items = items;
        l->cap = cap;
    }
    weight_spec *s = &l->items[l->count++];
    memset(s, 0, sizeof(*s));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof(s->name), fmt, ap);
    va_end(ap);
    s->dst = dst;
    s->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s->shape[i] = shape[i];
    s->init_std = 0.02f;
    return s;
}

static int64_t spec_cols(const weight_spec *s)
{
    int64_t n = 1;
    for (int i = 1; i < s->ndim; i++)
        n *= s->shape[i];
    return n;
}

/* The whole tensor, replicated on every rank. */
static void whole(weight_spec *s)
{
    if (!s) return;
    s->n_blocks = 1;
    s->blocks[0] = (block){0, s->shape[0], 0, spec_cols(s)};
}

/* Row blocks (column-parallel weights and their biases): rows [r0, r0 + n) of each listed range. */
static void rows(weight_spec *s, int n_ranges, const int64_t *row0, const int64_t *n_rows)
{
    if (!s) return;
    s->n_blocks = n_ranges;
    for (int i = 0; i < n_ranges; i++)
        s->blocks[i] = (block){row0[i], n_rows[i], 0, spec_cols(s)};
}

static void row_range(weight_spec *s, int64_t row0, int64_t n_rows)
{
    rows(s, 1, &row0, &n_rows);
}

/* A column block (row-parallel weights). */
static void col_range(weight_spec *s, int64_t col0, int64_t n_cols)
{
    if (!s) return;
    s->n_blocks = 1;
    s->blocks[0] = (block){0, s->shape[0], col0, n_cols};
}

static void norm_init(weight_spec *s)
{
    if (s) s->init_mean = 1.0f, s->init_std = 0.0f;
}

static void build_decoder_specs(spec_list *l, glm_weights *w, const glm_model_config *c,
                                const glm_shard_plan *p)
{
    int64_t h = c->hidden_size, hd = c->kv_channels;
    int64_t nq = c->num_attention_heads, nkv = c->multi_query_group_num;
    int64_t ffn = c->ffn_hidden_size, vocab = c->padded_vocab_size;
    int64_t qkv_rows = (nq + 2 * nkv) * hd;

    row_range(spec_add(l, &w->embedding, 2, (int64_t[]){vocab, h},
                       "transformer.embedding.word_embeddings.weight"),
              p->vocab_first, p->vocab);
    for (int i = 0; i < c->num_layers; i++) {
        glm_decoder_layer_weights *L = &w->layers[i];
        const char *pre = "transformer.encoder.layers";
        weight_spec *s =
            spec_add(l, &L->input_norm, 1, (int64_t[]){h}, "%s.%d.input_layernorm.weight", pre, i);
        whole(s);
        norm_init(s);
        /* fused [q heads | k heads | v heads]: this rank's q heads and its KV head(s) */
        int64_t r0[3] = {p->q_head_first * hd, nq * hd + p->kv_head_first * hd,
                         (nq + nkv) * hd + p->kv_head_first * hd};
        int64_t nr[3] = {p->q_heads * hd, p->kv_heads * hd, p->kv_heads * hd};
        rows(spec_add(l, &L->qkv_w, 2, (int64_t[]){qkv_rows, h},
                      "%s.%d.self_attention.query_key_value.weight", pre, i),
             3, r0, nr);
        if (c->add_qkv_bias)
            rows(spec_add(l, &L->qkv_b, 1, (int64_t[]){qkv_rows},
                          "%s.%d.self_attention.query_key_value.bias", pre, i),
                 3, r0, nr);
        col_range(spec_add(l, &L->dense_w, 2, (int64_t[]){h, nq * hd},
                           "%s.%d.self_attention.dense.weight", pre, i),
                  p->q_head_first * hd, p->q_heads * hd);
        s = spec_add(l, &L->post_norm, 1, (int64_t[]){h}, "%s.%d.post_attention_layernorm.weight",
                     pre, i);
        whole(s);
        norm_init(s);
        /* gate rows then up rows, each this rank's slice, so silu_mul sees [gate | up] */
        int64_t g0[2] = {p->ffn_first, ffn + p->ffn_first}, gn[2] = {p->ffn, p->ffn};
        rows(spec_add(l, &L->h_to_4h_w, 2, (int64_t[]){2 * ffn, h},
                      "%s.%d.mlp.dense_h_to_4h.weight", pre, i),
             2, g0, gn);
        col_range(spec_add(l, &L->four_h_to_h_w, 2, (int64_t[]){h, ffn},
                           "%s.%d.mlp.dense_4h_to_h.weight", pre, i),
                  p->ffn_first, p->ffn);
    }
    weight_spec *s = spec_add(l, &w->final_norm, 1, (int64_t[]){h},
                              "transformer.encoder.final_layernorm.weight");
    whole(s);
    norm_init(s);
    row_range(spec_add(l, &w->output, 2, (int64_t[]){vocab, h}, "transformer.output_layer.weight"),
              p->vocab_first, p->vocab);
}

static void layernorm_specs(spec_list *l, glm_tensor *wt, glm_tensor *bs, int64_t n,
                            const char *name)
{
    weight_spec *s = spec_add(l, wt, 1, (int64_t[]){n}, "%s.weight", name);
    whole(s);
    norm_init(s);
    whole(spec_add(l, bs, 1, (int64_t[]){n}, "%s.bias", name));
}

static void build_vision_specs(spec_list *l, glm_weights *w, const glm_model_config *c,
                               const glm_shard_plan *p)
{
    const glm_vision_config *v = &c->vision;
    int64_t hv = v->hidden_size, h = c->hidden_size, ps = v->patch_size, ch = v->in_channels;
    int64_t vhd = hv / v->num_heads, iv = v->intermediate_size, ffn = c->ffn_hidden_size;
    const char *pre = "transformer.vision";
    char name[160];

    whole(spec_add(l, &w->patch_w, 4, (int64_t[]){hv, ch, ps, ps}, "%s.patch_embedding.proj.weight",
                   pre));
    whole(spec_add(l, &w->patch_b, 1, (int64_t[]){hv}, "%s.patch_embedding.proj.bias", pre));
    whole(spec_add(l, &w->cls, 2, (int64_t[]){1, hv}, "%s.patch_embedding.cls_embedding", pre));
    whole(spec_add(l, &w->pos, 2, (int64_t[]){v->num_positions, hv},
                   "%s.patch_embedding.position_embedding.weight", pre));
    for (int j = 0; j < v->num_layers; j++) {
        glm_vision_layer_weights *L = &w->vlayers[j];
        snprintf(name, sizeof(name), "%s.transformer.layers.%d.input_layernorm", pre, j);
        layernorm_specs(l, &L->ln_in_w, &L->ln_in_b, hv, name);
        /* fused [3][heads][head_dim]: this rank's heads of q, of k and of v */
        int64_t r0[3], nr[3];
        for (int k = 0; k < 3; k++)
            r0[k] = k * hv + p->v_head_first * vhd, nr[k] = p->v_heads * vhd;
        rows(spec_add(l, &L->qkv_w, 2, (int64_t[]){3 * hv, hv},
                      "%s.transformer.layers.%d.attention.query_key_value.weight", pre, j),
             3, r0, nr);
        rows(spec_add(l, &L->qkv_b, 1, (int64_t[]){3 * hv},
                      "%s.transformer.layers.%d.attention.query_key_value.bias", pre, j),
             3, r0, nr);
        col_range(spec_add(l, &L->dense_w, 2, (int64_t[]){hv, hv},
                           "%s.transformer.layers.%d.attention.dense.weight", pre, j),
                  p->v_head_first * vhd, p->v_heads * vhd);
        whole(spec_add(l, &L->dense_b, 1, (int64_t[]){hv},
                       "%s.transformer.layers.%d.attention.dense.bias", pre, j));
        row_range(spec_add(l, &L->fc1_w, 2, (int64_t[]){iv, hv},
                           "%s.transformer.layers.%d.mlp.fc1.weight", pre, j),
                  p->v_mlp_first, p->v_mlp);
        row_range(spec_add(l, &L->fc1_b, 1, (int64_t[]){iv},
                           "%s.transformer.layers.%d.mlp.fc1.bias", pre, j),
                  p->v_mlp_first, p->v_mlp);
        col_range(spec_add(l, &L->fc2_w, 2, (int64_t[]){hv, iv},
                           "%s.transformer.layers.%d.mlp.fc2.weight", pre, j),
                  p->v_mlp_first, p->v_mlp);
        whole(spec_add(l, &L->fc2_b, 1, (int64_t[]){hv}, "%s.transformer.layers.%d.mlp.fc2.bias",
                       pre, j));
        snprintf(name, sizeof(name), "%s.transformer.layers.%d.post_attention_layernorm", pre, j);
        layernorm_specs(l, &L->ln_post_w, &L->ln_post_b, hv, name);
    }
    row_range(spec_add(l, &w->conv_w, 4, (int64_t[]){h, hv, 2, 2}, "%s.conv.weight", pre),
              p->conv_out_first, p->conv_out);
    row_range(spec_add(l, &w->conv_b, 1, (int64_t[]){h}, "%s.conv.bias", pre), p->conv_out_first,
              p->conv_out);
    col_range(
        spec_add(l, &w->proj_w, 2, (int64_t[]){h, h}, "%s.linear_proj.linear_proj.weight", pre),
        p->conv_out_first, p->conv_out);
    snprintf(name, sizeof(name), "%s.linear_proj.norm1", pre);
    layernorm_specs(l, &w->norm1_w, &w->norm1_b, h, name);
    /* gate_proj and dense_h_to_4h are separate tensors: stacked into one [gate | up] weight */
    weight_spec *gate =
        spec_add(l, &w->gate_up_w, 2, (int64_t[]){ffn, h}, "%s.linear_proj.gate_proj.weight", pre);
    row_range(gate, p->proj_ffn_first, p->proj_ffn);
    weight_spec *up = spec_add(l, &w->gate_up_w, 2, (int64_t[]){ffn, h},
                               "%s.linear_proj.dense_h_to_4h.weight", pre);
    row_range(up, p->proj_ffn_first, p->proj_ffn);
    col_range(
        spec_add(l, &w->down_w, 2, (int64_t[]){h, ffn}, "%s.linear_proj.dense_4h_to_h.weight", pre),
        p->proj_ffn_first, p->proj_ffn);
    whole(spec_add(l, &w->boi, 3, (int64_t[]){1, 1, h}, "%s.boi", pre));
    whole(spec_add(l, &w->eoi, 3, (int64_t[]){1, 1, h}, "%s.eoi", pre));
}

static int64_t spec_rows(const weight_spec *s)
{
    int64_t n = 0;
    for (int b = 0; b < s->n_blocks; b++)
        n += s->blocks[b].n_rows;
    return n;
}

static size_t spec_bytes(const weight_spec *s, glm_dtype dtype)
{
    return (size_t)(spec_rows(s) * s->blocks[0].n_cols) * glm_dtype_size(dtype);
}

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

/* Lays the specs out in one arena. Two consecutive specs writing the same tensor (the vision
 * projector's gate and up) share one region: the second continues after the first's rows. */
static glm_status allocate_arena(glm_weights *w, weight_spec *specs, size_t n, glm_backend *be,
                                 glm_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        weight_spec *s = &specs[i];
        if (i > 0 && specs[i - 1].dst == s->dst) {
            s->offset = specs[i - 1].offset + spec_bytes(&specs[i - 1], be->weight_dtype);
            total = align_up(s->offset + spec_bytes(s, be->weight_dtype));
            continue;
        }
        s->offset = total;
        total = align_up(total + spec_bytes(s, be->weight_dtype));
    }
    glm_status st = be->ops->alloc(be, total, &w->arena);
    if (st) {
        glm_error be_err = {0};
        glm_backend_take_error(be, &be_err);
        return glm_fail(err, st, "weights need %.2f GiB of %s memory: %s",
                        (double)total / (1 << 30), be->name, be_err.msg);
    }
    w->arena_bytes = total;
    for (size_t i = 0; i < n; i++) {
        weight_spec *s = &specs[i];
        size_t first = i;
        while (first > 0 && specs[first - 1].dst == s->dst)
            first--;
        int64_t rows_total = 0;
        for (size_t k = first; k < n && specs[k].dst == s->dst; k++)
            rows_total += spec_rows(&specs[k]);
        void *base = (char *)w->arena + specs[first].offset;
        int64_t cols = s->blocks[0].n_cols;
        if (s->ndim == 1 && s->n_blocks >= 1 && cols == 1)
            *s->dst = glm_tensor_1d(be->weight_dtype, rows_total, base);
        else
            *s->dst = glm_tensor_2d(be->weight_dtype, rows_total, cols, base);
    }
    return GLM_OK;
}

static glm_status build_specs(spec_list *l, glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, glm_error *err)
{
    memset(w, 0, sizeof(*w));
    w->layers = calloc((size_t)cfg->num_layers, sizeof(*w->layers));
    if (cfg->has_vision) w->vlayers = calloc((size_t)cfg->vision.num_layers, sizeof(*w->vlayers));
    if (!w->layers || (cfg->has_vision && !w->vlayers))
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for weight tables");
    build_decoder_specs(l, w, cfg, plan);
    if (cfg->has_vision) build_vision_specs(l, w, cfg, plan);
    if (l->status) return glm_fail(err, l->status, "out of host memory for weight specs");
    return GLM_OK;
}

/* Copies one spec's blocks from the checkpoint into backend memory at dst, through a bounded
 * host staging buffer (or directly when backend memory is host memory). */
static glm_status load_spec(const weight_spec *s, const glm_st_tensor *t, char *dst,
                            glm_backend *be, void *staging, glm_error *err)
{
    size_t dsize = glm_dtype_size(be->weight_dtype);
    for (int b = 0; b < s->n_blocks; b++) {
        const block *bl = &s->blocks[b];
        size_t row_bytes = (size_t)bl->n_cols * dsize;
        int64_t chunk = be->host_memory ? bl->n_rows : (int64_t)(STAGING_BYTES / row_bytes);
        if (chunk < 1) chunk = 1;
        for (int64_t r = 0; r < bl->n_rows; r += chunk) {
            int64_t n = bl->n_rows - r < chunk ? bl->n_rows - r : chunk;
            void *target = be->host_memory ? dst : staging;
            glm_status st = glm_tensor_read_block(t, bl->row0 + r, n, bl->col0, bl->n_cols, target,
                                                  be->weight_dtype, err);
            if (st) return st;
            if (!be->host_memory) be->ops->upload(be, dst, staging, (size_t)n * row_bytes);
            dst += (size_t)n * row_bytes;
        }
    }
    if (be->status) return glm_backend_take_error(be, err);
    return GLM_OK;
}

glm_status glm_weights_load(glm_weights *w, const glm_model_config *cfg, const glm_shard_plan *plan,
                            const glm_checkpoint *ck, glm_backend *be, glm_error *err)
{
    spec_list l = {0};
    glm_status st = build_specs(&l, w, cfg, plan, err);
    /* every tensor present with its full shape before a byte is allocated or copied */
    const glm_st_tensor **tensors = st ? NULL : calloc(l.count ? l.count : 1, sizeof(*tensors));
    if (!st && !tensors) st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; !st && i < l.count; i++)
        st = glm_checkpoint_expect(ck, l.items[i].name, l.items[i].ndim, l.items[i].shape,
                                   &tensors[i], err);
    if (!st) st = allocate_arena(w, l.items, l.count, be, err);
    void *staging = NULL;
    if (!st && !be->host_memory && !(staging = malloc(STAGING_BYTES)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the staging buffer");
    for (size_t i = 0; !st && i < l.count; i++) {
        st = load_spec(&l.items[i], tensors[i], (char *)w->arena + l.items[i].offset, be, staging,
                       err);
        if (st) glm_error_prefix(err, "loading %s", l.items[i].name);
    }
    free(staging);
    free(tensors);
    free(l.items);
    if (st) glm_weights_free(w, be);
    return st;
}

glm_status glm_weights_random(glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, uint64_t seed, glm_backend *be,
                              glm_error *err)
{
    spec_list l = {0};
    glm_status st = build_specs(&l, w, cfg, plan, err);
    if (!st && !be->ops->fill_normal)
        st = glm_fail(err, GLM_ERR_UNSUPPORTED, "%s backend cannot make random weights", be->name);
    if (!st) st = allocate_arena(w, l.items, l.count, be, err);
    for (size_t i = 0; !st && i < l.count; i++) {
        const weight_spec *s = &l.items[i];
        int64_t rows = spec_rows(s), cols = s->blocks[0].n_cols;
        glm_tensor t = glm_tensor_2d(be->weight_dtype, rows, cols, (char *)w->arena + s->offset);
        /* the seed mixes in the tensor index and the rank so every shard differs */
        uint64_t key = seed * 0x9E3779B97F4A7C15ull + i * 1315423911ull + (uint64_t)plan->tp_rank;
        glm_op_fill_normal(be, t, key, s->init_mean, s->init_std);
    }
    if (!st && be->status) st = glm_backend_take_error(be, err);
    free(l.items);
    if (st) glm_weights_free(w, be);
    return st;
}

void glm_weights_free(glm_weights *w, glm_backend *be)
{
    if (w->arena) be->ops->free(be, w->arena);
    free(w->layers);
    free(w->vlayers);
    memset(w, 0, sizeof(*w));
}
