/* glm4v-sweep output: the JSONL answers file, resumed and appended to one whole line at a time.
 *
 * Every line is written with a single fwrite of "json\n" followed by fflush, so after a crash or a
 * kill -9 the file holds whole lines plus at most one torn tail without its newline, which
 * sweep_resume_scan cuts away before anything is appended. */
#ifndef GLM4V_SWEEP_OUTPUT_H
#define GLM4V_SWEEP_OUTPUT_H

#include "client/sweep_idset.h"
#include "common/status.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct sweep_resume_info {
    size_t n_lines;       /* whole lines found */
    size_t n_error_lines; /* of which carry "error" != null */
    size_t n_duplicates;  /* lines whose id came before (kept, counted once) */
    long long torn_bytes; /* bytes of a torn last line cut away (0: none) */
} sweep_resume_info;

/* Reads an existing output file (a missing one is empty) and adds the "id" of every line to done.
 * A last line without its newline is torn: the file is truncated to the end of the line before
 * it. A whole line that is not a JSON object with a string "id" means the file is not ours (or was
 * edited): GLM_ERR_FORMAT with its line number, and nothing is changed. */
glm_status sweep_resume_scan(const char *path, sweep_idset *done, sweep_resume_info *info,
                             glm_error *err);

typedef struct sweep_output sweep_output;

/* Opens path for appending. rows: rows of the input (indexes 0..rows-1 in input order). ordered:
 * lines are written in input order, held back while an earlier row is still running; otherwise
 * each line is written as soon as it is given (completion order). */
glm_status sweep_output_open(const char *path, size_t rows, bool ordered, sweep_output **out,
                             glm_error *err);

/* Row writes no line in this run (it is in the file already, or it timed out). */
void sweep_output_skip(sweep_output *o, size_t row);

/* Writes (or, ordered, queues) row's line: json is one line without its newline. */
glm_status sweep_output_write(sweep_output *o, size_t row, const char *json, glm_error *err);

/* Lines written to the file so far in this run, and lines held back (ordered mode). */
size_t sweep_output_written(const sweep_output *o);
size_t sweep_output_held(const sweep_output *o);

/* Closes the file. Lines still held back (an interrupted ordered run) are dropped: they follow a
 * row that has no line yet, and writing them would break the order; a re-run picks them up. */
glm_status sweep_output_close(sweep_output *o, glm_error *err);

#endif
