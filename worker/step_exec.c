#include "worker/step_exec.h"

#include "worker/model_internal.h"

static glm_status run_plan(glm_model *m, glm_step_plan *plan, const float *pixels_host,
                           float *logits_host, glm_error *err)
{
    if (plan->n_images > 0) {
        glm_status st =
            glm_model_encode_images(m, pixels_host, plan->n_images, plan->image_slots, err);
        if (st) return st;
    }
    if (plan->n_tokens > 0) return glm_model_step(m, plan, logits_host, err);
    return GLM_OK;
}

glm_status glm_step_execute(glm_model *m, glm_step_plan *plan, const float *pixels_host,
                            float *logits_host, glm_error *err)
{
    plan->flags &= ~GLM_STEP_SHUTDOWN;
    glm_status st = glm_step_plan_broadcast(plan, 0, m->comm, err);
    if (st) return st;
    return run_plan(m, plan, pixels_host, logits_host, err);
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
    return st;
}
