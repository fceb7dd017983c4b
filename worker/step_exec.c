#include "worker/step_exec.h"

#include <time.h>

#include "worker/model_internal.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The plan's new images through the vision tower, then its decoder rows. Rank 0 waits for the
 * tower before reading the clock, so vision_ms is its time and not that of its launches. */
static glm_status run_plan(glm_model *m, glm_step_plan *plan, const float *pixels_host,
                           glm_step_output *out, glm_error *err)
{
    if (out) out->vision_ms = 0;
    if (plan->n_images > 0) {
        double t0 = now_ms();
        glm_status st =
            glm_model_encode_images(m, pixels_host, plan->n_images, plan->image_slots, err);
        if (st) return st;
        if (out) {
            if (m->be->ops->synchronize) m->be->ops->synchronize(m->be);
            out->vision_ms = now_ms() - t0;
        }
    }
    if (plan->n_tokens > 0) return glm_model_step(m, plan, out, err);
    return GLM_OK;
}

glm_status glm_step_execute(glm_model *m, glm_step_plan *plan, const float *pixels_host,
                            glm_step_output *out, glm_error *err)
{
    plan->flags &= ~GLM_STEP_SHUTDOWN;
    glm_status st = glm_step_plan_broadcast(plan, 0, m->comm, err);
    if (st) return st;
    return run_plan(m, plan, pixels_host, out, err);
}

glm_status glm_step_shutdown(glm_model *m, glm_error *err)
{
    glm_step_plan plan = {.flags = GLM_STEP_SHUTDOWN};
    glm_status st = glm_step_plan_broadcast(&plan, 0, m->comm, err);
    glm_step_plan_free(&plan);
    return st;
}

glm_status glm_worker_serve(glm_model *m, glm_error *err)
{
    glm_step_plan plan = {0};
    glm_status st = GLM_OK;
    for (;;) {
        st = glm_step_plan_broadcast(&plan, 0, m->comm, err);
        if (st || (plan.flags & GLM_STEP_SHUTDOWN)) break;
        st = run_plan(m, &plan, NULL, NULL, err);
        if (st) break;
    }
    glm_step_plan_free(&plan);
    /* rank 0 goes on sending plans this rank will never run: the group is broken, so that the
     * main ends the replica now (glm_rank_group_ok) rather than at rank 0's next deadline */
    if (st && !m->comm->failed)
        glm_comm_fail(m->comm, st, "rank %d left the step loop: %s", m->comm->rank, err->msg);
    return st;
}
