/* Unit tests: block allocator and block tables, the prefix cache (hash chain hits and misses,
 * divergence inside a block, image rows, reference counts, LRU eviction, shared blocks never
 * freed), the prompt layout's splice/position rule, and step-plan validation. */
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

/* ---- prefix cache ---- */

#define BS 4

static void text_rows(glm_row_key *rows, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        rows[i] = glm_row_key_token(ids[i]);
}

/* Consistency of the allocator's books: n_free is the empty stack plus the evictable list, every
 * block is in exactly one of {held, empty, evictable}, and n_cached counts registered blocks. */
static void check_books(const glm_block_allocator *a)
{
    int n_lru = 0, n_held = 0, n_reg = 0;
    int *where = calloc((size_t)a->n_blocks, sizeof(int));
    for (int b = a->lru_head; b >= 0 && n_lru <= a->n_blocks; b = a->lru_next[b]) {
        n_lru++;
        where[b]++;
        CHECK(a->refs[b] == 0 && a->parent[b] != -2);
    }
    for (int i = 0; i < a->n_empty; i++) {
        where[a->free_list[i]]++;
        CHECK(a->refs[a->free_list[i]] == 0);
        CHECK(!a->hash || a->parent[a->free_list[i]] == -2);
    }
    for (int b = 0; b < a->n_blocks; b++) {
        if (a->refs[b] > 0) n_held++, where[b]++;
        if (a->hash && a->parent[b] != -2) n_reg++;
        CHECK_MSG(where[b] == 1, "block %d in %d places", b, where[b]);
    }
    CHECK(a->n_free == a->n_empty + n_lru);
    CHECK(n_held + a->n_free == a->n_blocks);
    CHECK(n_reg == a->n_cached);
    free(where);
}

/* Runs a "sequence": match what is cached, reserve the rest, pretend the rows were computed and
 * register the full blocks. Returns the rows reused. */
static int run_prompt(glm_block_allocator *a, glm_block_table *t, const glm_row_key *rows, int n)
{
    int reused = glm_block_table_match_prefix(t, a, rows, n - 1);
    CHECK(reused >= 0 && reused % BS == 0);
    CHECK(glm_block_table_reserve(t, a, BS, n - reused) == 0);
    t->n_tokens = n;
    glm_block_table_register(t, a, rows, n);
    return reused;
}

static void test_prefix_chain(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 16, NULL) == GLM_OK);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK);
    int32_t ids1[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};          /* 2 full blocks + 3 */
    int32_t ids2[] = {1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23, 24}; /* shares 2 blocks */
    int32_t ids3[] = {1, 2, 3, 4, 5, 6, 9, 8, 9, 10, 11};          /* diverges inside block 1 */
    int32_t ids4[] = {9, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};          /* same blocks 1.., other root */
    glm_row_key r1[11], r2[13], r3[11], r4[11];
    text_rows(r1, ids1, 11), text_rows(r2, ids2, 13), text_rows(r3, ids3, 11);
    text_rows(r4, ids4, 11);

    glm_block_table t1 = {0}, t2 = {0}, t3 = {0}, t4 = {0};
    CHECK(run_prompt(&a, &t1, r1, 11) == 0); /* cold */
    CHECK(a.n_cached == 2 && t1.n_hashed == 2 && t1.n_blocks == 3);
    check_books(&a);
    CHECK(glm_prefix_probe(&a, r2, 12) == 2);
    CHECK(run_prompt(&a, &t2, r2, 13) == 8); /* both full blocks reused */
    CHECK(t2.blocks[0] == t1.blocks[0] && t2.blocks[1] == t1.blocks[1]);
    CHECK(a.refs[t1.blocks[0]] == 2 && a.refs[t1.blocks[1]] == 2);
    CHECK(t2.blocks[2] != t1.blocks[2]);
    CHECK(a.n_cached == 3); /* t2's third block (20..23) is full now */
    check_books(&a);
    /* divergence inside a block: only the block before it is shared */
    CHECK(run_prompt(&a, &t3, r3, 11) == 4);
    CHECK(t3.blocks[0] == t1.blocks[0] && t3.blocks[1] != t1.blocks[1]);
    CHECK(a.refs[t1.blocks[0]] == 3);
    /* equal rows after another first block: the chain differs, nothing is shared */
    CHECK(run_prompt(&a, &t4, r4, 11) == 0);
    for (int i = 0; i < t4.n_blocks; i++)
        CHECK(t4.blocks[i] != t1.blocks[0] && t4.blocks[i] != t1.blocks[1]);
    check_books(&a);

    /* a whole prompt that ends on a block edge: the last block is fed again, not shared, so the
     * step has a row to take logits from */
    glm_block_table t5 = {0};
    CHECK(run_prompt(&a, &t5, r1, 8) == 4);
    /* the twin rule: t5 computed its second block again (reused 4 rows only), and registering it
     * swapped in t1's equal copy, its own block going back to the empty ones */
    CHECK(t5.blocks[1] == t1.blocks[1] && a.refs[t1.blocks[1]] == 3);
    check_books(&a);

    /* releasing keeps registered blocks findable and unregistered ones empty */
    int free_before = a.n_free;
    glm_block_table_release(&t1, &a);
    glm_block_table_release(&t2, &a);
    glm_block_table_release(&t3, &a);
    glm_block_table_release(&t4, &a);
    glm_block_table_release(&t5, &a);
    CHECK(a.n_free == 16 && a.n_free > free_before);
    CHECK(glm_prefix_probe(&a, r2, 13) == 3);
    CHECK(glm_prefix_probe(&a, r4, 11) == 2);
    check_books(&a);
    glm_block_allocator_drop_cached(&a);
    CHECK(a.n_cached == 0 && a.n_empty == 16 && glm_prefix_probe(&a, r2, 13) == 0);
    check_books(&a);
    glm_block_table_free(&t1), glm_block_table_free(&t2), glm_block_table_free(&t3);
    glm_block_table_free(&t4), glm_block_table_free(&t5);
    glm_block_allocator_free(&a);
}

/* Image rows match on the image's content hash and the row index, so the same picture with other
 * questions is reused, another picture with the same ids is not; each image of a prompt is keyed
 * by its own hash. */
static void test_prefix_images(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 32, NULL) == GLM_OK);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK);
    /* 2 text rows, 8 rows of image A, 2 text rows, 8 rows of image B, then a question */
    glm_row_key q1[24], q2[24], q3[24];
    for (int i = 0; i < 24; i++) {
        if (i >= 2 && i < 10)
            q1[i] = glm_row_key_image(0x1111, 0xaaaa, i - 2);
        else if (i >= 12 && i < 20)
            q1[i] = glm_row_key_image(0x2222, 0xbbbb, i - 12);
        else
            q1[i] = glm_row_key_token(100 + i);
    }
    memcpy(q2, q1, sizeof(q1));
    q2[22] = glm_row_key_token(7); /* another question */
    memcpy(q3, q1, sizeof(q1));
    for (int i = 12; i < 20; i++) /* other second image, same ids around it */
        q3[i] = glm_row_key_image(0x2222, 0xbbbc, i - 12);
    glm_block_table t1 = {0}, t2 = {0}, t3 = {0};
    CHECK(run_prompt(&a, &t1, q1, 24) == 0);
    CHECK(run_prompt(&a, &t2, q2, 24) == 20); /* blocks 0..4; block 5 holds the question */
    CHECK(run_prompt(&a, &t3, q3, 24) == 12); /* up to the second image's block */
    /* rows of the same image at other indices are other rows */
    glm_row_key q4[8];
    memcpy(q4, q1, sizeof(q4));
    q4[5] = glm_row_key_image(0x1111, 0xaaaa, 4);
    CHECK(glm_prefix_probe(&a, q4, 8) == 1);
    /* a text row never matches an image row whatever its id */
    q4[5] = glm_row_key_token(-1 + 0);
    CHECK(glm_prefix_probe(&a, q4, 8) == 1);
    check_books(&a);
    glm_block_table_release(&t1, &a);
    glm_block_table_release(&t2, &a);
    glm_block_table_release(&t3, &a);
    check_books(&a);
    glm_block_table_free(&t1), glm_block_table_free(&t2), glm_block_table_free(&t3);
    glm_block_allocator_free(&a);
}

/* Eviction: cached blocks nobody uses are taken only when no empty block is left, least recently
 * released first and a chain's tail before its head; blocks in use are never taken. */
static void test_prefix_eviction(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 8, NULL) == GLM_OK);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK);
    int32_t ids[3][13];
    glm_row_key rows[3][13];
    for (int p = 0; p < 3; p++) {
        for (int i = 0; i < 13; i++)
            ids[p][i] = 1000 * (p + 1) + i;
        text_rows(rows[p], ids[p], 13);
    }
    glm_block_table t[3] = {{0}};
    CHECK(run_prompt(&a, &t[0], rows[0], 13) == 0); /* 4 blocks, 3 registered */
    glm_block_table_release(&t[0], &a);
    CHECK(a.n_free == 8 && a.n_cached == 3 && a.n_empty == 5);
    CHECK(run_prompt(&a, &t[1], rows[1], 13) == 0); /* takes 4 of the 5 empty ones */
    CHECK(a.n_cached == 6 && a.n_empty == 1 && a.evictions == 0);
    CHECK(glm_prefix_probe(&a, rows[0], 13) == 3);
    /* prompt 2 needs 4 blocks: the empty one, then prompt 0's chain from its tail */
    CHECK(run_prompt(&a, &t[2], rows[2], 13) == 0);
    CHECK(a.evictions == 3);
    CHECK(glm_prefix_probe(&a, rows[0], 13) == 0);
    CHECK(glm_prefix_probe(&a, rows[1], 13) == 3); /* in use: untouched */
    check_books(&a);
    /* everything is held: an allocation fails and takes nothing */
    int32_t got[2];
    CHECK(glm_block_alloc(&a, 1, got) == -1);
    /* shared blocks stay as long as one holder does */
    glm_block_table extra = {0};
    CHECK(glm_block_table_match_prefix(&extra, &a, rows[1], 12) == 12);
    glm_block_table_release(&t[1], &a);
    CHECK(a.n_free == 1); /* only t[1]'s unregistered last block */
    CHECK(glm_block_alloc(&a, 2, got) == -1);
    CHECK(glm_block_alloc(&a, 1, got) == 0);
    CHECK(glm_prefix_probe(&a, rows[1], 13) == 3);
    glm_block_release(&a, 1, got);
    check_books(&a);
    /* partial eviction of a chain: release prompt 1 (head released last, so evicted last) and
     * take two blocks: the chain's last two go, its first block still matches */
    glm_block_table_release(&extra, &a);
    glm_block_table_release(&t[2], &a);
    int32_t take3[4];
    CHECK(a.n_empty == 1 + 1);
    CHECK(glm_block_alloc(&a, 4, take3) == 0); /* 2 empty + 2 evicted */
    check_books(&a);
    int left1 = glm_prefix_probe(&a, rows[1], 13), left2 = glm_prefix_probe(&a, rows[2], 13);
    CHECK_MSG(left1 == 1 && left2 == 3, "left %d %d", left1, left2);
    glm_block_release(&a, 4, take3);
    check_books(&a);
    for (int p = 0; p < 3; p++)
        glm_block_table_free(&t[p]);
    glm_block_table_free(&extra);
    glm_block_allocator_free(&a);
}

/* A block registered after a parent that was since evicted and refilled with other content is
 * not found through the parent's new content (the parent's generation moved on). */
static void test_prefix_stale_parent(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 3, NULL) == GLM_OK);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK);
    int32_t p_ids[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, q_ids[] = {50, 51, 52, 53, 5, 6, 7, 8, 9};
    glm_row_key p[9], q[9];
    text_rows(p, p_ids, 9), text_rows(q, q_ids, 9);
    glm_block_table t = {0}, u = {0};
    CHECK(run_prompt(&a, &t, p, 9) == 0); /* X0 = {1..4}, X1 = {5..8} registered, X2 partial */
    int32_t x0 = t.blocks[0], x1 = t.blocks[1];
    glm_block_table_release(&t, &a);
    CHECK(glm_block_table_match_prefix(&t, &a, p, 8) == 8);
    glm_block_release(&a, 1, &x0); /* keep X1 held, let X0 go */
    int32_t x2;
    CHECK(glm_block_alloc(&a, 1, &x2) == 0 && x2 != x0 && x2 != x1); /* the empty one */
    CHECK(run_prompt(&a, &u, q, 4) == 0);
    CHECK(u.blocks[0] == x0 && a.evictions == 1); /* X0 now holds {50..53} */
    CHECK(glm_prefix_probe(&a, q, 9) == 1);       /* X1's rows follow, but not after this X0 */
    CHECK(glm_prefix_probe(&a, p, 9) == 0);
    check_books(&a);
    glm_block_release(&a, 1, &x1);
    glm_block_release(&a, 1, &x2);
    glm_block_table_release(&u, &a);
    CHECK(a.n_free == 3);
    glm_block_table_free(&t), glm_block_table_free(&u);
    glm_block_allocator_free(&a);
}

/* Random sequences over a small vocabulary and a tight cache: the books always add up, a reused
 * block's recorded rows equal the rows that reuse it, and a block is never handed out while held.
 */
static void test_prefix_random(void)
{
    enum { N_BLOCKS = 24, N_SEQ = 6 };
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, N_BLOCKS, NULL) == GLM_OK);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK);
    test_rng rng;
    test_rng_seed(&rng, 16);
    glm_block_table t[N_SEQ] = {{0}};
    glm_row_key rows[N_SEQ][40];
    int live[N_SEQ] = {0};
    int reused_total = 0;
    for (int iter = 0; iter < 3000; iter++) {
        int k = test_rng_int(&rng, 0, N_SEQ - 1);
        if (live[k]) {
            glm_block_table_release(&t[k], &a);
            live[k] = 0;
        } else {
            int n = test_rng_int(&rng, 2, 40);
            for (int i = 0; i < n; i++) /* a few shared openings, then noise */
                rows[k][i] = i < 16 ? glm_row_key_token(test_rng_int(&rng, 0, 1) * 100 + i / 3)
                                    : glm_row_key_token(test_rng_int(&rng, 0, 5));
            int reused = glm_block_table_match_prefix(&t[k], &a, rows[k], n - 1);
            CHECK(reused >= 0 && reused < n);
            for (int b = 0; b < reused / BS; b++)
                CHECK(!memcmp(a.rows + (size_t)t[k].blocks[b] * BS, rows[k] + b * BS,
                              sizeof(glm_row_key) * BS));
            if (glm_block_table_reserve(&t[k], &a, BS, n - reused) != 0) {
                glm_block_table_release(&t[k], &a);
                continue;
            }
            for (int j = 0; j < N_SEQ; j++) /* no block of k is another's unless registered */
                if (j != k && live[j])
                    for (int x = 0; x < t[k].n_blocks; x++)
                        for (int y = 0; y < t[j].n_blocks; y++)
                            if (t[k].blocks[x] == t[j].blocks[y])
                                CHECK(x < t[k].n_hashed && a.refs[t[k].blocks[x]] >= 2);
            t[k].n_tokens = n;
            glm_block_table_register(&t[k], &a, rows[k], n);
            live[k] = 1;
            reused_total += reused;
        }
        if (iter % 97 == 0) check_books(&a);
    }
    CHECK(reused_total > 0 && a.evictions > 0);
    check_books(&a);
    for (int k = 0; k < N_SEQ; k++) {
        if (live[k]) glm_block_table_release(&t[k], &a);
        glm_block_table_free(&t[k]);
    }
    CHECK(a.n_free == N_BLOCKS);
    glm_block_allocator_free(&a);
}

/* Without enable_prefix nothing is ever registered or matched. */
static void test_prefix_off(void)
{
    glm_block_allocator a;
    CHECK(glm_block_allocator_init(&a, 8, NULL) == GLM_OK);
    int32_t ids[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    glm_row_key rows[9];
    text_rows(rows, ids, 9);
    glm_block_table t = {0}, u = {0};
    CHECK(run_prompt(&a, &t, rows, 9) == 0);
    CHECK(run_prompt(&a, &u, rows, 9) == 0);
    CHECK(a.n_cached == 0 && a.n_free == 2);
    glm_block_table_release(&t, &a);
    glm_block_table_release(&u, &a);
    CHECK(a.n_free == 8 && a.n_empty == 8);
    /* turning it on later: a block size is needed, and a second call changes nothing */
    glm_error err = {0};
    CHECK(glm_block_allocator_enable_prefix(&a, 0, &err) == GLM_ERR_INVALID_ARG && !a.hash);
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK && a.hash);
    glm_row_key *keys = a.rows;
    CHECK(glm_block_allocator_enable_prefix(&a, BS, NULL) == GLM_OK && a.rows == keys);
    CHECK(run_prompt(&a, &t, rows, 9) == 0 && run_prompt(&a, &u, rows, 9) == 8);
    glm_block_table_release(&t, &a);
    glm_block_table_release(&u, &a);
    check_books(&a);
    glm_block_table_free(&t), glm_block_table_free(&u);
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
    test_prefix_chain();
    test_prefix_images();
    test_prefix_eviction();
    test_prefix_stale_parent();
    test_prefix_random();
    test_prefix_off();
    test_layout();
    test_plan_validate();
    return test_finish("kv_cache");
}
