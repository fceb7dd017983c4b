/* config.json of a GLM-4V checkpoint: parsed with cJSON into glm_model_config and checked for
 * sizes the rest of the engine relies on (heads divide, the vision grid matches its positions). */
#include "worker/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest config.json we accept: the real one is ~1.5 KB. */
#define CONFIG_MAX_BYTES (1 << 20)

/* ---- typed key readers: each names the file and the key on failure -------------------------- */

/* Looks up key in obj; prefix is "" or "vision_config." for messages. */
static const cJSON *find_key(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static glm_status read_int_value(const cJSON *item, const char *source, const char *prefix,
                                 const char *key, int *out, glm_error *err)
{
    if (!cJSON_IsNumber(item))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s%s' is not a number", source, prefix, key);
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < (double)INT_MIN || v > (double)INT_MAX)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s%s' (%g) is not a 32-bit integer", source,
                        prefix, key, v);
    *out = (int)v;
    return GLM_OK;
}

/* A required integer key that must be > 0. */
static glm_status read_size(const cJSON *obj, const char *source, const char *prefix,
                            const char *key, int *out, glm_error *err)
{
    const cJSON *item = find_key(obj, key);
    if (!item) return glm_fail(err, GLM_ERR_MISSING, "%s: missing key '%s%s'", source, prefix, key);
    glm_status st = read_int_value(item, source, prefix, key, out, err);
    if (st != GLM_OK) return st;
    if (*out <= 0)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s%s' must be positive, got %d", source,
                        prefix, key, *out);
    return GLM_OK;
}

/* An integer key; absent keys keep *out (the caller's default) unless required. */
static glm_status read_int(const cJSON *obj, const char *source, const char *prefix,
                           const char *key, bool required, int *out, glm_error *err)
{
    const cJSON *item = find_key(obj, key);
    if (!item) {
        if (required)
            return glm_fail(err, GLM_ERR_MISSING, "%s: missing key '%s%s'", source, prefix, key);
        return GLM_OK;
    }
    return read_int_value(item, source, prefix, key, out, err);
}

/* A float key that must be finite and > 0; absent keys keep the default unless required. */
static glm_status read_positive_float(const cJSON *obj, const char *source, const char *prefix,
                                      const char *key, bool required, float *out, glm_error *err)
{
    const cJSON *item = find_key(obj, key);
    if (!item) {
        if (required)
            return glm_fail(err, GLM_ERR_MISSING, "%s: missing key '%s%s'", source, prefix, key);
        return GLM_OK;
    }
    if (!cJSON_IsNumber(item))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s%s' is not a number", source, prefix, key);
    double v = item->valuedouble;
    if (!isfinite(v) || v <= 0.0 || v > 3.0e38)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s%s' must be a positive float, got %g",
                        source, prefix, key, v);
    *out = (float)v;
    return GLM_OK;
}

static glm_status read_bool(const cJSON *obj, const char *source, const char *key, bool *out,
                            glm_error *err)
{
    const cJSON *item = find_key(obj, key);
    if (!item) return GLM_OK;
    if (!cJSON_IsBool(item))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key '%s' is not true/false", source, key);
    *out = cJSON_IsTrue(item);
    return GLM_OK;
}

/* eos_token_id is a single id in some GLM configs and a list in GLM-4V's. */
static glm_status read_eos(const cJSON *obj, const char *source, glm_model_config *cfg,
                           glm_error *err)
{
    const cJSON *item = find_key(obj, "eos_token_id");
    if (!item) return glm_fail(err, GLM_ERR_MISSING, "%s: missing key 'eos_token_id'", source);
    if (cJSON_IsNumber(item)) {
        cfg->n_eos_token_ids = 1;
        return read_int_value(item, source, "", "eos_token_id", &cfg->eos_token_ids[0], err);
    }
    if (!cJSON_IsArray(item))
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: key 'eos_token_id' must be an integer or a list of integers", source);
    int n = cJSON_GetArraySize(item);
    if (n < 1 || n > GLM_MAX_EOS)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key 'eos_token_id' has %d ids (1..%d allowed)",
                        source, n, GLM_MAX_EOS);
    int i = 0;
    const cJSON *id;
    cJSON_ArrayForEach(id, item)
    {
        glm_status st =
            read_int_value(id, source, "", "eos_token_id[]", &cfg->eos_token_ids[i], err);
        if (st != GLM_OK) return st;
        i++;
    }
    cfg->n_eos_token_ids = n;
    return GLM_OK;
}

static glm_status read_dtype(const cJSON *obj, const char *source, glm_dtype *out, glm_error *err)
{
    const cJSON *item = find_key(obj, "torch_dtype");
    if (!item) return GLM_OK; /* transformers' default when a config declares none */
    if (!cJSON_IsString(item))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key 'torch_dtype' is not a string", source);
    const char *s = item->valuestring;
    if (!strcmp(s, "float32") || !strcmp(s, "float")) {
        *out = GLM_F32;
    } else if (!strcmp(s, "bfloat16")) {
        *out = GLM_BF16;
    } else if (!strcmp(s, "float16") || !strcmp(s, "half")) {
        *out = GLM_F16;
    } else {
        return glm_fail(err, GLM_ERR_UNSUPPORTED, "%s: key 'torch_dtype' names unsupported '%.64s'",
                        source, s);
    }
    return GLM_OK;
}

/* ---- sections ------------------------------------------------------------------------------- */

#define TRY(call)                                                                                  \
    do {                                                                                           \
        glm_status st_ = (call);                                                                   \
        if (st_ != GLM_OK) return st_;                                                             \
    } while (0)

static glm_status parse_vision(const cJSON *v, const char *source, glm_vision_config *vc,
                               glm_error *err)
{
    const char *p = "vision_config.";
    if (!cJSON_IsObject(v))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key 'vision_config' is not an object", source);
    vc->in_channels = 3;
    vc->layer_norm_eps = 1e-6f;
    vc->scaling_factor = 8.0f;
    TRY(read_size(v, source, p, "hidden_size", &vc->hidden_size, err));
    TRY(read_size(v, source, p, "num_heads", &vc->num_heads, err));
    TRY(read_size(v, source, p, "num_hidden_layers", &vc->num_layers, err));
    TRY(read_size(v, source, p, "intermediate_size", &vc->intermediate_size, err));
    TRY(read_size(v, source, p, "image_size", &vc->image_size, err));
    TRY(read_size(v, source, p, "patch_size", &vc->patch_size, err));
    TRY(read_size(v, source, p, "num_positions", &vc->num_positions, err));
    TRY(read_int(v, source, p, "in_channels", false, &vc->in_channels, err));
    if (vc->in_channels <= 0)
        return glm_fail(err, GLM_ERR_FORMAT, "%s: key 'vision_config.in_channels' must be positive",
                        source);
    TRY(read_positive_float(v, source, p, "layer_norm_eps", false, &vc->layer_norm_eps, err));
    TRY(read_positive_float(v, source, p, "scaling_factor", false, &vc->scaling_factor, err));
    const cJSON *act = find_key(v, "hidden_act");
    if (act && !(cJSON_IsString(act) && !strcmp(act->valuestring, "gelu")))
        return glm_fail(err, GLM_ERR_UNSUPPORTED,
                        "%s: key 'vision_config.hidden_act' must be \"gelu\"", source);
    return GLM_OK;
}

static glm_status parse_language(const cJSON *root, const char *source, glm_model_config *cfg,
                                 glm_error *err)
{
    const char *p = "";
    TRY(read_size(root, source, p, "num_layers", &cfg->num_layers, err));
    TRY(read_size(root, source, p, "hidden_size", &cfg->hidden_size, err));
    TRY(read_size(root, source, p, "ffn_hidden_size", &cfg->ffn_hidden_size, err));
    TRY(read_size(root, source, p, "kv_channels", &cfg->kv_channels, err));
    TRY(read_size(root, source, p, "num_attention_heads", &cfg->num_attention_heads, err));
    TRY(read_size(root, source, p, "multi_query_group_num", &cfg->multi_query_group_num, err));
    TRY(read_size(root, source, p, "padded_vocab_size", &cfg->padded_vocab_size, err));
    TRY(read_size(root, source, p, "seq_length", &cfg->seq_length, err));
    TRY(read_positive_float(root, source, p, "layernorm_epsilon", true, &cfg->layernorm_epsilon,
                            err));
    TRY(read_positive_float(root, source, p, "rope_ratio", false, &cfg->rope_ratio, err));
    TRY(read_bool(root, source, "add_qkv_bias", &cfg->add_qkv_bias, err));
    TRY(read_bool(root, source, "add_bias_linear", &cfg->add_bias_linear, err));
    TRY(read_dtype(root, source, &cfg->torch_dtype, err));
    TRY(read_eos(root, source, cfg, err));
    cfg->pad_token_id = cfg->eos_token_ids[0];
    TRY(read_int(root, source, p, "pad_token_id", false, &cfg->pad_token_id, err));
    return GLM_OK;
}

/* ---- consistency checks --------------------------------------------------------------------- */

static glm_status check_token(const glm_model_config *cfg, const char *source, const char *key,
                              int id, glm_error *err)
{
    if (id < 0 || id >= cfg->padded_vocab_size)
        return glm_fail(err, GLM_ERR_FORMAT,
                        "%s: key '%s' (%d) is outside the vocabulary [0, padded_vocab_size=%d)",
                        source, key, id, cfg->padded_vocab_size);
    return GLM_OK;
}

static glm_status check_config(const glm_model_config *cfg, const char *source, glm_error *err)
{
    if (cfg->num_attention_heads % cfg->multi_query_group_num != 0)
        return glm_fail(err, GLM_ERR_SHAPE,
                        "%s: key 'num_attention_heads' (%d) is not a multiple of "
                        "'multi_query_group_num' (%d)",
                        source, cfg->num_attention_heads, cfg->multi_query_group_num);
    for (int i = 0; i < cfg->n_eos_token_ids; i++)
        TRY(check_token(cfg, source, "eos_token_id", cfg->eos_token_ids[i], err));
    TRY(check_token(cfg, source, "pad_token_id", cfg->pad_token_id, err));
    if (!cfg->has_vision) return GLM_OK;
    TRY(check_token(cfg, source, "boi_token_id", cfg->boi_token_id, err));
    TRY(check_token(cfg, source, "eoi_token_id", cfg->eoi_token_id, err));

    const glm_vision_config *vc = &cfg->vision;
    if (vc->image_size % vc->patch_size != 0)
        return glm_fail(
            err, GLM_ERR_SHAPE,
            "%s: key 'vision_config.image_size' (%d) is not a multiple of patch_size (%d)", source,
            vc->image_size, vc->patch_size);
    int grid = vc->image_size / vc->patch_size;
    if (grid % 2 != 0)
        return glm_fail(err, GLM_ERR_SHAPE,
                        "%s: key 'vision_config.image_size': patch grid %d is odd, the 2x2 conv "
                        "needs an even grid",
                        source, grid);
    if ((long long)vc->num_positions != (long long)grid * grid + 1)
        return glm_fail(err, GLM_ERR_SHAPE,
                        "%s: key 'vision_config.num_positions' (%d) != grid^2 + 1 = %lld", source,
                        vc->num_positions, (long long)grid * grid + 1);
    if (vc->hidden_size % vc->num_heads != 0)
        return glm_fail(err, GLM_ERR_SHAPE,
                        "%s: key 'vision_config.hidden_size' (%d) is not a multiple of num_heads "
                        "(%d)",
                        source, vc->hidden_size, vc->num_heads);
    return GLM_OK;
}

/* ---- public --------------------------------------------------------------------------------- */

static glm_status parse_root(const cJSON *root, const char *source, glm_model_config *cfg,
                             glm_error *err)
{
    if (!cJSON_IsObject(root))
        return glm_fail(err, GLM_ERR_FORMAT, "%s: config is not a JSON object", source);
    TRY(parse_language(root, source, cfg, err));
    const cJSON *vision = find_key(root, "vision_config");
    cfg->has_vision = vision && !cJSON_IsNull(vision);
    if (cfg->has_vision) {
        /* boi/eoi only mean something with a vision tower, where they are required. */
        TRY(read_int(root, source, "", "boi_token_id", true, &cfg->boi_token_id, err));
        TRY(read_int(root, source, "", "eoi_token_id", true, &cfg->eoi_token_id, err));
        TRY(parse_vision(vision, source, &cfg->vision, err));
    }
    return check_config(cfg, source, err);
}

glm_status glm_config_parse(const char *json, size_t len, const char *source, glm_model_config *cfg,
                            glm_error *err)
{
    if (!source) source = "config.json";
    if (!json || !cfg) return glm_fail(err, GLM_ERR_INVALID_ARG, "%s: no config text", source);
    if (len > CONFIG_MAX_BYTES)
        return glm_fail(err, GLM_ERR_LIMIT, "%s: %zu bytes is larger than the %d-byte limit",
                        source, len, CONFIG_MAX_BYTES);
    glm_model_config parsed;
    memset(&parsed, 0, sizeof(parsed));
    parsed.rope_ratio = 1.0f;
    parsed.torch_dtype = GLM_F32;
    parsed.boi_token_id = -1;
    parsed.eoi_token_id = -1;

    /* cJSON is given its own NUL-terminated copy so no input can make it read past the end. */
    char *text = malloc(len + 1);
    if (!text) return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", source);
    memcpy(text, json, len);
    text[len] = '\0';
    const char *at = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &at, false);
    glm_status st;
    if (!root) {
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        st = glm_fail(err, GLM_ERR_FORMAT, "%s: invalid JSON near byte %ld", source, off);
    } else {
        st = parse_root(root, source, &parsed, err);
        cJSON_Delete(root);
    }
    free(text);
    if (st == GLM_OK) *cfg = parsed;
    return st;
}

glm_status glm_config_load(const char *model_dir, glm_model_config *cfg, glm_error *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", model_dir ? model_dir : ".");
    FILE *f = fopen(path, "rb");
    if (!f) {
        glm_status st = errno == ENOENT ? GLM_ERR_MISSING : GLM_ERR_IO;
        return glm_fail(err, st, "%s: cannot open: %s", path, strerror(errno));
    }
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return glm_fail(err, GLM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CONFIG_MAX_BYTES + 1, f);
    int read_error = ferror(f);
    fclose(f);
    glm_status st;
    if (read_error)
        st = glm_fail(err, GLM_ERR_IO, "%s: read failed", path);
    else if (n > CONFIG_MAX_BYTES)
        st = glm_fail(err, GLM_ERR_LIMIT, "%s: larger than the %d-byte limit", path,
                      CONFIG_MAX_BYTES);
    else
        st = glm_config_parse(buf, n, path, cfg, err);
    free(buf);
    return st;
}

bool glm_config_is_eos(const glm_model_config *cfg, int token_id)
{
    for (int i = 0; i < cfg->n_eos_token_ids; i++)
        if (cfg->eos_token_ids[i] == token_id) return true;
    return false;
}

int glm_config_vision_grid(const glm_model_config *cfg)
{
    if (!cfg->has_vision || cfg->vision.patch_size <= 0) return 0;
    return cfg->vision.image_size / cfg->vision.patch_size;
}

int glm_config_image_tokens(const glm_model_config *cfg)
{
    int half = glm_config_vision_grid(cfg) / 2;
    return half * half;
}
