/*
 * bgcall: a request as it is sent to the model server: its end-to-end headers (with
 * X-Forwarded-For and the request's X-Request-Id, without what is predcache's or
 * hop-by-hop), the bytes of its body as the client sent them, and a copy of it all for a
 * model server call that outlives its request (a stale refresh, a shadow verification:
 * these carry the id of the request that started them).
 */
#ifndef PREDCACHE_BGCALL_H
#define PREDCACHE_BGCALL_H

#include <stddef.h>

#include "preq.h"

/* Copies the request's end-to-end headers for the model server into p->fwd (their strings
 * into p->fwd_text), with X-Forwarded-For and X-Request-Id. 0 ok; -1 no memory. */
int pc_proxy_forward_headers(struct pc_preq *p);
/* The bytes to send for body (after pc_proxy_forward_headers): the client's own encoded
 * bytes, with their Content-Encoding, when body is its whole decoded body; else body. */
const char *pc_proxy_wire_body(struct pc_preq *p, const char *body, size_t *len);

/* A model server call that outlives its request: a copy of the request as it is
 * forwarded, owning every string. */
struct pc_bgcall {
    size_t backend;
    char *method, *target;
    struct pc_header *hdrs;
    size_t n_hdrs;
    struct pc_arena text; /* the headers' strings */
    char *body;
    size_t len;
};
/* Copies p's request with body (copied) in place of the client's. p->req must be valid.
 * 0 ok; -1 no memory (c is left empty). */
int pc_bgcall_copy(struct pc_preq *p, const char *body, size_t len, struct pc_bgcall *c);
/* Starts c (borrowed until cb) with the backend's timeout. 0 started; -1 not (cb never runs). */
int pc_bgcall_send(struct pc_worker *w, struct pc_bgcall *c, pc_upstream_cb cb, void *arg);
/* Frees what c owns; c is left empty. */
void pc_bgcall_release(struct pc_bgcall *c);

#endif
