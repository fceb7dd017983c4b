/* glm4v-sweep input: one JSON object per line (docs/SWEEP.md has the format).
 *
 * The file is read twice. sweep_input_load checks every line once and keeps only what ordering and
 * resuming need (id, image path, where the line lies in the file), so a sweep of millions of rows
 * holds no prompts in memory; the job for a row is built when it is submitted, from the line read
 * again at its offset and parsed by sweep_line_parse. */
#ifndef GLM4V_SWEEP_INPUT_H
#define GLM4V_SWEEP_INPUT_H

#include "client/sweep_idset.h"
#include "common/status.h"
#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define SWEEP_MAX_STOPS 16
#define SWEEP_MAX_MESSAGES 64
/* Images one row may carry (the protocol's ceiling; servers allow --max-images-per-prompt) */
#define SWEEP_MAX_IMAGES 8

/* Per-line sampling overrides; a has_* flag says the line gave the value. */
typedef struct sweep_overrides {
    bool has_max_new_tokens, has_temperature, has_top_p, has_top_k, has_seed;
    uint32_t max_new_tokens;
    float temperature, top_p;
    uint32_t top_k;
    uint64_t seed;
    const char *stop[SWEEP_MAX_STOPS];
    size_t n_stop; /* > 0: the line's stop strings replace the --stop defaults */
} sweep_overrides;

/* One parsed line. Strings point into json, which the line owns (sweep_line_free). */
typedef struct sweep_line {
    char id[GLM_JOB_ID_MAX + 1]; /* an integer id is kept in decimal */
    const char *image;           /* the first image (images[0]); NULL: text only */
    /* every image in prompt order and the message each goes to: a top-level "image" (a path or
     * a list of paths) goes to the first user message, a message's own "image" to it */
    const char *images[SWEEP_MAX_IMAGES];
    size_t image_message[SWEEP_MAX_IMAGES];
    size_t n_images;
    const char *system;          /* NULL: none */
    glm_role roles[SWEEP_MAX_MESSAGES];
    const char *contents[SWEEP_MAX_MESSAGES];
    size_t n_messages; /* the "prompt" form gives one user message */
    sweep_overrides over;
    void *json; /* cJSON tree */
} sweep_line;

/* Parses one line (len bytes, no newline needed). On failure fills err with why (one line, no
 * line number) and returns GLM_ERR_FORMAT; the line then holds nothing. */
glm_status sweep_line_parse(const char *text, size_t len, sweep_line *out, glm_error *err);
void sweep_line_free(sweep_line *line);

/* True for a line of only white space (skipped without a report). */
bool sweep_line_is_blank(const char *text, size_t len);

/* A valid row, as kept between the two reads. */
typedef struct sweep_row {
    char *id;
    char *image; /* its first image (rows are grouped by it); NULL: text only */
    long line_no;
    off_t offset; /* of the line in the input file */
    size_t len;   /* without the newline */
} sweep_row;

typedef struct sweep_input {
    sweep_row *rows; /* valid rows in input order */
    size_t n_rows, cap;
    size_t n_lines, n_malformed;
    sweep_idset ids;
} sweep_input;

/* Reads path, keeping valid rows. A malformed line (bad JSON, missing or bad id, a duplicate id,
 * neither prompt nor messages, values of the wrong type) is reported as "path:LINE: why" on
 * report_to (when not NULL) and as one JSON line {"line", "error", "input"} on errors_file (when
 * not NULL), and skipped. job_id_prefix ("" for none) is prepended to each id to form the Redis job
 * id, which must be valid too. Fails only when the file cannot be read. */
glm_status sweep_input_load(const char *path, const char *job_id_prefix, FILE *report_to,
                            FILE *errors_file, sweep_input *in, glm_error *err);
void sweep_input_free(sweep_input *in);

/* Reads row's line again from fd (the input file) and parses it. */
glm_status sweep_input_reread(int fd, const sweep_row *row, sweep_line *out, glm_error *err);

#endif
