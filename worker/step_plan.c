#include "worker/step_plan.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PLAN_MAGIC 0x474c4d34 /* "GLM4" */
#define PLAN_HEADER_INTS 8

static size_t body_ints(int n_seqs, int n_tokens, int max_blocks, int n_logit, int n_images)
{
    return 4 * (size_t)n_tokens + (size_t)(n_seqs + 1) + (size_t)n_seqs +
           (size_t)n_seqs * (size_t)max_blocks + (size_t)n_logit + (size_t)n_images;
}

glm_status glm_step_plan_resize(glm_step_plan *p, int n_seqs, int n_tokens, int max_blocks_per_seq,
                                int n_logit_rows, int n_images, glm_error *err)
{
    if (n_seqs < 0 || n_tokens < 0 || max_blocks_per_seq < 0 || n_logit_rows < 0 || n_images < 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "negative step plan size");
    size_t need = body_ints(n_seqs, n_tokens, max_blocks_per_seq, n_logit_rows, n_images);
    if (need > p->storage_cap) {
        int32_t *s = realloc(p->storage, need * sizeof(int32_t));
        if (!s) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for a step plan");
        p->storage = s;
        p->storage_cap = need;
    }
    p->n_seqs = n_seqs;
    p->n_tokens = n_tokens;
    p->max_blocks_per_seq = max_blocks_per_seq;
    p->n_logit_rows = n_logit_rows;
    p->n_images = n_images;
    int32_t *q = p->storage;
    p->token_ids = q, q += n_tokens;
    p->positions = q, q += n_tokens;
    p->slots = q, q += n_tokens;
    p->image_rows = q, q += n_tokens;
    p->q_start = q, q += n_seqs + 1;
    p->ctx_len = q, q += n_seqs;
    p->block_table = q, q += (size_t)n_seqs * max_blocks_per_seq;
    p->logit_rows = q, q += n_logit_rows;
    p->image_slots = q;
    return GLM_OK;
}

void glm_step_plan_free(glm_step_plan *p)
{
    free(p->storage);
    memset(p, 0, sizeof(*p));
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static glm_status exchange(glm_comm *comm, void *bytes, size_t n, int root, const char *what,
                           glm_error *err)
{
    glm_status st = comm->ops->broadcast_host(comm, bytes, n, root, what);
    if (st) return glm_fail(err, st, "%s: %s", what, comm->err.msg);
    return GLM_OK;
}

/* Answers one keepalive: the barrier that lets the root see this rank alive. */
static glm_status answer_keepalive(glm_comm *comm, glm_error *err)
{
    glm_status st = comm->ops->barrier(comm);
    if (st) return glm_fail(err, st, "step plan keepalive: %s", comm->err.msg);
    return GLM_OK;
}

glm_status glm_step_plan_broadcast(glm_step_plan *p, int root, glm_comm *comm, glm_error *err)
{
    if (comm->size == 1) return GLM_OK;
    int32_t header[PLAN_HEADER_INTS] = {0};
    for (;;) {
        memset(header, 0, sizeof(header));
        if (comm->rank == root) {
            header[0] = PLAN_MAGIC;
            header[1] = p->n_seqs;
            header[2] = p->n_tokens;
            header[3] = p->max_blocks_per_seq;
            header[4] = p->n_logit_rows;
            header[5] = p->n_images;
            header[6] = p->flags & ~GLM_STEP_KEEPALIVE;
        }
        glm_status st = exchange(comm, header, sizeof(header), root, "step plan header", err);
        if (st) return st;
        comm->last_plan_ms = now_ms();
        if (header[0] != PLAN_MAGIC) return glm_fail(err, GLM_ERR_COMM, "corrupt step plan header");
        if (!(header[6] & GLM_STEP_KEEPALIVE)) break;
        if ((st = answer_keepalive(comm, err))) return st;
    }
    /* a shutdown plan has no body: its header is all a rank needs, and the root's plan may never
     * have been sized (storage NULL), while body_ints(0, ...) still counts q_start[0] */
    if (header[6] & GLM_STEP_SHUTDOWN) {
        p->flags = header[6];
        return GLM_OK;
    }
    if (comm->rank != root) {
        glm_status st =
            glm_step_plan_resize(p, header[1], header[2], header[3], header[4], header[5], err);
        if (st) return st;
        p->flags = header[6];
    }
    size_t n =
        body_ints(p->n_seqs, p->n_tokens, p->max_blocks_per_seq, p->n_logit_rows, p->n_images);
    if (comm->rank == root && n > p->storage_cap)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan: %zu ints to send, %zu allocated", n,
                        p->storage_cap);
    if (n > 0) {
        glm_status st = exchange(comm, p->storage, n * sizeof(int32_t), root, "step plan", err);
        if (st) return st;
    }
    if (p->n_tokens > 0 || p->n_images > 0) glm_comm_count_working_plan(comm);
    return GLM_OK;
}

glm_status glm_step_plan_keepalive(glm_comm *comm, glm_error *err)
{
    int timeout_ms = comm->opt.timeout_ms;
    if (comm->size == 1 || timeout_ms <= 0) return GLM_OK;
    if (comm->rank != 0)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan keepalive from rank %d (not 0)",
                        comm->rank);
    double interval_ms = timeout_ms / 4.0 < 1000.0 ? timeout_ms / 4.0 : 1000.0;
    if (now_ms() - comm->last_plan_ms < interval_ms) return GLM_OK;
    int32_t header[PLAN_HEADER_INTS] = {PLAN_MAGIC};
    header[6] = GLM_STEP_KEEPALIVE;
    glm_status st = exchange(comm, header, sizeof(header), 0, "step plan keepalive", err);
    if (st) return st;
    comm->last_plan_ms = now_ms();
    return answer_keepalive(comm, err);
}

glm_status glm_step_plan_validate(const glm_step_plan *p, int max_tokens, int max_seqs,
                                  int max_blocks_per_seq, int block_size, int n_blocks,
                                  int n_pool_rows, int max_logit_rows, glm_error *err)
{
    if (p->n_tokens > max_tokens || p->n_seqs > max_seqs || p->n_logit_rows > max_logit_rows ||
        p->max_blocks_per_seq > max_blocks_per_seq)
        return glm_fail(err, GLM_ERR_LIMIT,
                        "step of %d tokens / %d seqs / %d logit rows exceeds capacity %d / %d / %d",
                        p->n_tokens, p->n_seqs, p->n_logit_rows, max_tokens, max_seqs,
                        max_logit_rows);
    if (p->n_seqs > 0 && (p->q_start[0] != 0 || p->q_start[p->n_seqs] != p->n_tokens))
        return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan q_start does not cover the tokens");
    for (int s = 0; s < p->n_seqs; s++) {
        int q_len = p->q_start[s + 1] - p->q_start[s];
        int ctx = p->ctx_len[s];
        if (q_len < 1 || ctx < q_len || ctx > p->max_blocks_per_seq * block_size)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan sequence %d has q_len %d ctx %d",
                            s, q_len, ctx);
        const int32_t *row = p->block_table + (size_t)s * p->max_blocks_per_seq;
        for (int b = 0; b < (ctx + block_size - 1) / block_size; b++)
            if (row[b] < 0 || row[b] >= n_blocks)
                return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan block %d out of range",
                                row[b]);
    }
    int n_slots = n_blocks * block_size;
    for (int t = 0; t < p->n_tokens; t++) {
        if (p->slots[t] < 0 || p->slots[t] >= n_slots)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan slot %d out of range",
                            p->slots[t]);
        if (p->image_rows[t] >= n_pool_rows)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan image row %d out of range",
                            p->image_rows[t]);
    }
    for (int i = 0; i < p->n_logit_rows; i++)
        if (p->logit_rows[i] < 0 || p->logit_rows[i] >= p->n_tokens)
            return glm_fail(err, GLM_ERR_INVALID_ARG, "step plan logit row %d out of range",
                            p->logit_rows[i]);
    return GLM_OK;
}
