/* Prefix caching in the scheduler, against a fake model whose "KV" of a row is a hash of that
 * row and of the KV of the row before it, read through the step plan's block table. A token is
 * "sampled" from the KV of the last row, so it depends on every row of the context as the plan
 * placed it: a reused block with the wrong content, a shared block overwritten by another
 * sequence, or a row fed twice into the wrong slot changes the answer. Prompts share system
 * prompts, extend earlier conversations, ask other questions about the same image, and diverge
 * inside a block; the answers must equal those of a scheduler without the cache, with a roomy
 * cache (prefix hits) and with a small one (evictions and preemptions). */
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/scheduler.h"
#include "tests/testutil.h"

#define N_SEQS 40
#define BS 4
#define IMAGE_ROWS 6
#define MAX_IDS 48

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* The prompts: a pool of openings (system prompts), an optional image, then a question; some
 * continue an earlier prompt (a later turn of its conversation). */
typedef struct prompt_set {
    int32_t ids[N_SEQS][MAX_IDS + 32];
    int n_ids[N_SEQS];
    glm_image_key image[N_SEQS];
    int wave[N_SEQS]; /* added after the previous waves finished */
} prompt_set;

static void make_prompts(prompt_set *p)
{
    test_rng rng;
    test_rng_seed(&rng, 1616);
    static const int32_t systems[3][9] = {{11, 12, 13, 14, 15, 16, 17, 18, 19},
                                          {11, 12, 13, 14, 15, 16, 17, 18, 29},
                                          {21, 22, 23, 24, 25, 26, 27, 28, 29}};
    for (int i = 0; i < N_SEQS; i++) {
        int n = 0;
        p->wave[i] = i * 3 / N_SEQS;
        if (i >= 6 && i % 5 == 0) { /* a later turn: an earlier prompt, then more */
            int from = i - 6;
            memcpy(p->ids[i], p->ids[from], sizeof(int32_t) * (size_t)p->n_ids[from]);
            n = p->n_ids[from];
            p->image[i] = p->image[from];
            p->wave[i] = p->wave[from] + 1;
        } else {
            const int32_t *sys = systems[test_rng_int(&rng, 0, 2)];
            int n_sys = test_rng_int(&rng, 5, 9); /* several lengths: divergence inside blocks */
            for (int k = 0; k < n_sys; k++)
                p->ids[i][n++] = sys[k];
            if (i % 3 == 0) { /* an image, one of two pictures */
                p->ids[i][n++] = 90, p->ids[i][n++] = 80, p->ids[i][n++] = 91;
                p->image[i] = (glm_image_key){.lo = 7 + (uint64_t)(i % 2), .hi = 3};
            }
        }
        int n_q = test_rng_int(&rng, 1, 12);
        for (int k = 0; k < n_q && n < MAX_IDS; k++) /* the question: few distinct words */
            p->ids[i][n++] = 40 + test_rng_int(&rng, 0, 3);
        p->n_ids[i] = n;
    }
}

typedef struct run_result {
    int32_t generated[N_SEQS][32];
    int n_generated[N_SEQS];
    glm_scheduler_stats stats;
    uint64_t rows_fed;
    int images_encoded;
    int image_rows_fed;
} run_result;

static uint64_t row_key(const glm_sequence *q, int r)
{
    if (r >= q->layout.n_rows) return (uint64_t)q->generated[r - q->layout.n_rows];
    if (q->layout.image_row[r] < 0) return (uint64_t)q->layout.token_ids[r];
    return mix(mix(q->image_keys[0].lo, q->image_keys[0].hi), (uint64_t)q->layout.image_row[r]);
}

static void run(const prompt_set *p, bool cache, int n_blocks, int budget, run_result *out)
{
    memset(out, 0, sizeof(*out));
    glm_scheduler_config cfg = {.max_batch = 8,
                                .max_tokens_per_step = budget,
                                .prefill_chunk = 8,
                                .max_images_per_step = 2,
                                .block_size = BS,
                                .n_blocks = n_blocks,
                                .max_blocks_per_seq = 32,
                                .image_rows = IMAGE_ROWS,
                                .pixel_floats = 4,
                                .seq_length = 128,
                                .no_prefix_cache = !cache};
    glm_image_cache *images;
    glm_scheduler *s;
    CHECK(glm_image_cache_create(4, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    static glm_sequence seqs[N_SEQS];
    float pixels[4] = {1, 2, 3, 4};
    uint64_t *kv = calloc((size_t)n_blocks * BS, sizeof(uint64_t));
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    int32_t sampled[64];
    float prompt_logits[1]; /* never read: the step driver's buffer */
    for (int wave = 0; wave < 4; wave++) {
        for (int i = 0; i < N_SEQS; i++) {
            if (p->wave[i] != wave) continue;
            glm_sequence *q = &seqs[i];
            memset(q, 0, sizeof(*q));
            CHECK(glm_prompt_layout_build(p->ids[i], p->n_ids[i], 90, 91, 80, IMAGE_ROWS,
                                          &q->layout, NULL) == GLM_OK);
            q->pixels = pixels;
            q->image_keys[0] = p->image[i];
            q->max_new_tokens = 3 + i % 5;
            q->ignore_eos = true;
            /* some want every prompt row's logits (glm4v-run --dump-logits): computed in full,
             * their blocks still shared with later prompts */
            if (i % 7 == 3) q->prompt_logits = prompt_logits;
            CHECK(glm_scheduler_add(s, q, NULL) == GLM_OK);
        }
        int guard = 0;
        while (glm_scheduler_has_work(s) && guard++ < 2000) {
            const float *px;
            CHECK(glm_scheduler_max_logit_rows(s) <= 64);
            CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
            if (plan.n_tokens == 0) {
                CHECK_MSG(0, "scheduler stalled with work left");
                break;
            }
            out->images_encoded += plan.n_images;
            out->rows_fed += (uint64_t)plan.n_tokens;
            /* which sequence each plan entry is: the scheduled one with this context length and
             * first fed slot */
            for (int k = 0; k < plan.n_seqs; k++) {
                int first = plan.q_start[k], last = plan.q_start[k + 1], ctx = plan.ctx_len[k];
                glm_sequence *q = NULL;
                for (int i = 0; i < N_SEQS; i++)
                    if (seqs[i].scheduled && seqs[i].n_cached + seqs[i].step_rows == ctx &&
                        seqs[i].step_rows == last - first &&
                        glm_block_table_slot(&seqs[i].table, BS, seqs[i].n_cached) ==
                            plan.slots[first])
                        q = &seqs[i];
                CHECK(q != NULL);
                if (!q) continue;
                const int32_t *bt = plan.block_table + (size_t)k * plan.max_blocks_per_seq;
                for (int t = first; t < last; t++) {
                    int r = ctx - (last - t);
                    CHECK(plan.slots[t] == bt[r / BS] * BS + r % BS);
                    if (r < q->layout.n_rows && q->layout.image_row[r] >= 0) {
                        CHECK(plan.image_rows[t] >= 0);
                        out->image_rows_fed++;
                    }
                    uint64_t prev = r > 0 ? kv[bt[(r - 1) / BS] * BS + (r - 1) % BS] : 1;
                    kv[plan.slots[t]] = mix(prev, row_key(q, r));
                }
            }
            for (int l = 0; l < plan.n_logit_rows; l++)
                sampled[l] =
                    rows[l].draw ? (int32_t)(100 + kv[plan.slots[plan.logit_rows[l]]] % 50) : -1;
            glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
        }
        CHECK(!glm_scheduler_has_work(s));
    }
    out->stats = glm_scheduler_stats_get(s);
    CHECK(out->stats.blocks_used == 0);
    for (int i = 0; i < N_SEQS; i++) {
        CHECK(seqs[i].finish == GLM_SEQ_FINISHED_LENGTH);
        out->n_generated[i] = seqs[i].n_generated;
        memcpy(out->generated[i], seqs[i].generated, sizeof(int32_t) * (size_t)seqs[i].n_generated);
        glm_sequence_free(&seqs[i]);
    }
    CHECK(glm_image_cache_stats_get(images).pinned == 0);
    free(kv);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* Four questions about one picture arrive together (a sweep's window does this): one computes
 * the shared rows and the others wait a step for them rather than compute them beside it. Chunks
 * of 8 rows make the producer take several steps, so the others must keep waiting until its
 * last shared block is in. */
static void together(void)
{
    glm_scheduler_config cfg = {.max_batch = 8, .max_tokens_per_step = 64, .prefill_chunk = 8,
                                .max_images_per_step = 2, .block_size = BS, .n_blocks = 128,
                                .max_blocks_per_seq = 32, .image_rows = IMAGE_ROWS,
                                .pixel_floats = 4, .seq_length = 128};
    glm_image_cache *images;
    glm_scheduler *s;
    CHECK(glm_image_cache_create(4, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    static glm_sequence seqs[4];
    float pixels[4] = {1, 2, 3, 4};
    int32_t ids[4][24];
    int n_ids = 0;
    for (int k = 0; k < 9; k++) /* system prompt, then the image: 9 + 1 + 6 + 1 rows */
        ids[0][n_ids++] = 11 + k;
    ids[0][n_ids++] = 90, ids[0][n_ids++] = 80, ids[0][n_ids++] = 91;
    for (int i = 0; i < 4; i++) {
        memcpy(ids[i], ids[0], sizeof(int32_t) * (size_t)n_ids);
        for (int k = 0; k < 5; k++) /* a question of its own */
            ids[i][n_ids + k] = 40 + i;
        glm_sequence *q = &seqs[i];
        memset(q, 0, sizeof(*q));
        CHECK(glm_prompt_layout_build(ids[i], n_ids + 5, 90, 91, 80, IMAGE_ROWS, &q->layout,
                                      NULL) == GLM_OK);
        q->pixels = pixels;
        q->image_keys[0] = (glm_image_key){.lo = 5, .hi = 6};
        q->max_new_tokens = 2;
        q->ignore_eos = true;
        CHECK(glm_scheduler_add(s, q, NULL) == GLM_OK);
    }
    glm_step_plan plan = {0};
    glm_logit_row rows[64];
    int32_t sampled[64];
    uint64_t fed = 0;
    int guard = 0;
    while (glm_scheduler_has_work(s) && guard++ < 100) {
        const float *px;
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        CHECK_MSG(plan.n_tokens > 0, "scheduler stalled with work left");
        if (plan.n_tokens == 0) break;
        fed += (uint64_t)plan.n_tokens;
        for (int l = 0; l < plan.n_logit_rows; l++)
            sampled[l] = 100;
        glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
    }
    CHECK(!glm_scheduler_has_work(s));
    glm_scheduler_stats st = glm_scheduler_stats_get(s);
    int shared = seqs[0].layout.n_rows - 5; /* the rows before the question */
    int whole = shared - shared % BS;
    printf("together: %llu of %llu prompt rows reused, %llu rows fed\n",
           (unsigned long long)st.reused_rows, (unsigned long long)st.prompt_rows,
           (unsigned long long)fed);
    CHECK_MSG(st.reused_rows == (uint64_t)(3 * whole), "reused %llu rows, want %d",
              (unsigned long long)st.reused_rows, 3 * whole);
    for (int i = 0; i < 4; i++) {
        CHECK(seqs[i].finish == GLM_SEQ_FINISHED_LENGTH && seqs[i].n_generated == 2);
        glm_sequence_free(&seqs[i]);
    }
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

int main(void)
{
    together();
    static prompt_set p;
    make_prompts(&p);
    static run_result off, on, tight, tight_off;
    run(&p, false, 512, 64, &off);
    run(&p, true, 512, 64, &on);
    run(&p, true, 20, 32, &tight); /* 80 slots for 8 sequences: evictions, preemptions */
    run(&p, false, 20, 32, &tight_off);
    printf("rows fed: off %llu, on %llu (reused %llu of %llu prompt rows, %d blocks cached), "
           "tight %llu (%llu evictions, %llu preemptions); image rows fed off %d on %d\n",
           (unsigned long long)off.rows_fed, (unsigned long long)on.rows_fed,
           (unsigned long long)on.stats.reused_rows, (unsigned long long)on.stats.prompt_rows,
           on.stats.cached_blocks, (unsigned long long)tight.rows_fed,
           (unsigned long long)tight.stats.cache_evictions,
           (unsigned long long)tight.stats.preemptions, off.image_rows_fed, on.image_rows_fed);
    for (int i = 0; i < N_SEQS; i++) {
        CHECK(off.n_generated[i] == on.n_generated[i] &&
              off.n_generated[i] == tight.n_generated[i]);
        size_t bytes = sizeof(int32_t) * (size_t)off.n_generated[i];
        CHECK_MSG(!memcmp(off.generated[i], on.generated[i], bytes), "sequence %d differs", i);
        CHECK_MSG(!memcmp(off.generated[i], tight.generated[i], bytes),
                  "sequence %d differs under pressure", i);
        CHECK(!memcmp(off.generated[i], tight_off.generated[i], bytes));
    }
    /* the cache was used, saved rows, and off means off */
    CHECK(off.stats.reused_rows == 0 && off.stats.cached_blocks == 0);
    CHECK(on.stats.reused_rows > on.stats.prompt_rows / 4);
    CHECK(on.rows_fed + on.stats.reused_rows == off.rows_fed);
    CHECK(on.stats.cached_blocks > 0);
    CHECK(on.image_rows_fed < off.image_rows_fed);
    CHECK(tight.stats.cache_evictions > 0 && tight.stats.preemptions > 0);
    CHECK(tight.stats.reused_rows > 0);
    return test_finish("scheduler_prefix");
}
