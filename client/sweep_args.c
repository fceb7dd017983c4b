/* glm4v-sweep command line (see sweep_args.h). */
#include "client/sweep_args.h"
#include "common/cli.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: glm4v-sweep --in QUESTIONS.jsonl --out ANSWERS.jsonl [--image-root DIR]\n"
        "                   [--window N] [--ordered] [--max-new-tokens N] [--ignore-eos]\n"
        "                   [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop STR]...\n"
        "                   [--redis URL] [--prefix P] [--job-prefix STR] [--password-file F]\n"
        "                   [--errors FILE] [--timeout SEC] [--progress-interval SEC]\n"
        "Runs every line of QUESTIONS ({\"id\", \"image\", \"prompt\" or \"messages\", ...}) and\n"
        "appends one Result line per id to ANSWERS; re-running skips ids ANSWERS holds.\n"
        "  --image-root DIR     image paths are relative to DIR (default: QUESTIONS's dir)\n"
        "  --window N           jobs in flight at most (default 64)\n"
        "  --ordered            write in input order (buffers); default: completion order\n"
        "  --ignore-eos         generate exactly --max-new-tokens (benchmarks)\n"
        "  --temperature T      default 0 (greedy); sampled rows get seed hash(id) ^ --seed\n"
        "  --redis URL          default redis://127.0.0.1:6379; password from --password-file\n"
        "                       or $GLM4V_REDIS_PASSWORD, never from the URL\n"
        "  --prefix P           Redis key prefix of the cluster (default glm4v)\n"
        "  --job-prefix STR     Redis job id = STR + row id (output ids stay the row ids);\n"
        "                       default: derived from --in, --image-root and the sampling flags\n"
        "  --errors FILE        malformed input lines (default ANSWERS.errors)\n"
        "  --timeout SEC        give up on a job after SEC (default 3600); no line is written\n"
        "Exit: 0 all answered, 1 some rows failed or lines were malformed, 2 usage, 3 Redis,\n"
        "file error or timeouts (re-run to resume), 128+N stopped by signal N.\n");
}

enum {
    O_IN = 256,
    O_OUT,
    O_ERRORS,
    O_IMAGE_ROOT,
    O_WINDOW,
    O_ORDERED,
    O_IGNORE_EOS,
    O_MAX_NEW,
    O_TEMP,
    O_TOP_P,
    O_TOP_K,
    O_SEED,
    O_STOP,
    O_REDIS,
    O_PREFIX,
    O_JOB_PREFIX,
    O_PASSWORD,
    O_TIMEOUT,
    O_PROGRESS,
    O_HELP
};

static const struct option OPTIONS[] = {
    {"in", required_argument, 0, O_IN},
    {"out", required_argument, 0, O_OUT},
    {"errors", required_argument, 0, O_ERRORS},
    {"image-root", required_argument, 0, O_IMAGE_ROOT},
    {"window", required_argument, 0, O_WINDOW},
    {"ordered", no_argument, 0, O_ORDERED},
    {"ignore-eos", no_argument, 0, O_IGNORE_EOS},
    {"max-new-tokens", required_argument, 0, O_MAX_NEW},
    {"temperature", required_argument, 0, O_TEMP},
    {"top-p", required_argument, 0, O_TOP_P},
    {"top-k", required_argument, 0, O_TOP_K},
    {"seed", required_argument, 0, O_SEED},
    {"stop", required_argument, 0, O_STOP},
    {"redis", required_argument, 0, O_REDIS},
    {"prefix", required_argument, 0, O_PREFIX},
    {"job-prefix", required_argument, 0, O_JOB_PREFIX},
    {"password-file", required_argument, 0, O_PASSWORD},
    {"timeout", required_argument, 0, O_TIMEOUT},
    {"progress-interval", required_argument, 0, O_PROGRESS},
    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0},
};

/* One option; false on a bad value. */
static bool apply_option(sweep_args *a, int c, const char *arg)
{
    double v;
    glm_sampling *s = &a->sampling;
    switch (c) {
    case O_IN:
        a->in = arg;
        return true;
    case O_OUT:
        a->out = arg;
        return true;
    case O_ERRORS:
        a->errors = arg;
        return true;
    case O_IMAGE_ROOT:
        a->image_root = arg;
        return true;
    case O_ORDERED:
        a->ordered = true;
        return true;
    case O_IGNORE_EOS:
        s->ignore_eos = true;
        return true;
    case O_REDIS:
        a->url = arg;
        return true;
    case O_PREFIX:
        a->prefix = arg;
        return true;
    case O_JOB_PREFIX:
        a->job_prefix = arg;
        return true;
    case O_PASSWORD:
        a->password_file = arg;
        return true;
    case O_WINDOW:
        if (!glm_cli_number("glm4v-sweep", "--window", arg, 1, 100000, &v)) return false;
        a->window = (int)v;
        return true;
    case O_MAX_NEW:
        if (!glm_cli_number("glm4v-sweep", "--max-new-tokens", arg, 1, 1 << 20, &v)) return false;
        s->max_new_tokens = (uint32_t)v;
        return true;
    case O_TEMP:
        if (!glm_cli_number("glm4v-sweep", "--temperature", arg, 0, 100, &v)) return false;
        s->temperature = (float)v;
        return true;
    case O_TOP_P:
        if (!glm_cli_number("glm4v-sweep", "--top-p", arg, 1e-9, 1, &v)) return false;
        s->top_p = (float)v;
        return true;
    case O_TOP_K:
        if (!glm_cli_number("glm4v-sweep", "--top-k", arg, 0, 1 << 20, &v)) return false;
        s->top_k = (uint32_t)v;
        return true;
    case O_SEED:
        if (!glm_cli_number("glm4v-sweep", "--seed", arg, 0, 1.8e19, &v)) return false;
        a->sweep_seed = strtoull(arg, NULL, 10);
        return true;
    case O_STOP:
        if (s->n_stop == SWEEP_MAX_STOPS) {
            fprintf(stderr, "glm4v-sweep: at most %d --stop strings\n", SWEEP_MAX_STOPS);
            return false;
        }
        a->stops[s->n_stop++] = arg;
        return true;
    case O_TIMEOUT:
        return glm_cli_number("glm4v-sweep", "--timeout", arg, 0.001, 1e7, &a->timeout_s);
    case O_PROGRESS:
        if (!glm_cli_number("glm4v-sweep", "--progress-interval", arg, 0.1, 86400, &v))
            return false;
        a->progress_interval_ms = (int)(v * 1000.0);
        return true;
    default:
        usage(stderr);
        return false;
    }
}

int sweep_args_parse(int argc, char **argv, sweep_args *a)
{
    memset(a, 0, sizeof *a);
    a->url = "redis://127.0.0.1:6379";
    a->prefix = "glm4v";
    a->job_prefix = NULL;
    a->window = 64;
    a->timeout_s = 3600;
    a->progress_interval_ms = 5000;
    a->sampling = glm_sampling_defaults();
    a->sampling.temperature = 0; /* greedy unless asked: sweeps must reproduce */
    a->sampling.stop = a->stops;
    int c;
    while ((c = getopt_long(argc, argv, "", OPTIONS, NULL)) != -1) {
        if (c == O_HELP) {
            usage(stdout);
            return SWEEP_ARGS_HELP;
        }
        if (!apply_option(a, c, optarg)) return EXIT_USAGE;
    }
    if (optind < argc || !a->in || !a->out) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!a->errors) {
        snprintf(a->errors_buf, sizeof a->errors_buf, "%s.errors", a->out);
        a->errors = a->errors_buf;
    }
    if (!a->image_root) { /* dirname may modify its argument: give it a copy */
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", a->in);
        snprintf(a->image_root_buf, sizeof a->image_root_buf, "%s", dirname(copy));
        a->image_root = a->image_root_buf;
    }
    if (a->job_prefix && strlen(a->job_prefix) >= GLM_JOB_ID_MAX) {
        fprintf(stderr, "glm4v-sweep: --job-prefix is too long\n");
        return EXIT_USAGE;
    }
    return 0;
}
