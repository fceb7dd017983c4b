/* Unit tests: block allocator and block tables, the prompt layout's splice/position rule, and
 * step-plan validation. */
#include <string.h>

#include "coordinator/text/prompt_layout.h"
#include "tests/testutil.h"
#include "worker/kv_cache.h"
#include "worker/step_plan.h"

static void test_allocator(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 8, NULL) == GLM_OK);
    glm_block_table t1 = {0}, t2 = {0};
    CHECK(glm_block_table_reserve(&t1, &a, 4, 10) == 0); /* 3 blocks */
    CHECK(t1.n_blocks == 3 && a.n_free == 5);
    t1.n_tokens = 10;
    CHECK(glm_block_table_reserve(&t1, &a, 4, 2) == 0); /* fits in block 3 */
    CHECK(t1.n_blocks == 3);
    t1.n_tokens = 12;
    CHECK(glm_block_table_reserve(&t1, &a, 4, 1) == 0);
    CHECK(t1.n_blocks == 4 && a.n_free == 4);
    CHECK(glm_block_table_reserve(&t2, &a, 4, 17) == -1); /* needs 5, 4 free: takes none */
    CHECK(t2.n_blocks == 0 && a.n_free == 4);
    CHECK(glm_block_table_reserve(&t2, &a, 4, 16) == 0);
    CHECK(a.n_free == 0);
    /* all 8 blocks distinct */
    int seen[8] = {0};
    for (int i = 0; i < t1.n_blocks; i++)
        seen[t1.blocks[i]]++;
    for (int i = 0; i < t2.n_blocks; i++)
        seen[t2.blocks[i]]++;
    for (int i = 0; i < 8; i++)
        CHECK(seen[i] == 1);
    CHECK(glm_block_table_slot(&t1, 4, 5) == t1.blocks[1] * 4 + 1);
    glm_block_table_release(&t1, &a);
    CHECK(a.n_free == 4 && t1.n_blocks == 0);
    glm_block_table_release(&t2, &a);
    CHECK(a.n_free == 8);
    glm_block_table_free(&t1);
    glm_block_table_free(&t2);
    glm_block_allocator_free(&a);
}

static void test_layout(void)
{
    /* ids: a b BOI PAD EOI c ; image of 5 rows (boi, 3 patches, eoi) */
    int32_t ids[] = {1, 2, 90, 80, 91, 3};
    glm_prompt_layout l;
    CHECK(glm_prompt_layout_build(ids, 6, 90, 91, 80, 5, &l, NULL) == GLM_OK);
    CHECK(l.n_rows == 8 && l.n_ids == 6 && l.n_images == 1);
    int32_t want_pos[] = {0, 1, 2, 3, 3, 3, 4, 5};
    int32_t want_tok[] = {1, 2, -1, -1, -1, -1, -1, 3};
    int32_t want_row[] = {-1, -1, 0, 1, 2, 3, 4, -1};
    for (int i = 0; i < 8; i++) {
        CHECK(l.positions[i] == want_pos[i]);
        CHECK(l.token_ids[i] == want_tok[i]);
        CHECK(l.image_row[i] == want_row[i]);
    }
    glm_prompt_layout_free(&l);
    int32_t bad1[] = {1, 90, 80};       /* boi without eoi */
    int32_t bad2[] = {1, 91, 3};        /* stray eoi */
    int32_t bad3[] = {1, 90, 2, 91, 3}; /* wrong pad */
    glm_error err = {0};
    CHECK(glm_prompt_layout_build(bad1, 3, 90, 91, 80, 5, &l, &err) == GLM_ERR_INVALID_ARG);
    CHECK(glm_prompt_layout_build(bad2, 3, 90, 91, 80, 5, &l, &err) == GLM_ERR_INVALID_ARG);
    CHECK(glm_prompt_layout_build(bad3, 5, 90, 91, 80, 5, &l, &err) == GLM_ERR_INVALID_ARG);
}

static void test_plan_validate(void)
{
    glm_step_plan p = {0};
    glm_error err = {0};
    CHECK(glm_step_plan_resize(&p, 2, 3, 4, 2, 0, &err) == GLM_OK);
    p.q_start[0] = 0, p.q_start[1] = 2, p.q_start[2] = 3;
    p.ctx_len[0] = 5, p.ctx_len[1] = 1;
    for (int i = 0; i < 8; i++)
        p.block_table[i] = i % 4;
    for (int t = 0; t < 3; t++)
        p.token_ids[t] = 1, p.positions[t] = t, p.slots[t] = t, p.image_rows[t] = -1;
    p.logit_rows[0] = 1, p.logit_rows[1] = 2;
    /* block size 4, 8 blocks */
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 0, 4, &err) == GLM_OK);
    p.slots[1] = 32;
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 0, 4, &err) == GLM_ERR_INVALID_ARG);
    p.slots[1] = 1;
    p.block_table[1] = 9;
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 0, 4, &err) == GLM_ERR_INVALID_ARG);
    p.block_table[1] = 1;
    p.ctx_len[0] = 1; /* shorter than its 2 queries */
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 0, 4, &err) == GLM_ERR_INVALID_ARG);
    p.ctx_len[0] = 5;
    p.logit_rows[1] = 3;
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 0, 4, &err) == GLM_ERR_INVALID_ARG);
    p.logit_rows[1] = 2;
    p.image_rows[0] = 5;
    CHECK(glm_step_plan_validate(&p, 16, 4, 4, 4, 8, 5, 4, &err) == GLM_ERR_INVALID_ARG);
    p.image_rows[0] = -1;
    CHECK(glm_step_plan_validate(&p, 2, 4, 4, 4, 8, 0, 4, &err) == GLM_ERR_LIMIT);
    glm_step_plan_free(&p);
}

int main(void)
{
    test_allocator();
    test_layout();
    test_plan_validate();
    return test_finish("kv_cache");
}
