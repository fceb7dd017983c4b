/* glm4v-sweep: from a parsed input line to Job bytes, and the Results the sweep writes itself. */
#ifndef GLM4V_SWEEP_JOB_H
#define GLM4V_SWEEP_JOB_H

#include "client/sweep_input.h"
#include "coordinator/queue/job_codec.h"

#include <stdint.h>

#define SWEEP_SEED_MASK 0x7fffffffffffffffull

/* The sampling a line runs with: the command-line defaults, then the line's overrides. The seed is
 * the line's "seed" when it gives one, else the low 63 bits of FNV-1a-64(row id) XOR sweep_seed,
 * so a re-run (or a resumed run) draws the same tokens whatever the job id prefix or submission
 * order. The stop
 * pointers point into defaults or line. */
glm_sampling sweep_job_sampling(const glm_sampling *defaults, uint64_t sweep_seed,
                                const sweep_line *line);

/* Encodes line as a Job with id job_id; image (image_bytes, may be NULL) goes with the first user
 * message. *bytes is malloc'd. */
glm_status sweep_job_encode(const sweep_line *line, const char *job_id,
                            const glm_sampling *sampling, const glm_image_part *images,
                            size_t n_images, uint8_t **bytes, size_t *len, glm_error *err);

/* Reads a whole image file (at most max_bytes). Fails for a missing, unreadable or empty file with
 * a message naming it. */
glm_status sweep_job_read_image(const char *path, size_t max_bytes, uint8_t **data, size_t *len,
                                glm_error *err);

/* The JSON line of a Result the sweep writes for a row the cluster never saw (a missing image):
 * finish_reason "error", server_id "glm4v-sweep", attempts 0. malloc'd, NULL when out of memory. */
char *sweep_job_error_json(const char *id, glm_error_code code, const char *message);

#endif
