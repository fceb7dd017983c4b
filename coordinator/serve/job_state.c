#include "coordinator/serve/job_state.h"

const char *glm_job_state_name(glm_job_state s)
{
    switch (s) {
    case GLM_JOB_QUEUED:
        return "queued";
    case GLM_JOB_PREPARING:
        return "preparing";
    case GLM_JOB_WAITING:
        return "waiting";
    case GLM_JOB_RUNNING:
        return "running";
    case GLM_JOB_FINISHED:
        return "finished";
    case GLM_JOB_FAILED:
        return "failed";
    case GLM_JOB_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

bool glm_job_state_is_final(glm_job_state s)
{
    return s == GLM_JOB_FINISHED || s == GLM_JOB_FAILED || s == GLM_JOB_CANCELLED;
}

bool glm_job_state_is_scheduled(glm_job_state s)
{
    return s == GLM_JOB_WAITING || s == GLM_JOB_RUNNING;
}

bool glm_job_transition_is_legal(glm_job_state from, glm_job_state to)
{
    if (glm_job_state_is_final(from)) return false; /* a job ends once */
    if (to == GLM_JOB_FAILED || to == GLM_JOB_CANCELLED) return true;
    switch (from) {
    case GLM_JOB_QUEUED:
        return to == GLM_JOB_PREPARING || to == GLM_JOB_WAITING;
    case GLM_JOB_PREPARING:
        return to == GLM_JOB_WAITING;
    case GLM_JOB_WAITING:
        return to == GLM_JOB_RUNNING;
    case GLM_JOB_RUNNING:
        /* back to waiting: preempted, its KV recomputed later */
        return to == GLM_JOB_WAITING || to == GLM_JOB_FINISHED;
    default:
        return false;
    }
}

bool glm_job_transition(glm_job_state *state, glm_job_state to)
{
    if (!glm_job_transition_is_legal(*state, to)) return false;
    *state = to;
    return true;
}
