/* The flags glm4v-run and glm4v-serve share, parsed once into glm_rank_options: --model, --dtype,
 * --weights, --vision-weights, --random-weights, and the defaults under them (cpu, one rank, the
 * step watchdog's default deadline). Each tool lists these flags in its getopt_long table with the
 * codes below, offers every code to glm_rank_flag before its own switch, and calls
 * glm_rank_flags_finish after the loop. --device, --tp, --gpu-memory and --step-timeout-ms stay
 * with each tool: they are checked differently there. */
#ifndef GLM4V_RANK_FLAGS_H
#define GLM4V_RANK_FLAGS_H

#include <stdbool.h>

#include "worker/rank_context.h"

enum {
    GLM_RANK_FLAG_MODEL = 256,
    GLM_RANK_FLAG_DTYPE,
    GLM_RANK_FLAG_WEIGHTS,
    GLM_RANK_FLAG_VISION_WEIGHTS,
    GLM_RANK_FLAG_RANDOM_WEIGHTS,
    GLM_RANK_FLAG_END /* a tool's own codes start here */
};

typedef struct glm_rank_flags {
    const char *prog; /* names the tool in messages */
    glm_rank_options *ro;
    const char *weights, *vision_weights; /* their texts, checked together at the end */
} glm_rank_flags;

/* Clears *ro and sets its defaults; the flags parsed later go there. */
void glm_rank_flags_begin(glm_rank_flags *rf, const char *prog, glm_rank_options *ro);
/* Returns 1 when code is one of the shared flags and arg is good, -1 (message printed) when arg
 * is bad, 0 when code is the tool's own. */
int glm_rank_flag(glm_rank_flags *rf, int code, const char *arg);
/* The weight formats (glm_cli_weights) and the required --model; false after a message (the
 * --model one only when not quiet). */
bool glm_rank_flags_finish(glm_rank_flags *rf, bool quiet);

#endif
