/* glm4v-sweep: runs a JSONL file of image/question rows through the cluster and writes one JSONL
 * Result per row, resumably (docs/SWEEP.md).
 *
 * Exit codes: 0 every row answered without error; 1 done, but some rows carry an error Result or
 * input lines were malformed; 2 usage error (or an output file that is not ours); 3 Redis or file
 * error, or jobs that timed out (the output is incomplete: re-run to resume); 128+N stopped by
 * signal N (re-run to resume). */
#include "client/sweep_args.h"
#include "client/sweep_identity.h"
#include "client/sweep_input.h"
#include "client/sweep_job.h"
#include "client/sweep_order.h"
#include "client/sweep_output.h"
#include "client/sweep_progress.h"
#include "client/sweep_queue.h"
#include "coordinator/queue/job_fingerprint.h"
#include "coordinator/queue/redis_conn.h"
#include "coordinator/queue/result_json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The one piece of global state: a signal handler can only talk to the loop through it. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig)
{
    g_stop_signal = sig;
}

typedef struct sweep_run {
    const sweep_args *a;
    sweep_input in;
    int in_fd;
    size_t *order; /* rows to run, in submission order */
    size_t n_order, next;
    sweep_flight *flights; /* jobs in flight, a->window at most */
    size_t n_flights;
    glm_result **results; /* scratch, a->window entries */
    sweep_queue *q;
    sweep_output *out;
    sweep_stats stats;
    sweep_progress progress;
    size_t max_image_bytes;
    size_t errors_before; /* lines of the resumed output that carry an error */
    char image_root_real[PATH_MAX]; /* --image-root with symlinks resolved: images stay inside */
    bool failed;          /* a Redis or file error stopped the run */
} sweep_run;

/* Reports a per-row problem on stderr, keeping the progress line intact. */
static void row_message(sweep_run *run, const sweep_row *row, const char *what, const char *msg)
{
    sweep_progress_break(&run->progress);
    fprintf(stderr, "glm4v-sweep: %s:%ld: id %s: %s%s\n", run->a->in, row->line_no, row->id, what,
            msg);
}

/* Writes a Result as row's line and counts it. The line's id is the row id, whatever prefix the
 * job id carried. */
static void settle(sweep_run *run, size_t row_index, glm_result *r, bool from_server)
{
    const sweep_row *row = &run->in.rows[row_index];
    r->id = row->id;
    char *json = glm_result_to_json(r);
    glm_error err = {0};
    if (!json || sweep_output_write(run->out, row_index, json, &err) != GLM_OK) {
        row_message(run, row, "", json ? err.msg : "out of memory");
        run->failed = true;
    }
    free(json);
    sweep_stats_add(&run->stats, r, from_server);
}

/* Writes the sweep's own error line for a row the cluster never saw. */
static void settle_client_error(sweep_run *run, size_t row_index, glm_error_code code,
                                const char *message)
{
    row_message(run, &run->in.rows[row_index], "", message);
    glm_result r = {.version = GLM4V_PROTOCOL_VERSION,
                    .text = "",
                    .finish_reason = GLM_FINISH_ERROR,
                    .error_code = code,
                    .error_message = message,
                    .server_id = "glm4v-sweep"};
    settle(run, row_index, &r, false);
}

static void job_id_of(const sweep_run *run, size_t row_index, char out[GLM_JOB_ID_MAX + 1])
{
    snprintf(out, GLM_JOB_ID_MAX + 1, "%s%s", run->a->job_prefix, run->in.rows[row_index].id);
}

/* Builds row's job (reading its image from inside the image root) into *bytes and its fingerprint;
 * returns false when the row was settled here instead (a missing image or one outside the root)
 * or a fatal error set run->failed. */
static bool build_row_job(sweep_run *run, size_t row_index, const char *job_id, uint8_t **bytes,
                          size_t *len, char fingerprint[GLM_FINGERPRINT_LEN + 1],
                          char raw_fingerprint[GLM_FINGERPRINT_LEN + 1])
{
    const sweep_row *row = &run->in.rows[row_index];
    sweep_line line;
    glm_error err = {0};
    *bytes = NULL;
    if (sweep_input_reread(run->in_fd, row, &line, &err) != GLM_OK) {
        row_message(run, row, "", err.msg);
        run->failed = true;
        return false;
    }
    glm_image_part images[SWEEP_MAX_IMAGES + 1] = {{0}};
    size_t n_images = 0;
    glm_status st = GLM_OK;
    for (; st == GLM_OK && n_images < line.n_images; n_images++) {
        char path[PATH_MAX];
        uint8_t *image = NULL;
        size_t image_bytes = 0;
        st = sweep_image_resolve(run->image_root_real, run->a->image_root, line.images[n_images],
                                 path, sizeof path, &err);
        if (st == GLM_OK)
            st = sweep_job_read_image(path, run->max_image_bytes, &image, &image_bytes, &err);
        images[n_images] = (glm_image_part){.data = image, .bytes = image_bytes, .format = ""};
        if (st != GLM_OK) {
            for (size_t k = 0; k <= n_images; k++)
                free((void *)images[k].data);
            settle_client_error(run, row_index,
                                st == GLM_ERR_LIMIT         ? GLM_EC_IMAGE_TOO_LARGE
                                : st == GLM_ERR_INVALID_ARG ? GLM_EC_INVALID_REQUEST
                                                            : GLM_EC_BAD_IMAGE,
                                err.msg);
            sweep_line_free(&line);
            return false;
        }
    }
    glm_sampling sampling = sweep_job_sampling(&run->a->sampling, run->a->sweep_seed, &line);
    st = sweep_job_encode(&line, job_id, &sampling, images, n_images, bytes, len, &err);
    for (size_t k = 0; k < n_images; k++)
        free((void *)images[k].data);
    sweep_line_free(&line);
    if (st != GLM_OK) {
        settle_client_error(run, row_index, GLM_EC_INVALID_REQUEST, err.msg);
        return false;
    }
    /* the server fingerprints the decoded job; so do we, from the very bytes it will decode */
    glm_job_fingerprint_bytes(*bytes, *len, fingerprint);
    /* and as a server older than this client does when it cannot decode them (sweep_queue.h) */
    glm_job_fingerprint_raw(*bytes, *len, raw_fingerprint);
    return true;
}

/* A Result in Redis under this row's job id that answers another job (another sweep, or this
 * input edited since): reported for the row, never written as its answer. */
static void settle_conflict(sweep_run *run, size_t row_index, const char *job_id,
                            const char *theirs, const char *mine)
{
    char msg[400];
    snprintf(msg, sizeof msg,
             "job id %s already belongs to another job (fingerprint %s, this row's is %s): its "
             "Result is not this row's answer; run with another --job-prefix",
             job_id, theirs, mine);
    settle_client_error(run, row_index, GLM_EC_ID_CONFLICT, msg);
}

/* Submits a built job; false when a Redis error set run->failed. */
static bool submit_row(sweep_run *run, size_t row_index, const char *job_id, const uint8_t *bytes,
                       size_t len)
{
    glm_error err = {0};
    if (sweep_queue_submit(run->q, job_id, bytes, len, &err) != GLM_OK) {
        row_message(run, &run->in.rows[row_index], "", err.msg);
        run->failed = true;
        return false;
    }
    return true;
}

/* Starts rows until the window is full: rows whose Result is still in Redis (an interrupted run,
 * a re-run) are settled from there without running again; the rest are submitted. */
static void fill_window(sweep_run *run)
{
    size_t room = (size_t)run->a->window - run->n_flights;
    if (room > run->n_order - run->next) room = run->n_order - run->next;
    if (room == 0) return;
    char(*job_ids)[GLM_JOB_ID_MAX + 1] = malloc(room * sizeof *job_ids);
    const char **ids = malloc(room * sizeof *ids);
    glm_result **found = run->results; /* room <= window */
    glm_error err = {0};
    if (!job_ids || !ids) {
        fprintf(stderr, "glm4v-sweep: out of memory\n");
        run->failed = true;
    }
    for (size_t k = 0; !run->failed && k < room; k++) {
        job_id_of(run, run->order[run->next + k], job_ids[k]);
        ids[k] = job_ids[k];
    }
    if (!run->failed && sweep_queue_lookup(run->q, ids, room, found, &err) != GLM_OK) {
        sweep_progress_break(&run->progress);
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        run->failed = true;
    }
    for (size_t k = 0; !run->failed && k < room; k++) {
        size_t row_index = run->order[run->next++];
        uint8_t *bytes = NULL;
        size_t len = 0;
        char fingerprint[GLM_FINGERPRINT_LEN + 1], raw[GLM_FINGERPRINT_LEN + 1];
        bool built = build_row_job(run, row_index, job_ids[k], &bytes, &len, fingerprint, raw);
        if (built && found[k] &&
            glm_fingerprint_answers(found[k]->job_fingerprint, fingerprint, raw)) {
            run->stats.from_redis++;
            settle(run, row_index, found[k], true);
        } else if (built && found[k]) {
            settle_conflict(run, row_index, job_ids[k], found[k]->job_fingerprint, fingerprint);
        } else if (built && submit_row(run, row_index, job_ids[k], bytes, len)) {
            sweep_flight *f = &run->flights[run->n_flights++];
            snprintf(f->job_id, sizeof f->job_id, "%s", job_ids[k]);
            snprintf(f->fingerprint, sizeof f->fingerprint, "%s", fingerprint);
            snprintf(f->raw_fingerprint, sizeof f->raw_fingerprint, "%s", raw);
            snprintf(f->cursor, sizeof f->cursor, "0-0");
            f->row = row_index;
            f->submitted_ms = glm_now_mono_ms();
            f->deadline_ms = f->submitted_ms + (long long)(run->a->timeout_s * 1000.0);
        }
        free(bytes);
        if (found[k]) glm_result_free(found[k]);
        found[k] = NULL;
    }
    for (size_t k = 0; k < room; k++) /* left over after a failure */
        if (found[k]) glm_result_free(found[k]);
    free(job_ids);
    free(ids);
}

/* Waits a little for Results of the jobs in flight, settles them, and gives up on jobs past their
 * deadline (no line: a re-run tries them again). */
static void collect_results(sweep_run *run, int block_ms)
{
    glm_error err = {0};
    if (sweep_queue_poll(run->q, run->flights, run->n_flights, block_ms, run->results, &err) !=
        GLM_OK) {
        sweep_progress_break(&run->progress);
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        run->failed = true;
        return;
    }
    long long now = glm_now_mono_ms();
    size_t kept = 0;
    for (size_t i = 0; i < run->n_flights; i++) {
        sweep_flight *f = &run->flights[i];
        if (run->results[i] && !glm_fingerprint_answers(run->results[i]->job_fingerprint,
                                                        f->fingerprint, f->raw_fingerprint)) {
            settle_conflict(run, f->row, f->job_id, run->results[i]->job_fingerprint,
                            f->fingerprint);
            glm_result_free(run->results[i]);
            run->results[i] = NULL;
            continue;
        }
        if (run->results[i]) {
            settle(run, f->row, run->results[i], true);
            glm_result_free(run->results[i]);
            run->results[i] = NULL;
            continue;
        }
        if (now > f->deadline_ms) {
            row_message(run, &run->in.rows[f->row], "no result within --timeout; ",
                        "left for a re-run");
            run->stats.timed_out++;
            sweep_output_skip(run->out, f->row);
            continue;
        }
        run->flights[kept++] = *f;
    }
    run->n_flights = kept;
}

static void run_loop(sweep_run *run)
{
    while (!run->failed && !g_stop_signal && (run->next < run->n_order || run->n_flights > 0)) {
        fill_window(run);
        if (run->failed) break;
        if (run->n_flights > 0) collect_results(run, 100);
        sweep_progress_update(&run->progress, &run->stats, run->n_flights, false);
    }
}

static int exit_code(const sweep_run *run)
{
    if (g_stop_signal) return 128 + g_stop_signal;
    if (run->failed || run->stats.timed_out) return EXIT_IO;
    if (run->stats.errors || run->errors_before || run->stats.malformed) return EXIT_ROW_ERRORS;
    return 0;
}

/* Loads the input, scans the output and works out what is left to do. */
static int load_input_and_resume_state(sweep_run *run, sweep_idset *done)
{
    const sweep_args *a = run->a;
    glm_error err = {0};
    if (!realpath(a->image_root, run->image_root_real)) {
        fprintf(stderr, "glm4v-sweep: --image-root %s: %s\n", a->image_root, strerror(errno));
        return EXIT_USAGE;
    }
    FILE *errors = fopen(a->errors, "w"); /* rewritten each run: the input is checked again */
    if (!errors) {
        fprintf(stderr, "glm4v-sweep: cannot write %s: %s\n", a->errors, strerror(errno));
        return EXIT_IO;
    }
    glm_status st = sweep_input_load(a->in, a->job_prefix, stderr, errors, &run->in, &err);
    fclose(errors);
    if (st != GLM_OK) {
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        return EXIT_IO;
    }
    sweep_resume_info info;
    if ((st = sweep_resume_scan(a->out, done, &info, &err)) != GLM_OK) {
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        return st == GLM_ERR_FORMAT ? EXIT_USAGE : EXIT_IO;
    }
    run->errors_before = info.n_error_lines;
    if (info.n_lines || info.torn_bytes)
        fprintf(stderr, "glm4v-sweep: resuming: %s holds %zu lines%s\n", a->out, info.n_lines,
                info.torn_bytes ? " (a torn last line was cut away)" : "");
    run->order = malloc((run->in.n_rows + 1) * sizeof *run->order);
    if (!run->order) return EXIT_IO;
    run->n_order = sweep_order_submission(&run->in, done, run->order);
    run->stats.total = run->in.n_rows;
    run->stats.done_before = run->in.n_rows - run->n_order;
    run->stats.malformed = run->in.n_malformed;
    fprintf(stderr,
            "glm4v-sweep: %zu rows (%zu malformed lines skipped, see %s), %zu already answered, "
            "%zu to run\n",
            run->in.n_rows, run->in.n_malformed, a->errors, run->stats.done_before, run->n_order);
    return 0;
}

/* Connects and opens what the loop needs. */
static int start(sweep_run *run, const sweep_idset *done, const char *password)
{
    const sweep_args *a = run->a;
    glm_error err = {0};
    glm_status st =
        sweep_queue_connect(a->url, password[0] ? password : NULL, a->prefix, 10000, &run->q, &err);
    if (st != GLM_OK) {
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        return st == GLM_ERR_INVALID_ARG || st == GLM_ERR_UNSUPPORTED ? EXIT_USAGE : EXIT_IO;
    }
    run->in_fd = open(a->in, O_RDONLY);
    run->flights = calloc((size_t)a->window, sizeof *run->flights);
    run->results = calloc((size_t)a->window, sizeof *run->results);
    if (run->in_fd < 0 || !run->flights || !run->results) {
        fprintf(stderr, "glm4v-sweep: cannot reopen %s or out of memory\n", a->in);
        return EXIT_IO;
    }
    if (sweep_output_open(a->out, run->in.n_rows, a->ordered, &run->out, &err) != GLM_OK) {
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        return EXIT_IO;
    }
    for (size_t i = 0; a->ordered && i < run->in.n_rows; i++)
        if (sweep_idset_has(done, run->in.rows[i].id)) sweep_output_skip(run->out, i);
    return 0;
}

static void finish(sweep_run *run)
{
    sweep_progress_update(&run->progress, &run->stats, run->n_flights, true);
    sweep_progress_break(&run->progress);
    if (g_stop_signal)
        fprintf(stderr,
                "glm4v-sweep: stopped by signal %d: %zu lines written, %zu job(s) left in flight "
                "(their Results stay in Redis and are picked up by the next run); run the same "
                "command again to resume\n",
                (int)g_stop_signal, run->out ? sweep_output_written(run->out) : 0, run->n_flights);
    if (run->out && sweep_output_held(run->out))
        fprintf(stderr, "glm4v-sweep: %zu answers held back for --ordered were not written\n",
                sweep_output_held(run->out));
    if (run->stats.timed_out)
        fprintf(stderr, "glm4v-sweep: %zu rows timed out and have no line; re-run to retry them\n",
                run->stats.timed_out);
    glm_error err = {0};
    if (sweep_output_close(run->out, &err) != GLM_OK) {
        fprintf(stderr, "glm4v-sweep: %s\n", err.msg);
        run->failed = true;
    }
    run->out = NULL;
    sweep_stats_summary(&run->stats, stderr);
}

int main(int argc, char **argv)
{
    sweep_args a;
    int rc = sweep_args_parse(argc, argv, &a);
    if (rc) return rc == SWEEP_ARGS_HELP ? 0 : rc;
    if (!a.job_prefix) {
        glm_error prefix_err = {0};
        if (sweep_derive_job_prefix(&a, a.job_prefix_buf, sizeof a.job_prefix_buf, &prefix_err)) {
            fprintf(stderr, "glm4v-sweep: %s\n", prefix_err.msg);
            return EXIT_IO;
        }
        a.job_prefix = a.job_prefix_buf;
    }
    char password[512];
    glm_error pw_err = {0};
    if (glm_redis_password_read(a.password_file, password, sizeof password, &pw_err)) {
        fprintf(stderr, "glm4v-sweep: %s\n", pw_err.msg);
        return EXIT_USAGE;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed Redis socket is an error to report, not a death */

    sweep_run run = {.a = &a, .in_fd = -1};
    run.max_image_bytes = glm_job_limits_default().max_image_bytes;
    run.stats.start_ms = glm_now_mono_ms();
    sweep_progress_init(&run.progress, stderr, isatty(STDERR_FILENO), a.progress_interval_ms);
    sweep_idset done = {0};
    rc = load_input_and_resume_state(&run, &done);
    if (rc == 0 && run.n_order > 0) {
        rc = start(&run, &done, password);
        if (rc == 0) {
            run_loop(&run);
            finish(&run);
            rc = exit_code(&run);
        }
    } else if (rc == 0) {
        sweep_stats_summary(&run.stats, stderr);
        rc = exit_code(&run);
    }
    memset(password, 0, sizeof password);
    sweep_output_close(run.out, NULL);
    sweep_queue_destroy(run.q);
    if (run.in_fd >= 0) close(run.in_fd);
    free(run.flights);
    free(run.results);
    free(run.order);
    sweep_stats_free(&run.stats);
    sweep_idset_free(&done);
    sweep_input_free(&run.in);
    return rc;
}
