/* Fixed cases next to the scheduler's randomized test (test_scheduler_random.c), each a bug that
 * test or its construction found, each failing before its fix:
 *  - a quarantined sequence starved by a steady stream of short ordinary jobs;
 *  - a step planned again after a failed one fed image rows from a slot nothing was encoded into;
 *  - a sequence that can never be placed (or an empty prompt) was queued, to come back to the
 *    head of the queue forever. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/scheduler.h"
#include "tests/testutil.h"

enum { BOI = 90, EOI = 91, PAD = 80, PF = 2 };

/* Regression (found while building the random test): a quarantined (isolated) sequence with a
 * long prompt never started under a steady stream of short ordinary jobs. Ordinary steps admitted
 * the jobs queued behind it, so every quarantine step found the pool 8 blocks free where it needed
 * 6 + one per running sequence; it waited all 200 steps. Now ordinary steps admit nothing behind
 * a waiting quarantined sequence (while none runs), the pool drains, and it starts. */
static void quarantine_not_starved(void)
{
    glm_scheduler_config cfg = {.max_batch = 8,
                                .max_tokens_per_step = 64,
                                .prefill_chunk = 64,
                                .max_images_per_step = 1,
                                .block_size = 4,
                                .n_blocks = 16,
                                .max_blocks_per_seq = 8,
                                .image_rows = 3,
                                .seq_length = 32,
                                .no_prefix_cache = true};
    glm_image_cache *images = NULL;
    glm_scheduler *s = NULL;
    CHECK(glm_image_cache_create(1, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    enum { STEPS = 200 };
    static glm_sequence seqs[2 * STEPS + 1];
    glm_sequence *quarantined = &seqs[2 * STEPS];
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    int32_t sampled[64] = {0};
    int32_t ids[32] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25};
    int started = -1;
    for (int step = 0; step < STEPS && started < 0; step++) {
        /* a steady stream of ordinary jobs; the quarantined one arrives at step 3 */
        glm_sequence *news[3] = {&seqs[2 * step], NULL, step == 20 ? quarantined : NULL};
        for (int k = 0; k < 3; k++) {
            if (!news[k]) continue;
            glm_sequence *q = news[k];
            memset(q, 0, sizeof(*q));
            int n_ids = q == quarantined ? 24 : 3;
            CHECK(glm_prompt_layout_build(ids, n_ids, BOI, EOI, PAD, 3, &q->layout, NULL) ==
                  GLM_OK);
            q->max_new_tokens = q == quarantined ? 4 : 6;
            q->ignore_eos = true;
            q->isolated = q == quarantined;
            CHECK(glm_scheduler_add(s, q, NULL) == GLM_OK);
        }
        const float *px = NULL;
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        if (quarantined->state == GLM_JOB_RUNNING) started = step;
        if (getenv("GLM_SCHED_TRACE"))
            printf("step %d: %d seqs, blocks used %d, running %d\n", step, plan.n_seqs,
                   glm_scheduler_stats_get(s).blocks_used, glm_scheduler_stats_get(s).running);
        glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
    }
    printf("quarantined sequence started at step %d\n", started);
    CHECK_MSG(started >= 0 && started < 80, "the quarantined sequence started at step %d", started);
    for (int i = 0; i <= 2 * STEPS; i++)
        if (seqs[i].state == GLM_JOB_RUNNING || seqs[i].state == GLM_JOB_WAITING)
            glm_scheduler_finish(s, &seqs[i], GLM_SEQ_CANCELLED);
    for (int i = 0; i <= 2 * STEPS; i++)
        glm_sequence_free(&seqs[i]);
    CHECK(glm_scheduler_stats_get(s).blocks_used == 0);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* Regression (found by the random test once it failed steps at random): after a failed step,
 * glm_scheduler_abort_step forgot the step's new images, but the sequences admitted with them
 * kept their slots and, running, were never given images again: the retried step fed their image
 * rows from a slot nothing had been encoded into. Now they go back to the queue and the retry
 * encodes the image again. */
static void abort_reencodes(void)
{
    glm_scheduler_config cfg = {.max_batch = 2,
                                .max_tokens_per_step = 64,
                                .prefill_chunk = 64,
                                .max_images_per_step = 1,
                                .block_size = 4,
                                .n_blocks = 16,
                                .max_blocks_per_seq = 8,
                                .image_rows = 4,
                                .pixel_floats = PF,
                                .seq_length = 32};
    glm_image_cache *images = NULL;
    glm_scheduler *s = NULL;
    CHECK(glm_image_cache_create(2, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    glm_sequence q;
    memset(&q, 0, sizeof(q));
    int32_t ids[5] = {10, BOI, PAD, EOI, 11};
    float pixels[PF] = {3, 4};
    CHECK(glm_prompt_layout_build(ids, 5, BOI, EOI, PAD, 4, &q.layout, NULL) == GLM_OK);
    q.pixels = pixels;
    q.image_keys[0] = (glm_image_key){.lo = 0x1002, .hi = 0xabc};
    q.max_new_tokens = 1;
    CHECK(glm_scheduler_add(s, &q, NULL) == GLM_OK);
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    int32_t sampled[64] = {0};
    const float *px = NULL;
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_images == 1);
    glm_scheduler_abort_step(s);
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK_MSG(plan.n_images == 1, "the retried step encodes %d images, not the one it feeds",
              plan.n_images);
    for (int t = 0; t < plan.n_tokens; t++)
        if (plan.image_rows[t] >= 0)
            CHECK(plan.n_images == 1 && plan.image_rows[t] / 4 == plan.image_slots[0]);
    glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
    CHECK(q.state == GLM_JOB_FINISHED && q.n_generated == 1);
    CHECK(glm_scheduler_stats_get(s).blocks_used == 0);
    CHECK(glm_image_cache_stats_get(images).pinned == 0);
    glm_sequence_free(&q);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* A sequence the scheduler could never place (more rows than its pool or a block table holds)
 * is refused when added, and so is an empty prompt: queued, either would come back to the head
 * of the queue forever and hold up every sequence behind it. One that just fits is taken and
 * runs to its end. */
static void refuses_what_never_fits(void)
{
    glm_scheduler_config cfg = {.max_batch = 2,
                                .max_tokens_per_step = 64,
                                .prefill_chunk = 64,
                                .max_images_per_step = 1,
                                .block_size = 4,
                                .n_blocks = 4,
                                .max_blocks_per_seq = 3,
                                .image_rows = 3,
                                .seq_length = 64};
    glm_image_cache *images = NULL;
    glm_scheduler *s = NULL;
    CHECK(glm_image_cache_create(1, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    int32_t ids[13] = {10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10};
    /* rows the sequence feeds: its prompt and all its tokens but the last */
    struct {
        int n_ids, max_new;
        glm_status want;
    } cases[] = {{0, 4, GLM_ERR_INVALID_ARG},
                 {13, 1, GLM_ERR_LIMIT},
                 {12, 2, GLM_ERR_LIMIT},
                 {8, 5, GLM_OK},
                 {12, 1, GLM_OK}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        glm_sequence q;
        memset(&q, 0, sizeof(q));
        CHECK(glm_prompt_layout_build(ids, cases[i].n_ids, BOI, EOI, PAD, 3, &q.layout, NULL) ==
              GLM_OK);
        q.max_new_tokens = cases[i].max_new;
        q.ignore_eos = true;
        glm_status st = glm_scheduler_add(s, &q, NULL);
        CHECK_MSG(st == cases[i].want, "%d ids + %d new tokens: status %d, want %d", cases[i].n_ids,
                  cases[i].max_new, st, cases[i].want);
        glm_step_plan plan = {0};
        glm_logit_row rows[64];
        int32_t sampled[64] = {0};
        for (int step = 0; st == GLM_OK && glm_scheduler_has_work(s) && step < 20; step++) {
            const float *px = NULL;
            CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
            CHECK(plan.n_tokens > 0);
            glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
        }
        CHECK(st != GLM_OK || (q.state == GLM_JOB_FINISHED && q.n_generated == q.max_new_tokens));
        glm_sequence_free(&q);
        glm_step_plan_free(&plan);
    }
    CHECK(glm_scheduler_stats_get(s).blocks_used == 0);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

int main(void)
{
    refuses_what_never_fits();
    quarantine_not_starved();
    abort_reencodes();
    return test_finish("scheduler_limits");
}
