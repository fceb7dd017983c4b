/* libFuzzer harness for glm_config_parse: any text either parses into a config whose derived
 * sizes are consistent, or fails with a message naming the source. Replay mode (no libFuzzer):
 * the golden configs and deterministic mutations of them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    glm_model_config cfg;
    glm_error err;
    if (glm_config_parse((const char *)data, size, "fuzz.json", &cfg, &err) == GLM_OK) {
        if (cfg.num_attention_heads % cfg.multi_query_group_num != 0) abort();
        if (cfg.n_eos_token_ids < 1 || cfg.n_eos_token_ids > GLM_MAX_EOS) abort();
        if (!glm_config_is_eos(&cfg, cfg.eos_token_ids[0])) abort();
        if (cfg.has_vision) {
            int grid = glm_config_vision_grid(&cfg);
            if (grid <= 0 || grid % 2 || cfg.vision.num_positions != grid * grid + 1) abort();
            if (glm_config_image_tokens(&cfg) != (grid / 2) * (grid / 2)) abort();
        }
    } else if (!strstr(err.msg, "fuzz.json")) {
        abort();
    }
    return 0;
}

#ifdef GLM4V_FUZZ_REPLAY_MAIN
#include <stdio.h>

#include "tests/testutil.h"

static void mutate(char *buf, size_t *len, test_rng *rng)
{
    static const char *tokens[] = {"-1",   "0",    "1e999", "2147483648", "\"",
                                   "{",    "[",    "]",     "}",          ",",
                                   "null", "true", "[]",    "3.5",        "\"bfloat16\""};
    int edits = test_rng_int(rng, 1, 3);
    for (int e = 0; e<edits && * len> 0; e++) {
        size_t at = (size_t)(test_rng_next(rng) % *len);
        switch (test_rng_int(rng, 0, 2)) {
        case 0:
            buf[at] = (char)test_rng_next(rng);
            break;
        case 1:
            *len = at;
            break;
        default: {
            const char *tok = tokens[test_rng_int(rng, 0, sizeof(tokens) / sizeof(tokens[0]) - 1)];
            size_t n = strlen(tok);
            if (at + n <= *len) memcpy(buf + at, tok, n);
        }
        }
    }
}

int main(int argc, char **argv)
{
    const char *dirs[] = {"glm4v-tiny-a", "glm4v-tiny-b"};
    test_rng rng;
    test_rng_seed(&rng, 7);
    int n_files = argc > 1 ? argc - 1 : 2;
    for (int f = 0; f < n_files; f++) {
        char path[1024];
        if (argc > 1)
            snprintf(path, sizeof(path), "%s", argv[f + 1]);
        else
            snprintf(path, sizeof(path), "%s/%s/config.json", test_testdata_dir(), dirs[f]);
        size_t len = 0;
        unsigned char *text = test_read_file(path, &len);
        if (!text) {
            fprintf(stderr, "cannot read %s\n", path);
            return 1;
        }
        for (size_t cut = 0; cut <= len; cut++) {
            char *exact = malloc(cut ? cut : 1); /* exact size: a read past the end is caught */
            memcpy(exact, text, cut);
            LLVMFuzzerTestOneInput((const uint8_t *)exact, cut);
            free(exact);
        }
        for (int i = 0; argc == 1 && i < 3000; i++) {
            size_t n = len;
            char *buf = malloc(len ? len : 1);
            memcpy(buf, text, len);
            mutate(buf, &n, &rng);
            LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
            free(buf);
        }
        free(text);
    }
    printf("fuzz_config replay: ok\n");
    return 0;
}
#endif
