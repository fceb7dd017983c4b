/* The life of one job (one sequence) on a replica, and the one function that moves it on.
 *
 *   QUEUED -> PREPARING -> WAITING <-> RUNNING -> FINISHED
 *      \          \          \           \----> FAILED / CANCELLED
 *       \          \          `---------------> FAILED / CANCELLED
 *        `----------`-------------------------> FAILED / CANCELLED
 *
 * QUEUED: read from the stream, owned by the serve loop. PREPARING: a preparation thread decodes,
 * templates, tokenizes and preprocesses it. WAITING: in the scheduler's queue (new, or preempted
 * and to be recomputed). RUNNING: in the batch, holding KV blocks. glm4v-run's sequence has
 * nothing to prepare and goes from QUEUED to WAITING. The last three are final: a final job gets
 * exactly one Result (or, CANCELLED, goes back to the queue) and is never touched again. */
#ifndef GLM4V_JOB_STATE_H
#define GLM4V_JOB_STATE_H

#include <stdbool.h>

typedef enum glm_job_state {
    GLM_JOB_QUEUED = 0,
    GLM_JOB_PREPARING,
    GLM_JOB_WAITING,
    GLM_JOB_RUNNING,
    GLM_JOB_FINISHED,  /* generated to eos, a stop id or string, or a length limit */
    GLM_JOB_FAILED,    /* ends with an error Result */
    GLM_JOB_CANCELLED, /* handed back to the queue (drain) or dropped */
} glm_job_state;

const char *glm_job_state_name(glm_job_state s);
bool glm_job_state_is_final(glm_job_state s);
/* Whether the scheduler holds a job in this state (its waiting queue or its batch). */
bool glm_job_state_is_scheduled(glm_job_state s);
bool glm_job_transition_is_legal(glm_job_state from, glm_job_state to);

/* Every change of a job's state goes through here: moves *state to `to` when the diagram above
 * allows it and returns true; otherwise leaves *state as it is and returns false (the caller's
 * bug: a job ended twice, or resumed after its end). */
bool glm_job_transition(glm_job_state *state, glm_job_state to);

#endif
