/* The stream follower: a newer attempt restarts at chunk index 0 and is followed; tokens the client
 * already has are skipped while the new attempt agrees with them; a contradicting attempt is a
 * divergence; a missing chunk stops the live stream until the Result; stale attempts are ignored;
 * the Result completes the answer. */
#include "client/gateway/gw_follow.h"
#include "tests/testutil.h"

#include <string.h>

static glm_chunk chunk(uint32_t attempt, uint32_t index, const char *text, const int32_t *ids,
                       size_t n)
{
    return (glm_chunk){.id = "j",
                       .attempt = attempt,
                       .index = index,
                       .text = text,
                       .token_ids = ids,
                       .n_tokens = n};
}

/* Feeds c and appends what the follower says to send to *text / ids. */
static gw_follow_outcome feed(gw_follower *f, glm_chunk c, char *text, int32_t *ids, size_t *n_ids)
{
    gw_delta d;
    gw_follow_outcome o = gw_follower_on_chunk(f, &c, &d);
    if (o == GW_FOLLOW_OK) {
        strncat(text, d.text ? d.text : "", d.text_len);
        for (size_t i = 0; i < d.n_tokens; i++)
            ids[(*n_ids)++] = c.token_ids[d.first + i];
    }
    return o;
}

static void test_failover_same_answer(void)
{
    gw_follower f;
    gw_follower_init(&f);
    char text[256] = "";
    int32_t ids[64];
    size_t n = 0;
    const int32_t a[] = {1, 2}, b[] = {3}, c[] = {4, 5};
    CHECK(feed(&f, chunk(1, 0, "ab", a, 2), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 1, "c", b, 1), text, ids, &n) == GW_FOLLOW_OK);
    /* replica 1 dies; attempt 2 starts over with the same greedy tokens */
    const int32_t a2[] = {1, 2, 3}, b2[] = {4, 5};
    CHECK(feed(&f, chunk(2, 0, "abc", a2, 3), text, ids, &n) == GW_FOLLOW_OK);
    CHECK_MSG(strcmp(text, "abc") == 0 && n == 3, "nothing resent: '%s' %zu", text, n);
    CHECK(feed(&f, chunk(2, 1, "de", b2, 2), text, ids, &n) == GW_FOLLOW_OK);
    /* a late chunk of attempt 1 is ignored */
    CHECK(feed(&f, chunk(1, 2, "zz", c, 2), text, ids, &n) == GW_FOLLOW_OK);
    CHECK_MSG(strcmp(text, "abcde") == 0, "text '%s'", text);
    const int32_t want[] = {1, 2, 3, 4, 5};
    CHECK(n == 5 && memcmp(ids, want, sizeof want) == 0);
    CHECK(f.restarts == 1);
    const int32_t all[] = {1, 2, 3, 4, 5, 6};
    glm_result r = {.text = "abcdef", .token_ids = all, .n_tokens = 6};
    gw_delta d;
    CHECK(gw_follower_on_result(&f, &r, &d) == GW_FOLLOW_OK);
    CHECK(d.text_len == 1 && d.text[0] == 'f' && d.first == 5 && d.n_tokens == 1);
    gw_follower_free(&f);
}

static void test_divergence(void)
{
    gw_follower f;
    gw_follower_init(&f);
    char text[256] = "";
    int32_t ids[64];
    size_t n = 0;
    const int32_t a[] = {1, 2, 3};
    CHECK(feed(&f, chunk(1, 0, "abc", a, 3), text, ids, &n) == GW_FOLLOW_OK);
    const int32_t other[] = {1, 9};
    CHECK(feed(&f, chunk(2, 0, "ax", other, 2), text, ids, &n) == GW_FOLLOW_DIVERGED);
    gw_follower_free(&f);

    /* a Result shorter than what was sent, or different, diverges too */
    gw_follower_init(&f);
    n = 0;
    text[0] = '\0';
    CHECK(feed(&f, chunk(1, 0, "abc", a, 3), text, ids, &n) == GW_FOLLOW_OK);
    const int32_t shorter[] = {1, 2};
    glm_result r = {.text = "ab", .token_ids = shorter, .n_tokens = 2};
    gw_delta d;
    CHECK(gw_follower_on_result(&f, &r, &d) == GW_FOLLOW_DIVERGED);
    gw_follower_free(&f);
}

static void test_gap_waits_for_result(void)
{
    gw_follower f;
    gw_follower_init(&f);
    char text[256] = "";
    int32_t ids[64];
    size_t n = 0;
    const int32_t a[] = {1}, b[] = {2}, c[] = {3};
    CHECK(feed(&f, chunk(1, 0, "a", a, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 2, "c", c, 1), text, ids, &n) == GW_FOLLOW_OK); /* index 1 lost */
    CHECK(feed(&f, chunk(1, 3, "d", b, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK_MSG(strcmp(text, "a") == 0 && n == 1, "nothing after the gap: '%s'", text);
    const int32_t all[] = {1, 2, 3, 4};
    glm_result r = {.text = "abcd", .token_ids = all, .n_tokens = 4};
    gw_delta d;
    CHECK(gw_follower_on_result(&f, &r, &d) == GW_FOLLOW_OK);
    CHECK(d.text_len == 3 && memcmp(d.text, "bcd", 3) == 0 && d.first == 1 && d.n_tokens == 3);
    gw_follower_free(&f);
}

static void test_text_lags_tokens(void)
{
    /* a token ending inside a UTF-8 character: text comes a chunk later; a new attempt whose
     * text is still behind sends nothing twice */
    gw_follower f;
    gw_follower_init(&f);
    char text[256] = "";
    int32_t ids[64];
    size_t n = 0;
    const int32_t a[] = {7}, b[] = {8};
    CHECK(feed(&f, chunk(1, 0, "", a, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(n == 1 && text[0] == '\0');
    CHECK(feed(&f, chunk(1, 1, "\xc3\xa9", b, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(strcmp(text, "\xc3\xa9") == 0 && n == 2);
    CHECK(feed(&f, chunk(2, 0, "", a, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(strcmp(text, "\xc3\xa9") == 0 && n == 2);
    gw_follower_free(&f);
}

/* A job handed back by a draining replica keeps its attempt number (the hand-back is not blamed
 * on it): the next replica streams it again from chunk index 0 under the same attempt. That is a
 * restart to follow live, not a lost chunk (which stopped the stream until the Result). */
static void test_handed_back_same_attempt(void)
{
    gw_follower f;
    gw_follower_init(&f);
    char text[256] = "";
    int32_t ids[64];
    size_t n = 0;
    const int32_t a[] = {1, 2}, b[] = {3};
    CHECK(feed(&f, chunk(1, 0, "ab", a, 2), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 1, "c", b, 1), text, ids, &n) == GW_FOLLOW_OK);
    /* drained: the next replica starts over under attempt 1 */
    const int32_t a2[] = {1, 2, 3}, b2[] = {4, 5}, c2[] = {6};
    CHECK(feed(&f, chunk(1, 0, "abc", a2, 3), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 1, "de", b2, 2), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 2, "f", c2, 1), text, ids, &n) == GW_FOLLOW_OK);
    CHECK_MSG(strcmp(text, "abcdef") == 0 && n == 6, "streamed live: '%s' %zu ids", text, n);
    CHECK(!f.gap && f.restarts == 1);
    /* also after a gap (a chunk lost while Redis was away), then a hand-back */
    gw_follower_free(&f);
    gw_follower_init(&f);
    text[0] = '\0';
    n = 0;
    CHECK(feed(&f, chunk(1, 0, "ab", a, 2), text, ids, &n) == GW_FOLLOW_OK);
    CHECK(feed(&f, chunk(1, 2, "x", b, 1), text, ids, &n) == GW_FOLLOW_OK); /* index 1 lost */
    CHECK(f.gap);
    CHECK(feed(&f, chunk(1, 0, "abc", a2, 3), text, ids, &n) == GW_FOLLOW_OK);
    CHECK_MSG(strcmp(text, "abc") == 0 && n == 3 && !f.gap, "after a gap: '%s' %zu", text, n);
    gw_follower_free(&f);
}

int main(void)
{
    test_handed_back_same_attempt();
    test_failover_same_answer();
    test_divergence();
    test_gap_waits_for_result();
    test_text_lags_tokens();
    return test_finish("test_gw_follow");
}
