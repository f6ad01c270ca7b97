/*
 * health: active health checks of a model server. Owns one timer and at most one check in
 * flight: every interval it runs a check of the path (the REST one GETs [backend]
 * health_path through the upstream; the gRPC port's calls [backend] grpc_health_path);
 * after health_fails consecutive failures the backend is down, after health_passes
 * consecutive passes it is up again. Off (always up) when the path is empty.
 */
#ifndef PREDCACHE_HEALTH_H
#define PREDCACHE_HEALTH_H

struct event_base;
struct pc_backend_cfg;
struct pc_upstream;
struct pc_health;

/* Copies be; borrows up and gauge (set to 1 while up); starts checking at once. NULL on
 * no memory. */
struct pc_health *pc_health_new(struct event_base *base, const struct pc_backend_cfg *be,
                                struct pc_upstream *up, int *gauge);
/* A check of path bounded by timeout_ms: 0 started (it ends with one pc_health_report, from
 * the loop), -1 not. */
typedef int (*pc_health_check_fn)(struct pc_health *h, void *arg, const char *path, int timeout_ms);
/* The same with a check of the caller's, named what in the log; be->health_path is the
 * path checked (a copy with another path for other kinds). */
struct pc_health *pc_health_new_check(struct event_base *base, const struct pc_backend_cfg *be,
                                      const char *what, pc_health_check_fn check, void *arg,
                                      int *gauge);
/* A check's result (why: what failed, or NULL). */
void pc_health_report(struct pc_health *h, int ok, const char *why);
/* Call after the upstream is freed or aborted (a check in flight calls back). NULL ok. */
void pc_health_free(struct pc_health *h);
/* 1 unless the checks say the model server is down. */
int pc_health_up(const struct pc_health *h);

#endif
