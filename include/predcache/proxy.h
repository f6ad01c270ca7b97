/*
 * proxy: the data port's handler: the life of one request, from the route it takes to its
 * answer (proxy.c: intake and the per-body flow; the item flow, streams, coalescing,
 * answering and storing, stale refresh and shadow verification each in a module of its
 * own in src/, sharing src/preq.h).
 */
#ifndef PREDCACHE_PROXY_H
#define PREDCACHE_PROXY_H

struct pc_http_req;

/* The data port's handler (arg is the worker). */
void pc_proxy_handle(struct pc_http_req *req, void *arg);

#endif
