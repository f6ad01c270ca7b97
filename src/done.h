/*
 * done: the done channel, the one Redis channel on which the processes sharing a Redis
 * tell each other what changed: a key answered (its lock's waiters look again:
 * coalesce.c), an entry purged ("!del " key: dropped from every in-process tier), a
 * namespace invalidated (generations.h's announcement: its counters are read again), a
 * worker's greeting (peers.h: who shares the channel). Owns
 * the channel's name and the reading of its messages; purging an entry (DEL, then the
 * announcement on the same connection).
 */
#ifndef PREDCACHE_DONE_H
#define PREDCACHE_DONE_H

#include <stddef.h>

#include "predcache/store.h"
#include "predcache/wstate.h"

/* The longest channel name. */
#define PC_CHANNEL_MAX (2 * 256 + 16)
/* A message on the channel that starts with this purges a key from the l1 tier. */
#define PC_PURGE_ANNOUNCE "!del "

/* The channel's name. 0 ok, -1 too long for len. */
int pc_done_channel(const struct pc_config *cfg, char *out, size_t len);
/* PUBLISHes msg on the done channel through the worker's store, fire and forget (a
 * listener that misses it has its own timer or period). 0 sent; -1 not (Redis unavailable,
 * or a channel name too long). */
int pc_done_publish(struct pc_worker *w, const char *msg);
/*
 * Deletes the cache entry key: from the in-process tier at once, from Redis, and announces
 * it on the done channel (after the DEL) so the other processes drop it from their tiers.
 * cb (may be NULL) gets the DEL's reply. 0 sent; -1 Redis unavailable (cb never runs).
 */
int pc_done_purge(struct pc_worker *w, const char *key, pc_store_cmd_cb cb, void *arg);
/* A message on the channel (key, len bytes; NUL-terminated into out, at most outlen): 1
 * when it was an invalidation, a purge or a greeting (handled here), 0 when it names an answered
 * key (in out), -1 when it is too long to be one. */
int pc_done_message(struct pc_worker *w, const char *msg, size_t len, char *out, size_t outlen);

#endif
