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

static bool line_break(char c)
{
    return c == '\r' || c == '\n';
}

/* The one decoder behind both entry points. breaks: CR and LF are skipped wherever they stand
 * (between the '=' too), and every length rule counts only the other characters. */
static bool decode(const char *in, size_t n, bool padded, bool breaks, uint8_t *out,
                   size_t *out_len)
{
    size_t pad = 0;
    while (n > 0 && ((breaks && line_break(in[n - 1])) || (pad < 2 && in[n - 1] == '='))) {
        if (in[n - 1] == '=') pad++;
        n--;
    }
    size_t chars = n; /* alphabet characters before the padding */
    if (breaks)
        for (size_t i = 0; i < n; i++)
            chars -= line_break(in[i]);
    /* a lone sextet is not a byte; padding, when there is any, completes the last group */
    if (chars % 4 == 1 || (pad && (chars + pad) % 4 != 0)) return false;
    if (padded && (chars == 0 || (chars + pad) % 4 != 0)) return false;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (breaks && line_break(in[i])) continue;
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

bool glm_base64_decode(const char *in, size_t n, bool padded, uint8_t *out, size_t *out_len)
{
    return decode(in, n, padded, false, out, out_len);
}

bool glm_base64_decode_lines(const char *in, size_t n, uint8_t *out, size_t *out_len)
{
    return decode(in, n, false, true, out, out_len);
}

size_t glm_base64_count_breaks(const char *in, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += line_break(in[i]);
    return k;
}
