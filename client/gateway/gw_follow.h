/* Follows one job's out stream across attempts and turns it into what a client may see: text and
 * tokens that only ever extend what was already sent.
 *
 * Chunks carry `attempt` (the delivery count): when another replica reclaims the job, chunks of
 * the newer attempt start again at index 0 (after a drain's hand-back, under the same attempt
 * number: index 0 again is a restart too). The follower keeps to the newest attempt, skips what
 * the client already has while the new attempt agrees with it, and reports a divergence (a sampled
 * job that came out differently) so the caller can end the stream with an error instead of
 * sending text that contradicts what went before. Agreement is judged on token ids (the answer);
 * text (its rendering) is sent only where it extends the text already sent. A gap (a chunk lost
 * while Redis was away) stops the live stream until the Result, which carries the whole answer. */
#ifndef GLM4V_GW_FOLLOW_H
#define GLM4V_GW_FOLLOW_H

#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_follower {
    int32_t *sent_ids; /* tokens sent to the client */
    size_t n_sent_ids, cap_sent_ids;
    char *sent_text; /* text sent to the client */
    size_t n_sent_text, cap_sent_text;
    uint32_t attempt;    /* the attempt being followed */
    uint32_t next_index; /* the chunk index expected next within it */
    bool gap;            /* a chunk of this attempt was missed: wait for the Result */
    size_t n_att_ids;    /* tokens of this attempt seen so far */
    char *att_text;      /* text of this attempt so far */
    size_t n_att_text, cap_att_text;
    uint32_t restarts; /* how many times a newer attempt took over */
} gw_follower;

/* What to send now: text[0..text_len) and the source's tokens [first, first + n_tokens) (the
 * source is the chunk or result just given, whose token_ids and logprobs those index). */
typedef struct gw_delta {
    const char *text;
    size_t text_len;
    size_t first, n_tokens;
} gw_delta;

typedef enum gw_follow_outcome {
    GW_FOLLOW_OK,       /* delta (possibly empty) to send */
    GW_FOLLOW_DIVERGED, /* the answer no longer extends what was sent: end with an error */
    GW_FOLLOW_NOMEM,
} gw_follow_outcome;

void gw_follower_init(gw_follower *f);
void gw_follower_free(gw_follower *f);

gw_follow_outcome gw_follower_on_chunk(gw_follower *f, const glm_chunk *c, gw_delta *d);

/* For the final, successful Result: the rest of the answer beyond what was sent. */
gw_follow_outcome gw_follower_on_result(gw_follower *f, const glm_result *r, gw_delta *d);

#endif
