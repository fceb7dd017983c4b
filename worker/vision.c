/* The EVA2-CLIP vision tower and GLU projector, tensor-parallel, written against the op interface.
 *
 * pixels -> patch conv -> [cls | patches] + positions -> N post-normalized layers ->
 * drop cls -> 2x2 conv -> linear_proj -> LayerNorm -> GELU -> SwiGLU -> [boi | tokens | eoi] / 8
 * into the image pool. Row-parallel GEMMs are summed with one all-reduce each; their biases are
 * added by rank 0 alone so the sum counts them once. */
#include "worker/model_internal.h"
#include "worker/tp_ops.h"

#include <math.h>
#include <stdbool.h>

/* x += LN(row-parallel GEMM of `in` summed over ranks); xin = x in the activation dtype (it is
 * the next GEMM's input, and shares delta's memory). */
static glm_status residual_branch(glm_model *m, glm_tensor x, glm_tensor xin, glm_tensor in,
                                  glm_weight w, const glm_tensor *bias, glm_tensor ln_w,
                                  glm_tensor ln_b, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_tensor *b = m->plan.tp_rank == 0 ? bias : NULL;
    glm_tensor delta = xin;
    glm_op_linear(be, delta, in, w, b, GLM_ACT_NONE);
    glm_status st = glm_tp_allreduce(m->comm, delta, "vision all-reduce", err);
    if (st) return st;
    glm_op_add_layernorm(be, xin, x, delta, ln_w, ln_b, m->cfg.vision.layer_norm_eps);
    return GLM_OK;
}

/* Rows [0, rows) of a quantized-activation buffer (codes + scales carved in model.c) as the fp8
 * "weight" linear_q8 reads (ops.h: fp8 activations). */
static glm_weight act_q8(const glm_tensor *codes, const glm_tensor *scales, int64_t rows,
                         int64_t cols)
{
    glm_weight q = {GLM_WEIGHT_FP8, GLM_F32, rows, cols, 0, codes->data, scales->data, NULL};
    return q;
}

/* The fp8 tower's fused path: every GEMM input is quantized by the kernel that produces it
 * (add_layernorm_q8 for x, gelu_q8 for fc2's input, quantize_act for the attention output) and
 * linear_q8 applies both scales and the bias in the GEMM, where linear would quantize its input
 * in a pass of its own and rescale its output in another. Taken when the layer's four weights
 * are fp8, the backend has the ops and model.c carved the buffers (--vision-weights fp8). */
static bool fused_fp8(const glm_model *m, const glm_vision_layer_weights *L)
{
    const glm_backend_ops *o = m->be->ops;
    return L->qkv_w.format == GLM_WEIGHT_FP8 && L->dense_w.format == GLM_WEIGHT_FP8 &&
           L->fc1_w.format == GLM_WEIGHT_FP8 && L->fc2_w.format == GLM_WEIGHT_FP8 &&
           o->linear_q8 && o->add_layernorm_q8 && o->gelu_q8 && o->quantize_act &&
           m->vs.xq.data && m->vs.q8.data;
}

/* Bidirectional attention within each image's rows: qkv -> attn (both paths). */
static void vision_attention(glm_model *m, glm_tensor attn, glm_tensor qkv, int n_images,
                             int64_t rows)
{
    const glm_vision_config *v = &m->cfg.vision;
    int seq = (int)(rows / n_images), head_dim = v->hidden_size / v->num_heads;
    glm_op_attention_full(m->be, attn, qkv, n_images, seq, m->plan.v_heads, head_dim,
                          1.0f / sqrtf((float)head_dim));
}

/* residual_branch for the fused path: the GEMM reads the quantized rows in, and the LayerNorm
 * also leaves the new x quantized in xq for the next GEMM. */
static glm_status residual_branch_q8(glm_model *m, glm_tensor x, glm_tensor xin, glm_weight in,
                                     glm_weight w, const glm_tensor *bias, glm_tensor ln_w,
                                     glm_tensor ln_b, glm_weight xq, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_tensor *b = m->plan.tp_rank == 0 ? bias : NULL;
    glm_tensor delta = xin;
    glm_op_linear_q8(be, delta, in, w, b, GLM_ACT_NONE);
    glm_status st = glm_tp_allreduce(m->comm, delta, "vision all-reduce", err);
    if (st) return st;
    glm_op_add_layernorm_q8(be, xin, x, delta, ln_w, ln_b, m->cfg.vision.layer_norm_eps, xq);
    return GLM_OK;
}

/* vision_layer's fused fp8 form; on entry xq holds x's rows quantized. */
static glm_status vision_layer_q8(glm_model *m, const glm_vision_layer_weights *L, int n_images,
                                  int64_t rows, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_vision_config *v = &m->cfg.vision;
    vision_scratch *s = &m->vs;
    glm_tensor x = glm_rows(&s->x, rows), xin = glm_rows(&s->delta, rows);
    glm_tensor qkv = glm_rows(&s->qkv, rows), attn = glm_rows(&s->attn, rows);
    glm_weight xq = act_q8(&s->xq, &s->xq_scales, rows, v->hidden_size);
    glm_weight aq = act_q8(&s->q8, &s->q8_scales, rows, glm_tensor_cols(&attn));

    glm_op_linear_q8(be, qkv, xq, L->qkv_w, &L->qkv_b, GLM_ACT_NONE);
    vision_attention(m, attn, qkv, n_images, rows);
    glm_op_quantize_act(be, aq, attn);
    glm_status st = residual_branch_q8(m, x, xin, aq, L->dense_w, &L->dense_b, L->ln_in_w,
                                       L->ln_in_b, xq, err);
    if (st) return st;

    glm_tensor mlp = glm_rows(&s->mlp, rows);
    glm_weight mq = act_q8(&s->q8, &s->q8_scales, rows, glm_tensor_cols(&mlp));
    glm_op_linear_q8(be, mlp, xq, L->fc1_w, &L->fc1_b, GLM_ACT_NONE);
    glm_op_gelu_q8(be, mq, mlp);
    return residual_branch_q8(m, x, xin, mq, L->fc2_w, &L->fc2_b, L->ln_post_w, L->ln_post_b, xq,
                              err);
}

/* On entry and on return xin (= delta) holds the residual stream x in the activation dtype. */
static glm_status vision_layer(glm_model *m, const glm_vision_layer_weights *L, int n_images,
                               int64_t rows, glm_error *err)
{
    glm_backend *be = m->be;
    vision_scratch *s = &m->vs;
    glm_tensor x = glm_rows(&s->x, rows), xin = glm_rows(&s->delta, rows);

    glm_tensor qkv = glm_rows(&s->qkv, rows), attn = glm_rows(&s->attn, rows);
    glm_op_linear(be, qkv, xin, L->qkv_w, &L->qkv_b, GLM_ACT_NONE);
    vision_attention(m, attn, qkv, n_images, rows);
    glm_status st =
        residual_branch(m, x, xin, attn, L->dense_w, &L->dense_b, L->ln_in_w, L->ln_in_b, err);
    if (st) return st;

    glm_tensor mlp = glm_rows(&s->mlp, rows);
    glm_op_linear(be, mlp, xin, L->fc1_w, &L->fc1_b, GLM_ACT_GELU);
    return residual_branch(m, x, xin, mlp, L->fc2_w, &L->fc2_b, L->ln_post_w, L->ln_post_b, err);
}

/* conv 2x2 -> linear_proj -> LayerNorm -> GELU -> silu(gate) * up -> down, on n * (g/2)^2 rows. */
static glm_status projector(glm_model *m, int n_images, int grid, glm_error *err)
{
    glm_backend *be = m->be;
    vision_scratch *s = &m->vs;
    const glm_weights *w = &m->w;
    int64_t rows = (int64_t)n_images * (grid / 2) * (grid / 2);
    glm_tensor tokens = glm_rows(&s->tokens, (int64_t)n_images * grid * grid);
    glm_tensor cols = glm_rows(&s->cols, rows), conv = glm_rows(&s->conv, rows);
    glm_tensor proj = glm_rows(&s->proj, rows), gate_up = glm_rows(&s->gate_up, rows);
    glm_tensor act = glm_rows(&s->act, rows);

    glm_op_im2col_2x2(be, cols, tokens, n_images, grid);
    glm_op_linear(be, conv, cols, w->conv_w, &w->conv_b, GLM_ACT_NONE);
    glm_op_linear(be, proj, conv, w->proj_w, NULL, GLM_ACT_NONE);
    glm_status st = glm_tp_allreduce(m->comm, proj, "vision all-reduce", err);
    if (st) return st;
    glm_op_layernorm(be, proj, proj, w->norm1_w, w->norm1_b, 1e-5f); /* nn.LayerNorm default */
    glm_op_gelu(be, proj, proj);
    glm_op_linear(be, gate_up, proj, w->gate_up_w, NULL, GLM_ACT_NONE);
    glm_op_silu_mul(be, act, gate_up);
    glm_op_linear(be, proj, act, w->down_w, NULL, GLM_ACT_NONE);
    return glm_tp_allreduce(m->comm, proj, "vision all-reduce", err);
}

glm_status glm_vision_forward(glm_model *m, int n_images, const int32_t *slots, glm_error *err)
{
    glm_backend *be = m->be;
    const glm_vision_config *v = &m->cfg.vision;
    vision_scratch *s = &m->vs;
    const glm_weights *w = &m->w;
    int grid = v->image_size / v->patch_size;
    int64_t n_patches = (int64_t)grid * grid, seq = 1 + n_patches, rows = n_images * seq;

    /* float32 pixels: patchify converts them to the activation type on the device */
    glm_tensor pixels = glm_tensor_4d(s->pixels.dtype, n_images, v->in_channels, v->image_size,
                                      v->image_size, s->pixels.data);
    glm_tensor patches = glm_rows(&s->patches, n_images * n_patches);
    glm_tensor patch_out = glm_rows(&s->patch_out, n_images * n_patches);
    glm_op_patchify(be, patches, pixels, v->patch_size);
    glm_op_linear(be, patch_out, patches, w->patch_w, &w->patch_b, GLM_ACT_NONE);
    glm_tensor x3 = glm_tensor_3d(s->x.dtype, n_images, seq, v->hidden_size, s->x.data);
    glm_op_vision_embed(be, x3, patch_out, w->cls, w->pos, n_images);
    glm_op_copy_rows(be, s->delta, 0, s->x, 0, rows); /* the first layer's GEMM input */

    bool quantized = false; /* xq holds x's rows quantized (the fused fp8 path's input) */
    for (int j = 0; j < v->num_layers; j++) {
        glm_status st;
        if (fused_fp8(m, &w->vlayers[j])) {
            if (!quantized)
                glm_op_quantize_act(be, act_q8(&s->xq, &s->xq_scales, rows, v->hidden_size),
                                    glm_rows(&s->delta, rows));
            st = vision_layer_q8(m, &w->vlayers[j], n_images, rows, err);
            quantized = true;
        } else {
            st = vision_layer(m, &w->vlayers[j], n_images, rows, err);
            quantized = false;
        }
        if (st) return st;
    }

    /* drop each image's cls row (delta holds x in the activation dtype) */
    for (int i = 0; i < n_images; i++)
        glm_op_copy_rows(be, s->tokens, (int64_t)i * n_patches, s->delta, (int64_t)i * seq + 1,
                         n_patches);
    glm_status st = projector(m, n_images, grid, err);
    if (st) return st;

    /* [boi | tokens | eoi] / scaling_factor into each image's pool slot */
    int64_t per_image = (int64_t)(grid / 2) * (grid / 2);
    glm_tensor boi = glm_tensor_2d(be->act_dtype, 1, m->cfg.hidden_size, w->boi.data);
    glm_tensor eoi = glm_tensor_2d(be->act_dtype, 1, m->cfg.hidden_size, w->eoi.data);
    for (int i = 0; i < n_images; i++) {
        int64_t base = (int64_t)slots[i] * m->image_rows;
        glm_op_copy_rows(be, m->image_pool, base, boi, 0, 1);
        glm_op_copy_rows(be, m->image_pool, base + 1, s->proj, i * per_image, per_image);
        glm_op_copy_rows(be, m->image_pool, base + 1 + per_image, eoi, 0, 1);
        glm_tensor slot = glm_tensor_row_view(&m->image_pool, base, m->image_rows);
        glm_op_scale(be, slot, 1.0f / v->scaling_factor);
    }
    return glm_backend_take_error(be, err);
}
