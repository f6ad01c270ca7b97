/*
 * wstate: what one worker holds, as the modules that run on it see it: struct pc_worker
 * (its loop, store, upstreams, metrics, route table, tables of versions, generations and
 * flights) and struct pc_wroute, and the questions every request path asks of it (may a
 * backend be called now; every worker's metrics shard). The worker module builds and
 * runs it; proxy, admin and jobs only use it, so none of them depends on the others
 * through it.
 */
#ifndef PREDCACHE_WSTATE_H
#define PREDCACHE_WSTATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "predcache/cachekey.h"
#include "predcache/config.h"
#include "predcache/metrics.h"
#include "predcache/routes.h"
#include "predcache/store.h"

struct event_base;
struct event;
struct pc_config;
struct pc_store;
struct pc_upstream;
struct pc_http_server;
struct pc_flights;
struct pc_health;
struct pc_jobs;
struct pc_http_req;
struct pc_workset;
struct pc_h2_server;
struct pc_h2_client;
struct pc_handed_conn;

#define PC_WORKER_BACKENDS (1 + PC_CFG_MAX_BACKENDS)

#define PC_WROUTE_VARY 16 /* request headers a route's keys may carry (Vary) */

/* One route of the table with what the proxy needs at hand for it. */
struct pc_wroute {
    struct pc_route_view v;
    struct pc_key_params keyp; /* the route's input fields and path field */
    const char *input_fields[PC_CFG_MAX_LIST];
    const char *ignore_fields[PC_CFG_MAX_LIST]; /* none when ignore_auto */
    int ignore_auto;                            /* "auto": the API family's default */
    /* The request headers its keys carry, lowercased: [cache] vary, then each name a model
     * answer's Vary header added (this worker's; only ever appended, so a key made with
     * the first n of them stays meaningful). */
    char vary[PC_WROUTE_VARY][64];
    size_t n_vary;
};

struct pc_versions;
struct pc_generations;
struct pc_l1;
struct pc_keymemo;
struct pc_unlock;

/* Connections handed to a worker by the one it follows after a reload (worker.c). */
struct pc_handed {
    pthread_mutex_t lock;
    struct pc_handed_conn *conns;
    size_t n, cap;
};

struct pc_worker {
    struct pc_worker *group;    /* all workers, group[0 .. n_workers - 1]; this is group[id] */
    struct pc_workset *workset; /* every set of workers of the process (reloads); may be NULL */
    /* A reload: the worker that takes this one's connections (set by main before it posts
     * PC_WORKER_RETIRE), and the connections this one is handed by its predecessor. */
    struct pc_worker *successor;
    struct pc_handed handed;
    int retiring;
    size_t n_workers;
    size_t id;  /* worker 0 owns the admin listener and sums the others' metrics */
    int ctl[2]; /* pipe: pc_worker_post writes commands, this loop reads them */
    struct event *ctl_ev;
    struct event *log_flush; /* writes the access lines of a pass of the loop, at its end */
    long pid;                /* the process's, for the lock owner's name (coalesce) */
    struct event_base *base;
    const struct pc_config *cfg;
    struct pc_store *store;
    struct pc_upstream *up;
    struct pc_http_server *data;
    struct pc_http_server *admin;
    struct pc_h2_server *grpc;       /* [server] grpc_listen; NULL: off */
    struct pc_h2_client *grpc_up;    /* [backend] grpc_url; NULL: none */
    struct pc_flights *grpc_flights; /* keys of the gRPC port whose model call is running */
    struct pc_health *grpc_health;   /* [backend] grpc_health_path checks; NULL: none */
    struct pc_jobs *jobs;            /* async jobs; NULL when [jobs] is off */
    struct pc_metrics metrics;
    struct pc_flights *flights;      /* keys whose model server call is running (coalescing) */
    struct pc_flights *refreshing;   /* keys whose stale entry is being refreshed */
    struct pc_health *health;        /* active model server health checks */
    struct pc_store *subscriber;     /* listens for answers of other processes (locks) */
    struct pc_store *sentinel_watch; /* [redis] sentinels: their +switch-master; else NULL */
    struct pc_metrics sub_metrics;   /* the subscriber's own: it must not move redis_up */
    struct pc_key_params keyp;
    const char *input_fields[32];
    const char *cache_ids[PC_WORKER_BACKENDS];     /* each backend's identity in keys */
    struct pc_upstream *ups[PC_WORKER_BACKENDS];   /* [0] is up: the [backend] section */
    struct pc_health *healths[PC_WORKER_BACKENDS]; /* [0] is health */
    int backend_up[PC_WORKER_BACKENDS];            /* named backends' health gauges */
    size_t n_backends;                             /* 1 + [backend NAME] sections */
    struct pc_wroute *routes;                      /* the route table, one entry per route id */
    size_t n_routes;
    struct pc_route_metrics *route_metrics; /* [0]: no route; [id + 1]: route id */
    const char **route_names;               /* their labels, the same indexes */
    struct pc_versions *versions;           /* model versions from the status endpoints */
    struct pc_generations *generations;     /* invalidation generations from Redis */
    struct pc_l1 *l1;          /* the in-process tier, shared by the process's workers; NULL: off */
    struct pc_keymemo *memo;   /* keys derived from request bytes, this worker's; NULL: off */
    struct pc_purges *purges;  /* entries heard purged lately: answers fetched before stay out */
    struct pc_peers *peers;    /* whether another worker or process shares the done channel */
    struct event *greet_timer; /* publishes this worker's greeting (peers.h) */
    uint64_t verify_rng;       /* shadow verification's sampler state (never 0) */
    size_t verify_in_flight;   /* its checks running now */
    int draining;              /* SIGTERM seen: listeners closed, finishing what is in flight */
    int closing; /* being torn down: callbacks answer at once instead of starting work */
    struct event *drain_timer;
    struct event *drain_deadline;
    /* Lock releases that got no reply (the connection dropped): sent again once Redis is
     * back, until their lock would have expired anyway (proxy.c). */
    struct pc_unlock *unlocks;
    size_t n_unlocks;
    struct event *unlock_timer;
};

/* Why backend be (0: [backend]) must not be called now (down, or too many calls), or NULL. */
const char *pc_worker_backend_refusal(const struct pc_worker *w, size_t be);
int pc_worker_backend_available(const struct pc_worker *w, size_t be);

/* Worker 0's view of every shard, for /metrics, /stats and /ready. */
void pc_worker_shards(const struct pc_worker *w, const struct pc_metrics **out, size_t max,
                      size_t *n);

#endif
