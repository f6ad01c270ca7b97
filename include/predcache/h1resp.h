/*
 * h1resp: the HTTP/1.1 response reader, pure: bytes in, one response out (RFC 9112). Owns
 * the status line, the header fields it keeps, the body's framing and whether the
 * connection may carry another request. Never touches a socket, an event loop or a clock:
 * upstream feeds it what a model server connection received, the unit tests and the fuzz
 * target feed it byte strings split anywhere. Body bytes come back as spans of the input
 * (chunked framing taken off), never copied. It never consumes a byte past its response.
 *
 *   interim (1xx but 101)  read and dropped; the final response follows
 *   no body                the request was HEAD, or 204, 304
 *   Transfer-Encoding      chunked last: chunked (extensions and trailers read and
 *                          dropped); any other: the body runs until the connection closes.
 *                          Either way the connection is not reused after it.
 *   Content-Length         one value (a list of the same value is one), digits only
 *   neither                the body runs until the connection closes
 *   keep-alive             HTTP/1.1 unless Connection says close; HTTP/1.0 only with
 *                          Connection: keep-alive and a known length
 *
 * Headers kept are the end-to-end ones: none of the hop-by-hop ones, none the Connection
 * header names, no Content-Length unless the request was HEAD (its length describes a body
 * that never comes: the client's answer keeps it), the first PC_H1R_MAX_KEPT of the rest.
 * A line ends at LF (a CR before it is dropped). Obsolete line folding is refused.
 */
#ifndef PREDCACHE_H1RESP_H
#define PREDCACHE_H1RESP_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"
#include "predcache/http.h"

#define PC_H1R_MAX_HEAD 65536 /* status line and fields of one response, trailers too */
#define PC_H1R_MAX_LINE 4096  /* a chunk-size line */
#define PC_H1R_MAX_KEPT 256   /* header fields kept of one response */

enum pc_h1r_result {
    PC_H1R_MORE,  /* every byte given was consumed; the response goes on */
    PC_H1R_HEAD,  /* the final head is read: status, headers, length, keep_alive are set */
    PC_H1R_DATA,  /* *data, *dlen: body bytes (a span of the input) */
    PC_H1R_DONE,  /* the response is complete; bytes after *used are not part of it */
    PC_H1R_ERROR, /* err says why; the connection must close */
};

struct pc_h1resp {
    /* Read these once PC_H1R_HEAD came. */
    int status;
    struct pc_header *headers; /* owned here (pc_h1resp_take_headers), strings in text */
    size_t n_headers;
    int64_t length; /* the body's Content-Length; -1: chunked, until close, or none */
    int keep_alive; /* the connection may carry another request after this response */
    int got_bytes;  /* any byte of the response was read */
    char err[160];

    /* The reader's own. */
    int head_request;
    int state;
    int minor;
    int chunked, until_close, has_length, has_te, conn_close, conn_keep;
    uint64_t left; /* bytes of the body or of the current chunk still to come */
    size_t head_bytes;
    size_t cap;
    struct pc_buf line;   /* a line split across feeds */
    struct pc_buf conn;   /* the Connection header's elements */
    struct pc_arena text; /* the kept headers' strings (no buffer of its own: it moves) */
};

/* head_request: the request was HEAD (the response has no body whatever it says). */
void pc_h1resp_init(struct pc_h1resp *r, int head_request);
void pc_h1resp_release(struct pc_h1resp *r);
/*
 * Reads from p[0..n) (n may be 0: a body of nothing ends with DONE). *used: the bytes taken.
 * Feed again with what was not used until MORE (all used), DONE or ERROR.
 */
enum pc_h1r_result pc_h1resp_feed(struct pc_h1resp *r, const char *p, size_t n, size_t *used,
                                  const char **data, size_t *dlen);
/* The connection closed: DONE when the body runs until it closes, else ERROR. */
enum pc_h1r_result pc_h1resp_eof(struct pc_h1resp *r);
/* Moves the kept headers out: the array (the caller frees it) and the arena that holds
 * their strings, into *text (which must be empty; the caller releases it). */
struct pc_header *pc_h1resp_take_headers(struct pc_h1resp *r, size_t *n, struct pc_arena *text);

#endif
