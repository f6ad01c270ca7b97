/*
 * grpc_proxy: the gRPC port's handler (the worker's h2srv server): each call goes to the
 * gRPC model server ([backend] grpc_url) as it came, its deadline (grpc-timeout) kept and
 * passed on, its metadata passed on (hop-by-hop headers excluded), the answer's headers,
 * message and trailers passed back; what fails on the way becomes a gRPC status
 * (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL). Its access line and
 * counters.
 */
#ifndef PREDCACHE_GRPC_PROXY_H
#define PREDCACHE_GRPC_PROXY_H

struct pc_h2_req;

/* arg: the worker (struct pc_worker). */
void pc_grpc_handle(struct pc_h2_req *req, void *arg);

#endif
