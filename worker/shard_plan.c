#include "worker/shard_plan.h"

#include <stdio.h>

static glm_status split(glm_error *err, const char *what, int total, int rank, int tp, int *count,
                        int *first)
{
    if (total % tp != 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "tensor parallel size %d does not divide %s (%d)",
                        tp, what, total);
    *count = total / tp;
    *first = rank * *count;
    return GLM_OK;
}

glm_status glm_shard_plan_make(const glm_model_config *cfg, int tp_rank, int tp_size,
                               glm_shard_plan *plan, glm_error *err)
{
    glm_shard_plan p = {.tp_rank = tp_rank, .tp_size = tp_size};
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "bad tensor parallel rank %d of %d", tp_rank,
                        tp_size);
    glm_status st;
    if ((st = split(err, "num_attention_heads", cfg->num_attention_heads, tp_rank, tp_size,
                    &p.q_heads, &p.q_head_first)))
        return st;
    int n_kv = cfg->multi_query_group_num;
    if (tp_size <= n_kv) {
        if ((st = split(err, "multi_query_group_num", n_kv, tp_rank, tp_size, &p.kv_heads,
                        &p.kv_head_first)))
            return st;
    } else {
        /* More ranks than KV heads: replicate each KV head on tp / n_kv ranks. The rank's query
         * heads must all read the same KV head. */
        if (tp_size % n_kv != 0)
            return glm_fail(err, GLM_ERR_INVALID_ARG,
                            "tensor parallel size %d is neither a divisor nor a multiple of the "
                            "%d KV heads",
                            tp_size, n_kv);
        int group = cfg->num_attention_heads / n_kv;
        p.kv_heads = 1;
        p.kv_head_first = p.q_head_first / group;
    }
    if ((st = split(err, "ffn_hidden_size", cfg->ffn_hidden_size, tp_rank, tp_size, &p.ffn,
                    &p.ffn_first)))
        return st;
    if ((st = split(err, "padded_vocab_size", cfg->padded_vocab_size, tp_rank, tp_size, &p.vocab,
                    &p.vocab_first)))
        return st;
    if (cfg->has_vision) {
        const glm_vision_config *v = &cfg->vision;
        if ((st = split(err, "vision num_heads", v->num_heads, tp_rank, tp_size, &p.v_heads,
                        &p.v_head_first)))
            return st;
        if ((st = split(err, "vision intermediate_size", v->intermediate_size, tp_rank, tp_size,
                        &p.v_mlp, &p.v_mlp_first)))
            return st;
        if ((st = split(err, "hidden_size (vision conv output)", cfg->hidden_size, tp_rank, tp_size,
                        &p.conv_out, &p.conv_out_first)))
            return st;
        if ((st = split(err, "ffn_hidden_size (vision projector)", cfg->ffn_hidden_size, tp_rank,
                        tp_size, &p.proj_ffn, &p.proj_ffn_first)))
            return st;
    }
    *plan = p;
    return GLM_OK;
}

void glm_shard_plan_describe(const glm_model_config *cfg, const glm_shard_plan *p, char *buf,
                             size_t len)
{
    int kv_replicas =
        p->tp_size > cfg->multi_query_group_num ? p->tp_size / cfg->multi_query_group_num : 1;
    snprintf(buf, len,
             "sharding plan: tp=%d; per rank: decoder q heads %d/%d, kv heads %d/%d (each kv head "
             "on %d rank%s), ffn %d/%d, vocab %d/%d; vision heads %d/%d, mlp %d/%d, conv out "
             "%d/%d, projector ffn %d/%d; norms, patch embedding, cls/pos, boi/eoi replicated",
             p->tp_size, p->q_heads, cfg->num_attention_heads, p->kv_heads,
             cfg->multi_query_group_num, kv_replicas, kv_replicas > 1 ? "s" : "", p->ffn,
             cfg->ffn_hidden_size, p->vocab, cfg->padded_vocab_size, p->v_heads,
             cfg->vision.num_heads, p->v_mlp, cfg->vision.intermediate_size, p->conv_out,
             cfg->hidden_size, p->proj_ffn, cfg->ffn_hidden_size);
}
