/* common/base64.c: both modes against known encodings, every misuse refused, and a round trip of
 * every length 0..64 through an encoder written here. */
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
    return test_finish("test_base64");
}
