/* Request preparation off the step loop: decoding the protobuf, the chat template and tokenizer,
 * and above all decoding and resizing images (a 4000x3000 JPEG takes ~100 ms of CPU) run on a
 * few threads, so rank 0 keeps feeding the GPUs while new jobs arrive. Finished preparations are
 * collected by the loop between steps. Everything a thread touches is either its own or read-only
 * (tokenizer, config, limits). */
#ifndef GLM4V_PREP_POOL_H
#define GLM4V_PREP_POOL_H

#include <stddef.h>

#include "coordinator/serve/request.h"

typedef struct glm_prep_pool glm_prep_pool;

glm_status glm_prep_pool_create(int n_threads, const glm_request_env *env, glm_prep_pool **out,
                                glm_error *err);
/* Joins the threads; requests not yet collected are destroyed. */
void glm_prep_pool_destroy(glm_prep_pool *p);
/* Takes the request (state QUEUED; it becomes PREPARING and the pool's until collected). On
 * failure the request stays the caller's, still QUEUED. */
glm_status glm_prep_pool_submit(glm_prep_pool *p, glm_request *r, glm_error *err);
/* Submitted and not yet collected. */
size_t glm_prep_pool_in_flight(glm_prep_pool *p);
/* Hands up to max prepared requests back to the caller (still PREPARING; those whose job was
 * bad carry their error_code); returns how many. */
size_t glm_prep_pool_collect(glm_prep_pool *p, glm_request **out, size_t max);

#define GLM_PREP_ENTRY_ID_LEN 48 /* sizeof glm_queue_job.entry_id */
/* The stream entry ids of every request submitted and not yet collected (waiting for a thread,
 * being prepared, or prepared), copied into ids (at most max); returns how many there are. The
 * serve loop refreshes their leases like those of running jobs: a preparation may outlast the
 * lease (a huge image on a loaded host, a long line of jobs behind each other), and an entry left
 * idle that long is reclaimed and computed twice. */
size_t glm_prep_pool_entry_ids(glm_prep_pool *p, char (*ids)[GLM_PREP_ENTRY_ID_LEN], size_t max);

#endif
