/* The scheduler with several images per sequence (issue 22):
 *  - each image row of a plan names its own image's pool slot, in prompt order, and a sequence's
 *    images are all encoded in the step that admits it (one pass per distinct image: the same
 *    image twice in a prompt, or in two sequences of one step, is encoded once);
 *  - admission is all or nothing: a sequence whose images do not all find a slot (vision cache
 *    full of running sequences' images, or the step's image budget spent) holds none and waits,
 *    and what it had reserved is not encoded;
 *  - a prompt with more images than the scheduler encodes in a step is refused when added;
 *  - prefix-cache row keys name each row's own image, so prompts differing only in their second
 *    image share blocks only up to it. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/scheduler.h"
#include "tests/testutil.h"

enum { BOI = 90, EOI = 91, PAD = 80, IMAGE_ROWS = 6, PIXELS = 2 };

static void make_scheduler(int cache_slots, int images_per_step, bool prefix,
                           glm_image_cache **images, glm_scheduler **s)
{
    glm_scheduler_config cfg = {.max_batch = 4,
                                .max_tokens_per_step = 256,
                                .prefill_chunk = 256,
                                .max_images_per_step = images_per_step,
                                .block_size = 4,
                                .n_blocks = 128,
                                .max_blocks_per_seq = 32,
                                .image_rows = IMAGE_ROWS,
                                .pixel_floats = PIXELS,
                                .seq_length = 128,
                                .no_prefix_cache = !prefix};
    CHECK(glm_image_cache_create(cache_slots, images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, *images, s, NULL) == GLM_OK);
}

/* A prompt of two text ids, n images, two text ids; image k's key is keys[k] and its pixels
 * (PIXELS floats) all equal 10 * keys[k]. */
static void make_seq(glm_sequence *q, int n, const uint64_t *keys, float *pixels)
{
    int32_t ids[64];
    int t = 0;
    ids[t++] = 1, ids[t++] = 2;
    for (int k = 0; k < n; k++)
        ids[t++] = BOI, ids[t++] = PAD, ids[t++] = EOI;
    ids[t++] = 3, ids[t++] = 4;
    memset(q, 0, sizeof(*q));
    CHECK(glm_prompt_layout_build(ids, t, BOI, EOI, PAD, IMAGE_ROWS, &q->layout, NULL) == GLM_OK);
    for (int k = 0; k < n; k++) {
        q->image_keys[k] = (glm_image_key){.lo = keys[k], .hi = 7};
        for (int j = 0; j < PIXELS; j++)
            pixels[k * PIXELS + j] = 10.0f * (float)keys[k];
    }
    q->pixels = n ? pixels : NULL;
    q->max_new_tokens = 1;
}

/* The slot the plan gives image k of the sequence fed at plan rows [first, ...). */
static int slot_of(const glm_step_plan *p, const glm_sequence *q, int first, int k)
{
    for (int r = 0; r < q->layout.n_rows; r++)
        if (q->layout.image_index[r] == k && q->layout.image_row[r] == 0)
            return p->image_rows[first + r] / IMAGE_ROWS;
    return -1;
}

static void test_slots_and_admission(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    make_scheduler(4, 4, false, &images, &s);
    glm_sequence a, b, c;
    float pa[3 * PIXELS], pb[2 * PIXELS], pc[2 * PIXELS];
    const uint64_t ka[3] = {1, 2, 1}, kb[2] = {3, 4}, kc[2] = {2, 5};
    make_seq(&a, 3, ka, pa); /* its first image twice */
    make_seq(&b, 2, kb, pb);
    make_seq(&c, 2, kc, pc); /* shares image 2 with a */
    CHECK(glm_scheduler_add(s, &a, NULL) == GLM_OK);
    CHECK(glm_scheduler_add(s, &b, NULL) == GLM_OK);
    CHECK(glm_scheduler_add(s, &c, NULL) == GLM_OK);
    glm_step_plan plan = {0};
    glm_logit_row rows[8];
    const float *px = NULL;
    /* step 1: a takes 2 slots (keys 1, 2; its third image is its first again); b needs 2 more
     * and finds them (4 slots); c finds key 2 but no slot for key 5: it waits, holding nothing */
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_seqs == 2 && a.state == GLM_JOB_RUNNING && b.state == GLM_JOB_RUNNING &&
          c.state == GLM_JOB_WAITING);
    CHECK_MSG(plan.n_images == 4, "%d images encoded", plan.n_images);
    int sa0 = slot_of(&plan, &a, 0, 0), sa1 = slot_of(&plan, &a, 0, 1),
        sa2 = slot_of(&plan, &a, 0, 2);
    int sb0 = slot_of(&plan, &b, a.layout.n_rows, 0), sb1 = slot_of(&plan, &b, a.layout.n_rows, 1);
    CHECK(sa0 == sa2 && sa0 != sa1 && sb0 != sb1 && sb0 != sa0 && sb0 != sa1 && sb1 != sa0 &&
          sb1 != sa1);
    /* every image row names its own image's slot, row by row */
    for (int r = 0; r < a.layout.n_rows; r++) {
        int k = a.layout.image_index[r];
        int want = k < 0 ? -1 : a.image_slots[k] * IMAGE_ROWS + a.layout.image_row[r];
        CHECK(plan.image_rows[r] == want);
    }
    /* the pixels to encode are each slot's own image, in the plan's slot order */
    for (int i = 0; px && i < plan.n_images; i++) {
        int slot = plan.image_slots[i];
        float want = slot == sa0 ? 10 : slot == sa1 ? 20 : slot == sb0 ? 30 : 40;
        CHECK(px[i * PIXELS] == want);
    }
    glm_image_cache_stats st = glm_image_cache_stats_get(images);
    CHECK_MSG(st.pinned == 4, "%d slots pinned (c must hold none)", st.pinned);
    int32_t tok[8] = {5, 5, 5, 5, 5, 5, 5, 5};
    glm_scheduler_commit(s, rows, tok, plan.n_logit_rows); /* a and b end (1 new token) */
    CHECK(a.state == GLM_JOB_FINISHED && b.state == GLM_JOB_FINISHED);
    /* step 2: c is admitted; key 2 is still cached (a's), so only key 5 is encoded */
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(c.state == GLM_JOB_RUNNING && plan.n_images == 1);
    CHECK(slot_of(&plan, &c, 0, 0) == sa1);
    glm_scheduler_commit(s, rows, tok, plan.n_logit_rows);
    CHECK(!glm_scheduler_has_work(s));

    /* more images than a step encodes: refused when added */
    glm_sequence big;
    float pbig[5 * PIXELS];
    const uint64_t kbig[5] = {11, 12, 13, 14, 15};
    make_seq(&big, 5, kbig, pbig);
    glm_error err = {0};
    CHECK(glm_scheduler_add(s, &big, &err) == GLM_ERR_LIMIT);
    glm_sequence_free(&big);
    glm_sequence_free(&a), glm_sequence_free(&b), glm_sequence_free(&c);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* The step's image budget (3) admits one 2-image sequence; the next finds room for its first
 * image only, so it waits and that image is neither encoded nor left in the cache as if it were
 * (it is encoded in the step that admits the sequence). */
static void test_step_budget(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    make_scheduler(8, 3, false, &images, &s);
    glm_sequence a, b;
    float pa[2 * PIXELS], pb[2 * PIXELS];
    const uint64_t ka[2] = {1, 2}, kb[2] = {3, 4};
    make_seq(&a, 2, ka, pa);
    make_seq(&b, 2, kb, pb);
    CHECK(glm_scheduler_add(s, &a, NULL) == GLM_OK && glm_scheduler_add(s, &b, NULL) == GLM_OK);
    glm_step_plan plan = {0};
    glm_logit_row rows[4];
    const float *px;
    int32_t tok[4] = {5, 5, 5, 5};
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_seqs == 1 && plan.n_images == 2 && b.state == GLM_JOB_WAITING);
    CHECK(glm_image_cache_stats_get(images).pinned == 2);
    glm_scheduler_commit(s, rows, tok, plan.n_logit_rows);
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_seqs == 1 && plan.n_images == 2 && b.state == GLM_JOB_RUNNING);
    glm_scheduler_commit(s, rows, tok, plan.n_logit_rows);
    CHECK(!glm_scheduler_has_work(s));
    glm_sequence_free(&a), glm_sequence_free(&b);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* Prefix caching: a second prompt equal to the first up to its second image reuses the blocks
 * before that image only; the same prompt again reuses all but its last row. */
static void test_prefix_keys(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    make_scheduler(8, 4, true, &images, &s);
    glm_sequence a, b, c;
    float pa[2 * PIXELS], pb[2 * PIXELS], pc[2 * PIXELS];
    const uint64_t ka[2] = {1, 2}, kb[2] = {1, 3};
    make_seq(&a, 2, ka, pa);
    make_seq(&b, 2, kb, pb); /* differs from a in its second image only */
    make_seq(&c, 2, ka, pc); /* a again */
    glm_step_plan plan = {0};
    glm_logit_row rows[4];
    const float *px;
    int32_t tok[4] = {5, 5, 5, 5};
    glm_sequence *seqs[3] = {&a, &b, &c};
    int first_fed[3];
    for (int i = 0; i < 3; i++) { /* one at a time, so each finds the earlier ones' blocks */
        CHECK(glm_scheduler_add(s, seqs[i], NULL) == GLM_OK);
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        first_fed[i] = seqs[i]->layout.n_rows - plan.n_tokens;
        glm_scheduler_commit(s, rows, tok, plan.n_logit_rows);
    }
    /* rows: 2 text, image 1 at rows 2..7, image 2 at rows 8..13, 2 text; blocks of 4 */
    int second_image = 2 + IMAGE_ROWS;
    CHECK_MSG(first_fed[0] == 0, "a reused %d rows", first_fed[0]);
    CHECK_MSG(first_fed[1] == second_image / 4 * 4, "b reused %d rows (want %d)", first_fed[1],
              second_image / 4 * 4);
    CHECK_MSG(first_fed[2] == (a.layout.n_rows - 1) / 4 * 4, "c reused %d rows", first_fed[2]);
    glm_sequence_free(&a), glm_sequence_free(&b), glm_sequence_free(&c);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* A slot is held only while its image's rows are still to be fed: with 8-row chunks, a 2-image
 * prompt (rows 0-1 text, 2-7 image 1, 8-13 image 2, 14-15 text) gives image 1 back after the
 * first chunk and image 2 after the second, while it keeps decoding; so a 2-slot cache runs a
 * second 2-image sequence beside it once the first is prefilled. */
static void test_release_after_prefill(void)
{
    glm_scheduler_config cfg = {.max_batch = 4,
                                .max_tokens_per_step = 64,
                                .prefill_chunk = 8,
                                .max_images_per_step = 2,
                                .block_size = 4,
                                .n_blocks = 128,
                                .max_blocks_per_seq = 32,
                                .image_rows = IMAGE_ROWS,
                                .pixel_floats = PIXELS,
                                .seq_length = 128,
                                .no_prefix_cache = true};
    glm_image_cache *images;
    glm_scheduler *s;
    CHECK(glm_image_cache_create(2, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    glm_sequence a, b;
    float pa[2 * PIXELS], pb[2 * PIXELS];
    const uint64_t ka[2] = {1, 2}, kb[2] = {3, 4};
    make_seq(&a, 2, ka, pa);
    make_seq(&b, 2, kb, pb);
    a.max_new_tokens = b.max_new_tokens = 8;
    CHECK(glm_scheduler_add(s, &a, NULL) == GLM_OK && glm_scheduler_add(s, &b, NULL) == GLM_OK);
    glm_step_plan plan = {0};
    glm_logit_row rows[8];
    const float *px;
    int32_t tok[8] = {5, 5, 5, 5, 5, 5, 5, 5};
    int pinned_after[2] = {-1, -1};
    bool b_ran_beside_a = false;
    for (int step = 0; step < 40 && glm_scheduler_has_work(s); step++) {
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        b_ran_beside_a |= plan.n_seqs == 2;
        glm_scheduler_commit(s, rows, tok, plan.n_logit_rows);
        if (step < 2) pinned_after[step] = glm_image_cache_stats_get(images).pinned;
    }
    CHECK_MSG(pinned_after[0] == 1 && pinned_after[1] == 0, "pinned after steps 1, 2: %d, %d",
              pinned_after[0], pinned_after[1]);
    CHECK(a.state == GLM_JOB_FINISHED && b.state == GLM_JOB_FINISHED && b_ran_beside_a);
    CHECK(glm_image_cache_stats_get(images).pinned == 0);
    glm_sequence_free(&a), glm_sequence_free(&b);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

int main(void)
{
    test_release_after_prefill();
    test_slots_and_admission();
    test_step_budget();
    test_prefix_keys();
    return test_finish("scheduler_multi");
}
