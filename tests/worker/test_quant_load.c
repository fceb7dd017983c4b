/* Quantization on load (worker/weights.c):
 *  - a tensor-parallel rank's quantized slices equal the same part of the one-rank weights:
 *    column-parallel rows with their scales, and row-parallel columns whose per-channel scales
 *    come from the whole rows (int8, fp8); int4 groups of a row-parallel slice start at the slice;
 *  - a checkpoint tensor holding a NaN cannot be quantized: the load fails with
 *    GLM_ERR_INVALID_ARG naming the tensor, the position and the format, and glm4v-run exits 2;
 *    the same checkpoint loads with 16-bit weights (nothing to quantize).
 *
 *   test_quant_load MODEL_DIR [GLM4V_RUN]     (MODEL_DIR: glm4v-tiny-a, float32, one file) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/testutil.h"
#include "worker/checkpoint.h"
#include "worker/comm.h"
#include "worker/config.h"
#include "worker/safetensors.h"
#include "worker/weights.h"

#define BAD_TENSOR "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight"

static bool load(const char *dir, glm_weight_format f, int rank, int tp, glm_backend *be,
                 glm_weights *w, glm_model_config *cfg, glm_error *err)
{
    glm_checkpoint *ck = NULL;
    glm_shard_plan plan;
    glm_weight_formats formats = {f, f};
    glm_status st = glm_config_load(dir, cfg, err);
    if (!st) st = glm_checkpoint_open(dir, &ck, err);
    if (!st) st = glm_shard_plan_make(cfg, rank, tp, &plan, err);
    if (!st) st = glm_weights_load(w, cfg, &plan, ck, &formats, be, err);
    glm_checkpoint_close(ck);
    return st == GLM_OK;
}

/* rows [r0, r0 + n) x columns [c0, c0 + cols of part) of whole equal part, codes and scales */
static void expect_part(const char *what, const glm_weight *whole, const glm_weight *part,
                        int64_t r0, int64_t c0, bool scales_too)
{
    size_t wb = glm_weight_row_bytes(whole->format, GLM_F32, whole->cols);
    size_t pb = glm_weight_row_bytes(part->format, GLM_F32, part->cols);
    size_t off = glm_weight_row_bytes(whole->format, GLM_F32, c0);
    bool same = true;
    for (int64_t r = 0; r < part->rows; r++) {
        same = same && memcmp((const char *)part->data + r * pb,
                              (const char *)whole->data + (r0 + r) * wb + off, pb) == 0;
        if (scales_too) same = same && part->scales[r] == whole->scales[r0 + r];
    }
    CHECK_MSG(same, "%s: the rank's slice differs from the one-rank weights", what);
}

static void check_tp_slices(const char *dir, glm_backend *be)
{
    const glm_weight_format fs[] = {GLM_WEIGHT_INT8, GLM_WEIGHT_FP8, GLM_WEIGHT_INT4};
    for (int i = 0; i < 3; i++) {
        glm_weights one = {0}, two = {0};
        glm_model_config cfg;
        glm_error err = {0};
        CHECK_MSG(load(dir, fs[i], 0, 1, be, &one, &cfg, &err), "%s", err.msg);
        CHECK_MSG(load(dir, fs[i], 1, 2, be, &two, &cfg, &err), "%s", err.msg);
        if (one.layers && two.layers) {
            const char *name = glm_weight_format_name(fs[i]);
            /* column-parallel: the vision fc1's rows of rank 1 */
            const glm_weight *a = &one.vlayers[0].fc1_w, *b = &two.vlayers[0].fc1_w;
            expect_part(name, a, b, a->rows / 2, 0, true);
            /* row-parallel: dense_4h_to_h's columns of rank 1, whole-row scales */
            a = &one.layers[1].four_h_to_h_w, b = &two.layers[1].four_h_to_h_w;
            CHECK(b->cols * 2 == a->cols && b->rows == a->rows);
            if (fs[i] != GLM_WEIGHT_INT4) expect_part(name, a, b, 0, a->cols / 2, true);
            /* int4: the slice's own groups (48 columns at TP 2 here: one group per row) */
            if (fs[i] == GLM_WEIGHT_INT4)
                CHECK(b->group_size == GLM_INT4_GROUP &&
                      glm_weight_groups(b->format, b->cols, b->group_size) == 1);
        }
        glm_weights_free(&one, be);
        glm_weights_free(&two, be);
    }
}

/* A copy of dir's checkpoint (and config) into out with one NaN in BAD_TENSOR at [3, 5]. */
static bool write_poisoned(const char *dir, const char *out)
{
    char path[4096];
    glm_error err = {0};
    glm_safetensors *st = NULL;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (glm_safetensors_open(path, &st, &err)) return false;
    size_t n = glm_safetensors_count(st);
    glm_st_write_tensor *ts = calloc(n, sizeof(*ts));
    float *poisoned = NULL;
    for (size_t i = 0; i < n; i++) {
        const glm_st_tensor *t = glm_safetensors_at(st, i);
        ts[i] = (glm_st_write_tensor){
            .name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(ts[i].shape, t->shape, sizeof(t->shape[0]) * (size_t)t->ndim);
        if (strcmp(t->name, BAD_TENSOR) == 0 && t->dtype == GLM_F32) {
            size_t count = (size_t)(t->shape[0] * t->shape[1]);
            poisoned = malloc(count * sizeof(float));
            memcpy(poisoned, t->data, count * sizeof(float));
            poisoned[3 * t->shape[1] + 5] = NAN;
            ts[i].data = poisoned;
        }
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", out);
    bool ok = poisoned && glm_safetensors_write(path, ts, n, &err) == GLM_OK;
    free(poisoned);
    free(ts);
    glm_safetensors_close(st);
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/config.json", dir);
    unsigned char *cfg = test_read_file(path, &len);
    snprintf(path, sizeof(path), "%s/config.json", out);
    ok = ok && cfg && test_write_file(path, cfg, len) == 0;
    free(cfg);
    return ok;
}

static void check_non_finite(const char *dir, const char *run, glm_backend *be)
{
    char *tmp = test_mkdtemp();
    CHECK(tmp && write_poisoned(dir, tmp));
    const glm_weight_format fs[] = {GLM_WEIGHT_INT8, GLM_WEIGHT_FP8, GLM_WEIGHT_INT4};
    for (int i = 0; tmp && i < 3; i++) {
        glm_weights w = {0};
        glm_model_config cfg;
        glm_error err = {0};
        CHECK(!load(tmp, fs[i], 0, 1, be, &w, &cfg, &err));
        CHECK(err.status == GLM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(err.msg, BAD_TENSOR) && strstr(err.msg, "[3, 5]") &&
                      strstr(err.msg, glm_weight_format_name(fs[i])),
                  "message: %s", err.msg);
        printf("%s: %s\n", glm_weight_format_name(fs[i]), err.msg);
        glm_weights_free(&w, be);
    }
    glm_weights w = {0}; /* 16-bit weights: nothing is quantized, the load succeeds */
    glm_model_config cfg;
    glm_error err = {0};
    CHECK_MSG(tmp && load(tmp, GLM_WEIGHT_DENSE, 0, 1, be, &w, &cfg, &err), "%s", err.msg);
    glm_weights_free(&w, be);
    if (run && tmp) {
        char cmd[8192];
        snprintf(cmd, sizeof(cmd),
                 "%s --model %s --input-ids 1,2,3 --max-new-tokens 1 --weights int4 >/dev/null "
                 "2>&1",
                 run, tmp);
        int rc = system(cmd);
        CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "glm4v-run exit %d, want 2",
                  WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    }
    if (tmp) test_rmtree(tmp);
    free(tmp);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_quant_load MODEL_DIR [GLM4V_RUN]\n");
        return 2;
    }
    glm_backend *be = NULL;
    glm_error err = {0};
    if (glm_backend_cpu_create(1, &be, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    check_tp_slices(argv[1], be);
    check_non_finite(argv[1], argc > 2 ? argv[2] : NULL, be);
    glm_backend_destroy(be);
    return test_finish("worker/quant_load");
}
