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

/* The outcome of one preparation: a request, or the entry back with an error for its Result. */
typedef struct glm_prep_done {
    glm_request *request; /* NULL on failure */
    glm_queue_job entry;  /* on failure: the queue entry, to answer */
    glm_error_code code;
    char msg[GLM_ERROR_MSG_LEN];
} glm_prep_done;

glm_status glm_prep_pool_create(int n_threads, const glm_request_env *env, glm_prep_pool **out,
                                glm_error *err);
/* Joins the threads; preparations not yet collected are freed. */
void glm_prep_pool_destroy(glm_prep_pool *p);
/* Takes ownership of entry's bytes (entry is cleared). */
glm_status glm_prep_pool_submit(glm_prep_pool *p, glm_queue_job *entry, glm_error *err);
/* Submitted and not yet collected. */
size_t glm_prep_pool_in_flight(glm_prep_pool *p);
/* Moves up to max finished preparations into out; returns how many. */
size_t glm_prep_pool_collect(glm_prep_pool *p, glm_prep_done *out, size_t max);

#endif
