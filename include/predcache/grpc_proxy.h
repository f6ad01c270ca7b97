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

struct pc_worker;

/* arg: the worker (struct pc_worker). */
void pc_grpc_handle(struct pc_h2_req *req, void *arg);
struct pc_health;
/* The gRPC model server's health check (health.h's pc_health_check_fn; arg: the worker):
 * path called with an empty message; grpc-status OK passes. */
int pc_grpc_health_check(struct pc_health *h, void *arg, const char *path, int timeout_ms);
/* Another process announced key answered: the gRPC call waiting for it looks again. */
void pc_grpc_cache_on_answered(struct pc_worker *w, const char *key);

#endif
