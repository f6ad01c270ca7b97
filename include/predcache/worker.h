/*
 * worker: one event loop and everything that runs on it: the HTTP listeners, the Redis
 * store, the upstream multi handle and the metrics. No global mutable state: main runs N
 * workers, one thread each, whose data listeners share one port (SO_REUSEPORT). They
 * share nothing but Redis and the read-only configuration; another thread may only post
 * commands to a worker (pc_worker_post), hand it connections (a reload) and read its
 * metrics shard (see metrics.h).
 */
#ifndef PREDCACHE_WORKER_H
#define PREDCACHE_WORKER_H

#include <stddef.h>

#include "predcache/wstate.h"

struct event_base;

/*
 * Builds w, which must be &group[i] of n workers, on base (borrowed), in one thread, in
 * order: group[0] binds the admin listener and the data listener, shared (SO_REUSEPORT)
 * when n > 1; the others join group[0]'s data port. After a reload, prev is the running
 * worker of the same index (else NULL): where the addresses are unchanged, w listens on
 * duplicates of its sockets instead. 0 ok; -1 with err (then release w).
 */
int pc_worker_init(struct pc_worker *w, struct event_base *base, const struct pc_config *cfg,
                   struct pc_worker *group, size_t n, const struct pc_worker *prev, char *err,
                   size_t errlen);
/* Stops accepting and exits the loop once requests and stores are done (bounded). */
void pc_worker_drain(struct pc_worker *w);
/* A reload: gives the ports and every connection (at its next request boundary) to
 * w->successor, finishes what it holds like a drain, and exits the loop once no connection
 * is left (bounded by drain_timeout_ms). */
void pc_worker_retire(struct pc_worker *w);
/* Once w's loop has returned and no other thread can touch w (main: after joining all). */
void pc_worker_release(struct pc_worker *w);
/* For pc_log_defer_access in the worker's thread (worker: w): its access lines are
 * written once the pass of its loop that made them is over. */
void pc_worker_log_defer(void *worker);

/* What other threads may ask of a worker. */
enum pc_worker_cmd {
    PC_WORKER_DRAIN = 'd',  /* pc_worker_drain */
    PC_WORKER_STOP = 's',   /* leave the loop now (a second signal) */
    PC_WORKER_RETIRE = 'r', /* pc_worker_retire: w->successor is set */
    PC_WORKER_TAKE = 't',   /* serve the connections handed to this worker */
};
/* Thread-safe (one write(2) on w's pipe), async-signal-safe. 0 ok, -1 error. */
int pc_worker_post(struct pc_worker *w, enum pc_worker_cmd cmd);

#endif
