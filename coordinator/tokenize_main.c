/* glm4v-tokenize: text on stdin -> token ids on stdout, or ids -> text with --decode.
 *
 * Encoding treats all input as ordinary text (no special-token parsing), exactly what the chat
 * template does with message content. Exit status: 0 ok, 1 cannot load or read, 2 bad usage or
 * a bad id. */
#include "coordinator/text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: glm4v-tokenize --tokenizer FILE [--decode]\n"
               "  reads UTF-8 text on stdin and prints its token ids on one line;\n"
               "  with --decode reads whitespace-separated ids and prints their text.\n");
}

static int read_stdin(glm_bytes *in)
{
    char chunk[1 << 16];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (glm_bytes_append(in, chunk, got, NULL) != GLM_OK) return -1;
    return ferror(stdin) ? -1 : 0;
}

static int encode_stdin(const glm_tokenizer *tok, const glm_bytes *in)
{
    glm_token_ids ids = {0};
    glm_error err = {0};
    if (glm_tokenizer_encode(tok, in->data ? in->data : "", in->len, &ids, &err) != GLM_OK) {
        fprintf(stderr, "glm4v-tokenize: %s\n", err.msg);
        return 1;
    }
    for (size_t i = 0; i < ids.n; i++)
        printf(i ? " %d" : "%d", ids.ids[i]);
    putchar('\n');
    glm_token_ids_free(&ids);
    return 0;
}

/* Parses whitespace-separated decimal ids; returns 2 on anything else. */
static int parse_ids(const glm_bytes *in, glm_token_ids *ids)
{
    const char *p = in->data ? in->data : "", *end = p + in->len;
    while (p < end) {
        if (strchr(" \t\r\n", *p)) {
            p++;
            continue;
        }
        const char *word = p;
        while (p < end && !strchr(" \t\r\n", *p))
            p++;
        long long value = 0;
        int ok = p - word <= 10;
        for (const char *d = word; ok && d < p; d++) {
            ok = *d >= '0' && *d <= '9';
            value = value * 10 + (*d - '0');
        }
        if (!ok || value > INT32_MAX) {
            fprintf(stderr, "glm4v-tokenize: bad id '%.*s'\n", (int)(p - word < 40 ? p - word : 40),
                    word);
            return 2;
        }
        if (glm_token_ids_push(ids, (int32_t)value, NULL) != GLM_OK) return 1;
    }
    return 0;
}

static int decode_stdin(const glm_tokenizer *tok, const glm_bytes *in)
{
    glm_token_ids ids = {0};
    glm_bytes text = {0};
    glm_error err = {0};
    int rc = parse_ids(in, &ids);
    if (rc == 0 && glm_tokenizer_decode(tok, ids.ids, ids.n, &text, &err) != GLM_OK) {
        fprintf(stderr, "glm4v-tokenize: %s\n", err.msg);
        rc = err.status == GLM_ERR_INVALID_ARG ? 2 : 1;
    }
    if (rc == 0 && fwrite(text.data, 1, text.len, stdout) != text.len) rc = 1;
    glm_bytes_free(&text);
    glm_token_ids_free(&ids);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int decode = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--decode") == 0) {
            decode = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "glm4v-tokenize: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "glm4v-tokenize: --tokenizer FILE is required\n");
        usage(stderr);
        return 2;
    }
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    if (glm_tokenizer_load(path, &tok, &err) != GLM_OK) {
        fprintf(stderr, "glm4v-tokenize: %s\n", err.msg);
        return 1;
    }
    glm_bytes in = {0};
    int rc;
    if (read_stdin(&in) != 0) {
        fprintf(stderr, "glm4v-tokenize: cannot read stdin: %s\n", strerror(errno));
        rc = 1;
    } else {
        rc = decode ? decode_stdin(tok, &in) : encode_stdin(tok, &in);
    }
    if (fflush(stdout) != 0) rc = 1;
    glm_bytes_free(&in);
    glm_tokenizer_destroy(tok);
    return rc;
}
