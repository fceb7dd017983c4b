/* The CPU backend object: its description, memory ops, and the sticky-error contract. */
#include <stdint.h>
#include <string.h>

#include "tests/kernels/kernel_test.h"

static void check_table(glm_backend *be)
{
    CHECK(strcmp(be->name, "cpu") == 0);
    CHECK(be->weight_dtype == GLM_F32 && be->act_dtype == GLM_F32 && be->resid_dtype == GLM_F32);
    CHECK(be->status == GLM_OK);
    const glm_backend_ops *o = be->ops;
    void *required[] = {
        (void *)o->alloc,          (void *)o->free,        (void *)o->upload,
        (void *)o->download,       (void *)o->copy,        (void *)o->zero,
        (void *)o->synchronize,    (void *)o->free_memory, (void *)o->native_stream,
        (void *)o->destroy,        (void *)o->linear,      (void *)o->add,
        (void *)o->scale,          (void *)o->gelu,        (void *)o->silu_mul,
        (void *)o->rmsnorm,        (void *)o->add_rmsnorm, (void *)o->layernorm, (void *)o->add_layernorm,
        (void *)o->embedding,      (void *)o->copy_rows,   (void *)o->gather_rows,
        (void *)o->rope,           (void *)o->kv_store,    (void *)o->attention_paged,
        (void *)o->attention_full, (void *)o->patchify,    (void *)o->im2col_2x2,
        (void *)o->vision_embed,   (void *)o->sample,
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        CHECK_MSG(required[i] != NULL, "op %zu is NULL", i);
    CHECK(o->graph_begin == NULL && o->graph_end == NULL && o->graph_replay == NULL);
    CHECK(o->free_memory(be) == SIZE_MAX);
    CHECK(o->native_stream(be) == NULL);
}

static void check_memory(glm_backend *be)
{
    const size_t sizes[] = {0, 1, 3, 64, 1000, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = NULL;
        CHECK(be->ops->alloc(be, sizes[i], &p) == GLM_OK);
        CHECK(p != NULL && (uintptr_t)p % 64 == 0);
        be->ops->free(be, p);
    }
    enum { n = 1000 };
    unsigned char host[n], back[n];
    for (int i = 0; i < n; i++)
        host[i] = (unsigned char)(i * 7 + 3);
    void *a = NULL, *b = NULL;
    CHECK(be->ops->alloc(be, n, &a) == GLM_OK && be->ops->alloc(be, n, &b) == GLM_OK);
    glm_op_upload(be, a, host, (size_t)n);
    memset(host, 0, n); /* the host buffer may be reused once upload returns */
    glm_op_copy(be, b, a, (size_t)n);
    glm_op_download(be, back, b, (size_t)n);
    be->ops->synchronize(be);
    bool same = true;
    for (int i = 0; i < n; i++)
        same &= back[i] == (unsigned char)(i * 7 + 3);
    CHECK(same);
    glm_op_zero(be, b, (size_t)n);
    glm_op_download(be, back, b, (size_t)n);
    bool zero = true;
    for (int i = 0; i < n; i++)
        zero &= back[i] == 0;
    CHECK(zero);
    be->ops->free(be, a);
    be->ops->free(be, b);
    be->ops->free(be, NULL);
    void *huge = (void *)1;
    CHECK(be->ops->alloc(be, SIZE_MAX - 8, &huge) == GLM_ERR_NOMEM && huge == NULL);
}

static void check_sticky(glm_backend *be)
{
    float x[4] = {1, 2, 3, 4}, y[4] = {0};
    glm_backend_fail(be, GLM_ERR_SHAPE, "first %d", 1);
    glm_backend_fail(be, GLM_ERR_BACKEND, "second");
    glm_op_scale(be, glm_tensor_1d(GLM_F32, 4, x), 2.0f); /* skipped */
    CHECK(x[0] == 1.0f);
    glm_error err = {0};
    CHECK(glm_backend_take_error(be, &err) == GLM_ERR_SHAPE);
    CHECK(strstr(err.msg, "first 1") != NULL);
    CHECK(strstr(err.msg, "cpu") != NULL);
    CHECK(be->status == GLM_OK);
    CHECK(glm_backend_take_error(be, &err) == GLM_OK);
    glm_op_scale(be, glm_tensor_1d(GLM_F32, 4, x), 2.0f);
    CHECK(x[0] == 2.0f && x[3] == 8.0f);
    /* an op failure names the op */
    glm_op_add(be, glm_tensor_1d(GLM_F32, 4, y), glm_tensor_1d(GLM_F32, 4, x),
               glm_tensor_1d(GLM_F32, 3, x));
    CHECK(be->status == GLM_ERR_SHAPE && strstr(be->err.msg, "add") != NULL);
    kt_expect_error(be, GLM_ERR_SHAPE, "add shape");
}

int main(void)
{
    glm_backend *be = kt_backend(0);
    check_table(be);
    check_memory(be);
    check_sticky(be);
    glm_backend_destroy(be);
    be = kt_backend(3);
    check_table(be);
    glm_backend_destroy(be);
    glm_backend *bad = (glm_backend *)1;
    glm_error err = {0};
    CHECK(glm_backend_cpu_create(-1, &bad, &err) == GLM_ERR_INVALID_ARG && bad == NULL);
    CHECK(glm_backend_create("cpu", 0, &be, &err) == GLM_OK && strcmp(be->name, "cpu") == 0);
    glm_backend_destroy(be);
    return test_finish("test_kernels_backend");
}
