/* Progress line and summary of glm4v-sweep (see sweep_progress.h). */
#include "client/sweep_progress.h"

#include "coordinator/queue/redis_conn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sweep_stats_add(sweep_stats *s, const glm_result *r, bool from_server)
{
    s->done++;
    if (r->error_code != GLM_EC_OK) s->errors++;
    s->by_finish[r->finish_reason < SWEEP_N_FINISH ? r->finish_reason : 0]++;
    if (r->error_code != GLM_EC_OK) s->by_error[(unsigned)r->error_code % SWEEP_N_CODES]++;
    s->completion_tokens += r->usage.completion_tokens;
    if (!from_server) return;
    if (s->n_latency == s->cap_latency) {
        size_t cap = s->cap_latency ? s->cap_latency * 2 : 1024;
        double *g = realloc(s->latency_ms, cap * sizeof *g);
        if (!g) return; /* the percentiles then miss a few samples; not worth failing a sweep */
        s->latency_ms = g;
        s->cap_latency = cap;
    }
    s->latency_ms[s->n_latency++] = r->timings.total_ms;
}

void sweep_stats_free(sweep_stats *s)
{
    free(s->latency_ms);
    s->latency_ms = NULL;
    s->n_latency = s->cap_latency = 0;
}

double sweep_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0) return 0;
    double rank = ceil(p / 100.0 * (double)n);
    size_t i = rank < 1 ? 0 : (size_t)rank - 1;
    return sorted[i < n ? i : n - 1];
}

void sweep_progress_init(sweep_progress *p, FILE *f, bool tty, int plain_interval_ms)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = tty;
    p->interval_ms = tty ? 100 : plain_interval_ms; /* a terminal is redrawn at most 10 times/s */
}

/* "1:02:03" or "2:03"; "--" when unknown. */
static void format_eta(double seconds, char *out, size_t cap)
{
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(out, cap, "--");
        return;
    }
    long t = lround(seconds);
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

void sweep_progress_update(sweep_progress *p, const sweep_stats *s, size_t in_flight, bool force)
{
    long long now = glm_now_mono_ms();
    if (!force && p->last_ms && now - p->last_ms < p->interval_ms) return;
    p->last_ms = now;
    double elapsed_s = (double)(now - s->start_ms) / 1000.0;
    if (elapsed_s < 1e-3) elapsed_s = 1e-3;
    size_t finished = s->done_before + s->done;
    size_t left = s->total > finished + s->timed_out ? s->total - finished - s->timed_out : 0;
    double jobs_s = (double)s->done / elapsed_s, tok_s = (double)s->completion_tokens / elapsed_s;
    double pct = s->total ? 100.0 * (double)finished / (double)s->total : 100.0;
    char eta[32];
    format_eta(jobs_s > 0 ? (double)left / jobs_s : -1, eta, sizeof eta);
    if (p->tty) {
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int filled = (int)(pct / 100.0 * WIDTH + 0.5);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        /* \033[K clears what a longer previous line left behind */
        fprintf(p->f,
                "\r[%s] %zu/%zu %5.1f%% | %.1f jobs/s | %.0f tok/s | %zu err | %zu in flight | "
                "ETA %s\033[K",
                bar, finished, s->total, pct, jobs_s, tok_s, s->errors, in_flight, eta);
        p->line_open = true;
    } else {
        fprintf(p->f,
                "glm4v-sweep: %zu/%zu done (%.1f%%), %.1f jobs/s, %.0f tok/s, %zu errors, "
                "%zu in flight, ETA %s\n",
                finished, s->total, pct, jobs_s, tok_s, s->errors, in_flight, eta);
    }
    fflush(p->f);
}

void sweep_progress_break(sweep_progress *p)
{
    if (p->line_open) fputc('\n', p->f);
    p->line_open = false;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void sweep_stats_summary(sweep_stats *s, FILE *f)
{
    double elapsed_s = (double)(glm_now_mono_ms() - s->start_ms) / 1000.0;
    if (elapsed_s < 1e-3) elapsed_s = 1e-3;
    fprintf(f, "glm4v-sweep summary:\n");
    fprintf(f,
            "  rows: %zu valid, %zu already in the output, %zu answered now (%zu found in "
            "Redis), %zu timed out, %zu malformed input lines\n",
            s->total, s->done_before, s->done, s->from_redis, s->timed_out, s->malformed);
    fprintf(f, "  finish reasons:");
    for (int i = 0; i < SWEEP_N_FINISH; i++)
        if (s->by_finish[i]) fprintf(f, " %s=%zu", glm_finish_reason_name(i), s->by_finish[i]);
    fprintf(f, "%s\n", s->done ? "" : " none");
    fprintf(f, "  errors:");
    for (int i = 0; i < SWEEP_N_CODES; i++)
        if (s->by_error[i]) fprintf(f, " %s=%zu", glm_error_code_name(i), s->by_error[i]);
    fprintf(f, "%s\n", s->errors ? "" : " none");
    fprintf(f, "  throughput: %.2f jobs/s, %.1f generated tokens/s (%llu tokens in %.1f s)\n",
            (double)s->done / elapsed_s, (double)s->completion_tokens / elapsed_s,
            (unsigned long long)s->completion_tokens, elapsed_s);
    qsort(s->latency_ms, s->n_latency, sizeof *s->latency_ms, compare_double);
    fprintf(f, "  latency (server total_ms, %zu jobs): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n",
            s->n_latency, sweep_percentile(s->latency_ms, s->n_latency, 50),
            sweep_percentile(s->latency_ms, s->n_latency, 90),
            sweep_percentile(s->latency_ms, s->n_latency, 99));
}
