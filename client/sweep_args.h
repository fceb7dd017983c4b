/* glm4v-sweep command line. */
#ifndef GLM4V_SWEEP_ARGS_H
#define GLM4V_SWEEP_ARGS_H

#include "client/sweep_input.h"
#include "coordinator/queue/job_codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { EXIT_ROW_ERRORS = 1, EXIT_USAGE = 2, EXIT_IO = 3, SWEEP_ARGS_HELP = -1 };

typedef struct sweep_args {
    const char *in, *out, *errors, *image_root, *url, *prefix, *password_file;
    const char *job_prefix; /* NULL: derive one (sweep_identity.h); "" given: none */
    int window;
    glm_sampling sampling; /* defaults for every line: greedy unless --temperature */
    const char *stops[SWEEP_MAX_STOPS];
    uint64_t sweep_seed; /* --seed: mixed into every row's seed */
    double timeout_s;    /* per job, from its submission */
    int progress_interval_ms;
    bool ordered;
    char errors_buf[4096], image_root_buf[4096], job_prefix_buf[32];
} sweep_args;

/* Fills a; returns 0, SWEEP_ARGS_HELP (usage printed to stdout) or EXIT_USAGE (message printed). */
int sweep_args_parse(int argc, char **argv, sweep_args *a);

#endif
