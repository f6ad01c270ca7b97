/*
 * decode: request bodies sent with a Content-Encoding (gzip, deflate), decoded so that the
 * key reads what the model server reads (TF Serving accepts gzip bodies). Owns the reading
 * of the header's value and the bounded inflate. Pure: zlib and memory only.
 */
#ifndef PREDCACHE_DECODE_H
#define PREDCACHE_DECODE_H

#include <stddef.h>

#include "predcache/buf.h"

enum pc_coding {
    PC_CODING_IDENTITY, /* no Content-Encoding, or "identity" */
    PC_CODING_GZIP,     /* "gzip", "x-gzip" */
    PC_CODING_DEFLATE,  /* "deflate": zlib-wrapped (RFC 9110 8.4.1.2), or raw as some send */
    PC_CODING_OTHER,    /* anything else, or several codings: not decoded */
};

/* The coding a Content-Encoding value names (NULL: none). Case and spaces do not matter. */
enum pc_coding pc_coding_of(const char *value);

enum pc_decode_result {
    PC_DECODE_OK = 0,
    PC_DECODE_INVALID,  /* not a valid stream of that coding (or trailing bytes) */
    PC_DECODE_TOO_LARGE /* more than max bytes once decoded */
};

/* Appends the decoded bytes of data to out (emptied first), at most max of them. gzip
 * bodies may hold several members, one after the other (RFC 1952). */
enum pc_decode_result pc_decode_body(enum pc_coding c, const char *data, size_t len, size_t max,
                                     struct pc_buf *out);

#endif
