#include "common/base64.h"

static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool glm_base64_decode(const char *in, size_t n, bool padded, uint8_t *out, size_t *out_len)
{
    size_t pad = 0;
    while (n > 0 && pad < 2 && in[n - 1] == '=')
        n--, pad++;
    /* a lone sextet is not a byte; padding, when there is any, completes the last group */
    if (n % 4 == 1 || (pad && (n + pad) % 4 != 0)) return false;
    if (padded && (n == 0 || (n + pad) % 4 != 0)) return false;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = sextet((unsigned char)in[i]);
        if (v < 0) return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return true;
}
