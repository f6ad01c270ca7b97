/*
 * health: active health checks of the model server. Owns one timer and at most one check
 * in flight: every interval it GETs [backend] health_path through the upstream; after
 * health_fails consecutive failures the backend is down, after health_passes consecutive
 * passes it is up again. Off (always up) when health_path is empty.
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
/* Call after the upstream is freed or aborted (a check in flight calls back). NULL ok. */
void pc_health_free(struct pc_health *h);
/* 1 unless the checks say the model server is down. */
int pc_health_up(const struct pc_health *h);

#endif
