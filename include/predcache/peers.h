/*
 * peers: whether a worker shares its done channel with another worker or process, one that
 * may fetch the same keys at the same time. The cross-process lock (coalesce.c) is what
 * keeps such fetches to one model call; a worker that has nobody to share with skips it and
 * its Redis work ([cache] lock = auto).
 *
 * Every worker greets on the done channel (PC_PEERS_ANNOUNCE and an id of 64 random bits)
 * every PC_PEERS_GREET_MS. A worker is alone when, for the last PC_PEERS_QUIET_MS, its
 * subscriber has listened throughout, it heard its own greeting come back through that
 * subscription, and it heard nobody else's. A greeting of another ends that at once; a new
 * worker (or one whose subscriber was away) is not alone until it has listened that long.
 *
 * Owns that state only: the worker publishes the greetings and passes on what its
 * subscriber hears (done.c). One per worker, used from its thread only.
 */
#ifndef PREDCACHE_PEERS_H
#define PREDCACHE_PEERS_H

#include <stddef.h>
#include <stdint.h>

/* A greeting on the done channel starts with this, then the greeter's id. */
#define PC_PEERS_ANNOUNCE "!here "
#define PC_PEERS_GREET_MS 1000
/* Quiet this long (more than three greetings of any other) before a worker is alone. */
#define PC_PEERS_QUIET_MS 3500
/* The greeting's longest text. */
#define PC_PEERS_GREETING_MAX (sizeof PC_PEERS_ANNOUNCE + 16)

struct pc_peers;

/* A worker's state, with a fresh random id; NULL out of memory. */
struct pc_peers *pc_peers_new(void);
void pc_peers_free(struct pc_peers *p);

/* This worker's greeting (NUL-terminated, at most PC_PEERS_GREETING_MAX bytes). */
const char *pc_peers_greeting(const struct pc_peers *p);

/* A greeting heard at now_us (a monotonic clock): id is the text after PC_PEERS_ANNOUNCE,
 * len bytes. This worker's own, or another's. */
void pc_peers_heard(struct pc_peers *p, const char *id, size_t len, uint64_t now_us);

/* 1 when the worker is alone at now_us; listening_us is when its subscriber's current
 * subscription began (0: it is not subscribed now). 0 for NULL. */
int pc_peers_alone(const struct pc_peers *p, uint64_t listening_us, uint64_t now_us);

/* Greetings of others heard so far. */
uint64_t pc_peers_others(const struct pc_peers *p);

#endif
