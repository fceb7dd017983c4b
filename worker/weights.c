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
    void *dst; /* a glm_tensor, or a glm_weight when linear */
    bool linear;
    glm_weight_format format; /* of a linear weight */
    int ndim;                 /* of the checkpoint tensor */
    int64_t shape[GLM_MAX_DIMS];
    int n_blocks; /* concatenated along rows into dst */
    block blocks[MAX_BLOCKS];
    float init_mean, init_std; /* for random weights */
    /* where it lands: rows [row_offset, + spec_rows) of the target, whose codes, scales and
     * zero points start at these arena offsets (shared by consecutive specs of one target) */
    int64_t row_offset;
    size_t offset, scale_offset, zero_offset;
} weight_spec;

typedef struct spec_list {
    weight_spec *items;
    size_t count, cap;
    glm_status status;
} spec_list;

static weight_spec *spec_add(spec_list *l, void *dst, int ndim, const int64_t *shape,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#include <stdarg.h>

static weight_spec *spec_add(spec_list *l, void *dst, int ndim, const int64_t *shape,
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

/* Marks a linear layer's weight (its dst is a glm_weight), stored in format f. */
static weight_spec *linear(weight_spec *s, glm_weight_format f)
{
    if (s) s->linear = true, s->format = f;
    return s;
}

static void build_decoder_specs(spec_list *l, glm_weights *w, const glm_model_config *c,
                                const glm_shard_plan *p, glm_weight_format f)
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
        rows(linear(spec_add(l, &L->qkv_w, 2, (int64_t[]){qkv_rows, h},
                             "%s.%d.self_attention.query_key_value.weight", pre, i),
                    f),
             3, r0, nr);
        if (c->add_qkv_bias)
            rows(spec_add(l, &L->qkv_b, 1, (int64_t[]){qkv_rows},
                          "%s.%d.self_attention.query_key_value.bias", pre, i),
                 3, r0, nr);
        col_range(linear(spec_add(l, &L->dense_w, 2, (int64_t[]){h, nq * hd},
                                  "%s.%d.self_attention.dense.weight", pre, i),
                         f),
                  p->q_head_first * hd, p->q_heads * hd);
        s = spec_add(l, &L->post_norm, 1, (int64_t[]){h}, "%s.%d.post_attention_layernorm.weight",
                     pre, i);
        whole(s);
        norm_init(s);
        /* gate rows then up rows, each this rank's slice, so silu_mul sees [gate | up] */
        int64_t g0[2] = {p->ffn_first, ffn + p->ffn_first}, gn[2] = {p->ffn, p->ffn};
        rows(linear(spec_add(l, &L->h_to_4h_w, 2, (int64_t[]){2 * ffn, h},
                             "%s.%d.mlp.dense_h_to_4h.weight", pre, i),
                    f),
             2, g0, gn);
        col_range(linear(spec_add(l, &L->four_h_to_h_w, 2, (int64_t[]){h, ffn},
                                  "%s.%d.mlp.dense_4h_to_h.weight", pre, i),
                         f),
                  p->ffn_first, p->ffn);
    }
    weight_spec *s = spec_add(l, &w->final_norm, 1, (int64_t[]){h},
                              "transformer.encoder.final_layernorm.weight");
    whole(s);
    norm_init(s);
    row_range(
        linear(spec_add(l, &w->output, 2, (int64_t[]){vocab, h}, "transformer.output_layer.weight"),
               f),
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
                               const glm_shard_plan *p, glm_weight_format f)
{
    const glm_vision_config *v = &c->vision;
    int64_t hv = v->hidden_size, h = c->hidden_size, ps = v->patch_size, ch = v->in_channels;
    int64_t vhd = hv / v->num_heads, iv = v->intermediate_size, ffn = c->ffn_hidden_size;
    const char *pre = "transformer.vision";
    char name[160];

    /* the patch conv stays 16-bit: its K = 3 * 14 * 14 = 588 is no multiple of the 16 that fp8
     * tensor cores and the packed kernels need, and it holds 1 M of the tower's 4.4 G weights */
    whole(linear(spec_add(l, &w->patch_w, 4, (int64_t[]){hv, ch, ps, ps},
                          "%s.patch_embedding.proj.weight", pre),
                 GLM_WEIGHT_DENSE));
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
        rows(linear(spec_add(l, &L->qkv_w, 2, (int64_t[]){3 * hv, hv},
                             "%s.transformer.layers.%d.attention.query_key_value.weight", pre, j),
                    f),
             3, r0, nr);
        rows(spec_add(l, &L->qkv_b, 1, (int64_t[]){3 * hv},
                      "%s.transformer.layers.%d.attention.query_key_value.bias", pre, j),
             3, r0, nr);
        col_range(linear(spec_add(l, &L->dense_w, 2, (int64_t[]){hv, hv},
                                  "%s.transformer.layers.%d.attention.dense.weight", pre, j),
                         f),
                  p->v_head_first * vhd, p->v_heads * vhd);
        whole(spec_add(l, &L->dense_b, 1, (int64_t[]){hv},
                       "%s.transformer.layers.%d.attention.dense.bias", pre, j));
        row_range(linear(spec_add(l, &L->fc1_w, 2, (int64_t[]){iv, hv},
                                  "%s.transformer.layers.%d.mlp.fc1.weight", pre, j),
                         f),
                  p->v_mlp_first, p->v_mlp);
        row_range(spec_add(l, &L->fc1_b, 1, (int64_t[]){iv},
                           "%s.transformer.layers.%d.mlp.fc1.bias", pre, j),
                  p->v_mlp_first, p->v_mlp);
        col_range(linear(spec_add(l, &L->fc2_w, 2, (int64_t[]){hv, iv},
                                  "%s.transformer.layers.%d.mlp.fc2.weight", pre, j),
                         f),
                  p->v_mlp_first, p->v_mlp);
        whole(spec_add(l, &L->fc2_b, 1, (int64_t[]){hv}, "%s.transformer.layers.%d.mlp.fc2.bias",
                       pre, j));
        snprintf(name, sizeof(name), "%s.transformer.layers.%d.post_attention_layernorm", pre, j);
        layernorm_specs(l, &L->ln_post_w, &L->ln_post_b, hv, name);
    }
    row_range(
        linear(spec_add(l, &w->conv_w, 4, (int64_t[]){h, hv, 2, 2}, "%s.conv.weight", pre), f),
        p->conv_out_first, p->conv_out);
    row_range(spec_add(l, &w->conv_b, 1, (int64_t[]){h}, "%s.conv.bias", pre), p->conv_out_first,
              p->conv_out);
    col_range(linear(spec_add(l, &w->proj_w, 2, (int64_t[]){h, h},
                              "%s.linear_proj.linear_proj.weight", pre),
                     f),
              p->conv_out_first, p->conv_out);
    snprintf(name, sizeof(name), "%s.linear_proj.norm1", pre);
    layernorm_specs(l, &w->norm1_w, &w->norm1_b, h, name);
    /* gate_proj and dense_h_to_4h are separate tensors: stacked into one [gate | up] weight */
    weight_spec *gate = linear(
        spec_add(l, &w->gate_up_w, 2, (int64_t[]){ffn, h}, "%s.linear_proj.gate_proj.weight", pre),
        f);
    row_range(gate, p->proj_ffn_first, p->proj_ffn);
    weight_spec *up = linear(spec_add(l, &w->gate_up_w, 2, (int64_t[]){ffn, h},
                                      "%s.linear_proj.dense_h_to_4h.weight", pre),
                             f);
    row_range(up, p->proj_ffn_first, p->proj_ffn);
    col_range(linear(spec_add(l, &w->down_w, 2, (int64_t[]){h, ffn},
                              "%s.linear_proj.dense_4h_to_h.weight", pre),
                     f),
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

static glm_weight_format spec_format(const weight_spec *s)
{
    return s->linear ? s->format : GLM_WEIGHT_DENSE;
}

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

/* Lays the specs out in one arena. Consecutive specs writing the same target (the vision
 * projector's gate and up) form one weight: the second's rows follow the first's in its codes,
 * its scales and its zero points. */
static glm_status allocate_arena(glm_weights *w, weight_spec *specs, size_t n, glm_backend *be,
                                 glm_error *err)
{
    size_t total = 0;
    for (size_t first = 0, end; first < n; first = end) {
        int64_t rows = 0, cols = specs[first].blocks[0].n_cols;
        for (end = first; end < n && specs[end].dst == specs[first].dst; end++) {
            specs[end].row_offset = rows;
            rows += spec_rows(&specs[end]);
        }
        glm_weight_format f = spec_format(&specs[first]);
        size_t data = align_up(glm_weight_data_bytes(f, be->weight_dtype, rows, cols));
        size_t scales = align_up(glm_weight_scale_bytes(f, rows, cols, GLM_INT4_GROUP));
        for (size_t i = first; i < end; i++) {
            specs[i].offset = total;
            specs[i].scale_offset = total + data;
            specs[i].zero_offset = total + data + scales;
        }
        total += data + scales + align_up(glm_weight_zero_bytes(f, rows, cols, GLM_INT4_GROUP));
    }
    glm_status st = be->ops->alloc(be, total ? total : ARENA_ALIGN, &w->arena);
    if (st) {
        glm_error be_err = {0};
        glm_backend_take_error(be, &be_err);
        return glm_fail(err, st, "weights need %.2f GiB of %s memory: %s",
                        (double)total / (1 << 30), be->name, be_err.msg);
    }
    w->arena_bytes = total;
    for (size_t first = 0, end; first < n; first = end) {
        const weight_spec *s = &specs[first];
        int64_t rows = 0, cols = s->blocks[0].n_cols;
        for (end = first; end < n && specs[end].dst == s->dst; end++)
            rows += spec_rows(&specs[end]);
        char *base = (char *)w->arena;
        if (s->linear) {
            glm_weight_format f = s->format;
            bool q = f != GLM_WEIGHT_DENSE;
            *(glm_weight *)s->dst = (glm_weight){
                .format = f,
                .dtype = q ? GLM_F32 : be->weight_dtype,
                .rows = rows,
                .cols = cols,
                .group_size = f == GLM_WEIGHT_INT4 ? GLM_INT4_GROUP : 0,
                .data = base + s->offset,
                .scales = q ? (float *)(base + s->scale_offset) : NULL,
                .zeros = f == GLM_WEIGHT_INT4 ? (uint8_t *)(base + s->zero_offset) : NULL,
            };
        } else if (s->ndim == 1 && cols == 1) {
            *(glm_tensor *)s->dst = glm_tensor_1d(be->weight_dtype, rows, base + s->offset);
        } else {
            *(glm_tensor *)s->dst = glm_tensor_2d(be->weight_dtype, rows, cols, base + s->offset);
        }
    }
    return GLM_OK;
}

glm_status glm_weights_check_format(glm_backend *be, glm_weight_format f, glm_error *err)
{
    if (be->caps.weight_formats & GLM_WEIGHT_FORMAT_BIT(f)) return GLM_OK;
    if (be->ops->check_weight_format && be->ops->check_weight_format(be, f, err)) {
        if (err) err->status = GLM_ERR_INVALID_ARG; /* the flag cannot work on this device */
        return GLM_ERR_INVALID_ARG;
    }
    return glm_fail(err, GLM_ERR_INVALID_ARG, "the %s backend cannot compute with %s weights",
                    be->name, glm_weight_format_name(f));
}

static glm_status build_specs(spec_list *l, glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, const glm_weight_formats *formats,
                              glm_backend *be, glm_error *err)
{
    memset(w, 0, sizeof(*w));
    glm_weight_formats f = formats ? *formats : (glm_weight_formats){0};
    glm_status st = glm_weights_check_format(be, f.decoder, err);
    if (!st && cfg->has_vision) st = glm_weights_check_format(be, f.vision, err);
    if (st) return st;
    w->layers = calloc((size_t)cfg->num_layers, sizeof(*w->layers));
    if (cfg->has_vision) w->vlayers = calloc((size_t)cfg->vision.num_layers, sizeof(*w->vlayers));
    if (!w->layers || (cfg->has_vision && !w->vlayers))
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for weight tables");
    build_decoder_specs(l, w, cfg, plan, f.decoder);
    if (cfg->has_vision) build_vision_specs(l, w, cfg, plan, f.vision);
    if (l->status) return glm_fail(err, l->status, "out of host memory for weight specs");
    return GLM_OK;
}

/* Copies one dense spec's blocks from the checkpoint into backend memory at dst, through a
 * bounded host staging buffer (or directly when backend memory is host memory). */
static glm_status load_dense(const weight_spec *s, const glm_st_tensor *t, char *dst,
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
    return GLM_OK;
}

/* Host buffers of one chunk of a quantized load: the f32 rows read from the checkpoint, and their
 * codes, scales and zero points before upload. */
typedef struct quant_staging {
    float *rows;
    float *amax; /* per row of a chunk, when a column slice takes its whole rows' scale */
    unsigned char *codes;
    float *scales;
    uint8_t *zeros;
} quant_staging;

/* Quantizes one linear spec's blocks into its weight, chunk by chunk: each chunk is read as f32,
 * quantized on the host (kernels/cpu/quant.c, the formats' reference semantics) and its codes,
 * scales and zero points uploaded (or written in place when backend memory is host memory). */
/* The columns a quantized spec's chunks are read with: whole rows when a per-channel format's
 * spec is a column slice (row-parallel), so its scales are those of the whole weight's rows and a
 * rank's codes equal the same columns of the whole weight quantized (TP n == TP 1); else its own.
 * int4 groups follow the slice: they start at the slice's first column. */
static int64_t read_cols(const weight_spec *s)
{
    bool per_row = s->format == GLM_WEIGHT_FP8 || s->format == GLM_WEIGHT_INT8;
    return per_row && s->blocks[0].n_cols != spec_cols(s) ? spec_cols(s) : s->blocks[0].n_cols;
}

static int64_t chunk_rows(const weight_spec *s)
{
    int64_t chunk = (int64_t)(STAGING_BYTES / ((size_t)read_cols(s) * sizeof(float)));
    return chunk < 1 ? 1 : chunk;
}

static glm_status load_quantized(const weight_spec *s, const glm_st_tensor *t,
                                 const glm_weight *target, glm_backend *be, quant_staging *qs,
                                 glm_error *err)
{
    glm_weight_format f = s->format;
    int64_t cols = target->cols, groups = glm_weight_groups(f, cols, target->group_size);
    size_t row_bytes = glm_weight_row_bytes(f, GLM_F32, cols);
    int64_t chunk = chunk_rows(s), full = read_cols(s);
    int64_t row = s->row_offset;
    for (int b = 0; b < s->n_blocks; b++) {
        const block *bl = &s->blocks[b];
        for (int64_t r = 0; r < bl->n_rows; r += chunk) {
            int64_t n = bl->n_rows - r < chunk ? bl->n_rows - r : chunk;
            bool slice = full != cols;
            glm_status st = glm_tensor_read_block(t, bl->row0 + r, n, slice ? 0 : bl->col0,
                                                  slice ? full : cols, qs->rows, GLM_F32, err);
            if (st) return st;
            if (slice) /* each whole row's amax, then the slice's columns packed to the front */
                for (int64_t i = 0; i < n; i++) {
                    qs->amax[i] = glm_row_amax(qs->rows + i * full, full);
                    memmove(qs->rows + i * cols, qs->rows + i * full + bl->col0,
                            (size_t)cols * sizeof(float));
                }
            glm_weight dst = glm_weight_row_view(target, row, n);
            bool direct = be->host_memory;
            int64_t bad_row = 0, bad_col = 0;
            if (glm_quantize_rows_amax(f, target->group_size, qs->rows, n, cols,
                                       slice ? qs->amax : NULL, direct ? dst.data : qs->codes,
                                       direct ? dst.scales : qs->scales,
                                       direct ? dst.zeros : qs->zeros, &bad_row, &bad_col))
                return glm_fail(err, GLM_ERR_INVALID_ARG,
                                "%s: tensor '%.200s' holds a value that is not finite at [%lld, "
                                "%lld]: it cannot be quantized to %s",
                                t->file, t->name, (long long)(bl->row0 + r + bad_row),
                                (long long)(bl->col0 + bad_col), glm_weight_format_name(f));
            if (!direct) {
                be->ops->upload(be, dst.data, qs->codes, (size_t)n * row_bytes);
                be->ops->upload(be, dst.scales, qs->scales, (size_t)(n * groups) * sizeof(float));
                if (dst.zeros) be->ops->upload(be, dst.zeros, qs->zeros, (size_t)(n * groups));
            }
            row += n;
        }
    }
    return GLM_OK;
}

static glm_status load_spec(const weight_spec *s, const glm_st_tensor *t, glm_weights *w,
                            glm_backend *be, void *staging, quant_staging *qs, glm_error *err)
{
    glm_status st;
    if (spec_format(s) == GLM_WEIGHT_DENSE) {
        size_t row_bytes = (size_t)s->blocks[0].n_cols * glm_dtype_size(be->weight_dtype);
        char *dst = (char *)w->arena + s->offset + (size_t)s->row_offset * row_bytes;
        st = load_dense(s, t, dst, be, staging, err);
    } else {
        st = load_quantized(s, t, (const glm_weight *)s->dst, be, qs, err);
    }
    if (st) return st;
    if (be->status) return glm_backend_take_error(be, err);
    return GLM_OK;
}

/* Host staging for a quantized load (none when nothing is quantized). */
static glm_status quant_staging_create(quant_staging *qs, const weight_spec *specs, size_t n,
                                       glm_error *err)
{
    memset(qs, 0, sizeof(*qs));
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any = any || spec_format(&specs[i]) != GLM_WEIGHT_DENSE;
    if (!any) return GLM_OK;
    /* a chunk is STAGING_BYTES of f32 rows (at least one row), as load_quantized cuts them */
    size_t floats = 1, codes = 1, groups = 1, rows = 1;
    for (size_t i = 0; i < n; i++) {
        const weight_spec *s = &specs[i];
        glm_weight_format f = spec_format(s);
        if (f == GLM_WEIGHT_DENSE) continue;
        size_t chunk = (size_t)chunk_rows(s), cols = (size_t)s->blocks[0].n_cols;
        size_t g = chunk * (size_t)glm_weight_groups(f, (int64_t)cols, GLM_INT4_GROUP);
        size_t c = chunk * glm_weight_row_bytes(f, GLM_F32, (int64_t)cols);
        if (chunk * (size_t)read_cols(s) > floats) floats = chunk * (size_t)read_cols(s);
        if (c > codes) codes = c;
        if (g > groups) groups = g;
        if (chunk > rows) rows = chunk;
    }
    qs->rows = malloc(floats * sizeof(float));
    qs->amax = malloc(rows * sizeof(float));
    qs->codes = malloc(codes);
    qs->scales = malloc(groups * sizeof(float));
    qs->zeros = malloc(groups);
    if (!qs->rows || !qs->amax || !qs->codes || !qs->scales || !qs->zeros)
        return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the quantization buffers");
    return GLM_OK;
}

static void quant_staging_free(quant_staging *qs)
{
    free(qs->rows);
    free(qs->amax);
    free(qs->codes);
    free(qs->scales);
    free(qs->zeros);
}

glm_status glm_weights_load(glm_weights *w, const glm_model_config *cfg, const glm_shard_plan *plan,
                            const glm_checkpoint *ck, const glm_weight_formats *formats,
                            glm_backend *be, glm_error *err)
{
    spec_list l = {0};
    glm_status st = build_specs(&l, w, cfg, plan, formats, be, err);
    /* every tensor present with its full shape before a byte is allocated or copied */
    const glm_st_tensor **tensors = st ? NULL : calloc(l.count ? l.count : 1, sizeof(*tensors));
    if (!st && !tensors) st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; !st && i < l.count; i++)
        st = glm_checkpoint_expect(ck, l.items[i].name, l.items[i].ndim, l.items[i].shape,
                                   &tensors[i], err);
    if (!st) st = allocate_arena(w, l.items, l.count, be, err);
    void *staging = NULL;
    quant_staging qs = {0};
    if (!st && !be->host_memory && !(staging = malloc(STAGING_BYTES)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the staging buffer");
    if (!st) st = quant_staging_create(&qs, l.items, l.count, err);
    for (size_t i = 0; !st && i < l.count; i++) {
        st = load_spec(&l.items[i], tensors[i], w, be, staging, &qs, err);
        if (st) glm_error_prefix(err, "loading %s", l.items[i].name);
    }
    /* uploads are asynchronous on a GPU: the staging buffers live until they are done */
    if (!st && !be->host_memory) be->ops->synchronize(be);
    quant_staging_free(&qs);
    free(staging);
    free(tensors);
    free(l.items);
    if (st) glm_weights_free(w, be);
    return st;
}

/* A quantized spec with random values: dense rows from fill_normal, quantized on the backend,
 * one chunk at a time through a dense scratch of chunk_rows rows. */
static void random_quantized(const weight_spec *s, uint64_t key, glm_backend *be, void *scratch,
                             int64_t chunk_rows)
{
    const glm_weight *target = s->dst;
    int64_t rows = spec_rows(s);
    for (int64_t r = 0, c = 0; r < rows; r += chunk_rows, c++) {
        int64_t n = rows - r < chunk_rows ? rows - r : chunk_rows;
        glm_tensor t = glm_tensor_2d(be->weight_dtype, n, target->cols, scratch);
        glm_op_fill_normal(be, t, key + (uint64_t)c * 0x632BE59BD9B4E019ull, s->init_mean,
                           s->init_std);
        glm_op_quantize(be, *target, s->row_offset + r, t);
    }
}

glm_status glm_weights_random(glm_weights *w, const glm_model_config *cfg,
                              const glm_shard_plan *plan, const glm_weight_formats *formats,
                              uint64_t seed, glm_backend *be, glm_error *err)
{
    spec_list l = {0};
    glm_status st = build_specs(&l, w, cfg, plan, formats, be, err);
    if (!st && !be->ops->fill_normal)
        st = glm_fail(err, GLM_ERR_UNSUPPORTED, "%s backend cannot make random weights", be->name);
    bool quantized = false;
    for (size_t i = 0; i < l.count; i++)
        quantized = quantized || spec_format(&l.items[i]) != GLM_WEIGHT_DENSE;
    if (!st && quantized && !be->ops->quantize)
        st = glm_fail(err, GLM_ERR_UNSUPPORTED, "%s backend cannot quantize random weights",
                      be->name);
    if (!st) st = allocate_arena(w, l.items, l.count, be, err);
    void *scratch = NULL;
    if (!st && quantized && be->ops->alloc(be, STAGING_BYTES, &scratch)) {
        glm_error be_err = {0};
        st = glm_backend_take_error(be, &be_err);
        st = glm_fail(err, st ? st : GLM_ERR_DEVICE_OOM, "scratch for random weights: %s",
                      be_err.msg);
        scratch = NULL;
    }
    for (size_t i = 0; !st && i < l.count; i++) {
        const weight_spec *s = &l.items[i];
        /* the seed mixes in the tensor index and the rank so every shard differs */
        uint64_t key = seed * 0x9E3779B97F4A7C15ull + i * 1315423911ull + (uint64_t)plan->tp_rank;
        int64_t rows = spec_rows(s), cols = s->blocks[0].n_cols;
        if (spec_format(s) != GLM_WEIGHT_DENSE) {
            int64_t chunk =
                (int64_t)(STAGING_BYTES / ((size_t)cols * glm_dtype_size(be->weight_dtype)));
            random_quantized(s, key, be, scratch, chunk < 1 ? 1 : chunk);
            continue;
        }
        size_t row_bytes = (size_t)cols * glm_dtype_size(be->weight_dtype);
        glm_tensor t =
            glm_tensor_2d(be->weight_dtype, rows, cols,
                          (char *)w->arena + s->offset + (size_t)s->row_offset * row_bytes);
        glm_op_fill_normal(be, t, key, s->init_mean, s->init_std);
    }
    if (!st && be->status) st = glm_backend_take_error(be, err);
    if (scratch) {
        be->ops->synchronize(be);
        be->ops->free(be, scratch);
    }
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
