/*
 * fuzz_decode: pc_decode_body on arbitrary bytes, and on the input compressed.
 *
 * Input: byte 0 picks the coding (bits 0-1) and the bound (bits 2-7: max = 64 << k bytes
 * of output, up to 4 MB), the rest is the body.
 * Invariants:
 *   - only body[0..len) is read (an exact-size heap copy); the result is one of the three
 *   - the output never passes max; TOO_LARGE only when it would have
 *   - identity: OK with the same bytes exactly when they fit
 *   - the body gzip'd, zlib-wrapped and raw-deflated by zlib decodes back to the body
 *     (when it fits), each with its coding
 */
#include "fuzz.h"

#include <string.h>

#include <zlib.h>

#include "predcache/decode.h"

static size_t squeeze(const char *data, size_t len, int bits, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum pc_coding coding = (enum pc_coding)(data[0] & 3);
    unsigned k = (data[0] >> 2) % 17;
    size_t max = (size_t)64 << k;
    size_t len = size - 1;
    char *body = fuzz_dup(data + 1, len);
    struct pc_buf out;
    pc_buf_init(&out);
    enum pc_decode_result r = pc_decode_body(coding, body, len, max, &out);
    FUZZ_CHECK(r == PC_DECODE_OK || r == PC_DECODE_INVALID || r == PC_DECODE_TOO_LARGE);
    FUZZ_CHECK(out.len <= max);
    if (coding == PC_CODING_IDENTITY) {
        FUZZ_CHECK(r == (len <= max ? PC_DECODE_OK : PC_DECODE_TOO_LARGE));
        FUZZ_CHECK(r != PC_DECODE_OK || (out.len == len && memcmp(out.data, body, len) == 0));
    }
    if (coding == PC_CODING_OTHER)
        FUZZ_CHECK(r == PC_DECODE_INVALID);
    size_t cap = len + len / 100 + 1024;
    unsigned char *z = malloc(cap);
    if (z == NULL)
        abort();
    const struct {
        int bits;
        enum pc_coding coding;
    } ways[] = {{31, PC_CODING_GZIP}, {15, PC_CODING_DEFLATE}, {-15, PC_CODING_DEFLATE}};
    for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
        size_t n = squeeze(body, len, ways[w].bits, z, cap);
        r = pc_decode_body(ways[w].coding, (const char *)z, n, max, &out);
        if (len <= max)
            FUZZ_CHECK(r == PC_DECODE_OK && out.len == len &&
                       (len == 0 || memcmp(out.data, body, len) == 0));
        else
            FUZZ_CHECK(r == PC_DECODE_TOO_LARGE);
    }
    free(z);
    pc_buf_release(&out);
    free(body);
    return 0;
}
