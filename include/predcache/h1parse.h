/*
 * h1parse: the HTTP/1.1 request reader, pure: bytes in, one request out. Owns the request
 * line, the header fields, the body's framing (Content-Length; chunked with extensions and
 * trailers) and the limits on each (RFC 9112). Never touches a socket, an event loop or a
 * clock: http.c feeds it what a connection received, the unit tests and the fuzz target
 * feed it byte strings split anywhere. It never consumes a byte past the request it reads,
 * so a pipelined request's bytes stay with the caller.
 *
 * Framing headers are read as lists, however they are split across lines (RFC 9110 5.3):
 *   Transfer-Encoding  exactly "chunked" (one element, any case) reads a chunked body;
 *                      chunked anywhere but last, an empty element, Content-Length too, or
 *                      an HTTP/1.0 request: 400; any other coding: 501.
 *   Content-Length     one element of digits, on one line: "5, 5" or a second line (even
 *                      the same value) is 400; over max_body_bytes: 413.
 *   Connection         "close" in any element closes; HTTP/1.0 keeps alive on "keep-alive".
 *   Expect             every element must be "100-continue", else 417.
 * A line ends at LF (a CR before it is dropped; a CR anywhere else is refused).
 */
#ifndef PREDCACHE_H1PARSE_H
#define PREDCACHE_H1PARSE_H

#include <stddef.h>

#include "predcache/buf.h"
#include "predcache/http.h"

#define PC_H1_MAX_HEADERS 100
/* A chunk-size line or the line ending a chunk's data, terminator included. */
#define PC_H1_MAX_CHUNK_LINE 4096

struct pc_h1_limits {
    size_t max_header_bytes; /* request line, fields and their blank line; trailers too */
    size_t max_body_bytes;   /* body after chunked decoding */
};

enum pc_h1_result {
    PC_H1_MORE,  /* every byte given was consumed; the request is not complete yet */
    PC_H1_HEAD,  /* the head is complete and the framing decided: feed again for the body */
    PC_H1_DONE,  /* the request is complete; the bytes after *used are not part of it */
    PC_H1_ERROR, /* refused with status and why; the connection must close */
};

enum pc_h1_state {
    PC_H1_S_START,      /* empty lines before the request line are skipped */
    PC_H1_S_FIELDS,     /* header field lines until the empty one */
    PC_H1_S_BODY,       /* body_left Content-Length bytes */
    PC_H1_S_CHUNK_SIZE, /* chunk-size [; chunk-ext] line */
    PC_H1_S_CHUNK_DATA, /* body_left bytes of the current chunk */
    PC_H1_S_CHUNK_END,  /* the empty line after a chunk's data */
    PC_H1_S_TRAILER,    /* trailer field lines (read and dropped) until the empty one */
    PC_H1_S_DONE,
    PC_H1_S_FAILED,
};

/* The request's own room for its strings; more goes to the heap (buf.h's arena). */
#define PC_H1_TEXT_FIRST 512

/* One request being read, and what was read of it. Strings are NUL-terminated copies in
 * text, owned here until pc_h1parse_release: never freed one by one. The struct is not
 * copied once initialised (text points into text_first). */
struct pc_h1req {
    char *method;
    char *target;      /* origin-form "path[?query]" (an absolute-form target loses scheme and
                          authority) */
    const char *path;  /* target before any "?" (target itself when there is none) */
    const char *query; /* after the "?", in target; "" when none */
    int minor;         /* HTTP/1.<minor> */
    struct pc_header headers[PC_H1_MAX_HEADERS]; /* as sent, OWS trimmed, in order */
    size_t n_headers;
    struct pc_buf body; /* decoded */
    int keep_alive;
    int is_head;
    int expect_continue;   /* Expect: 100-continue */
    int chunked;           /* else the body is content_length bytes */
    size_t content_length; /* Content-Length's value (0 when chunked or absent) */
    int status;            /* when refused: 400, 413, 414, 417, 431, 501, 503, 505 */
    const char *why;       /* when refused: a static message for the client */
    /* reader state */
    enum pc_h1_state state;
    struct pc_h1_limits lim;
    struct pc_buf line; /* the line being assembled, terminator included */
    size_t head_bytes;  /* bytes of complete head (and trailer) lines so far */
    size_t body_left;
    struct pc_arena text; /* every string above */
    char text_first[PC_H1_TEXT_FIRST];
};

/* Starts reading a request (copies lim). */
void pc_h1parse_init(struct pc_h1req *r, const struct pc_h1_limits *lim);
/* Frees what r holds; r may be initialised again. Accepts NULL. */
void pc_h1parse_release(struct pc_h1req *r);

/*
 * Reads as much of in[0..len) as belongs to this request; *used says how much. PC_H1_MORE
 * always consumes everything; PC_H1_HEAD and PC_H1_DONE stop where the head or the request
 * ends. After PC_H1_HEAD call it again (len may be 0): a request without a body is then
 * PC_H1_DONE at once (state is already PC_H1_S_DONE). After PC_H1_DONE or PC_H1_ERROR it
 * returns the same again without consuming anything.
 */
enum pc_h1_result pc_h1parse_feed(struct pc_h1req *r, const char *in, size_t len, size_t *used);

/* 1 while nothing of a request has been read (at most whole empty lines before it). */
int pc_h1parse_idle(const struct pc_h1req *r);

/* 1 when the comma-separated list value holds token (any case, OWS around elements). */
int pc_h1parse_list_has(const char *value, const char *token);

#endif
