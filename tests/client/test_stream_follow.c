/* glm_stream_follow: what glm4v-submit prints while a job's attempts stream in. Each case feeds
 * chunks (attempt, index, text) and a final Result, and compares what went to the text stream and
 * the notes stream (memory streams) with what a reader must see. */
#include "client/stream_follow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

typedef struct chunk {
    unsigned attempt, index;
    const char *text;
} chunk;

static size_t len_of(const char *s, size_t bytes)
{
    return bytes ? bytes : strlen(s);
}

/* Runs one case; want_notes is a substring the notes must hold (NULL: notes must be empty).
 * Texts with NUL bytes give their lengths: chunk_bytes[i] (NULL, or 0: strlen), result_bytes,
 * want_out_bytes (0: strlen). */
static void run_case_bytes(const char *name, const chunk *chunks, const size_t *chunk_bytes,
                           size_t n, const char *result, size_t result_bytes, int same_screen,
                           const char *want_out, size_t want_out_bytes, const char *want_notes)
{
    char *out = NULL, *notes = NULL;
    size_t n_out = 0, n_notes = 0;
    FILE *fo = open_memstream(&out, &n_out), *fn = open_memstream(&notes, &n_notes);
    if (!fo || !fn) {
        printf("FAIL %s: open_memstream\n", name);
        failures++;
        return;
    }
    glm_stream_follow f;
    glm_stream_follow_init(&f, "job-1", fo, fn, same_screen);
    for (size_t i = 0; i < n; i++)
        glm_stream_follow_chunk(&f, chunks[i].attempt, chunks[i].index, chunks[i].text,
                                len_of(chunks[i].text, chunk_bytes ? chunk_bytes[i] : 0));
    if (result) glm_stream_follow_result(&f, result, len_of(result, result_bytes));
    glm_stream_follow_free(&f);
    fclose(fo);
    fclose(fn);
    size_t want_n = len_of(want_out, want_out_bytes);
    int ok = n_out == want_n && memcmp(out, want_out, want_n) == 0 &&
             (want_notes ? strstr(notes, want_notes) != NULL : n_notes == 0);
    printf("%s %s\n", ok ? "ok  " : "FAIL", name);
    if (!ok) {
        printf("  out:   [%s]\n  want:  [%s]\n  notes: [%s]\n  want:  [%s]\n", out, want_out, notes,
               want_notes ? want_notes : "(none)");
        failures++;
    }
    free(out);
    free(notes);
}

static void run_case(const char *name, const chunk *chunks, size_t n, const char *result,
                     int same_screen, const char *want_out, const char *want_notes)
{
    run_case_bytes(name, chunks, NULL, n, result, 0, same_screen, want_out, 0, want_notes);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

int main(void)
{
    /* one attempt, all chunks: the text once, then a newline */
    const chunk plain[] = {{1, 0, "The "}, {1, 1, "cat "}, {1, 2, "sits."}};
    run_case("one attempt", plain, N(plain), "The cat sits.", 0, "The cat sits.\n", NULL);

    /* attempt 1 dies after two chunks; attempt 2 replays the same text (greedy) and goes on;
     * late chunks of attempt 1 are ignored: the answer appears exactly once */
    const chunk replay[] = {{1, 0, "The "}, {1, 1, "cat "}, {2, 0, "The "},
                            {1, 2, "XX"},   {2, 1, "cat "}, {2, 2, "sits."}};
    run_case("reclaimed, same text, piped", replay, N(replay), "The cat sits.", 0,
             "The cat sits.\n", "handed to another server (attempt 2)");
    /* on a terminal the note cut the line: the text so far is shown again after it */
    run_case("reclaimed, same text, terminal", replay, N(replay), "The cat sits.", 1,
             "The cat The cat sits.\n", "handed to another server (attempt 2)");

    /* attempt 2 says something else: a fresh line, a note, its text from the start */
    const chunk differ[] = {{1, 0, "A dog "}, {2, 0, "The "}, {2, 1, "cat."}};
    run_case("reclaimed, different text", differ, N(differ), "The cat.", 0, "A dog \nThe cat.\n",
             "the new attempt's text differs");

    /* the first Result wins even when it is the old attempt's: the output ends with it */
    const chunk old_wins[] = {{1, 0, "A dog "}, {2, 0, "The cat"}};
    run_case("old attempt's Result wins", old_wins, N(old_wins), "A dog barks.", 0,
             "A dog \nThe cat\nA dog barks.\n", "the final answer differs");

    /* a chunk lost (index 1 missing): live text stops, the Result completes it */
    const chunk gap[] = {{1, 0, "The "}, {1, 2, "sits."}};
    run_case("lost chunk", gap, N(gap), "The cat sits.", 0, "The cat sits.\n", NULL);

    /* a Result shorter than what streamed (a stop string trimmed it): printed again */
    const chunk trimmed[] = {{1, 0, "The cat"}, {1, 1, " ##"}};
    run_case("Result shorter than the stream", trimmed, N(trimmed), "The cat", 0,
             "The cat ##\nThe cat\n", "the final answer differs");

    /* the first chunk seen is already attempt 3 (reclaimed before the client looked): no note */
    const chunk late[] = {{3, 0, "Hi"}, {3, 1, "."}};
    run_case("first seen attempt 3", late, N(late), "Hi.", 0, "Hi.\n", NULL);

    /* NUL bytes are text (U+0000 is a token): printed, never taken as the end of a chunk or of
     * the Result */
    const chunk nul[] = {{1, 0, "a\0b"}, {1, 1, "\0"}, {1, 2, "c"}};
    const size_t nul_bytes[] = {3, 1, 1};
    run_case_bytes("NUL bytes in the text", nul, nul_bytes, N(nul), "a\0b\0c", 5, 0, "a\0b\0c\n", 6,
                   NULL);
    /* a Result that differs only after a NUL is a different answer */
    const chunk nul_differ[] = {{1, 0, "a\0b"}};
    const size_t nul_differ_bytes[] = {3};
    run_case_bytes("Result differs after a NUL", nul_differ, nul_differ_bytes, N(nul_differ),
                   "a\0c", 3, 0, "a\0b\na\0c\n", 8, "the final answer differs");

    /* no chunks at all (all lost): the Result alone */
    run_case("Result only", NULL, 0, "Hello.", 0, "Hello.\n", NULL);

    printf("test_stream_follow: %d failed\n", failures);
    return failures ? 1 : 0;
}
