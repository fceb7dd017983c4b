/* Standard base64 (RFC 4648's alphabet, no whitespace), decoded in one place for the tokenizer's
 * tiktoken files and the gateway's image data URIs. */
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

#endif
