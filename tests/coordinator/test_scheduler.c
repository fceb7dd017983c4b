/* Scheduler test against a fake model that checks every step plan: each sequence's KV rows
 * must be found through its block table in slots that hold exactly those rows (no two
 * sequences sharing a slot, nothing lost across preemption), the rows fed must be the prompt
 * then the generated tokens, and the "sampled" token is a pure function of the sequence and its
 * context length, so generation must come out the same with a roomy cache and with a cache so
 * small that sequences are preempted and recomputed. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/scheduler.h"
#include "tests/testutil.h"

#define N_SEQS 24
#define EOS 7

typedef struct fake_kv {
    int *seq, *row; /* per slot */
} fake_kv;

static int32_t fake_token(int seq, int ctx)
{
    uint32_t h = (uint32_t)seq * 2654435761u ^ (uint32_t)ctx * 40503u;
    return 100 + (int32_t)(h % 50);
}

typedef struct run_result {
    int32_t generated[N_SEQS][64];
    int n_generated[N_SEQS];
    uint64_t preemptions;
    int steps;
} run_result;

static void run(int n_blocks, int budget, int max_batch, run_result *out)
{
    const int bs = 4, image_rows = 6, max_blocks = 64;
    int eos[] = {EOS};
    glm_scheduler_config cfg = {.max_batch = max_batch,
                                .max_tokens_per_step = budget,
                                .prefill_chunk = 8,
                                .max_images_per_step = 2,
                                .block_size = bs,
                                .n_blocks = n_blocks,
                                .max_blocks_per_seq = max_blocks,
                                .image_rows = image_rows,
                                .pixel_floats = 4,
                                .seq_length = 256,
                                .eos_ids = eos,
                                .n_eos_ids = 1};
    glm_image_cache *images;
    glm_scheduler *s;
    CHECK(glm_image_cache_create(3, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    glm_sequence seqs[N_SEQS];
    float pixels[4] = {1, 2, 3, 4}, prompt_logits[1]; /* never read: the driver's buffer */
    bool prompt_row_seen[N_SEQS][64] = {{0}};
    test_rng rng;
    test_rng_seed(&rng, 42);
    for (int i = 0; i < N_SEQS; i++) {
        memset(&seqs[i], 0, sizeof(seqs[i]));
        int n_ids = test_rng_int(&rng, 3, 20);
        int32_t ids[32];
        for (int k = 0; k < n_ids; k++)
            ids[k] = 10 + (i * 7 + k) % 50;
        if (i % 3 == 0 && n_ids > 5) ids[1] = 90, ids[2] = 80, ids[3] = 91; /* an image */
        CHECK(glm_prompt_layout_build(ids, n_ids, 90, 91, 80, image_rows, &seqs[i].layout, NULL) ==
              GLM_OK);
        seqs[i].pixels = pixels;
        seqs[i].image_keys[0] = (glm_image_key){.lo = (uint64_t)(i % 2), .hi = 1};
        seqs[i].max_new_tokens = test_rng_int(&rng, 1, 30);
        /* every fourth asks for the logits of all its prompt rows (glm4v-run --dump-logits) */
        if (i % 4 == 1) seqs[i].prompt_logits = prompt_logits;
        CHECK(glm_scheduler_add(s, &seqs[i], NULL) == GLM_OK);
        CHECK(seqs[i].state == GLM_JOB_WAITING);
    }
    fake_kv kv = {calloc((size_t)n_blocks * bs, sizeof(int)),
                  calloc((size_t)n_blocks * bs, sizeof(int))};
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    int32_t sampled[64];
    int guard = 0;
    while (glm_scheduler_has_work(s) && guard++ < 5000) {
        const float *px;
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        CHECK(plan.n_tokens <= budget && plan.n_seqs <= max_batch);
        if (plan.n_tokens == 0) {
            CHECK_MSG(0, "scheduler stalled with work left");
            break;
        }
        for (int q = 0; q < plan.n_seqs; q++) {
            int first = plan.q_start[q], last = plan.q_start[q + 1];
            int ctx = plan.ctx_len[q], seq_id = -1;
            /* find the sequence by matching its block table row */
            for (int i = 0; i < N_SEQS; i++)
                if (seqs[i].scheduled && seqs[i].n_cached + seqs[i].step_rows == ctx &&
                    seqs[i].table.blocks &&
                    seqs[i].table.blocks[0] == plan.block_table[q * plan.max_blocks_per_seq])
                    seq_id = i;
            CHECK(seq_id >= 0);
            if (seq_id < 0) continue;
            glm_sequence *sq = &seqs[seq_id];
            for (int t = first; t < last; t++) {
                int row = ctx - (last - t);
                kv.seq[plan.slots[t]] = seq_id;
                kv.row[plan.slots[t]] = row;
                int32_t want = row < sq->layout.n_rows ? sq->layout.token_ids[row]
                                                       : sq->generated[row - sq->layout.n_rows];
                CHECK(plan.token_ids[t] == want);
                if (plan.token_ids[t] < 0) CHECK(plan.image_rows[t] >= 0);
            }
            const int32_t *bt = plan.block_table + q * plan.max_blocks_per_seq;
            for (int r = 0; r < ctx; r++) {
                int slot = bt[r / bs] * bs + r % bs;
                CHECK_MSG(kv.seq[slot] == seq_id && kv.row[slot] == r,
                          "seq %d row %d: slot %d holds seq %d row %d", seq_id, r, slot,
                          kv.seq[slot], kv.row[slot]);
            }
        }
        for (int l = 0; l < plan.n_logit_rows; l++) {
            int seq_id = (int)(rows[l].seq - seqs);
            glm_sequence *sq = rows[l].seq;
            CHECK(sq->state == GLM_JOB_RUNNING);
            int t = plan.logit_rows[l];
            int q = 0;
            while (plan.q_start[q + 1] <= t)
                q++;
            /* the row named is the one at that plan position, and only the last row draws */
            int row = plan.ctx_len[q] - (plan.q_start[q + 1] - t);
            CHECK(rows[l].row == row);
            bool last = row == sq->layout.n_rows + sq->n_generated - 1;
            CHECK(rows[l].draw == last);
            CHECK(last || (sq->prompt_logits && row < sq->layout.n_rows));
            if (row < sq->layout.n_rows && row < 64) prompt_row_seen[seq_id][row] = true;
            sampled[l] = rows[l].draw ? fake_token(seq_id, plan.ctx_len[q]) : -1;
        }
        glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
        out->steps++;
    }
    CHECK(!glm_scheduler_has_work(s));
    glm_scheduler_stats st = glm_scheduler_stats_get(s);
    CHECK(st.blocks_used == 0);
    out->preemptions = st.preemptions;
    for (int i = 0; i < N_SEQS; i++) {
        CHECK(seqs[i].finish == GLM_SEQ_FINISHED_LENGTH && seqs[i].state == GLM_JOB_FINISHED);
        if (seqs[i].prompt_logits)
            for (int r = 0; r < seqs[i].layout.n_rows; r++)
                CHECK_MSG(prompt_row_seen[i][r], "seq %d: prompt row %d was no logit row", i, r);
        /* ended once: neither ended again nor re-queued */
        CHECK(!glm_scheduler_finish(s, &seqs[i], GLM_SEQ_CANCELLED));
        CHECK(glm_scheduler_add(s, &seqs[i], NULL) == GLM_ERR_INVALID_ARG);
        CHECK(seqs[i].state == GLM_JOB_FINISHED);
        CHECK(seqs[i].n_generated == seqs[i].max_new_tokens);
        out->n_generated[i] = seqs[i].n_generated;
        memcpy(out->generated[i], seqs[i].generated, sizeof(int32_t) * (size_t)seqs[i].n_generated);
        glm_sequence_free(&seqs[i]);
    }
    glm_image_cache_stats is = glm_image_cache_stats_get(images);
    CHECK(is.pinned == 0);
    CHECK(is.hits > 0);
    free(kv.seq);
    free(kv.row);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* A scheduler for a few short text sequences (64-token steps, 64 blocks of 4), with its cache. */
static void small_scheduler(int max_batch, glm_image_cache **images, glm_scheduler **s)
{
    glm_scheduler_config cfg = {.max_batch = max_batch,
                                .max_tokens_per_step = 64,
                                .prefill_chunk = 64,
                                .max_images_per_step = 1,
                                .block_size = 4,
                                .n_blocks = 64,
                                .max_blocks_per_seq = 16,
                                .image_rows = 6,
                                .seq_length = 64};
    CHECK(glm_image_cache_create(1, images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, *images, s, NULL) == GLM_OK);
}

/* Admission follows priority, FIFO within a priority. */
static void test_priority(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    small_scheduler(1, &images, &s);
    glm_sequence q[4];
    int prio[4] = {0, 5, 0, 5}, want[4] = {1, 3, 0, 2};
    int32_t ids[3] = {1, 2, 3};
    for (int i = 0; i < 4; i++) {
        memset(&q[i], 0, sizeof(q[i]));
        CHECK(glm_prompt_layout_build(ids, 3, 90, 91, 80, 6, &q[i].layout, NULL) == GLM_OK);
        q[i].max_new_tokens = 1;
        q[i].priority = prio[i];
        CHECK(glm_scheduler_add(s, &q[i], NULL) == GLM_OK);
    }
    glm_step_plan plan = {0};
    glm_logit_row rows[4];
    int32_t tok = 100;
    for (int k = 0; k < 4; k++) {
        const float *px;
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        CHECK(plan.n_logit_rows == 1);
        if (plan.n_logit_rows == 1) CHECK(rows[0].seq - q == want[k]);
        glm_scheduler_commit(s, rows, &tok, plan.n_logit_rows);
    }
    CHECK(!glm_scheduler_has_work(s));
    for (int i = 0; i < 4; i++)
        glm_sequence_free(&q[i]);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* A row the sampler drew nothing from (id -1) ends its sequence with an error and appends nothing;
 * the sequence beside it in the step goes on. */
static void test_undrawn_row(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    small_scheduler(2, &images, &s);
    glm_sequence q[2];
    int32_t ids[3] = {1, 2, 3};
    for (int i = 0; i < 2; i++) {
        memset(&q[i], 0, sizeof(q[i]));
        CHECK(glm_prompt_layout_build(ids, 3, 90, 91, 80, 6, &q[i].layout, NULL) == GLM_OK);
        q[i].max_new_tokens = 4;
        CHECK(glm_scheduler_add(s, &q[i], NULL) == GLM_OK);
    }
    glm_step_plan plan = {0};
    glm_logit_row rows[2];
    const float *px;
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_logit_rows == 2);
    if (plan.n_logit_rows == 2) {
        int32_t sampled[2] = {-1, 7};
        glm_scheduler_commit(s, rows, sampled, 2);
        CHECK(rows[0].seq->finish == GLM_SEQ_FINISHED_ERROR && rows[0].seq->n_generated == 0);
        CHECK(rows[0].seq->state == GLM_JOB_FAILED);
        CHECK(rows[1].seq->finish == GLM_SEQ_NOT_FINISHED && rows[1].seq->n_generated == 1 &&
              rows[1].seq->generated[0] == 7 && rows[1].seq->state == GLM_JOB_RUNNING);
        CHECK(glm_scheduler_has_work(s));
    }
    for (int i = 0; i < 2; i++)
        glm_sequence_free(&q[i]);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* The job lifecycle through the scheduler: a sequence joins WAITING, runs, is cancelled from the
 * batch or from the queue with its blocks released, and the transition table refuses the rest. */
static void test_lifecycle(void)
{
    CHECK(glm_job_transition_is_legal(GLM_JOB_QUEUED, GLM_JOB_PREPARING));
    CHECK(glm_job_transition_is_legal(GLM_JOB_RUNNING, GLM_JOB_WAITING)); /* preemption */
    CHECK(!glm_job_transition_is_legal(GLM_JOB_PREPARING, GLM_JOB_RUNNING));
    CHECK(!glm_job_transition_is_legal(GLM_JOB_WAITING, GLM_JOB_FINISHED));
    CHECK(!glm_job_transition_is_legal(GLM_JOB_QUEUED, GLM_JOB_FINISHED));
    for (int f = GLM_JOB_FINISHED; f <= GLM_JOB_CANCELLED; f++)
        for (int t = GLM_JOB_QUEUED; t <= GLM_JOB_CANCELLED; t++)
            CHECK(!glm_job_transition_is_legal((glm_job_state)f, (glm_job_state)t));
    glm_image_cache *images;
    glm_scheduler *s;
    small_scheduler(1, &images, &s);
    glm_sequence q[3];
    int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    for (int i = 0; i < 3; i++) {
        memset(&q[i], 0, sizeof(q[i]));
        CHECK(glm_prompt_layout_build(ids, 9, 90, 91, 80, 6, &q[i].layout, NULL) == GLM_OK);
        q[i].max_new_tokens = 8;
        if (i == 1) q[i].state = GLM_JOB_PREPARING;
        CHECK(glm_scheduler_add(s, &q[i], NULL) == GLM_OK && q[i].state == GLM_JOB_WAITING);
    }
    CHECK(glm_scheduler_add(s, &q[0], NULL) == GLM_ERR_INVALID_ARG); /* already in */
    glm_step_plan plan = {0};
    glm_logit_row rows[1];
    const float *px;
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(q[0].state == GLM_JOB_RUNNING && q[1].state == GLM_JOB_WAITING);
    int32_t tok = 100;
    glm_scheduler_commit(s, rows, &tok, plan.n_logit_rows);
    CHECK(glm_scheduler_stats_get(s).blocks_used > 0);
    CHECK(glm_scheduler_finish(s, &q[0], GLM_SEQ_CANCELLED) && q[0].state == GLM_JOB_CANCELLED);
    CHECK(glm_scheduler_stats_get(s).blocks_used == 0);
    CHECK(glm_scheduler_finish(s, &q[2], GLM_SEQ_FINISHED_ERROR) && q[2].state == GLM_JOB_FAILED);
    CHECK(!glm_scheduler_finish(s, &q[2], GLM_SEQ_FINISHED_STOP));
    glm_scheduler_stats st = glm_scheduler_stats_get(s);
    CHECK(st.running == 0 && st.waiting == 1);
    /* only a running sequence finishes by generating; a waiting one can fail or be cancelled */
    CHECK(!glm_scheduler_finish(s, &q[1], GLM_SEQ_FINISHED_STOP_STRING));
    CHECK(q[1].state == GLM_JOB_WAITING && glm_scheduler_has_work(s));
    CHECK(glm_scheduler_finish(s, &q[1], GLM_SEQ_CANCELLED) && !glm_scheduler_has_work(s));
    for (int i = 0; i < 3; i++)
        glm_sequence_free(&q[i]);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* A sequence that asks for its prompt's logits and no token: every prompt row is a logit row,
 * the last one draws, and the draw is not appended: it finishes after its prompt. */
static void test_prompt_only(void)
{
    glm_image_cache *images;
    glm_scheduler *s;
    small_scheduler(1, &images, &s);
    CHECK(glm_scheduler_max_logit_rows(s) == 64);
    glm_sequence q;
    memset(&q, 0, sizeof(q));
    float logits[1];
    int32_t ids[5] = {1, 2, 3, 4, 5};
    CHECK(glm_prompt_layout_build(ids, 5, 90, 91, 80, 6, &q.layout, NULL) == GLM_OK);
    q.prompt_logits = logits;
    CHECK(glm_scheduler_add(s, &q, NULL) == GLM_OK);
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    const float *px;
    CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
    CHECK(plan.n_tokens == 5 && plan.n_logit_rows == 5);
    for (int i = 0; i < plan.n_logit_rows && i < 5; i++)
        CHECK(rows[i].seq == &q && rows[i].row == i && rows[i].draw == (i == 4) &&
              plan.logit_rows[i] == i);
    int32_t sampled[5] = {-1, -1, -1, -1, 9};
    glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
    CHECK(q.state == GLM_JOB_FINISHED && q.finish == GLM_SEQ_FINISHED_LENGTH && q.n_generated == 0);
    CHECK(!glm_scheduler_has_work(s) && glm_scheduler_stats_get(s).blocks_used == 0);
    glm_sequence_free(&q);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* The cache's LRU and pinning, and the no-reuse switch the sweep benchmark uses. */
static void test_image_cache(void)
{
    glm_image_cache *c;
    CHECK(glm_image_cache_create(2, &c, NULL) == GLM_OK);
    glm_image_key a = glm_image_key_of("a", 1), b = glm_image_key_of("b", 1);
    glm_image_key d = glm_image_key_of("d", 1);
    bool hit;
    int sa = glm_image_cache_acquire(c, a, &hit);
    CHECK(sa >= 0 && !hit);
    glm_image_cache_mark_ready(c, sa);
    CHECK(glm_image_cache_acquire(c, a, &hit) == sa && hit); /* a hit, pinned twice */
    int sb = glm_image_cache_acquire(c, b, &hit);
    CHECK(sb >= 0 && sb != sa && !hit);
    CHECK(glm_image_cache_acquire(c, d, &hit) == -1); /* every slot pinned */
    glm_image_cache_release(c, sa), glm_image_cache_release(c, sa);
    glm_image_cache_mark_ready(c, sb);
    glm_image_cache_release(c, sb);
    CHECK(glm_image_cache_acquire(c, d, &hit) == sa && !hit); /* a is least recently used */
    glm_image_cache_mark_ready(c, sa);
    glm_image_cache_release(c, sa);
    glm_image_cache_set_reuse(c, false);
    int again = glm_image_cache_acquire(c, b, &hit); /* b is cached but must not be reused */
    CHECK(again >= 0 && !hit);
    glm_image_cache_stats st = glm_image_cache_stats_get(c);
    CHECK(st.hits == 1 && st.misses == 4);
    glm_image_cache_destroy(c);
}

int main(void)
{
    test_image_cache();
    test_priority();
    test_undrawn_row();
    test_lifecycle();
    test_prompt_only();
    static run_result roomy, tight, serial;
    run(4096, 256, 32, &roomy);
    run(24, 64, 32, &tight); /* 96 slots: forces preemption */
    run(4096, 16, 1, &serial);
    printf("steps roomy %d tight %d serial %d; preemptions tight %llu\n", roomy.steps, tight.steps,
           serial.steps, (unsigned long long)tight.preemptions);
    CHECK(roomy.preemptions == 0);
    CHECK(tight.preemptions > 0);
    for (int i = 0; i < N_SEQS; i++) {
        CHECK(roomy.n_generated[i] == tight.n_generated[i]);
        CHECK(memcmp(roomy.generated[i], tight.generated[i],
                     sizeof(int32_t) * (size_t)roomy.n_generated[i]) == 0);
        CHECK(memcmp(roomy.generated[i], serial.generated[i],
                     sizeof(int32_t) * (size_t)roomy.n_generated[i]) == 0);
    }
    return test_finish("scheduler");
}
