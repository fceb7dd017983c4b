/* config.json parsing: both golden configs read back exactly, and every malformed variant (built
 * here by editing the golden text) fails with the right status and a message naming file and key.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/testutil.h"
#include "worker/config.h"

static char *golden_text(const char *folder)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/config.json", test_testdata_dir(), folder);
    size_t len = 0;
    unsigned char *buf = test_read_file(path, &len);
    if (!buf) return NULL;
    char *text = realloc(buf, len + 1);
    if (text) text[len] = '\0';
    return text;
}

static void test_tiny_a(void)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/glm4v-tiny-a", test_testdata_dir());
    glm_model_config c;
    glm_error err = {0};
    glm_status st = glm_config_load(dir, &c, &err);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    if (st != GLM_OK) return;
    CHECK(c.num_layers == 2 && c.hidden_size == 64 && c.ffn_hidden_size == 96);
    CHECK(c.kv_channels == 16 && c.num_attention_heads == 4 && c.multi_query_group_num == 2);
    CHECK(c.padded_vocab_size == 416 && c.seq_length == 2048);
    CHECK(c.rope_ratio == 1.0f && c.layernorm_epsilon == 1.5625e-07f);
    CHECK(c.add_qkv_bias && !c.add_bias_linear);
    CHECK(c.boi_token_id == 410 && c.eoi_token_id == 411 && c.pad_token_id == 400);
    CHECK(c.n_eos_token_ids == 3 && c.eos_token_ids[0] == 400 && c.eos_token_ids[1] == 407 &&
          c.eos_token_ids[2] == 409);
    CHECK(c.torch_dtype == GLM_F32);
    CHECK(c.has_vision);
    const glm_vision_config *v = &c.vision;
    CHECK(v->hidden_size == 32 && v->num_heads == 4 && v->num_layers == 2);
    CHECK(v->intermediate_size == 64 && v->image_size == 56 && v->patch_size == 14);
    CHECK(v->in_channels == 3 && v->num_positions == 17);
    CHECK(v->layer_norm_eps == 1e-6f && v->scaling_factor == 8.0f);
    CHECK(glm_config_vision_grid(&c) == 4);
    CHECK(glm_config_image_tokens(&c) == 4);
    CHECK(glm_config_is_eos(&c, 400) && glm_config_is_eos(&c, 407) && glm_config_is_eos(&c, 409));
    CHECK(!glm_config_is_eos(&c, 401) && !glm_config_is_eos(&c, 410) && !glm_config_is_eos(&c, -1));
}

static void test_tiny_b(void)
{
    char *text = golden_text("glm4v-tiny-b");
    CHECK(text != NULL);
    if (!text) return;
    glm_model_config c;
    glm_error err = {0};
    glm_status st = glm_config_parse(text, strlen(text), "tiny-b/config.json", &c, &err);
    free(text);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    if (st != GLM_OK) return;
    CHECK(c.num_layers == 3 && c.hidden_size == 96 && c.ffn_hidden_size == 160);
    CHECK(c.kv_channels == 24 && c.num_attention_heads == 8 && c.multi_query_group_num == 2);
    CHECK(c.padded_vocab_size == 464 && c.rope_ratio == 4.0f);
    CHECK(c.torch_dtype == GLM_BF16);
    CHECK(c.boi_token_id == 460 && c.eoi_token_id == 461 && c.pad_token_id == 450);
    CHECK(c.n_eos_token_ids == 3 && c.eos_token_ids[2] == 459);
    CHECK(c.vision.hidden_size == 48 && c.vision.num_layers == 3 &&
          c.vision.intermediate_size == 80);
    CHECK(c.vision.image_size == 84 && c.vision.num_positions == 37);
    CHECK(glm_config_vision_grid(&c) == 6 && glm_config_image_tokens(&c) == 9);
}

/* ---- malformed variants --------------------------------------------------------------------- */

/* Parses tiny-a's config with key (optionally "vision_config.x") replaced by value (JSON text),
 * or removed when value is NULL. */
static glm_status parse_edited(const char *key, const char *value, glm_model_config *c,
                               glm_error *err)
{
    char *text = golden_text("glm4v-tiny-a");
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!root) return GLM_ERR_IO;
    cJSON *obj = root;
    const char *dot = strchr(key, '.');
    char head[64];
    if (dot) {
        snprintf(head, sizeof(head), "%.*s", (int)(dot - key), key);
        obj = cJSON_GetObjectItemCaseSensitive(root, head);
        key = dot + 1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (value) cJSON_AddItemToObject(obj, key, cJSON_Parse(value));
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    glm_status st = glm_config_parse(out, strlen(out), "edited/config.json", c, err);
    free(out);
    return st;
}

static void expect_fail(const char *key, const char *value, glm_status want, const char *in_msg)
{
    glm_model_config c;
    glm_error err = {0};
    glm_status st = parse_edited(key, value, &c, &err);
    CHECK_MSG(st == want, "%s=%s: got %s want %s (%s)", key, value ? value : "(removed)",
              glm_status_name(st), glm_status_name(want), err.msg);
    CHECK_MSG(strstr(err.msg, "edited/config.json") != NULL, "no file in '%s'", err.msg);
    CHECK_MSG(strstr(err.msg, in_msg) != NULL, "'%s' not in '%s'", in_msg, err.msg);
}

static void test_missing_keys(void)
{
    const char *required[] = {"num_layers",        "hidden_size",         "ffn_hidden_size",
                              "kv_channels",       "num_attention_heads", "multi_query_group_num",
                              "padded_vocab_size", "seq_length",          "layernorm_epsilon",
                              "eos_token_id",      "boi_token_id",        "eoi_token_id"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        expect_fail(required[i], NULL, GLM_ERR_MISSING, required[i]);
    const char *vision[] = {"vision_config.hidden_size",       "vision_config.num_heads",
                            "vision_config.num_hidden_layers", "vision_config.intermediate_size",
                            "vision_config.image_size",        "vision_config.patch_size",
                            "vision_config.num_positions"};
    for (size_t i = 0; i < sizeof(vision) / sizeof(vision[0]); i++)
        expect_fail(vision[i], NULL, GLM_ERR_MISSING, vision[i]);
}

static void test_bad_values(void)
{
    expect_fail("hidden_size", "-64", GLM_ERR_FORMAT, "hidden_size");
    expect_fail("hidden_size", "0", GLM_ERR_FORMAT, "hidden_size");
    expect_fail("hidden_size", "64.5", GLM_ERR_FORMAT, "hidden_size");
    expect_fail("hidden_size", "\"64\"", GLM_ERR_FORMAT, "hidden_size");
    expect_fail("num_layers", "1e20", GLM_ERR_FORMAT, "num_layers");
    expect_fail("layernorm_epsilon", "0", GLM_ERR_FORMAT, "layernorm_epsilon");
    expect_fail("rope_ratio", "-1", GLM_ERR_FORMAT, "rope_ratio");
    expect_fail("add_qkv_bias", "\"yes\"", GLM_ERR_FORMAT, "add_qkv_bias");
    expect_fail("torch_dtype", "\"float64\"", GLM_ERR_UNSUPPORTED, "torch_dtype");
    expect_fail("torch_dtype", "7", GLM_ERR_FORMAT, "torch_dtype");
    expect_fail("num_attention_heads", "5", GLM_ERR_SHAPE, "multi_query_group_num");
    expect_fail("eos_token_id", "416", GLM_ERR_FORMAT, "eos_token_id");
    expect_fail("eos_token_id", "[]", GLM_ERR_FORMAT, "eos_token_id");
    expect_fail("eos_token_id", "[1,2,3,4,5,6,7,8,9]", GLM_ERR_FORMAT, "eos_token_id");
    expect_fail("eos_token_id", "[1,\"a\"]", GLM_ERR_FORMAT, "eos_token_id");
    expect_fail("eos_token_id", "{\"a\":1}", GLM_ERR_FORMAT, "eos_token_id");
    expect_fail("boi_token_id", "-1", GLM_ERR_FORMAT, "boi_token_id");
    expect_fail("eoi_token_id", "416", GLM_ERR_FORMAT, "eoi_token_id");
    expect_fail("pad_token_id", "9999", GLM_ERR_FORMAT, "pad_token_id");
    expect_fail("vision_config", "[1]", GLM_ERR_FORMAT, "vision_config");
    expect_fail("vision_config.image_size", "57", GLM_ERR_SHAPE, "vision_config.image_size");
    expect_fail("vision_config.image_size", "42", GLM_ERR_SHAPE, "vision_config.image_size");
    expect_fail("vision_config.num_positions", "18", GLM_ERR_SHAPE, "vision_config.num_positions");
    expect_fail("vision_config.num_heads", "5", GLM_ERR_SHAPE, "vision_config.hidden_size");
    expect_fail("vision_config.patch_size", "-14", GLM_ERR_FORMAT, "vision_config.patch_size");
    expect_fail("vision_config.layer_norm_eps", "\"x\"", GLM_ERR_FORMAT, "layer_norm_eps");
    expect_fail("vision_config.hidden_act", "\"relu\"", GLM_ERR_UNSUPPORTED, "hidden_act");
}

static void test_accepted_variants(void)
{
    glm_model_config c;
    glm_error err = {0};
    glm_status st = parse_edited("eos_token_id", "407", &c, &err);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    CHECK(st == GLM_OK && c.n_eos_token_ids == 1 && glm_config_is_eos(&c, 407) &&
          !glm_config_is_eos(&c, 400));

    st = parse_edited("vision_config", NULL, &c, &err);
    CHECK_MSG(st == GLM_OK, "%s", err.msg);
    CHECK(st == GLM_OK && !c.has_vision && glm_config_vision_grid(&c) == 0 &&
          glm_config_image_tokens(&c) == 0);

    st = parse_edited("torch_dtype", NULL, &c, &err);
    CHECK(st == GLM_OK && c.torch_dtype == GLM_F32);
    st = parse_edited("torch_dtype", "\"float16\"", &c, &err);
    CHECK(st == GLM_OK && c.torch_dtype == GLM_F16);
    /* GLM allows hidden_size != heads * kv_channels: only kv_channels is kept. */
    st = parse_edited("kv_channels", "20", &c, &err);
    CHECK(st == GLM_OK && c.kv_channels == 20);
}

static void test_not_json(void)
{
    const char *cases[] = {"", "{", "[1, 2]", "\"text\"", "{\"num_layers\": }", "null"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        glm_model_config c;
        glm_error err = {0};
        glm_status st = glm_config_parse(cases[i], strlen(cases[i]), "junk.json", &c, &err);
        CHECK_MSG(st == GLM_ERR_FORMAT, "case %zu: %s", i, glm_status_name(st));
        CHECK(strstr(err.msg, "junk.json") != NULL);
    }
    /* The length bounds the text: a prefix of a good config is not a good config. */
    char *text = golden_text("glm4v-tiny-a");
    if (text) {
        glm_model_config c;
        glm_error err = {0};
        CHECK(glm_config_parse(text, strlen(text) / 2, "half.json", &c, &err) == GLM_ERR_FORMAT);
        CHECK(glm_config_parse(text, strlen(text), "whole.json", &c, NULL) == GLM_OK);
        free(text);
    }
    glm_model_config c;
    glm_error err = {0};
    CHECK(glm_config_load("/nonexistent-glm4v-dir", &c, &err) == GLM_ERR_MISSING);
    CHECK(strstr(err.msg, "/nonexistent-glm4v-dir/config.json") != NULL);
}

int main(void)
{
    test_tiny_a();
    test_tiny_b();
    test_missing_keys();
    test_bad_values();
    test_accepted_variants();
    test_not_json();
    return test_finish("config");
}
