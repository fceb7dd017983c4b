/* Randomized property test of the scheduler, the block manager (prefix cache) and the vision
 * cache together, against a fake model:
 *  - a row's "KV" is a hash of the KV of the row before it (read through the plan's block
 *    table), its rope position and its content: the token id, or the embedding the fake vision
 *    tower wrote into the pool row the plan names;
 *  - a row's "logits" hash every KV row of the context up to it, read through the block table,
 *    so a block with the wrong content anywhere in the context changes the drawn token.
 * Each seed draws a configuration (block size, pool from roomy down to one sequence's worth,
 * batch, budget, chunk, images per step, vision slots with or without reuse, prefix cache on or
 * off, seq_length, steps that fail now and then and are planned again) and up to 12 prompts that
 * share openings, images and whole earlier prompts, change one image or one id of an earlier
 * one, diverge inside blocks, carry 0..3 images (some more than a step encodes: refused), want
 * prompt logits, run quarantined, have priorities, arrive over time, stop on eos or stop ids, hit
 * non-finite logits, and are sometimes ended early by the caller.
 * Every step is checked: plan structure and limits, rows' slots inside the sequence's own blocks,
 * no block written that another sequence holds, image rows fed from a slot holding their image,
 * quarantined sequences alone, the blocks and vision slots in use exactly those the live
 * sequences hold, and no stall. At the end every sequence's tokens, finish reason and prompt
 * logits must equal an oracle that runs the fake model on the sequence's rows in order (no
 * scheduler), as must a run alone on a roomy scheduler; nothing may stay held.
 * Bugs it found have fixed cases in test_scheduler_limits.c.
 * GLM_SCHED_SEEDS=N runs N seeds (default 10000, about half a second); GLM_SCHED_SEED=S runs seed
 * S alone (a failure prints its seed), GLM_SCHED_TRACE=1 prints every step. */
#include <stdlib.h>
#include <string.h>

#include "coordinator/serve/scheduler.h"
#include "tests/testutil.h"

enum {
    BOI = 90,
    EOI = 91,
    PAD = 80,
    PF = 2, /* pixel floats per image */
    MAX_SEQS = 12,
    MAX_IDS = 40,
    MAX_IMG = 3,
    MAX_NEW = 10,
    N_KEYS = 4, /* distinct images a seed draws from */
    EOS = 103,
    MAX_STEPS = 20000,
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

typedef struct spec {
    int32_t ids[MAX_IDS];
    int n_ids;
    int image_key[MAX_IMG]; /* key index of each image, in prompt order */
    int n_images;
    int max_new;
    bool ignore_eos;
    int32_t stop_id; /* -1: none */
    bool prompt_logits;
    bool isolated;
    int priority;
    int nan_at;  /* the model's logits are not finite when drawing this token (-1 never) */
    int arrive;  /* step at which it is added */
    int end_at;  /* step after which the caller ends it, -1 never */
    int end_why; /* GLM_SEQ_CANCELLED, _STOP_STRING or _ERROR */
} spec;

typedef struct setup {
    int bs, image_rows, n_blocks, max_blocks_per_seq, max_batch, budget, chunk, images_per_step,
        vision_slots, seq_length;
    bool cache;
    bool vision_reuse;
    int abort_every; /* one step in abort_every fails (0: none), then scheduling goes on */
} setup;

/* What the seeds exercised, summed (printed so a weakened generator shows). */
typedef struct coverage {
    uint64_t steps, rows, preemptions, reused_rows, evictions, images_encoded, vision_hits;
    uint64_t aborts, refused, ended_early, empty_steps, seeds_preempting, seeds_reusing;
} coverage;

enum { MAX_ROWS = MAX_IDS + MAX_IMG * 9 };

typedef struct outcome {
    int32_t gen[MAX_NEW];
    int n_gen;
    /* prompt_logits: the fake "logits" of each prompt row (a hash of the context up to it) */
    uint64_t logit[MAX_ROWS];
    bool have_logit[MAX_ROWS];
    glm_seq_finish finish;
    bool refused; /* glm_scheduler_add said GLM_ERR_LIMIT */
} outcome;

/* Keys 0 and 2 (1 and 3) differ in their high half only: a cache comparing half a key mixes
 * them up. */
static glm_image_key key_of(int k)
{
    return (glm_image_key){.lo = 0x1000 + (uint64_t)(k & 1), .hi = 0xabc + (uint64_t)(k >> 1)};
}

/* What the fake vision tower writes for row `row` of the image with these pixels. */
static uint64_t embedding(const float *px, int row)
{
    return mix(mix((uint64_t)px[0], (uint64_t)px[1]), (uint64_t)row);
}

/* The fake model's state: KV slots, the embedding pool and which image each pool slot holds. */
typedef struct fake_model {
    uint64_t *kv;
    uint64_t *pool;
    int *pool_key;
} fake_model;

/* The image each row of q's prompt needs (key index), -1 on text. */
static int needed_key(const spec *sp, const glm_sequence *q, int r)
{
    if (r >= q->layout.n_rows || q->layout.image_index[r] < 0) return -1;
    return sp->image_key[q->layout.image_index[r]];
}

static int32_t slot_at(const int32_t *bt, int bs, int r)
{
    return bt[r / bs] * bs + r % bs;
}

/* The blocks and vision slots the live sequences hold must be exactly what the allocator and
 * the vision cache count as used; waiting sequences hold nothing. */
static void check_holdings(const setup *c, glm_scheduler *s, glm_image_cache *images,
                           glm_sequence *seqs, int n, int *block_users)
{
    memset(block_users, 0, sizeof(int) * (size_t)c->n_blocks);
    bool slot_held[64] = {0};
    int blocks = 0, slots = 0;
    for (int i = 0; i < n; i++) {
        glm_sequence *q = &seqs[i];
        bool live = q->state == GLM_JOB_RUNNING || q->state == GLM_JOB_WAITING;
        if (!live || q->state == GLM_JOB_WAITING) {
            CHECK_MSG(q->table.n_blocks == 0, "sequence %d (%s) holds %d blocks", i,
                      glm_job_state_name(q->state), q->table.n_blocks);
            for (int k = 0; k < GLM_SEQ_MAX_IMAGES; k++)
                CHECK_MSG(!live || q->image_slots[k] < 0, "waiting sequence %d holds a slot", i);
            continue;
        }
        CHECK(q->table.n_blocks <= c->max_blocks_per_seq);
        CHECK(q->table.n_blocks * c->bs >= q->n_cached);
        for (int b = 0; b < q->table.n_blocks; b++) {
            int32_t id = q->table.blocks[b];
            CHECK(id >= 0 && id < c->n_blocks);
            if (id < 0 || id >= c->n_blocks) continue;
            for (int e = 0; e < b; e++)
                CHECK_MSG(q->table.blocks[e] != id, "sequence %d lists block %d twice", i, id);
            blocks += block_users[id]++ == 0;
        }
        for (int k = 0; k < GLM_SEQ_MAX_IMAGES; k++) {
            int sl = q->image_slots[k];
            if (sl < 0) continue;
            CHECK(k < q->layout.n_images && sl < c->vision_slots);
            if (sl < 64) slots += !slot_held[sl], slot_held[sl] = true;
        }
    }
    glm_scheduler_stats st = glm_scheduler_stats_get(s);
    CHECK_MSG(st.blocks_used == blocks, "allocator counts %d blocks used, sequences hold %d",
              st.blocks_used, blocks);
    int pinned = glm_image_cache_stats_get(images).pinned;
    CHECK_MSG(pinned == slots, "vision cache pins %d slots, sequences hold %d", pinned, slots);
}

/* Checks one planned sequence's rows and writes their KV. */
static void feed(const setup *c, const glm_step_plan *p, int k, glm_sequence *q, const spec *sp,
                 fake_model *m, const int *block_users, bool *written)
{
    int first = p->q_start[k], last = p->q_start[k + 1], ctx = p->ctx_len[k];
    int target = q->layout.n_rows + q->n_generated;
    CHECK(q->scheduled && q->state == GLM_JOB_RUNNING);
    CHECK(last - first == q->step_rows && q->step_rows > 0 && q->step_rows <= c->chunk);
    CHECK_MSG(ctx == q->n_cached + q->step_rows && ctx <= target, "ctx %d cached %d rows %d/%d",
              ctx, q->n_cached, q->step_rows, target);
    CHECK(ctx <= q->table.n_blocks * c->bs);
    const int32_t *bt = p->block_table + (size_t)k * p->max_blocks_per_seq;
    for (int b = 0; b < q->table.n_blocks && b < p->max_blocks_per_seq; b++)
        CHECK(bt[b] == q->table.blocks[b]);
    for (int t = first; t < last; t++) {
        int r = ctx - (last - t);
        int32_t slot = slot_at(bt, c->bs, r);
        CHECK_MSG(p->slots[t] == slot, "row %d written to slot %d outside its block (%d)", r,
                  p->slots[t], slot);
        int32_t block = slot / c->bs;
        CHECK_MSG(block_users[block] == 1, "row %d written into block %d that %d sequences hold", r,
                  block, block_users[block]);
        CHECK_MSG(!written[slot], "slot %d written twice in one step", slot);
        written[slot] = true;
        uint64_t content;
        int want = needed_key(sp, q, r);
        if (want >= 0) {
            int pr = p->image_rows[t], ps = pr / c->image_rows;
            CHECK_MSG(pr >= 0 && ps < c->vision_slots && m->pool_key[ps] == want,
                      "image row %d fed from pool row %d (slot holds image %d, wants %d)", r, pr,
                      pr >= 0 && ps < c->vision_slots ? m->pool_key[ps] : -9, want);
            CHECK(pr % c->image_rows == q->layout.image_row[r]);
            content = pr >= 0 && ps < c->vision_slots ? m->pool[pr] : 0;
        } else {
            CHECK(p->image_rows[t] == -1);
            int32_t id =
                r < q->layout.n_rows ? q->layout.token_ids[r] : q->generated[r - q->layout.n_rows];
            CHECK(p->token_ids[t] == id);
            content = (uint64_t)(uint32_t)p->token_ids[t];
        }
        uint64_t prev = r > 0 ? m->kv[slot_at(bt, c->bs, r - 1)] : 1;
        m->kv[slot] = mix(mix(prev, content), (uint64_t)p->positions[t]);
    }
}

/* The fake model's logits at row `last` of the sequence at plan entry k: every KV row of its
 * context up to there, read through the block table. */
static uint64_t logits_at(const setup *c, const glm_step_plan *p, int k, const fake_model *m,
                          int last)
{
    const int32_t *bt = p->block_table + (size_t)k * p->max_blocks_per_seq;
    uint64_t h = 7;
    for (int r = 0; r <= last; r++)
        h = mix(h, m->kv[slot_at(bt, c->bs, r)]);
    return h;
}

static int32_t token_of(uint64_t logits)
{
    return (int32_t)(100 + logits % 16);
}

static void make_sequence(const setup *c, const spec *sp, glm_sequence *q, float *pixels)
{
    memset(q, 0, sizeof(*q));
    CHECK(glm_prompt_layout_build(sp->ids, sp->n_ids, BOI, EOI, PAD, c->image_rows, &q->layout,
                                  NULL) == GLM_OK);
    CHECK(q->layout.n_images == sp->n_images);
    for (int i = 0; i < sp->n_images; i++) {
        q->image_keys[i] = key_of(sp->image_key[i]);
        pixels[i * PF] = (float)(sp->image_key[i] + 1);
        pixels[i * PF + 1] = (float)(sp->image_key[i] * 7 + 3);
    }
    q->pixels = sp->n_images ? pixels : NULL;
    q->max_new_tokens = sp->max_new;
    q->ignore_eos = sp->ignore_eos;
    q->stop_ids = sp->stop_id >= 0 ? &sp->stop_id : NULL;
    q->n_stop_ids = sp->stop_id >= 0;
    q->isolated = sp->isolated;
    q->priority = sp->priority;
    q->state = GLM_JOB_QUEUED;
}

/* GLM_SCHED_TRACE=1: each step's plan and every sequence's state, to read a failing seed. */
static void trace(int step, const glm_step_plan *p, const glm_sequence *seqs, int n,
                  const bool *added)
{
    printf("step %d: %d seqs, %d rows, %d images |", step, p->n_seqs, p->n_tokens, p->n_images);
    for (int i = 0; i < n; i++)
        if (added[i])
            printf(" %d:%s %d/%d+%d b%d i%d%s", i, glm_job_state_name(seqs[i].state),
                   seqs[i].n_cached, seqs[i].layout.n_rows, seqs[i].n_generated,
                   seqs[i].table.n_blocks, seqs[i].layout.n_images, seqs[i].isolated ? " iso" : "");
    printf("\n");
}

/* Runs the specs on a scheduler set up as c; out[i] receives what sequence i generated. */
static void run(const setup *c, const spec *specs, int n, outcome *out, coverage *cov)
{
    static const int eos[] = {EOS};
    glm_scheduler_config cfg = {.max_batch = c->max_batch,
                                .max_tokens_per_step = c->budget,
                                .prefill_chunk = c->chunk,
                                .max_images_per_step = c->images_per_step,
                                .block_size = c->bs,
                                .n_blocks = c->n_blocks,
                                .max_blocks_per_seq = c->max_blocks_per_seq,
                                .image_rows = c->image_rows,
                                .pixel_floats = PF,
                                .seq_length = c->seq_length,
                                .eos_ids = eos,
                                .n_eos_ids = 1,
                                .no_prefix_cache = !c->cache};
    glm_image_cache *images = NULL;
    glm_scheduler *s = NULL;
    CHECK(glm_image_cache_create(c->vision_slots, &images, NULL) == GLM_OK);
    CHECK(glm_scheduler_create(&cfg, images, &s, NULL) == GLM_OK);
    glm_image_cache_set_reuse(images, c->vision_reuse);
    glm_sequence seqs[MAX_SEQS];
    memset(seqs, 0, sizeof(seqs));
    float pixels[MAX_SEQS][MAX_IMG * PF];
    bool added[MAX_SEQS] = {0};
    int slots = c->n_blocks * c->bs;
    fake_model m = {calloc((size_t)slots, sizeof(uint64_t)),
                    calloc((size_t)c->vision_slots * c->image_rows, sizeof(uint64_t)),
                    malloc(sizeof(int) * (size_t)c->vision_slots)};
    int *block_users = calloc((size_t)c->n_blocks, sizeof(int));
    bool *written = calloc((size_t)slots, sizeof(bool));
    for (int i = 0; i < c->vision_slots; i++)
        m.pool_key[i] = -1;
    int max_rows = glm_scheduler_max_logit_rows(s);
    glm_logit_row *rows = calloc((size_t)max_rows, sizeof(*rows));
    int32_t *sampled = calloc((size_t)max_rows, sizeof(int32_t));
    float prompt_logits[1]; /* the step driver's buffer: never read here */
    glm_step_plan plan = {0};
    int n_added = 0, empty_run = 0;
    for (int step = 0; step < MAX_STEPS; step++) {
        for (int i = 0; i < n; i++) {
            if (added[i] || specs[i].arrive > step) continue;
            added[i] = true, n_added++;
            make_sequence(c, &specs[i], &seqs[i], pixels[i]);
            if (specs[i].prompt_logits) seqs[i].prompt_logits = prompt_logits;
            glm_error err = {0};
            glm_status st = glm_scheduler_add(s, &seqs[i], &err);
            out[i].refused = st == GLM_ERR_LIMIT;
            CHECK_MSG(st == GLM_OK ||
                          (st == GLM_ERR_LIMIT && specs[i].n_images > c->images_per_step),
                      "add: %s", err.msg);
        }
        if (!glm_scheduler_has_work(s)) {
            if (n_added == n) break;
            continue;
        }
        /* the caller ends some sequences early (stop string, cancellation, deadline) */
        for (int i = 0; i < n; i++) {
            glm_sequence *q = &seqs[i];
            bool live = q->state == GLM_JOB_RUNNING || q->state == GLM_JOB_WAITING;
            /* a stop string matches in tokens just delivered: only a running sequence's */
            if (specs[i].end_why == GLM_SEQ_FINISHED_STOP_STRING)
                live = q->state == GLM_JOB_RUNNING && q->n_generated > 0;
            if (added[i] && specs[i].end_at == step && live) {
                CHECK(glm_scheduler_finish(s, q, (glm_seq_finish)specs[i].end_why));
                empty_run = 0; /* a new situation: the next steps may plan again */
            }
        }
        check_holdings(c, s, images, seqs, n, block_users);
        if (!glm_scheduler_has_work(s)) continue;
        const float *px = NULL;
        CHECK(glm_scheduler_schedule(s, &plan, &px, rows, NULL) == GLM_OK);
        if (getenv("GLM_SCHED_TRACE")) trace(step, &plan, seqs, n, added);
        check_holdings(c, s, images, seqs, n, block_users);
        if (plan.n_tokens == 0 && plan.n_images == 0) {
            /* a quarantine step may find its sequence unable to start: the next ordinary step
             * runs; two empty steps in a row repeat forever */
            bool isolated = false;
            for (int i = 0; i < n; i++)
                isolated |= added[i] && seqs[i].isolated &&
                            (seqs[i].state == GLM_JOB_RUNNING || seqs[i].state == GLM_JOB_WAITING);
            cov->empty_steps++;
            CHECK_MSG(isolated && ++empty_run < 2, "stalled at step %d with work left", step);
            if (!isolated || empty_run >= 2) break;
            continue;
        }
        empty_run = 0;
        /* at random, not periodically: a period of two would always fail the same kind of step
         * (quarantine steps alternate with ordinary ones) and nothing could finish */
        if (c->abort_every > 0 &&
            mix((uint64_t)step, (uint64_t)c->abort_every) % c->abort_every == 0) {
            /* the step failed on the device before writing anything: undone, planned again */
            glm_scheduler_abort_step(s);
            cov->aborts++;
            check_holdings(c, s, images, seqs, n, block_users);
            continue;
        }
        cov->steps++;
        cov->rows += (uint64_t)plan.n_tokens;
        cov->images_encoded += (uint64_t)plan.n_images;
        CHECK(plan.n_tokens <= c->budget && plan.n_seqs <= c->max_batch &&
              plan.n_images <= c->images_per_step);
        /* the fake vision tower: encode the new images into their pool slots */
        for (int i = 0; i < plan.n_images; i++) {
            int sl = plan.image_slots[i];
            CHECK(sl >= 0 && sl < c->vision_slots);
            if (sl < 0 || sl >= c->vision_slots) continue;
            const float *ip = px + (size_t)i * PF;
            m.pool_key[sl] = (int)ip[0] - 1;
            for (int r = 0; r < c->image_rows; r++)
                m.pool[(size_t)sl * c->image_rows + r] = embedding(ip, r);
        }
        glm_sequence *const *step_seqs = NULL;
        CHECK(glm_scheduler_step_sequences(s, &step_seqs) == plan.n_seqs);
        memset(written, 0, sizeof(bool) * (size_t)slots);
        for (int k = 0; k < plan.n_seqs; k++) {
            glm_sequence *q = step_seqs[k];
            int i = (int)(q - seqs);
            CHECK(i >= 0 && i < n);
            CHECK(!q->isolated || plan.n_seqs == 1);
            feed(c, &plan, k, q, &specs[i], &m, block_users, written);
        }
        for (int l = 0; l < plan.n_logit_rows; l++) {
            int k = 0;
            while (k < plan.n_seqs && step_seqs[k] != rows[l].seq)
                k++;
            CHECK(k < plan.n_seqs);
            if (k == plan.n_seqs) continue;
            glm_sequence *q = rows[l].seq;
            int t = plan.logit_rows[l];
            CHECK(t >= plan.q_start[k] && t < plan.q_start[k + 1]);
            CHECK(rows[l].row == plan.ctx_len[k] - (plan.q_start[k + 1] - t));
            bool last = rows[l].row == q->layout.n_rows + q->n_generated - 1;
            CHECK(rows[l].draw == last);
            CHECK(last || (q->prompt_logits && rows[l].row < q->layout.n_rows));
            uint64_t logits = logits_at(c, &plan, k, &m, rows[l].row);
            sampled[l] = rows[l].draw ? token_of(logits) : -1;
            if (rows[l].draw && q->n_generated == specs[q - seqs].nan_at)
                sampled[l] = -1; /* the sampler found no finite logit */
            outcome *o = &out[q - seqs];
            if (q->prompt_logits && rows[l].row < q->layout.n_rows && rows[l].row < MAX_ROWS) {
                /* a recomputed row (after a preemption) must give what it gave before */
                CHECK(!o->have_logit[rows[l].row] || o->logit[rows[l].row] == logits);
                o->logit[rows[l].row] = logits;
                o->have_logit[rows[l].row] = true;
            }
        }
        glm_scheduler_commit(s, rows, sampled, plan.n_logit_rows);
    }
    CHECK_MSG(!glm_scheduler_has_work(s), "work left after %d steps", MAX_STEPS);
    check_holdings(c, s, images, seqs, n, block_users);
    glm_scheduler_stats st = glm_scheduler_stats_get(s);
    CHECK(st.blocks_used == 0);
    cov->preemptions += st.preemptions;
    cov->reused_rows += st.reused_rows;
    cov->evictions += st.cache_evictions;
    cov->seeds_preempting += st.preemptions > 0;
    cov->seeds_reusing += st.reused_rows > 0;
    cov->vision_hits += glm_image_cache_stats_get(images).hits;
    CHECK(glm_image_cache_stats_get(images).pinned == 0);
    for (int i = 0; i < n; i++) {
        if (!added[i]) continue;
        glm_sequence *q = &seqs[i];
        out[i].n_gen = q->n_generated;
        if (q->n_generated > 0) memcpy(out[i].gen, q->generated, sizeof(int32_t) * q->n_generated);
        out[i].finish = q->finish;
        cov->refused += out[i].refused;
        cov->ended_early += q->finish == (glm_seq_finish)specs[i].end_why;
        glm_sequence_free(q);
    }
    free(rows);
    free(sampled);
    free(block_users);
    free(written);
    free(m.kv);
    free(m.pool);
    free(m.pool_key);
    glm_step_plan_free(&plan);
    glm_scheduler_destroy(s);
    glm_image_cache_destroy(images);
}

/* ---- drawing a case ---- */

/* Text ids from a small alphabet, so prompts repeat each other inside blocks. */
static void append_text(test_rng *g, spec *sp, int n)
{
    for (int k = 0; k < n && sp->n_ids < MAX_IDS; k++)
        sp->ids[sp->n_ids++] = 10 + test_rng_int(g, 0, 3);
}

static void append_image(test_rng *g, spec *sp, int key)
{
    (void)g;
    if (sp->n_ids + 3 > MAX_IDS || sp->n_images == MAX_IMG) return;
    sp->ids[sp->n_ids++] = BOI, sp->ids[sp->n_ids++] = PAD, sp->ids[sp->n_ids++] = EOI;
    sp->image_key[sp->n_images++] = key;
}

static void draw_specs(test_rng *g, spec *specs, int n)
{
    spec openings[3];
    for (int o = 0; o < 3; o++) { /* shared openings: a system prompt, maybe an image */
        memset(&openings[o], 0, sizeof(openings[o]));
        append_text(g, &openings[o], test_rng_int(g, 1, 12));
        if (test_rng_int(g, 0, 2) == 0) append_image(g, &openings[o], test_rng_int(g, 0, 1));
    }
    for (int i = 0; i < n; i++) {
        spec *sp = &specs[i];
        memset(sp, 0, sizeof(*sp));
        int how = test_rng_int(g, 0, 4);
        if (how == 0 && i > 0) { /* a later turn of an earlier conversation */
            *sp = specs[test_rng_int(g, 0, i - 1)];
        } else if (how == 4 && i > 0) { /* an earlier prompt with one image or one id changed */
            *sp = specs[test_rng_int(g, 0, i - 1)];
            int at = test_rng_int(g, 0, sp->n_ids - 1);
            if (sp->n_images > 0 && test_rng_int(g, 0, 1) == 0)
                sp->image_key[test_rng_int(g, 0, sp->n_images - 1)] =
                    test_rng_int(g, 0, N_KEYS - 1);
            else if (sp->ids[at] < PAD) /* a text id, not part of an image marker */
                sp->ids[at] = 10 + test_rng_int(g, 0, 3);
        } else if (how <= 2) { /* an opening, cut anywhere (inside a block, inside its ids) */
            const spec *o = &openings[test_rng_int(g, 0, 2)];
            int cut = test_rng_int(g, 0, o->n_ids);
            for (int k = 0; k < cut; k++) {
                if (o->ids[k] == BOI && k + 3 > cut) break; /* never half an image marker */
                sp->ids[sp->n_ids++] = o->ids[k];
                if (o->ids[k] == BOI) sp->image_key[sp->n_images++] = o->image_key[0];
            }
        }
        int extra = test_rng_int(g, 0, 3) == 0 ? test_rng_int(g, 0, MAX_IMG) : 0;
        for (int k = 0; k < extra; k++) {
            append_text(g, sp, test_rng_int(g, 0, 3));
            append_image(g, sp, test_rng_int(g, 0, N_KEYS - 1));
        }
        append_text(g, sp, test_rng_int(g, sp->n_ids ? 0 : 1, 8));
        if (sp->n_ids == 0) append_text(g, sp, 1);
        sp->max_new = test_rng_int(g, 0, 5) == 0 ? 0 : test_rng_int(g, 1, MAX_NEW);
        sp->ignore_eos = test_rng_int(g, 0, 2) == 0;
        sp->stop_id = test_rng_int(g, 0, 3) == 0 ? 100 + test_rng_int(g, 0, 15) : -1;
        sp->prompt_logits = test_rng_int(g, 0, 6) == 0;
        sp->isolated = test_rng_int(g, 0, 12) == 0;
        sp->priority = test_rng_int(g, 0, 3) == 0 ? test_rng_int(g, -2, 2) : 0;
        sp->nan_at = test_rng_int(g, 0, 15) == 0 ? test_rng_int(g, 0, MAX_NEW - 1) : -1;
        sp->arrive = test_rng_int(g, 0, 2) == 0 ? 0 : test_rng_int(g, 0, 30);
        sp->end_at = test_rng_int(g, 0, 8) == 0 ? sp->arrive + test_rng_int(g, 0, 12) : -1;
        static const int whys[] = {GLM_SEQ_CANCELLED, GLM_SEQ_FINISHED_STOP_STRING,
                                   GLM_SEQ_FINISHED_ERROR};
        sp->end_why = whys[test_rng_int(g, 0, 2)];
    }
}

/* Rows a spec's sequence needs at most. */
static int spec_rows(const spec *sp, int image_rows)
{
    return sp->n_ids + sp->n_images * (image_rows - 3) + sp->max_new;
}

static void draw_setup(test_rng *g, const spec *specs, int n, setup *c)
{
    memset(c, 0, sizeof(*c));
    c->bs = test_rng_int(g, 1, 8);
    c->image_rows = test_rng_int(g, 3, 9);
    int most_rows = 1, most_images = 0;
    for (int i = 0; i < n; i++) {
        int r = spec_rows(&specs[i], c->image_rows);
        if (r > most_rows) most_rows = r;
        if (specs[i].n_images > most_images) most_images = specs[i].n_images;
    }
    int most_blocks = (most_rows + c->bs - 1) / c->bs;
    /* the pool: barely one sequence's worth, a little more, or roomy */
    int kind = test_rng_int(g, 0, 2);
    c->n_blocks = most_blocks + (kind == 0   ? 0
                                 : kind == 1 ? test_rng_int(g, 1, most_blocks)
                                             : test_rng_int(g, 2, 6) * most_blocks);
    c->max_blocks_per_seq = most_blocks + test_rng_int(g, 0, 2);
    /* sometimes shorter than some prompts and their tokens: those end at seq_length */
    c->seq_length = most_rows + test_rng_int(g, 0, 3);
    if (test_rng_int(g, 0, 4) == 0) c->seq_length = test_rng_int(g, most_rows / 2 + 1, most_rows);
    c->max_batch = test_rng_int(g, 1, 6);
    c->budget = test_rng_int(g, 1, 48);
    c->chunk = test_rng_int(g, 1, 24);
    /* usually every prompt's images fit a step; sometimes not (those prompts are refused) */
    c->images_per_step = most_images + (test_rng_int(g, 0, 6) == 0 ? -1 : test_rng_int(g, 0, 2));
    if (c->images_per_step < 1) c->images_per_step = 1;
    /* the vision cache holds at least one prompt's images (the serve loop's contract) */
    c->vision_slots = (most_images > 0 ? most_images : 1) + test_rng_int(g, 0, 3);
    c->cache = test_rng_int(g, 0, 3) != 0;
    c->vision_reuse = test_rng_int(g, 0, 5) != 0;
    c->abort_every = test_rng_int(g, 0, 4) == 0 ? test_rng_int(g, 3, 9) : 0;
}

/* What the fake model generates for sp with nothing but its own rows in order: no scheduler,
 * no cache, so a bug shared by every scheduler configuration still shows. */
static void oracle(const setup *c, const spec *sp, outcome *out)
{
    memset(out, 0, sizeof(*out));
    if (sp->n_images > c->images_per_step) {
        out->refused = true;
        return;
    }
    glm_prompt_layout l;
    CHECK(glm_prompt_layout_build(sp->ids, sp->n_ids, BOI, EOI, PAD, c->image_rows, &l, NULL) ==
          GLM_OK);
    uint64_t kv[MAX_ROWS + MAX_NEW], prev = 1;
    int n_rows = 0;
    for (;;) {
        int r = n_rows;
        /* rows up to r are fed: every prompt row, then each token drawn after it */
        if (r < l.n_rows || r < l.n_rows + out->n_gen) {
            uint64_t content;
            int32_t pos;
            if (r < l.n_rows && l.image_index[r] >= 0) {
                int k = sp->image_key[l.image_index[r]];
                float px[PF] = {(float)(k + 1), (float)(k * 7 + 3)};
                content = embedding(px, l.image_row[r]);
            } else {
                content =
                    (uint64_t)(uint32_t)(r < l.n_rows ? l.token_ids[r] : out->gen[r - l.n_rows]);
            }
            pos = r < l.n_rows ? l.positions[r] : l.n_ids + (r - l.n_rows);
            kv[r] = prev = mix(mix(prev, content), (uint64_t)pos);
            n_rows++;
            if (r < l.n_rows) { /* the prompt row's logits */
                uint64_t h = 7;
                for (int i = 0; i <= r; i++)
                    h = mix(h, kv[i]);
                out->logit[r] = h;
                out->have_logit[r] = true;
            }
            continue;
        }
        if (out->n_gen >= sp->max_new) {
            out->finish = GLM_SEQ_FINISHED_LENGTH;
            break;
        }
        if (out->n_gen == sp->nan_at) {
            out->finish = GLM_SEQ_FINISHED_ERROR;
            break;
        }
        uint64_t h = 7;
        for (int i = 0; i < n_rows; i++)
            h = mix(h, kv[i]);
        int32_t tok = token_of(h);
        out->gen[out->n_gen++] = tok;
        if ((!sp->ignore_eos && tok == EOS) || tok == sp->stop_id) {
            out->finish = GLM_SEQ_FINISHED_STOP;
            break;
        }
        if (out->n_gen >= sp->max_new || l.n_rows + out->n_gen >= c->seq_length) {
            out->finish = GLM_SEQ_FINISHED_LENGTH;
            break;
        }
    }
    glm_prompt_layout_free(&l);
}

/* Whether run `got` agrees with the sequence run alone. A sequence the caller ended early has a
 * prefix of the lone run's tokens. */
static bool agrees(const spec *sp, const outcome *alone, const outcome *got)
{
    if (got->refused || alone->refused) return got->refused == alone->refused;
    bool ended = sp->end_at >= 0 && got->finish == (glm_seq_finish)sp->end_why;
    if (!ended && (got->n_gen != alone->n_gen || got->finish != alone->finish)) return false;
    if (got->n_gen > alone->n_gen) return false;
    return memcmp(got->gen, alone->gen, sizeof(int32_t) * (size_t)got->n_gen) == 0;
}

static void one_seed(uint64_t seed, coverage *cov)
{
    test_rng g;
    test_rng_seed(&g, seed * 0x9e3779b97f4a7c15ull + 1);
    spec specs[MAX_SEQS];
    int n = test_rng_int(&g, 1, MAX_SEQS);
    draw_specs(&g, specs, n);
    setup c;
    draw_setup(&g, specs, n, &c);
    int before = test_failures;
    outcome got[MAX_SEQS], alone[MAX_SEQS], truth;
    memset(got, 0, sizeof(got));
    memset(alone, 0, sizeof(alone));
    run(&c, specs, n, got, cov);
    /* alone: a roomy scheduler without the prefix cache, one sequence, whole prompt per step */
    setup roomy = c;
    roomy.n_blocks = c.max_blocks_per_seq;
    roomy.max_batch = 1;
    roomy.budget = roomy.chunk = 64;
    roomy.cache = false;
    roomy.abort_every = 0;
    for (int i = 0; i < n; i++) {
        spec lone = specs[i];
        lone.arrive = 0, lone.end_at = -1, lone.isolated = false;
        coverage lone_cov = {0};
        run(&roomy, &lone, 1, &alone[i], &lone_cov);
        oracle(&c, &specs[i], &truth);
        CHECK_MSG(agrees(&lone, &truth, &alone[i]),
                  "sequence %d alone: %d tokens (finish %d), the model says %d (finish %d)", i,
                  alone[i].n_gen, alone[i].finish, truth.n_gen, truth.finish);
        /* every prompt row's logits were produced, from the right context */
        bool whole = specs[i].prompt_logits && !got[i].refused &&
                     !(specs[i].end_at >= 0 && got[i].finish == (glm_seq_finish)specs[i].end_why);
        for (int r = 0; whole && r < MAX_ROWS && truth.have_logit[r]; r++)
            CHECK_MSG(got[i].have_logit[r] && got[i].logit[r] == truth.logit[r],
                      "sequence %d: prompt row %d's logits %s", i, r,
                      got[i].have_logit[r] ? "differ" : "missing");
        CHECK_MSG(agrees(&specs[i], &truth, &got[i]),
                  "sequence %d: %d tokens (finish %d), the model says %d (finish %d)", i,
                  got[i].n_gen, got[i].finish, truth.n_gen, truth.finish);
    }
    if (test_failures != before)
        fprintf(
            stderr,
            "FAILED seed %llu: %d seqs, bs %d, image_rows %d, blocks %d (per seq %d), batch %d, "
            "budget %d, chunk %d, images/step %d, vision slots %d (reuse %d), prefix cache %d, "
            "abort every %d\n",
            (unsigned long long)seed, n, c.bs, c.image_rows, c.n_blocks, c.max_blocks_per_seq,
            c.max_batch, c.budget, c.chunk, c.images_per_step, c.vision_slots, c.vision_reuse,
            c.cache, c.abort_every);
}

int main(void)
{
    coverage cov = {0};
    const char *one = getenv("GLM_SCHED_SEED");
    if (one) {
        one_seed(strtoull(one, NULL, 10), &cov);
        return test_finish("scheduler_random");
    }
    const char *env = getenv("GLM_SCHED_SEEDS");
    int n_seeds = env ? atoi(env) : 10000;
    for (int seed = 1; seed <= n_seeds; seed++)
        one_seed((uint64_t)seed, &cov);
    printf("%d seeds: %llu steps, %llu rows fed, %llu images encoded (%llu vision hits), %llu "
           "preemptions (%llu seeds), %llu prompt rows reused (%llu seeds), %llu evictions, %llu "
           "refused, %llu ended early, %llu empty quarantine steps, %llu failed steps\n",
           n_seeds, (unsigned long long)cov.steps, (unsigned long long)cov.rows,
           (unsigned long long)cov.images_encoded, (unsigned long long)cov.vision_hits,
           (unsigned long long)cov.preemptions, (unsigned long long)cov.seeds_preempting,
           (unsigned long long)cov.reused_rows, (unsigned long long)cov.seeds_reusing,
           (unsigned long long)cov.evictions, (unsigned long long)cov.refused,
           (unsigned long long)cov.ended_early, (unsigned long long)cov.empty_steps,
           (unsigned long long)cov.aborts);
    /* the generator must keep reaching the interesting paths */
    CHECK(cov.seeds_preempting > (uint64_t)n_seeds / 20 &&
          cov.seeds_reusing > (uint64_t)n_seeds / 5);
    CHECK(cov.evictions > 0 && cov.vision_hits > 0 && cov.refused > 0 && cov.ended_early > 0);
    return test_finish("scheduler_random");
}
