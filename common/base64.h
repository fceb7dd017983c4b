/* Standard base64 (RFC 4648's alphabet), decoded in one place for the tokenizer's tiktoken files
 * (no whitespace at all) and the gateway's image data URIs (line breaks allowed: some clients wrap
 * the text in 76-column lines, as MIME does). */
#ifndef GLM4V_BASE64_H
#define GLM4V_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes in[0..n) into out (room for n / 4 * 3 + 3 bytes) and sets *out_len. padded: the text
 * must be whole groups of four, '=' only as the last one or two characters (tiktoken files);
 * otherwise the final '=' may be left out, as clients do in data URIs. False on a character
 * outside the alphabet, a misplaced '=' or an impossible length. */
bool glm_base64_decode(const char *in, size_t n, bool padded, uint8_t *out, size_t *out_len);

/* As glm_base64_decode without padded, but CR and LF (only those: no spaces, no tabs) may stand
 * anywhere and are skipped, as in RFC 2045's wrapped lines. out needs room for
 * (n - line breaks) / 4 * 3 + 3 bytes. */
bool glm_base64_decode_lines(const char *in, size_t n, uint8_t *out, size_t *out_len);

/* How many CR and LF characters in[0..n) holds (to size the output before decoding). */
size_t glm_base64_count_breaks(const char *in, size_t n);

#endif
