/*
 * decode: Content-Encoding of request bodies (see the header). zlib's inflate, fed the
 * whole body at once, with the output bounded as it grows: a small body that expands past
 * max stops there, whatever it claims.
 */
#include "predcache/decode.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#define CHUNK 65536

enum pc_coding pc_coding_of(const char *value)
{
    if (value == NULL)
        return PC_CODING_IDENTITY;
    const char *s = value + strspn(value, " \t");
    size_t n = strcspn(s, " \t,");
    const char *rest = s + n + strspn(s + n, " \t");
    if (*rest != '\0') /* several codings ("gzip, br"), or stray bytes */
        return PC_CODING_OTHER;
    if (n == 0 || (n == 8 && strncasecmp(s, "identity", 8) == 0))
        return PC_CODING_IDENTITY;
    if ((n == 4 && strncasecmp(s, "gzip", 4) == 0) || (n == 6 && strncasecmp(s, "x-gzip", 6) == 0))
        return PC_CODING_GZIP;
    if (n == 7 && strncasecmp(s, "deflate", 7) == 0)
        return PC_CODING_DEFLATE;
    return PC_CODING_OTHER;
}

static void empty(struct pc_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

/* One inflate over data with window_bits; the members loop for gzip. */
static enum pc_decode_result inflate_all(const char *data, size_t len, size_t max, int window_bits,
                                         int members, struct pc_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, window_bits) != Z_OK)
        return PC_DECODE_INVALID;
    enum pc_decode_result res = PC_DECODE_INVALID;
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = 0;
    size_t left = len;
    unsigned char buf[CHUNK];
    for (;;) {
        if (z.avail_in == 0 && left > 0) { /* uInt: feed at most 1 GB at a time */
            z.avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
            left -= z.avail_in;
        }
        z.next_out = buf;
        z.avail_out = sizeof buf;
        int rc = inflate(&z, Z_NO_FLUSH);
        size_t got = sizeof buf - z.avail_out;
        if (got > 0) {
            if (out->len + got > max) {
                res = PC_DECODE_TOO_LARGE;
                break;
            }
            if (pc_buf_append(out, (const char *)buf, got) != 0)
                break;
        }
        if (rc == Z_STREAM_END) {
            if (z.avail_in == 0 && left == 0) {
                res = PC_DECODE_OK;
                break;
            }
            if (!members || inflateReset(&z) != Z_OK) /* another gzip member follows */
                break;
            continue;
        }
        if (rc != Z_OK && !(rc == Z_BUF_ERROR && got > 0))
            break; /* a bad stream, or the input ended before the stream did */
    }
    inflateEnd(&z);
    return res;
}

enum pc_decode_result pc_decode_body(enum pc_coding c, const char *data, size_t len, size_t max,
                                     struct pc_buf *out)
{
    empty(out);
    switch (c) {
    case PC_CODING_IDENTITY:
        if (len > max)
            return PC_DECODE_TOO_LARGE;
        return pc_buf_append(out, data, len) == 0 ? PC_DECODE_OK : PC_DECODE_INVALID;
    case PC_CODING_GZIP:
        return inflate_all(data, len, max, 16 + MAX_WBITS, 1, out);
    case PC_CODING_DEFLATE: {
        enum pc_decode_result r = inflate_all(data, len, max, MAX_WBITS, 0, out);
        if (r != PC_DECODE_INVALID)
            return r;
        empty(out);
        return inflate_all(data, len, max, -MAX_WBITS, 0, out); /* raw deflate */
    }
    case PC_CODING_OTHER:
        break;
    }
    return PC_DECODE_INVALID;
}
