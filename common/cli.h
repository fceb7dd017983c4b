/* Command-line value parsing shared by every tool: the whole argument must be a number inside
 * the flag's range, or one of the flag's words, otherwise a message names the program, the flag
 * and the bad text. */
#ifndef GLM4V_CLI_H
#define GLM4V_CLI_H

#include <stdbool.h>

/* A real number in [lo, hi]. */
bool glm_cli_number(const char *prog, const char *flag, const char *s, double lo, double hi,
                    double *out);
/* An integer in [lo, hi]. */
bool glm_cli_int(const char *prog, const char *flag, const char *s, long lo, long hi, long *out);
/* One of the NULL-terminated words in choices. */
bool glm_cli_choice(const char *prog, const char *flag, const char *s, const char *const *choices);

#endif
