#include "coordinator/serve/scheduler.h"

#include <stdlib.h>
#include <string.h>

struct glm_scheduler {
    glm_scheduler_config cfg;
    glm_image_cache *images;
    glm_block_allocator blocks;
    /* running sequences in admission order, and the waiting queue (preempted ones in front) */
    glm_sequence **running;
    int n_running;
    glm_sequence **waiting;
    int n_waiting, cap_waiting;
    uint64_t next_arrival;
    uint64_t preemptions;
    uint64_t prompt_rows, reused_rows;
    /* the step being built */
    glm_sequence **step_seqs;
    int n_step_seqs;
    int *new_image_slots;
    int n_new_images;
    float *pixels;
    bool isolating; /* the step being built is an isolated sequence's, alone */
};

glm_status glm_scheduler_create(const glm_scheduler_config *cfg, glm_image_cache *images,
                                glm_scheduler **out, glm_error *err)
{
    glm_scheduler *s = calloc(1, sizeof(*s));
    if (!s) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    s->cfg = *cfg;
    s->images = images;
    int nb = cfg->max_batch, ni = cfg->max_images_per_step > 0 ? cfg->max_images_per_step : 1;
    s->running = calloc((size_t)nb, sizeof(*s->running));
    s->step_seqs = calloc((size_t)nb, sizeof(*s->step_seqs));
    s->new_image_slots = calloc((size_t)ni, sizeof(int));
    s->pixels =
        cfg->pixel_floats > 0 ? malloc(sizeof(float) * (size_t)ni * cfg->pixel_floats) : NULL;
    glm_status st = glm_block_allocator_init(&s->blocks, cfg->n_blocks, err);
    if (!st && !cfg->no_prefix_cache)
        st = glm_block_allocator_enable_prefix(&s->blocks, cfg->block_size, err);
    if (!st && (!s->running || !s->step_seqs || !s->new_image_slots ||
                (cfg->pixel_floats > 0 && !s->pixels)))
        st = glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the scheduler");
    if (st) {
        glm_scheduler_destroy(s);
        return st;
    }
    *out = s;
    return GLM_OK;
}

void glm_scheduler_destroy(glm_scheduler *s)
{
    if (!s) return;
    glm_block_allocator_free(&s->blocks);
    free(s->running);
    free(s->waiting);
    free(s->step_seqs);
    free(s->new_image_slots);
    free(s->pixels);
    free(s);
}

glm_job_state glm_seq_finish_state(glm_seq_finish why)
{
    switch (why) {
    case GLM_SEQ_FINISHED_ERROR:
        return GLM_JOB_FAILED;
    case GLM_SEQ_CANCELLED:
        return GLM_JOB_CANCELLED;
    default:
        return GLM_JOB_FINISHED;
    }
}

static int target_rows(const glm_sequence *q)
{
    return q->layout.n_rows + q->n_generated;
}

/* The array always has room: glm_scheduler_add sizes it for every live sequence. */
static void push_waiting(glm_scheduler *s, glm_sequence *q, bool front)
{
    /* new sequences queue behind every waiting one of equal or higher priority (FIFO within a
     * priority); preempted ones go first, since they already held the batch */
    int at = 0;
    if (!front)
        for (at = s->n_waiting; at > 0 && s->waiting[at - 1]->priority < q->priority; at--) {
        }
    memmove(s->waiting + at + 1, s->waiting + at,
            (size_t)(s->n_waiting - at) * sizeof(*s->waiting));
    s->waiting[at] = q;
    s->n_waiting++;
}

/* Prompt rows as the prefix cache sees them: text rows by token id, image rows by their own
 * image's content hash and their row in it. */
static glm_status build_row_keys(glm_sequence *q, glm_error *err)
{
    const glm_prompt_layout *l = &q->layout;
    q->row_keys = malloc(sizeof(*q->row_keys) * (size_t)(l->n_rows > 0 ? l->n_rows : 1));
    if (!q->row_keys) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
    for (int r = 0; r < l->n_rows; r++) {
        if (l->image_row[r] < 0) {
            q->row_keys[r] = glm_row_key_token(l->token_ids[r]);
            continue;
        }
        glm_image_key k = q->image_keys[l->image_index[r]];
        q->row_keys[r] = glm_row_key_image(k.lo, k.hi, l->image_row[r]);
    }
    return GLM_OK;
}

static void clear_image_slots(glm_sequence *q)
{
    for (int i = 0; i < GLM_SEQ_MAX_IMAGES; i++)
        q->image_slots[i] = -1;
}

glm_status glm_scheduler_add(glm_scheduler *s, glm_sequence *q, glm_error *err)
{
    /* room for every live sequence in the waiting array, so a preemption never has to grow it */
    int live = s->n_running + s->n_waiting + 1;
    if (live > s->cap_waiting) {
        int cap = s->cap_waiting ? s->cap_waiting : 64;
        while (cap < live)
            cap *= 2;
        glm_sequence **w = realloc(s->waiting, (size_t)cap * sizeof(*w));
        if (!w) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory for the waiting queue");
        s->waiting = w;
        s->cap_waiting = cap;
    }
    if (!glm_job_transition_is_legal(q->state, GLM_JOB_WAITING) || q->state == GLM_JOB_RUNNING)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "a %s sequence cannot join the scheduler",
                        glm_job_state_name(q->state));
    if (q->layout.n_images > GLM_SEQ_MAX_IMAGES || q->layout.n_images > s->cfg.max_images_per_step)
        return glm_fail(err, GLM_ERR_LIMIT,
                        "a prompt of %d images (this scheduler encodes %d a step, at most %d)",
                        q->layout.n_images, s->cfg.max_images_per_step, GLM_SEQ_MAX_IMAGES);
    /* A sequence that could never be placed would not fail: it would come back to the head of
     * the queue after every preemption and hold up everyone behind it. Callers check seq_length
     * (which the pool always fits); these are the scheduler's own limits. */
    if (q->layout.n_rows < 1)
        return glm_fail(err, GLM_ERR_INVALID_ARG, "an empty prompt has no row to draw from");
    int64_t rows = (int64_t)q->layout.n_rows + (q->max_new_tokens > 1 ? q->max_new_tokens - 1 : 0);
    int64_t blocks = (rows + s->cfg.block_size - 1) / s->cfg.block_size;
    if (blocks > s->cfg.n_blocks || blocks > s->cfg.max_blocks_per_seq)
        return glm_fail(err, GLM_ERR_LIMIT,
                        "%lld rows need %lld KV blocks; this scheduler has %d (%d per sequence)",
                        (long long)rows, (long long)blocks, s->cfg.n_blocks,
                        s->cfg.max_blocks_per_seq);
    q->n_generated = 0;
    q->n_cached = 0;
    clear_image_slots(q);
    q->scheduled = false;
    q->finish = GLM_SEQ_NOT_FINISHED;
    q->arrival = s->next_arrival++;
    memset(&q->table, 0, sizeof(q->table));
    if (q->max_new_tokens > 0 && (!q->generated || q->cap_generated < q->max_new_tokens)) {
        int32_t *g = realloc(q->generated, sizeof(int32_t) * (size_t)q->max_new_tokens);
        if (!g) return glm_fail(err, GLM_ERR_NOMEM, "out of host memory");
        q->generated = g;
        q->cap_generated = q->max_new_tokens;
    }
    if (s->blocks.hash && !q->row_keys) {
        glm_status st = build_row_keys(q, err);
        if (st) return st;
    }
    glm_job_transition(&q->state, GLM_JOB_WAITING);
    push_waiting(s, q, false);
    return GLM_OK;
}

bool glm_scheduler_has_work(const glm_scheduler *s)
{
    return s->n_running > 0 || s->n_waiting > 0;
}

static void remove_running(glm_scheduler *s, glm_sequence *q)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == q) {
            memmove(s->running + i, s->running + i + 1,
                    (size_t)(s->n_running - i - 1) * sizeof(*s->running));
            s->n_running--;
            return;
        }
}

/* Gives back the slots of q's images whose rows are all in its KV cache now: nothing reads
 * them again (a preempted sequence recomputes its prompt and takes slots anew), so the cache
 * holds only images still being prefilled, and --vision-cache bounds those, not every image of
 * every running sequence. The embeddings stay in the slot for a later prompt until evicted. */
static void release_fed_images(glm_scheduler *s, glm_sequence *q)
{
    for (int i = 0; i < q->layout.n_images; i++) {
        if (q->image_slots[i] < 0) continue;
        bool ahead = false;
        for (int r = q->n_cached; r < q->layout.n_rows && !ahead; r++)
            ahead = q->layout.image_index[r] == i;
        if (ahead) continue;
        glm_image_cache_release(s->images, q->image_slots[i]);
        q->image_slots[i] = -1;
    }
}

static void release_images(glm_scheduler *s, glm_sequence *q)
{
    for (int i = 0; i < GLM_SEQ_MAX_IMAGES; i++)
        if (q->image_slots[i] >= 0) glm_image_cache_release(s->images, q->image_slots[i]);
    clear_image_slots(q);
}

/* Frees everything a sequence holds in shared resources (blocks, its image slots). */
static void release_resources(glm_scheduler *s, glm_sequence *q)
{
    glm_block_table_release(&q->table, &s->blocks);
    release_images(s, q);
    q->n_cached = 0;
}

/* The youngest running sequence not already in the step, or NULL. */
static glm_sequence *youngest_unscheduled(glm_scheduler *s)
{
    glm_sequence *best = NULL;
    for (int i = 0; i < s->n_running; i++) {
        glm_sequence *q = s->running[i];
        if (!q->scheduled && (!best || q->arrival > best->arrival)) best = q;
    }
    return best;
}

static void preempt(glm_scheduler *s, glm_sequence *q)
{
    release_resources(s, q);
    remove_running(s, q);
    glm_job_transition(&q->state, GLM_JOB_WAITING);
    q->n_preemptions++;
    s->preemptions++;
    push_waiting(s, q, true);
}

/* Reserves blocks for n more rows of q, preempting younger sequences when short. */
static bool reserve_rows(glm_scheduler *s, glm_sequence *q, int n)
{
    for (;;) {
        if (glm_block_table_reserve(&q->table, &s->blocks, s->cfg.block_size, n) == 0) return true;
        glm_sequence *victim = youngest_unscheduled(s);
        if (!victim || victim == q || victim->arrival < q->arrival) return false;
        preempt(s, victim);
    }
}

/* Appends q's rows [n_cached, n_cached + n) to the plan at token index t. */
static void plan_rows(glm_scheduler *s, glm_step_plan *p, int seq_index, glm_sequence *q, int t,
                      int n)
{
    for (int i = 0; i < n; i++, t++) {
        int r = q->n_cached + i;
        if (r < q->layout.n_rows) {
            p->token_ids[t] = q->layout.token_ids[r];
            p->positions[t] = q->layout.positions[r];
            int image = q->layout.image_index[r];
            p->image_rows[t] =
                image >= 0 ? q->image_slots[image] * s->cfg.image_rows + q->layout.image_row[r]
                           : -1;
        } else {
            p->token_ids[t] = q->generated[r - q->layout.n_rows];
            p->positions[t] = q->layout.n_ids + (r - q->layout.n_rows);
            p->image_rows[t] = -1;
        }
        p->slots[t] = glm_block_table_slot(&q->table, s->cfg.block_size, r);
    }
    /* The row lists every block, reused ones included, and ctx_len counts the reused rows, so
     * attention reads the cached KV where it lies. That is all other ranks need at TP > 1: a
     * reused block was written by a step every rank ran, so each rank's copy holds its heads of
     * the same rows; rank 0 alone keeps the hashes and reference counts. */
    int32_t *row = p->block_table + (size_t)seq_index * p->max_blocks_per_seq;
    memset(row, 0, sizeof(int32_t) * (size_t)p->max_blocks_per_seq);
    memcpy(row, q->table.blocks, sizeof(int32_t) * (size_t)q->table.n_blocks);
    p->ctx_len[seq_index] = q->n_cached + n;
}

/* Whether rows still to be fed include rows of image i (none do once the prefix cache supplied
 * them). */
static bool image_rows_ahead(const glm_sequence *q, int image)
{
    for (int r = q->n_cached; r < q->layout.n_rows; r++)
        if (q->layout.image_index[r] == image) return true;
    return false;
}

/* Takes a vision-cache slot for each image of a sequence being admitted whose rows are still to
 * be fed; the images not in the cache are encoded this step. All or nothing: false (holding no
 * slot, and the step's new images as they were) when the cache or the step has no room for them
 * all, so the sequence waits for a later step. */
static bool attach_images(glm_scheduler *s, glm_sequence *q)
{
    int new_before = s->n_new_images;
    for (int i = 0; i < q->layout.n_images; i++) {
        if (q->image_slots[i] >= 0 || !image_rows_ahead(q, i)) continue;
        bool hit = false;
        int slot = glm_image_cache_acquire(s->images, q->image_keys[i], &hit);
        bool room = slot >= 0 && (hit || s->n_new_images < s->cfg.max_images_per_step);
        if (!room) {
            if (slot >= 0) {
                glm_image_cache_release(s->images, slot);
                glm_image_cache_invalidate(s->images, slot);
            }
            /* undo this sequence's slots: the ones it was to encode are filled by nobody */
            release_images(s, q);
            for (int k = new_before; k < s->n_new_images; k++)
                glm_image_cache_invalidate(s->images, s->new_image_slots[k]);
            s->n_new_images = new_before;
            return false;
        }
        if (!hit) {
            memcpy(s->pixels + (size_t)s->n_new_images * s->cfg.pixel_floats,
                   q->pixels + (size_t)i * s->cfg.pixel_floats,
                   sizeof(float) * (size_t)s->cfg.pixel_floats);
            s->new_image_slots[s->n_new_images++] = slot;
        }
        q->image_slots[i] = slot;
    }
    return true;
}

/* Takes the cached blocks q's prompt starts with, so its first fed row comes after them.
 * Returns the rows reused (0 when caching is off or nothing matches), -1 when out of memory. At
 * least one row is always left to feed: the step needs a row to take q's next token from. */
static int reuse_prefix(glm_scheduler *s, glm_sequence *q)
{
    /* a sequence that wants every prompt row's logits (glm4v-run --dump-logits) computes them */
    if (!q->row_keys || q->table.n_blocks > 0 || q->prompt_logits) return 0;
    int limit = target_rows(q) - 1;
    if (limit > q->layout.n_rows) limit = q->layout.n_rows;
    int reused = glm_block_table_match_prefix(&q->table, &s->blocks, q->row_keys, limit);
    if (reused > 0) q->n_cached = reused;
    return reused;
}

/* Rows the two prompts share from their start. */
static int shared_rows(const glm_sequence *a, const glm_sequence *b)
{
    int n = a->layout.n_rows < b->layout.n_rows ? a->layout.n_rows : b->layout.n_rows, r = 0;
    while (r < n && a->row_keys[r].token == b->row_keys[r].token &&
           a->row_keys[r].row == b->row_keys[r].row &&
           a->row_keys[r].image_lo == b->row_keys[r].image_lo &&
           a->row_keys[r].image_hi == b->row_keys[r].image_hi)
        r++;
    return r;
}

/* Whether q should wait because a running sequence is still computing whole blocks of q's
 * prompt that q would otherwise compute again beside it. Questions about one image arrive
 * together: admitted in the same step, each would prefill the image's ~1,600 rows, and the
 * prefix cache would only ever see the later ones. Deferred, q is admitted once those blocks
 * are registered (the producer's next chunk commits them) and reuses them. Nothing waits on a
 * sequence that is not running, and a running prompt advances every step, so it cannot stall. */
static bool prefix_in_flight(const glm_scheduler *s, const glm_sequence *q)
{
    if (!q->row_keys || q->prompt_logits) return false;
    int bs = s->cfg.block_size, limit = target_rows(q) - 1;
    for (int i = 0; i < s->n_running; i++) {
        const glm_sequence *p = s->running[i];
        if (!p->row_keys || p->n_cached >= p->layout.n_rows) continue; /* prompt done */
        int m = shared_rows(q, p);
        if (m > limit) m = limit;
        m -= m % bs; /* whole blocks only: a partial block is never shared */
        if (m > q->n_cached && m > p->n_cached) return true;
    }
    return false;
}

/* Rows q feeds this step within budget, or 0. */
static int rows_for(const glm_scheduler *s, const glm_sequence *q, int budget)
{
    int n = target_rows(q) - q->n_cached;
    if (n > s->cfg.prefill_chunk) n = s->cfg.prefill_chunk;
    if (n > budget) n = budget;
    return n > 0 ? n : 0;
}

static void add_to_step(glm_scheduler *s, glm_sequence *q, int n)
{
    q->scheduled = true;
    q->step_rows = n;
    s->step_seqs[s->n_step_seqs++] = q;
}

/* Whether q may join the step being built: an isolated step takes one isolated sequence and
 * nothing else, an ordinary step takes no isolated sequence. */
static bool step_allows(const glm_scheduler *s, const glm_sequence *q)
{
    return s->isolating ? q->isolated && s->n_step_seqs == 0 : !q->isolated;
}

static bool has_isolated(const glm_scheduler *s)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->isolated) return true;
    for (int i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->isolated) return true;
    return false;
}

/* The first waiting sequence from index `from` on that the step allows (queue order among
 * them), or -1. */
static int next_admissible(const glm_scheduler *s, int from)
{
    for (int i = from; i < s->n_waiting; i++)
        if (step_allows(s, s->waiting[i])) return i;
    return -1;
}

/* Whether an ordinary step must leave waiting sequence k where it is because a quarantined one
 * queues before it and none runs: admitting ordinary jobs past it would let a steady stream of
 * short ones keep the batch or the KV pool too full for it at every quarantine step, forever.
 * Held back, the ordinary jobs drain and the next quarantine step admits it. While an isolated
 * sequence runs, the waiting ones cannot start anyway (one isolated sequence per step), so
 * ordinary admission goes on. */
static bool behind_quarantine(const glm_scheduler *s, int k)
{
    if (s->isolating) return false;
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->isolated) return false;
    for (int i = 0; i < k; i++)
        if (s->waiting[i]->isolated) return true;
    return false;
}

/* Whether row r of q (fed in the step being built) is a logit row. */
static bool is_logit_row(const glm_sequence *q, int r)
{
    return r == target_rows(q) - 1 || (q->prompt_logits && r < q->layout.n_rows);
}

int glm_scheduler_max_logit_rows(const glm_scheduler *s)
{
    int n = s->cfg.max_batch;
    if (s->cfg.max_tokens_per_step > n) n = s->cfg.max_tokens_per_step;
    return n;
}

int glm_scheduler_step_sequences(const glm_scheduler *s, glm_sequence *const **seqs)
{
    *seqs = s->step_seqs;
    return s->n_step_seqs;
}

glm_status glm_scheduler_schedule(glm_scheduler *s, glm_step_plan *p, const float **pixels,
                                  glm_logit_row *rows, glm_error *err)
{
    s->n_step_seqs = 0;
    s->n_new_images = 0;
    int budget = s->cfg.max_tokens_per_step;
    s->isolating = !s->isolating && has_isolated(s); /* every other step, when there are any */

    /* 1. running sequences: decodes (one row) first, then prefill chunks, oldest first */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->n_running && budget > 0; i++) {
            glm_sequence *q = s->running[i];
            if (q->scheduled || !step_allows(s, q)) continue;
            bool decode = target_rows(q) - q->n_cached == 1;
            if (decode != (pass == 0)) continue;
            int n = rows_for(s, q, budget);
            if (n == 0) continue;
            int before = s->n_running;
            bool ok = reserve_rows(s, q, n);
            if (!ok)
                preempt(s, q); /* nothing younger to free: this one waits */
            else {
                add_to_step(s, q, n);
                budget -= n;
            }
            if (s->n_running != before)
                i = -1; /* the array shifted: rescan, skipping the
                           sequences already in the step */
        }
    }
    /* 2. admit waiting sequences in order while budget, batch room, blocks and images allow;
     * one whose prefix another is computing right now waits its turn in place */
    int k = 0;
    while (budget > 0 && s->n_running < s->cfg.max_batch && (k = next_admissible(s, k)) >= 0) {
        if (behind_quarantine(s, k)) break;
        glm_sequence *q = s->waiting[k];
        int reused = reuse_prefix(s, q);
        if (reused < 0) break;
        if (prefix_in_flight(s, q)) {
            release_resources(s, q); /* reused blocks go back to the cache, still findable */
            k++;
            continue;
        }
        int n = rows_for(s, q, budget);
        if (n == 0) {
            release_resources(s, q);
            break;
        }
        /* keep a block per running sequence in reserve so admission does not force an
         * immediate preemption of someone already decoding; reused blocks cost nothing */
        int bs = s->cfg.block_size, need = (q->n_cached + n + bs - 1) / bs - q->table.n_blocks;
        if (s->blocks.n_free < need + s->n_running || !attach_images(s, q) ||
            glm_block_table_reserve(&q->table, &s->blocks, s->cfg.block_size, n) != 0) {
            release_resources(s, q); /* reused blocks go back to the cache, still findable */
            break;
        }
        memmove(s->waiting + k, s->waiting + k + 1,
                (size_t)(s->n_waiting - k - 1) * sizeof(*s->waiting));
        s->n_waiting--;
        s->prompt_rows += (uint64_t)q->layout.n_rows;
        s->reused_rows += (uint64_t)reused;
        glm_job_transition(&q->state, GLM_JOB_RUNNING);
        s->running[s->n_running++] = q;
        add_to_step(s, q, n);
        budget -= n;
    }

    /* 3. the plan: sequences in step order */
    int n_tokens = 0, n_logits = 0;
    for (int i = 0; i < s->n_step_seqs; i++) {
        glm_sequence *q = s->step_seqs[i];
        n_tokens += q->step_rows;
        for (int r = q->n_cached; r < q->n_cached + q->step_rows; r++)
            n_logits += is_logit_row(q, r);
    }
    glm_status st = glm_step_plan_resize(p, s->n_step_seqs, n_tokens, s->cfg.max_blocks_per_seq,
                                         n_logits, s->n_new_images, err);
    if (st) return st;
    p->flags = 0;
    int t = 0, l = 0;
    p->q_start[0] = 0;
    for (int i = 0; i < s->n_step_seqs; i++) {
        glm_sequence *q = s->step_seqs[i];
        plan_rows(s, p, i, q, t, q->step_rows);
        for (int k = 0; k < q->step_rows; k++) {
            int r = q->n_cached + k;
            if (!is_logit_row(q, r)) continue;
            p->logit_rows[l] = t + k;
            rows[l++] = (glm_logit_row){.seq = q, .row = r, .draw = r == target_rows(q) - 1};
        }
        t += q->step_rows;
        p->q_start[i + 1] = t;
    }
    for (int i = 0; i < s->n_new_images; i++)
        p->image_slots[i] = s->new_image_slots[i];
    *pixels = s->pixels;
    return GLM_OK;
}

static bool is_stop(const glm_scheduler *s, const glm_sequence *q, int32_t id)
{
    if (!q->ignore_eos)
        for (int i = 0; i < s->cfg.n_eos_ids; i++)
            if (s->cfg.eos_ids[i] == id) return true;
    for (int i = 0; i < q->n_stop_ids; i++)
        if (q->stop_ids[i] == id) return true;
    return false;
}

void glm_scheduler_commit(glm_scheduler *s, const glm_logit_row *rows, const int32_t *sampled,
                          int n_logit_rows)
{
    for (int i = 0; i < s->n_new_images; i++)
        glm_image_cache_mark_ready(s->images, s->new_image_slots[i]);
    s->n_new_images = 0;
    for (int i = 0; i < s->n_step_seqs; i++) {
        glm_sequence *q = s->step_seqs[i];
        q->n_cached += q->step_rows;
        q->table.n_tokens = q->n_cached;
        release_fed_images(s, q);
        /* full blocks of prompt rows now hold their KV: findable by later prompts */
        if (q->row_keys)
            glm_block_table_register(&q->table, &s->blocks, q->row_keys,
                                     q->n_cached < q->layout.n_rows ? q->n_cached
                                                                    : q->layout.n_rows);
        q->scheduled = false;
        q->step_rows = 0;
    }
    for (int i = 0; i < n_logit_rows; i++) {
        glm_sequence *q = rows[i].seq;
        if (!rows[i].draw || q->state != GLM_JOB_RUNNING) continue;
        if (q->n_generated >= q->max_new_tokens) { /* its prompt was all it asked for */
            glm_scheduler_finish(s, q, GLM_SEQ_FINISHED_LENGTH);
            continue;
        }
        if (sampled[i] < 0) {
            glm_scheduler_finish(s, q, GLM_SEQ_FINISHED_ERROR);
            continue;
        }
        q->generated[q->n_generated++] = sampled[i];
        if (is_stop(s, q, sampled[i]))
            glm_scheduler_finish(s, q, GLM_SEQ_FINISHED_STOP);
        else if (q->n_generated >= q->max_new_tokens ||
                 q->layout.n_rows + q->n_generated >= s->cfg.seq_length)
            glm_scheduler_finish(s, q, GLM_SEQ_FINISHED_LENGTH);
    }
    s->n_step_seqs = 0;
}

/* Whether q holds a slot whose image was to be encoded in the step being built. */
static bool reads_new_image(const glm_scheduler *s, const glm_sequence *q)
{
    for (int i = 0; i < q->layout.n_images; i++)
        for (int k = 0; k < s->n_new_images; k++)
            if (q->image_slots[i] == s->new_image_slots[k]) return true;
    return false;
}

void glm_scheduler_abort_step(glm_scheduler *s)
{
    /* The new images were never encoded, so a sequence holding their slots would feed image rows
     * from an empty slot in its next step (running sequences never attach images again). Such a
     * sequence was admitted in this very step: it goes back to the front of the queue, holding
     * nothing, and takes its slots anew (encoding them) when admitted again. Back to front keeps
     * their queue order. */
    for (int i = s->n_step_seqs - 1; i >= 0; i--) {
        glm_sequence *q = s->step_seqs[i];
        q->scheduled = false;
        q->step_rows = 0;
        if (!reads_new_image(s, q)) continue;
        release_resources(s, q);
        remove_running(s, q);
        glm_job_transition(&q->state, GLM_JOB_WAITING);
        push_waiting(s, q, true);
    }
    for (int i = 0; i < s->n_new_images; i++)
        glm_image_cache_invalidate(s->images, s->new_image_slots[i]);
    s->n_new_images = 0;
    s->n_step_seqs = 0;
}

bool glm_scheduler_finish(glm_scheduler *s, glm_sequence *q, glm_seq_finish why)
{
    glm_job_state was = q->state;
    if (!glm_job_transition(&q->state, glm_seq_finish_state(why))) return false;
    q->finish = why;
    if (was == GLM_JOB_RUNNING) {
        release_resources(s, q);
        remove_running(s, q);
    } else if (was == GLM_JOB_WAITING) {
        for (int i = 0; i < s->n_waiting; i++)
            if (s->waiting[i] == q) {
                release_resources(s, q);
                memmove(s->waiting + i, s->waiting + i + 1,
                        (size_t)(s->n_waiting - i - 1) * sizeof(*s->waiting));
                s->n_waiting--;
                break;
            }
    }
    return true;
}

void glm_sequence_free(glm_sequence *q)
{
    glm_prompt_layout_free(&q->layout);
    glm_block_table_free(&q->table);
    free(q->row_keys);
    q->row_keys = NULL;
    free(q->generated);
    q->generated = NULL;
}

glm_scheduler_stats glm_scheduler_stats_get(const glm_scheduler *s)
{
    return (glm_scheduler_stats){.running = s->n_running,
                                 .waiting = s->n_waiting,
                                 .blocks_used = s->blocks.n_blocks - s->blocks.n_free,
                                 .blocks_total = s->blocks.n_blocks,
                                 .preemptions = s->preemptions,
                                 .prompt_rows = s->prompt_rows,
                                 .reused_rows = s->reused_rows,
                                 .cached_blocks = s->blocks.n_cached,
                                 .cache_evictions = s->blocks.evictions};
}
