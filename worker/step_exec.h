/* Running steps across the tensor-parallel group. Rank 0 (the coordinator) calls
 * glm_step_execute with a plan it built; every other rank sits in glm_worker_serve, which receives
 * the same plans over the model's communicator (glm_step_plan_broadcast) and runs them, until
 * rank 0 sends a shutdown plan. */
#ifndef GLM4V_STEP_EXEC_H
#define GLM4V_STEP_EXEC_H

#include "worker/model.h"
#include "worker/step_plan.h"

/* Rank 0: broadcast plan, encode its new images (pixels_host [n_images, C, S, S]) into their pool
 * slots, run the decoder step; out (may be NULL) says what comes back: host logits and/or drawn
 * ids (glm_step_output), and receives the vision tower's time. */
glm_status glm_step_execute(glm_model *m, glm_step_plan *plan, const float *pixels_host,
                            glm_step_output *out, glm_error *err);
/* Rank 0: tells the other ranks to leave glm_worker_serve. */
glm_status glm_step_shutdown(glm_model *m, glm_error *err);
/* Ranks > 0: run plans until shutdown. */
glm_status glm_worker_serve(glm_model *m, glm_error *err);

#endif
