/* Continuous batching on rank 0.
 *
 * Every step the scheduler builds one step plan from the running sequences and, budget
 * permitting, newly admitted ones: sequences join and leave at any step. A sequence's rows are
 * its spliced prompt followed by its generated tokens; each step feeds the rows not yet in its KV
 * cache (a prefill chunk, or the one token just sampled), so prefill chunks and decode tokens
 * share one per-step token budget, decodes first. KV blocks are reserved as rows are fed; when
 * they run out the youngest running sequence is preempted (its blocks freed, recomputed later
 * from its prompt and the tokens it already generated) instead of failing anyone. New images go
 * through the vision tower in batches in the step that admits them, into vision-cache slots: a
 * sequence with several images takes a slot for each (one vision pass per distinct image, the
 * images of one or many sequences batched in one step), and each image row of its prompt names
 * its own image's slot. A slot is held until its image's rows are in the KV cache (a preempted
 * sequence takes slots anew), so the cache bounds the images being prefilled, not every image
 * of every running sequence.
 *
 * Prefix caching (on unless the config says otherwise): full KV blocks of prompt rows are kept
 * under a hash chain of their contents (worker/kv_cache.h), so a sequence whose prompt starts
 * like an earlier one's (a shared system prompt, a conversation's history, the same image with
 * another question) takes those blocks and feeds only the rows after them; an image whose rows
 * all sit in reused blocks is not even encoded. Image rows are keyed by their own image's
 * content hash, so two prompts share a block only when every image in it is the same. Only prompt rows are cached: generated rows'
 * KV comes from decode steps, and reusing it would make a later answer depend on whether an
 * earlier one ran in this server. */
#ifndef GLM4V_SCHEDULER_H
#define GLM4V_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "coordinator/image/image_cache.h"
#include "coordinator/serve/job_state.h"
#include "coordinator/text/prompt_layout.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/step_plan.h"

/* Why a sequence ended; its final state follows from it (glm_seq_finish_state). */
typedef enum glm_seq_finish {
    GLM_SEQ_NOT_FINISHED = 0,
    GLM_SEQ_FINISHED_LENGTH,      /* max_new_tokens or seq_length reached */
    GLM_SEQ_FINISHED_STOP,        /* eos or a stop id */
    GLM_SEQ_FINISHED_STOP_STRING, /* the caller matched a stop string */
    GLM_SEQ_FINISHED_ERROR,       /* -> GLM_JOB_FAILED */
    GLM_SEQ_CANCELLED,            /* handed back or dropped -> GLM_JOB_CANCELLED */
} glm_seq_finish;

glm_job_state glm_seq_finish_state(glm_seq_finish why);

struct glm_request;

/* Images one sequence may carry. All of a sequence's images are held (and the new ones encoded)
 * from the step that admits it, so a replica's --max-images-per-prompt must not exceed its
 * images per step nor its vision-cache slots. */
#define GLM_SEQ_MAX_IMAGES 8

typedef struct glm_sequence {
    /* the serve loop's job that embeds this sequence (NULL for glm4v-run's): the scheduler
     * never reads it, the serve loop follows it from the sequences of a step back to their jobs */
    struct glm_request *request;
    glm_prompt_layout layout;
    /* [layout.n_images, C, S, S] of its images in prompt order (owned by the caller), NULL for
     * text; image i's key (a hash of its bytes) in image_keys[i] */
    const float *pixels;
    glm_image_key image_keys[GLM_SEQ_MAX_IMAGES];
    int max_new_tokens;
    bool ignore_eos;
    const int32_t *stop_ids;
    int n_stop_ids;
    glm_sample_params sample;
    int priority; /* higher is admitted first; equal priorities in arrival order */
    /* every prompt row is a logit row, not only the last (glm4v-run --dump-logits and the golden
     * tests read the logits of every prompt position); the step driver copies them here,
     * [layout.n_rows, vocab] float32 owned by the caller. NULL: only the rows tokens are drawn
     * from. */
    float *prompt_logits;
    /* quarantine (crash attribution, docs/DEPLOY.md): runs alone in its step, never batched
     * with another sequence; steps of isolated sequences alternate with ordinary ones, and while
     * one waits with none running, ordinary steps admit nothing queued behind it (else a steady
     * stream of short jobs could keep the batch or the pool too full for it forever) */
    bool isolated;
    /* state kept by the scheduler */
    int32_t *generated;
    int n_generated;
    int cap_generated;
    int n_cached;   /* rows whose KV is in the cache */
    int image_slots[GLM_SEQ_MAX_IMAGES]; /* vision-cache slot of each image, -1 when not held */
    glm_block_table table;
    glm_row_key *row_keys; /* [layout.n_rows] what each prompt row holds, for the prefix cache */
    uint64_t arrival;
    glm_job_state state; /* changed only by glm_job_transition (job_state.h) */
    bool scheduled;      /* part of the step being built */
    int step_rows;       /* rows fed in the current step */
    int n_preemptions;
    glm_seq_finish finish;
} glm_sequence;

typedef struct glm_scheduler_config {
    int max_batch;           /* sequences per step */
    int max_tokens_per_step; /* token budget per step */
    int prefill_chunk;       /* prompt rows per sequence per step */
    int max_images_per_step;
    int block_size;
    int n_blocks;
    int max_blocks_per_seq;
    int image_rows;   /* pool rows per image */
    int pixel_floats; /* C * S * S */
    int seq_length;
    const int *eos_ids;
    int n_eos_ids;
    bool no_prefix_cache; /* every prompt computed in full (to measure the cache) */
} glm_scheduler_config;

typedef struct glm_scheduler glm_scheduler;

/* One logit row of a step: whose, which of its rows (spliced prompt, then generated tokens), and
 * whether a token is drawn from it (the sequence's last row; the other rows are prompt rows asked
 * for by prompt_logits). */
typedef struct glm_logit_row {
    glm_sequence *seq;
    int row;
    bool draw;
} glm_logit_row;

glm_status glm_scheduler_create(const glm_scheduler_config *cfg, glm_image_cache *images,
                                glm_scheduler **out, glm_error *err);
void glm_scheduler_destroy(glm_scheduler *s);

/* Queues seq (its layout, limits and sampling filled in by the caller; state QUEUED or PREPARING)
 * behind the waiting ones: it becomes WAITING. GLM_ERR_INVALID_ARG when it is in another state. */
glm_status glm_scheduler_add(glm_scheduler *s, glm_sequence *seq, glm_error *err);
bool glm_scheduler_has_work(const glm_scheduler *s);

/* Builds the next step into plan; pixels of the images to encode are copied into a buffer the
 * scheduler owns (*pixels, [plan->n_images, C, S, S]). rows[i] describes logit row i (capacity
 * glm_scheduler_max_logit_rows). Returns GLM_OK with plan->n_tokens == 0 when nothing can run. */
glm_status glm_scheduler_schedule(glm_scheduler *s, glm_step_plan *plan, const float **pixels,
                                  glm_logit_row *rows, glm_error *err);
/* Logit rows one step may have: max_batch, or a whole prefill chunk when prompt logits are
 * asked for. */
int glm_scheduler_max_logit_rows(const glm_scheduler *s);
/* The sequences of the step just scheduled (until commit or abort), in plan order. */
int glm_scheduler_step_sequences(const glm_scheduler *s, glm_sequence *const **seqs);
/* After the step ran: marks new images ready, advances every scheduled sequence's cache, and
 * appends sampled[i] to the sequence of each drawing row i, finishing those that hit eos, a stop
 * id or a length limit (a sequence with max_new_tokens 0 finishes after its prompt). A negative
 * sampled[i] (the sampler drew nothing: non-finite logits) appends nothing and finishes the
 * sequence with GLM_SEQ_FINISHED_ERROR. Finished sequences leave the batch (their finish field
 * says why). */
void glm_scheduler_commit(glm_scheduler *s, const glm_logit_row *rows, const int32_t *sampled,
                          int n_logit_rows);
/* After a failed step: undoes the step's image reservations so they are encoded again (the
 * sequences admitted with them go back to the front of the queue); the step can be planned
 * again. */
void glm_scheduler_abort_step(glm_scheduler *s);
/* Ends a sequence (stop string, error, deadline, cancellation): releases what it holds in the
 * scheduler when it is WAITING or RUNNING, and moves it to glm_seq_finish_state(why). Returns
 * false, changing nothing, when it had already ended. */
bool glm_scheduler_finish(glm_scheduler *s, glm_sequence *seq, glm_seq_finish why);
/* Frees a sequence's own memory (call after it finished or was never added). */
void glm_sequence_free(glm_sequence *seq);

typedef struct glm_scheduler_stats {
    int running, waiting;
    int blocks_used, blocks_total;
    uint64_t preemptions;
    /* prefix cache: prompt rows admitted (again after a preemption) and how many of them were
     * found in cached blocks; blocks holding cached content (in use or evictable) */
    uint64_t prompt_rows, reused_rows;
    int cached_blocks;
    uint64_t cache_evictions;
} glm_scheduler_stats;
glm_scheduler_stats glm_scheduler_stats_get(const glm_scheduler *s);

#endif
