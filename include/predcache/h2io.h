/*
 * h2io: what the HTTP/2 server (h2srv) and client (h2up) do alike: their owned header
 * lists, and moving bytes between an nghttp2 session and a bufferevent. Owns nothing.
 */
#ifndef PREDCACHE_H2IO_H
#define PREDCACHE_H2IO_H

#include <stddef.h>

#include <nghttp2/nghttp2.h>

#include "predcache/http.h"

struct bufferevent;

/* A header list the caller owns (names and values copied). */
struct pc_h2_headers {
    struct pc_header *h;
    size_t n, cap;
};
/* Appends a copy of name and value. 0 ok; -1 out of memory (nothing added). */
int pc_h2_headers_add(struct pc_h2_headers *l, const char *name, size_t nlen, const char *value,
                      size_t vlen);
void pc_h2_headers_free(struct pc_h2_headers *l);

/* Appends h[0..n) to nv[at..max) as name/value pairs pointing into h (nghttp2 copies them
 * when the frame is submitted); returns the new count. */
size_t pc_h2_nv(nghttp2_nv *nv, size_t at, size_t max, const struct pc_header *h, size_t n);
/* A data source's read: copies what is left of src[*off..len) into buf (at most length
 * bytes), moves *off, and sets NGHTTP2_DATA_FLAG_EOF once it is all out. Returns the bytes
 * copied. */
size_t pc_h2_copy_out(const uint8_t *src, size_t len, size_t *off, uint8_t *buf, size_t length,
                      uint32_t *flags);

/* Feeds everything bev has read to ng (the session's callbacks run); stops early when
 * *stop becomes non-zero. NULL, or why the session failed (the connection must close). */
const char *pc_h2_recv(nghttp2_session *ng, struct bufferevent *bev, const int *stop);
/* Copies what ng has to send into bev's output while it holds less than high bytes.
 * NULL, or why the session failed. */
const char *pc_h2_send(nghttp2_session *ng, struct bufferevent *bev, size_t high);

#endif
