/* Our encoder against the npm tiktoken package on the generated corpus (see
 * tests/coordinator/tiktoken/run_test.sh, which makes the three input files).
 *
 *   test_tokenizer_tiktoken RANKS CORPUS.jsonl EXPECTED.ids   compare every record
 *   test_tokenizer_tiktoken --bench RANKS CORPUS.jsonl [RUNS] print encoding throughput
 *
 * Each corpus line is {"text": ...} or {"raw": base64 bytes, "text": their lenient decoding};
 * EXPECTED has tiktoken's ids of each text, one line per record. A raw record is encoded from its
 * bytes, which also checks our U+FFFD repair against Node's UTF-8 decoder. */
#include "coordinator/text/detokenizer.h"
#include "coordinator/text/tokenizer.h"
#include "tests/testutil.h"

#include <cJSON.h>
#include <string.h>
#include <time.h>

typedef struct record {
    glm_bytes input; /* what we encode: the raw bytes, or the text */
    glm_bytes text;  /* what tiktoken encoded */
    int has_raw;
} record;

static int b64(unsigned char c)
{
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

static void base64_into(const char *s, glm_bytes *out)
{
    unsigned acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64((unsigned char)*s);
        if (v < 0) continue;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char byte = (char)(acc >> bits);
            glm_bytes_append(out, &byte, 1, NULL);
        }
    }
    glm_bytes_append(out, "", 0, NULL);
}

/* The whole file, NUL-terminated. */
static char *read_text(const char *path, size_t *len)
{
    unsigned char *raw = test_read_file(path, len);
    if (!raw) return NULL;
    char *text = malloc(*len + 1);
    if (text) {
        memcpy(text, raw, *len);
        text[*len] = '\0';
    }
    free(raw);
    return text;
}

/* Our repair of the raw bytes must equal Node's lenient decoding; the record's text becomes the
 * repaired bytes, since cJSON strings end at U+0000 and Node's text may contain it. */
static void check_repair(record *r, size_t index)
{
    glm_bytes repaired = {0};
    glm_utf8_sanitize(r->input.data, r->input.len, &repaired, NULL);
    glm_bytes_append(&repaired, "", 0, NULL);
    int has_nul = memchr(r->input.data, 0, r->input.len) != NULL;
    size_t n = has_nul ? strlen(repaired.data) : repaired.len;
    CHECK_MSG(n == r->text.len && memcmp(repaired.data, r->text.data, n) == 0,
              "record %zu: our U+FFFD repair differs from Node's UTF-8 decoder", index + 1);
    glm_bytes_free(&r->text);
    r->text = repaired;
}

static record *read_corpus(const char *path, size_t *n_records)
{
    size_t len;
    char *data = read_text(path, &len);
    if (!data) return NULL;
    size_t cap = 1024, n = 0;
    record *recs = calloc(cap, sizeof *recs);
    for (char *line = data; line < data + len;) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        if (nl) *nl = '\0';
        if (*line) {
            cJSON *json = cJSON_Parse(line);
            cJSON *text = cJSON_GetObjectItemCaseSensitive(json, "text");
            cJSON *raw = cJSON_GetObjectItemCaseSensitive(json, "raw");
            if (!cJSON_IsString(text)) {
                fprintf(stderr, "%s: record %zu is not {\"text\": ...}\n", path, n + 1);
                exit(1);
            }
            if (n == cap) {
                record *grown = realloc(recs, (cap *= 2) * sizeof *recs);
                if (!grown) {
                    fprintf(stderr, "out of memory reading %s\n", path);
                    exit(1);
                }
                recs = grown;
            }
            record *r = &recs[n++];
            memset(r, 0, sizeof *r);
            /* cJSON stops at NUL, so texts with U+0000 are not in the corpus by design */
            glm_bytes_append(&r->text, text->valuestring, strlen(text->valuestring), NULL);
            if (cJSON_IsString(raw)) {
                r->has_raw = 1;
                base64_into(raw->valuestring, &r->input);
                check_repair(r, n - 1);
            } else {
                glm_bytes_append(&r->input, r->text.data, r->text.len, NULL);
            }
            cJSON_Delete(json);
        }
        line = nl ? nl + 1 : data + len;
    }
    free(data);
    *n_records = n;
    return recs;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Parses one line of expected ids; returns the start of the next line. */
static char *parse_expected(char *p, glm_token_ids *ids)
{
    ids->n = 0;
    while (*p && *p != '\n') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        glm_token_ids_push(ids, (int32_t)v, NULL);
        p = end;
        while (*p == ' ')
            p++;
    }
    return *p == '\n' ? p + 1 : p;
}

static void compare_corpus(const glm_tokenizer *tok, const char *variant, const record *recs,
                           size_t n, char *expected)
{
    glm_token_ids ids = {0}, want = {0};
    glm_bytes decoded = {0}, streamed = {0};
    glm_error err = {0};
    int shown = 0;
    size_t mismatches = 0, roundtrip_failures = 0;
    char *p = expected;
    for (size_t i = 0; i < n; i++) {
        p = parse_expected(p, &want);
        ids.n = 0;
        decoded.len = 0;
        streamed.len = 0;
        glm_status st =
            glm_tokenizer_encode(tok, recs[i].input.data, recs[i].input.len, &ids, &err);
        CHECK_MSG(st == GLM_OK, "%s record %zu: %s", variant, i + 1, err.msg);
        int same = ids.n == want.n && memcmp(ids.ids, want.ids, ids.n * sizeof *ids.ids) == 0;
        if (!same) {
            mismatches++;
            if (shown++ < 5) {
                fprintf(stderr, "%s: record %zu differs from tiktoken: %.60s\n", variant, i + 1,
                        recs[i].text.data);
                print_ids("ours", ids.ids, ids.n);
                print_ids("tiktoken", want.ids, want.n);
            }
        }
        /* decode(encode(x)) == x, and the streamed text is the same */
        glm_tokenizer_decode(tok, ids.ids, ids.n, &decoded, &err);
        glm_detokenizer d;
        glm_detokenizer_init(&d, tok);
        for (size_t k = 0; k < ids.n; k++)
            glm_detokenizer_push(&d, ids.ids[k], &streamed, &err);
        glm_detokenizer_flush(&d, &streamed, &err);
        if (decoded.len != recs[i].text.len ||
            memcmp(decoded.data, recs[i].text.data, decoded.len) || streamed.len != decoded.len ||
            memcmp(streamed.data, decoded.data, decoded.len)) {
            roundtrip_failures++;
            if (shown++ < 5)
                fprintf(stderr, "%s: record %zu does not round-trip\n", variant, i + 1);
        }
    }
    CHECK_MSG(mismatches == 0, "%s: %zu of %zu records differ from tiktoken", variant, mismatches,
              n);
    CHECK_MSG(roundtrip_failures == 0, "%s: %zu records do not round-trip", variant,
              roundtrip_failures);
    printf("%s: %zu records, %zu differ from tiktoken, %zu fail the round trip\n", variant, n,
           mismatches, roundtrip_failures);
    glm_token_ids_free(&ids);
    glm_token_ids_free(&want);
    glm_bytes_free(&decoded);
    glm_bytes_free(&streamed);
}

/* CPU time of this process: the machine may be busy with other work, and the encoder uses
 * one thread, so CPU seconds are the fair single-core measure. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Encodes every text RUNS times; prints the best run (CPU seconds) as JSON, like
 * encode_corpus.js --bench. */
static int bench(const glm_tokenizer *tok, const record *recs, size_t n, int runs)
{
    glm_token_ids ids = {0};
    size_t bytes = 0, tokens = 0;
    for (size_t i = 0; i < n; i++)
        bytes += recs[i].text.len;
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        tokens = 0;
        for (size_t i = 0; i < n; i++) {
            ids.n = 0;
            glm_tokenizer_encode(tok, recs[i].text.data, recs[i].text.len, &ids, NULL);
            tokens += ids.n;
        }
        double s = now_s() - t0;
        if (s < best) best = s;
    }
    printf("{\"bytes\":%zu,\"tokens\":%zu,\"seconds\":%.6f,\"mb_per_s\":%.3f,\"jit\":%s}\n", bytes,
           tokens, best, (double)bytes / 1e6 / best,
           glm_tokenizer_uses_jit(tok) ? "true" : "false");
    glm_token_ids_free(&ids);
    return 0;
}

int main(int argc, char **argv)
{
    int bench_mode = argc >= 2 && strcmp(argv[1], "--bench") == 0;
    if ((bench_mode && argc < 4) || (!bench_mode && argc != 4)) {
        fprintf(stderr, "usage: %s RANKS CORPUS.jsonl EXPECTED.ids | --bench RANKS CORPUS [RUNS]\n",
                argv[0]);
        return 2;
    }
    const char *ranks = argv[1 + bench_mode], *corpus = argv[2 + bench_mode];
    size_t n = 0;
    record *recs = read_corpus(corpus, &n);
    if (!recs) {
        fprintf(stderr, "cannot read %s\n", corpus);
        return 1;
    }
    glm_error err = {0};
    glm_tokenizer *tok = NULL;
    if (glm_tokenizer_load(ranks, &tok, &err) != GLM_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int rc;
    if (bench_mode) {
        rc = bench(tok, recs, n, argc > 4 ? atoi(argv[4]) : 3);
    } else {
        size_t expected_len;
        char *expected = read_text(argv[3], &expected_len);
        CHECK_MSG(expected != NULL, "cannot read %s", argv[3]);
        if (expected) {
            compare_corpus(tok, "jit+linear-merge", recs, n, expected);
            glm_tokenizer *slow = NULL;
            CHECK(glm_tokenizer_load_ex(ranks, GLM_TOKENIZER_NO_JIT | GLM_TOKENIZER_HEAP_MERGE,
                                        &slow, &err) == GLM_OK);
            if (slow) compare_corpus(slow, "interpreter+heap-merge", recs, n, expected);
            glm_tokenizer_destroy(slow);
            free(expected);
        }
        rc = test_finish("tokenizer_tiktoken");
    }
    for (size_t i = 0; i < n; i++) {
        glm_bytes_free(&recs[i].input);
        glm_bytes_free(&recs[i].text);
    }
    free(recs);
    glm_tokenizer_destroy(tok);
    return rc;
}
