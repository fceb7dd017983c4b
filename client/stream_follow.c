/* Following a job's chunks across attempts (see stream_follow.h). */
#include "client/stream_follow.h"

#include <stdlib.h>
#include <string.h>

void glm_stream_follow_init(glm_stream_follow *f, const char *job_id, FILE *out, FILE *notes,
                            bool same_screen)
{
    memset(f, 0, sizeof *f);
    f->job_id = job_id;
    f->out = out;
    f->notes = notes;
    f->same_screen = same_screen;
}

void glm_stream_follow_free(glm_stream_follow *f)
{
    free(f->shown);
    free(f->text);
    f->shown = f->text = NULL;
}

static bool append(char **buf, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (*n + len + 1 > *cap) {
        size_t grown = (*n + len + 1) * 2;
        char *g = realloc(*buf, grown);
        if (!g) return false;
        *buf = g;
        *cap = grown;
    }
    memcpy(*buf + *n, s, len);
    *n += len;
    (*buf)[*n] = '\0';
    return true;
}

static bool starts_with(const char *s, size_t n, const char *prefix, size_t n_prefix)
{
    return n >= n_prefix && (n_prefix == 0 || memcmp(s, prefix, n_prefix) == 0);
}

static void print(glm_stream_follow *f, const char *s, size_t len)
{
    if (!len) return;
    fwrite(s, 1, len, f->out);
    fflush(f->out);
    if (!append(&f->shown, &f->n_shown, &f->cap_shown, s, len)) f->oom = true;
}

/* Brings the screen to want: prints what extends the text shown; a want that is still catching
 * up with it (a new attempt replaying the same text) prints nothing, unless final; anything else
 * ends the line, says why on notes, and prints want whole on a fresh line. */
static void show(glm_stream_follow *f, const char *want, size_t len, bool final, const char *why)
{
    if (!f->oom && starts_with(want, len, f->shown, f->n_shown)) {
        print(f, want + f->n_shown, len - f->n_shown);
        return;
    }
    if (!final && !f->oom && starts_with(f->shown, f->n_shown, want, len)) return;
    fputc('\n', f->out);
    fflush(f->out);
    fprintf(f->notes, "glm4v-submit: job %s: %s; printed again from its start:\n", f->job_id, why);
    fflush(f->notes);
    f->n_shown = 0;
    f->oom = false;
    print(f, want, len);
}

void glm_stream_follow_chunk(glm_stream_follow *f, uint32_t attempt, uint32_t index,
                             const char *text, size_t text_bytes)
{
    if (attempt < f->attempt) return; /* an older attempt, still running on a stalled server */
    /* the same attempt from its start: a job handed back by a draining server keeps its delivery
     * count (it is not blamed on the job), so the server that takes it over streams under the
     * same number; without this the stream stopped there as if a chunk were lost */
    bool restarted = attempt == f->attempt && index == 0 && (f->next_index > 0 || f->gap);
    if (attempt > f->attempt || restarted) {
        if (f->attempt > 0) {
            bool broken = f->same_screen && f->n_shown > 0;
            if (restarted)
                fprintf(f->notes,
                        "%sglm4v-submit: job %s started again on another server; following it\n",
                        broken ? "\n" : "", f->job_id);
            else
                fprintf(f->notes,
                        "%sglm4v-submit: job %s was handed to another server (attempt %u); "
                        "following it\n",
                        broken ? "\n" : "", f->job_id, attempt);
            fflush(f->notes);
            if (broken) { /* the terminal line was cut by the note: show the text so far again */
                fwrite(f->shown, 1, f->n_shown, f->out);
                fflush(f->out);
            }
        }
        f->attempt = attempt;
        f->next_index = 0;
        f->n_text = 0;
        f->gap = false;
    }
    if (f->gap) return;
    if (index != f->next_index) { /* lost while Redis was away: the Result will carry it all */
        f->gap = true;
        return;
    }
    f->next_index++;
    if (!append(&f->text, &f->n_text, &f->cap_text, text, text_bytes)) {
        f->gap = true;
        return;
    }
    show(f, f->text, f->n_text, false, "the new attempt's text differs from the one printed");
}

void glm_stream_follow_result(glm_stream_follow *f, const char *text, size_t text_bytes)
{
    show(f, text, text_bytes, true, "the final answer differs from the streamed text");
    fputc('\n', f->out);
    fflush(f->out);
}
