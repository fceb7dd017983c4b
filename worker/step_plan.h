/* The step plan: everything every rank needs to run one decoder step, built by the scheduler on
 * rank 0 and broadcast over the group's communicator (its host broadcast, under the step
 * watchdog's deadline) to the other ranks of the tensor-parallel group.
 *
 * A step is a varlen batch: sequence s contributes the tokens q_start[s] .. q_start[s+1]-1 (a
 * prefill chunk or one decode token), each with its rope position, its KV-cache slot, and either
 * a token id or a row of the image-embedding pool (image_rows[t] >= 0, token_ids[t] == -1). */
#ifndef GLM4V_STEP_PLAN_H
#define GLM4V_STEP_PLAN_H

#include <stdint.h>

#include "common/status.h"
#include "worker/comm.h"

enum {
    GLM_STEP_SHUTDOWN = 1 << 0, /* no work: every rank leaves its step loop */
    GLM_STEP_KEEPALIVE = 1 << 1, /* an idle root is alive (glm_step_plan_keepalive); answered
                                    inside glm_step_plan_broadcast, never returned by it */
};

typedef struct glm_step_plan {
    int n_seqs;
    int n_tokens;
    int max_blocks_per_seq; /* row stride of block_table */
    int n_logit_rows;       /* token rows whose logits rank 0 wants back */
    int n_images;           /* images the vision tower encodes before this step */
    int flags;
    int32_t *token_ids;   /* [n_tokens] */
    int32_t *positions;   /* [n_tokens] rope positions */
    int32_t *slots;       /* [n_tokens] KV cache slots */
    int32_t *image_rows;  /* [n_tokens] row in the image-embedding pool, -1 for text */
    int32_t *q_start;     /* [n_seqs + 1] */
    int32_t *ctx_len;     /* [n_seqs] KV length after this step */
    int32_t *block_table; /* [n_seqs * max_blocks_per_seq] */
    int32_t *logit_rows;  /* [n_logit_rows] */
    int32_t *image_slots; /* [n_images] pool slot each new image is written to */
    /* storage behind the arrays (owned) */
    int32_t *storage;
    size_t storage_cap;
} glm_step_plan;

/* Sizes the arrays for the given counts (reusing storage when it is large enough). */
glm_status glm_step_plan_resize(glm_step_plan *p, int n_seqs, int n_tokens, int max_blocks_per_seq,
                                int n_logit_rows, int n_images, glm_error *err);
void glm_step_plan_free(glm_step_plan *p);

/* Collective over comm: root's plan arrives on every rank (a no-op for one rank). Each of its
 * messages has the watchdog's deadline, so a rank waiting for the next plan gives up when the
 * root is gone: an idle root must call glm_step_plan_keepalive. The first two plans with work
 * (tokens or images) get the first-step allowance. */
glm_status glm_step_plan_broadcast(glm_step_plan *p, int root, glm_comm *comm, glm_error *err);

/* Rank 0 (the root of every plan), while it has no step to send: when the last plan is older
 * than a quarter of the deadline (at most 1 s), tells the other ranks it is alive (a keepalive
 * plan and a barrier, so that rank 0 learns of a lost peer too). Cheap to call every idle
 * iteration; a no-op without deadline or with one rank. */
glm_status glm_step_plan_keepalive(glm_comm *comm, glm_error *err);

/* Structural checks a rank runs before trusting a plan: counts within capacities, q_start
 * monotonic, every index inside its range. */
glm_status glm_step_plan_validate(const glm_step_plan *p, int max_tokens, int max_seqs,
                                  int max_blocks_per_seq, int block_size, int n_blocks,
                                  int n_pool_rows, int max_logit_rows, glm_error *err);

#endif
