/* Prints a job's answer as its chunks stream in, for a person at a terminal (glm4v-submit without
 * --json). A job reclaimed from a stalled or dead server runs again as a new attempt (Chunk.attempt
 * = its delivery count) while the old attempt may still be writing chunks: the follower keeps to
 * the newest attempt it has seen and ignores older ones, and says on the notes stream when it
 * switches. A job handed back by a draining server goes on under the same attempt number (a
 * hand-back is not a delivery blamed on it): its chunks starting again at index 0 are followed the
 * same way. When the newest attempt's text goes on from what was printed (greedy and seeded jobs
 * do), the output continues: out holds the answer exactly once (on a terminal, where the note has
 * broken the line, the text so far is shown again after it). When it differs, a note says so and
 * the new attempt's text is printed again from its start on a fresh line. The final Result (first
 * Result wins: it may come from either attempt) is what the output ends with, reprinted the same
 * way if it differs from what was streamed. No global state; one follower per job. */
#ifndef GLM4V_STREAM_FOLLOW_H
#define GLM4V_STREAM_FOLLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct glm_stream_follow {
    const char *job_id;
    FILE *out, *notes;
    char *shown; /* text printed on out since the last fresh line */
    size_t n_shown, cap_shown;
    char *text; /* the followed attempt's text so far */
    size_t n_text, cap_text;
    uint32_t attempt;    /* the newest attempt seen (0: none yet) */
    uint32_t next_index; /* the chunk index expected next in that attempt */
    bool gap;            /* a chunk of that attempt went missing: wait for the Result */
    bool oom;
    bool same_screen; /* out and notes are one terminal: a note breaks the line of text */
} glm_stream_follow;

/* same_screen: out and notes show on one terminal (isatty of both, in glm4v-submit). */
void glm_stream_follow_init(glm_stream_follow *f, const char *job_id, FILE *out, FILE *notes,
                            bool same_screen);
void glm_stream_follow_free(glm_stream_follow *f);

/* One chunk of the job: its attempt, its index within that attempt and its new text, text_bytes
 * bytes of it (NUL bytes are text too: they are printed, not taken as its end). */
void glm_stream_follow_chunk(glm_stream_follow *f, uint32_t attempt, uint32_t index,
                             const char *text, size_t text_bytes);

/* The final Result's whole text (a successful one), text_bytes bytes: completes the output and
 * ends its line. */
void glm_stream_follow_result(glm_stream_follow *f, const char *text, size_t text_bytes);

#endif
