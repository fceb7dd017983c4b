/* common/base64.c: both modes against known encodings, every misuse refused, and a round trip of
 * every length 0..64 through an encoder written here; the line-break-tolerant entry point (data
 * URIs wrapped as MIME wraps them) on the same round trips, with CR/LF at every place. */
#include <string.h>

#include "common/base64.h"
#include "tests/testutil.h"

static size_t encode(const uint8_t *in, size_t n, bool pad, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t k = 0; k < 4; k++)
            if (k < chars)
                out[o++] = alphabet[(v >> (18 - 6 * k)) & 63];
            else if (pad)
                out[o++] = '=';
    }
    return o;
}

/* Copies text[0..n) into out with brk inserted every `every` characters; returns the length. */
static size_t wrap(const char *text, size_t n, size_t every, const char *brk, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && i % every == 0)
            for (const char *b = brk; *b; b++)
                out[o++] = *b;
        out[o++] = text[i];
    }
    return o;
}

static void test_lines(const uint8_t *data, size_t max_len)
{
    uint8_t out[128];
    size_t n = 99;
    CHECK(glm_base64_decode_lines("aGVs\r\nbG8=\r\n", 12, out, &n) && n == 5 &&
          !memcmp(out, "hello", 5));
    CHECK(glm_base64_decode_lines("aGVsbG8", 7, out, &n) && n == 5);
    /* a break between the two '=' and breaks alone around them */
    CHECK(glm_base64_decode_lines("aA=\n=\n", 6, out, &n) && n == 1 && out[0] == 'h');
    CHECK(glm_base64_decode_lines("\r\n", 2, out, &n) && n == 0);
    /* the strict entry point still refuses every break */
    CHECK(!glm_base64_decode("aGVs\r\nbG8=", 10, false, out, &n));
    CHECK(!glm_base64_decode("aGVsbG8=\n", 9, false, out, &n));
    /* only CR and LF: other whitespace, and every misuse of the strict mode, still refused */
    static const char *const bad[] = {
        "aGV sbG8", "aGVs\tbG8=", "aGVs\vbG8=", "aGVs\fbG8=", "a",    "a\r\n",
        "a===",     "aG=\ns",     "aGk==",      "=aGk",       "aGk-", "aG==\naG=="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(!glm_base64_decode_lines(bad[i], strlen(bad[i]), out, &n), "'%s' accepted",
                  bad[i]);
    /* every length, padded or not, wrapped at 76 (RFC 2045), 4, 3 and 1 columns by CRLF or LF:
     * breaks inside groups and between the '=' included */
    char text[100], wrapped[400];
    static const size_t columns[] = {76, 4, 3, 1};
    for (size_t len = 0; len <= max_len; len++)
        for (int pad = 0; pad < 2; pad++)
            for (size_t c = 0; c < sizeof columns / sizeof *columns; c++)
                for (int crlf = 0; crlf < 2; crlf++) {
                    size_t t = encode(data, len, pad, text);
                    size_t w = wrap(text, t, columns[c], crlf ? "\r\n" : "\n", wrapped);
                    if (crlf) wrapped[w++] = '\r', wrapped[w++] = '\n'; /* a final break too */
                    CHECK_MSG(glm_base64_count_breaks(wrapped, w) == w - t, "breaks %zu", len);
                    bool ok = glm_base64_decode_lines(wrapped, w, out, &n);
                    CHECK_MSG(ok && n == len && !memcmp(out, data, len),
                              "length %zu pad %d columns %zu crlf %d", len, pad, columns[c], crlf);
                }
}

int main(void)
{
    uint8_t out[128];
    size_t n = 99;
    CHECK(glm_base64_decode("aGVsbG8=", 8, true, out, &n) && n == 5 && !memcmp(out, "hello", 5));
    CHECK(glm_base64_decode("aGk=", 4, true, out, &n) && n == 2 && !memcmp(out, "hi", 2));
    CHECK(glm_base64_decode("aA==", 4, true, out, &n) && n == 1 && out[0] == 'h');
    CHECK(glm_base64_decode("+/+/", 4, true, out, &n) && n == 3 && out[0] == 0xfb &&
          out[2] == 0xbf);
    /* padded (tiktoken files): whole groups only */
    CHECK(!glm_base64_decode("aGVsbG8", 7, true, out, &n));
    CHECK(!glm_base64_decode("", 0, true, out, &n));
    /* both modes: bad characters, misplaced or surplus padding, impossible lengths */
    for (int padded = 0; padded < 2; padded++) {
        static const char *const bad[] = {"a",     "aGV sbG8", "aGVs\n", "a===",     "aG=s",
                                          "aGk==", "=aGk",     "aGk-",   "aG==aG==", "aGVsb"};
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
            CHECK_MSG(!glm_base64_decode(bad[i], strlen(bad[i]), padded, out, &n),
                      "'%s' accepted (padded %d)", bad[i], padded);
    }
    /* the lenient mode takes both spellings */
    CHECK(glm_base64_decode("aGk", 3, false, out, &n) && n == 2);
    CHECK(glm_base64_decode("", 0, false, out, &n) && n == 0);
    uint8_t data[64];
    char text[100];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof data; len++)
        for (int pad = 0; pad < 2; pad++) {
            size_t t = encode(data, len, pad, text);
            bool ok = glm_base64_decode(text, t, false, out, &n);
            CHECK_MSG(ok && n == len && !memcmp(out, data, len), "length %zu pad %d", len, pad);
            if (pad && len > 0)
                CHECK_MSG(glm_base64_decode(text, t, true, out, &n) && n == len, "padded %zu", len);
        }
    test_lines(data, sizeof data);
    return test_finish("test_base64");
}
