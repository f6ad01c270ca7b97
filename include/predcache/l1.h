/*
 * l1: the in-process tier in front of Redis. A bounded map from cache key to the stored
 * value (the envelope bytes, exactly as Redis holds them), least recently used first out,
 * shared by the workers of one process (16 shards, one mutex each).
 *
 * It only short-cuts fresh hits: the proxy judges a value from here by the same envelope
 * rules as one from Redis, and anything not fresh goes to Redis. An entry lives at most
 * max_age_ms in this tier whatever its TTL, which bounds how long a change made to Redis
 * behind predcache's back (a DEL with redis-cli, a FLUSHALL) can go unseen. Purges by
 * predcache itself remove the key here and are announced to the other processes.
 */
#ifndef PREDCACHE_L1_H
#define PREDCACHE_L1_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

struct pc_l1;

struct pc_l1_stats {
    uint64_t hits, misses, puts, evictions;
    size_t bytes, entries;
};

/*
 * max_bytes bounds keys + values + bookkeeping. clock: NULL for the wall clock (copied; its
 * function is called under a shard's lock). NULL when max_bytes is 0 or no memory.
 */
struct pc_l1 *pc_l1_new(size_t max_bytes, int max_age_ms, const struct pc_clock *clock);
void pc_l1_free(struct pc_l1 *l1); /* NULL ok */

/* Appends key's value to out. 1 found (and younger than max_age_ms); 0 not. NULL l1: 0. */
int pc_l1_get(struct pc_l1 *l1, const char *key, struct pc_buf *out);
/* Stores a copy, replacing any older one; a value larger than a quarter of a shard is not
 * kept (and the older one is dropped all the same). */
void pc_l1_put(struct pc_l1 *l1, const char *key, const char *value, size_t len);
void pc_l1_del(struct pc_l1 *l1, const char *key);
void pc_l1_stats(struct pc_l1 *l1, struct pc_l1_stats *out);

#endif
