#include "common/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool glm_cli_number(const char *prog, const char *flag, const char *s, double lo, double hi,
                    double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "%s: %s wants a number in [%g, %g], got '%s'\n", prog, flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool glm_cli_int(const char *prog, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s wants an integer in [%ld, %ld], got '%s'\n", prog, flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

bool glm_cli_choice(const char *prog, const char *flag, const char *s, const char *const *choices)
{
    for (const char *const *c = choices; *c; c++)
        if (strcmp(s, *c) == 0) return true;
    fprintf(stderr, "%s: %s must be one of", prog, flag);
    for (const char *const *c = choices; *c; c++)
        fprintf(stderr, "%s %s", c == choices ? "" : ",", *c);
    fprintf(stderr, "; got '%s'\n", s);
    return false;
}

int glm_cli_int_flags(const char *prog, const glm_cli_int_flag *table, size_t n, int code,
                      const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].code != code) continue;
        long v;
        if (!glm_cli_int(prog, table[i].flag, s, table[i].lo, table[i].hi, &v)) return -1;
        *table[i].dst = (int)v;
        return 1;
    }
    return 0;
}

void glm_cli_bad_option(const char *prog, const char *arg, bool quiet, void (*usage)(FILE *))
{
    if (quiet) return;
    fprintf(stderr, "%s: unknown or incomplete option '%s'\n", prog, arg);
    usage(stderr);
}

const char *const glm_cli_weight_names[] = {"bf16", "f16", "fp8", "int8", "int4", NULL};

/* One word: its format, and the 16-bit storage word it implies (NULL for quantized formats). */
static bool weight_word(const char *prog, const char *flag, const char *s, glm_weight_format *f,
                        const char **storage)
{
    static const glm_weight_format formats[] = {GLM_WEIGHT_DENSE, GLM_WEIGHT_DENSE, GLM_WEIGHT_FP8,
                                                GLM_WEIGHT_INT8, GLM_WEIGHT_INT4};
    if (!glm_cli_choice(prog, flag, s, glm_cli_weight_names)) return false;
    for (int i = 0; glm_cli_weight_names[i]; i++)
        if (strcmp(s, glm_cli_weight_names[i]) == 0) {
            *f = formats[i];
            *storage = formats[i] == GLM_WEIGHT_DENSE ? glm_cli_weight_names[i] : NULL;
        }
    return true;
}

bool glm_cli_weights(const char *prog, const char *weights, const char *vision_weights,
                     const char **dtype, glm_weight_format *decoder, glm_weight_format *vision)
{
    const char *storage = NULL, *vision_storage = NULL;
    *decoder = *vision = GLM_WEIGHT_DENSE;
    if (weights && !weight_word(prog, "--weights", weights, decoder, &storage)) return false;
    *vision = *decoder;
    vision_storage = storage;
    if (vision_weights &&
        !weight_word(prog, "--vision-weights", vision_weights, vision, &vision_storage))
        return false;
    /* 16-bit words name the one storage type of the run: they must agree with each other and
     * with --dtype */
    const char *want = storage ? storage : vision_storage;
    if (storage && vision_storage && strcmp(storage, vision_storage) != 0) {
        fprintf(stderr,
                "%s: --weights %s and --vision-weights %s ask for two 16-bit storage types\n", prog,
                weights, vision_weights);
        return false;
    }
    if (want && *dtype && strcmp(want, *dtype) != 0) {
        fprintf(stderr, "%s: --dtype %s contradicts 16-bit weights %s\n", prog, *dtype, want);
        return false;
    }
    if (want && strcmp(want, "f16") == 0) *dtype = want;
    return true;
}
