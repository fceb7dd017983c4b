/* Flags shared by the tools that load the model on a rank group (see rank_flags.h). */
#include "coordinator/rank_flags.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/cli.h"
#include "kernels/ops.h" /* glm_storage_names */
#include "worker/comm.h" /* GLM_STEP_TIMEOUT_MS_DEFAULT */

void glm_rank_flags_begin(glm_rank_flags *rf, const char *prog, glm_rank_options *ro)
{
    memset(rf, 0, sizeof(*rf));
    rf->prog = prog;
    rf->ro = ro;
    memset(ro, 0, sizeof(*ro));
    glm_model_options_default(&ro->model); /* before the flags: --random-weights sets fields */
    ro->device = "cpu";
    ro->tp = 1;
    ro->step_timeout_ms = GLM_STEP_TIMEOUT_MS_DEFAULT;
}

int glm_rank_flag(glm_rank_flags *rf, int code, const char *arg)
{
    glm_rank_options *ro = rf->ro;
    long seed;
    switch (code) {
    case GLM_RANK_FLAG_MODEL:
        ro->model_dir = arg;
        return 1;
    case GLM_RANK_FLAG_DTYPE:
        if (!glm_cli_choice(rf->prog, "--dtype", arg, glm_storage_names)) return -1;
        ro->dtype = arg;
        return 1;
    case GLM_RANK_FLAG_WEIGHTS:
        rf->weights = arg;
        return 1;
    case GLM_RANK_FLAG_VISION_WEIGHTS:
        rf->vision_weights = arg;
        return 1;
    case GLM_RANK_FLAG_RANDOM_WEIGHTS:
        if (!glm_cli_int(rf->prog, "--random-weights", arg, 0, 0x7fffffff, &seed)) return -1;
        ro->model.use_random_weights = 1;
        ro->model.random_seed = (uint64_t)seed;
        return 1;
    default:
        return 0;
    }
}

bool glm_rank_flags_finish(glm_rank_flags *rf, bool quiet)
{
    glm_rank_options *ro = rf->ro;
    if (!glm_cli_weights(rf->prog, rf->weights, rf->vision_weights, &ro->dtype,
                         &ro->model.weight_format, &ro->model.vision_weight_format))
        return false;
    if (!ro->model_dir) {
        if (!quiet) fprintf(stderr, "%s: --model DIR is required\n", rf->prog);
        return false;
    }
    return true;
}
