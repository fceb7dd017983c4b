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
