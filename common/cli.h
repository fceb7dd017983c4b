/* Command-line value parsing shared by every tool: the whole argument must be a number inside
 * the flag's range, or one of the flag's words, otherwise a message names the program, the flag
 * and the bad text. */
#ifndef GLM4V_CLI_H
#define GLM4V_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/dtype.h" /* glm_weight_format */

/* A real number in [lo, hi]. */
bool glm_cli_number(const char *prog, const char *flag, const char *s, double lo, double hi,
                    double *out);
/* An integer in [lo, hi]. */
bool glm_cli_int(const char *prog, const char *flag, const char *s, long lo, long hi, long *out);
/* One of the NULL-terminated words in choices. */
bool glm_cli_choice(const char *prog, const char *flag, const char *s, const char *const *choices);

/* A tool's integer flags as a table: a getopt_long code, the flag's name, its range and where
 * the value goes. */
typedef struct glm_cli_int_flag {
    int code;
    const char *flag;
    long lo, hi;
    int *dst;
} glm_cli_int_flag;
/* When code is one of the table's flags: parses s into its dst and returns 1, or -1 (message
 * printed) when s is not an integer in range. Returns 0 for any other code. */
int glm_cli_int_flags(const char *prog, const glm_cli_int_flag *table, size_t n, int code,
                      const char *s);

/* getopt_long's '?' (an unknown flag, or one missing its value; arg is argv[optind - 1]): prints
 * which, then the tool's usage, on stderr; quiet (ranks other than 0) prints nothing. */
void glm_cli_bad_option(const char *prog, const char *arg, bool quiet, void (*usage)(FILE *));

/* --weights and --vision-weights, shared by glm4v-run, glm4v-serve and bench_model: the format of
 * the linear weights. "bf16" and "f16" are dense 16-bit weights (the storage type: on cuda and
 * cpu-bf16 they also choose --dtype when it is not given); "fp8" (E4M3, per-output-channel scales,
 * per-token activation scales), "int8" (weight-only, per-channel scales) and "int4" (weight-only,
 * groups of 128 with zero points, two per byte) are quantized on load. The vision tower follows
 * --weights unless --vision-weights is given. Call once after parsing with the flags' texts (NULL
 * when absent); *dtype is the --dtype text (NULL when absent) and may be set here. Prints why and
 * returns false on a bad word or a contradiction (--dtype bf16 --weights f16). */
extern const char *const glm_cli_weight_names[]; /* "bf16", "f16", "fp8", "int8", "int4", NULL */
bool glm_cli_weights(const char *prog, const char *weights, const char *vision_weights,
                     const char **dtype, glm_weight_format *decoder, glm_weight_format *vision);

#endif
