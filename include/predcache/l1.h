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
 *
 * Read ahead of that time: the first caller that finds an entry in the last quarter of its
 * stay (pc_l1_get_due) is told to read the key from Redis again, and the entry goes on
 * answering meanwhile. What Redis holds then replaces it (pc_l1_refill), or its absence
 * removes it. Without it, every request for a key waited for Redis once its entry had
 * expired, all of a hot set's keys at once when they had been stored together. A refill
 * that a removal of the key (pc_l1_del: a purge) came before is dropped: a value read from
 * Redis before a purge never comes back after it.
 */
#ifndef PREDCACHE_L1_H
#define PREDCACHE_L1_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

struct pc_l1;

struct pc_l1_stats {
    uint64_t hits, misses, puts, evictions, refills;
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
/* pc_l1_get, and *due = 1 for the one caller that should read the key again (the entry is
 * in the last quarter of max_age_ms and nobody was told yet), with *epoch for the refill;
 * else *due = 0. */
int pc_l1_get_due(struct pc_l1 *l1, const char *key, struct pc_buf *out, int *due, uint64_t *epoch);
/* What Redis held for key when read again (value NULL: nothing): replaces the entry, unless
 * pc_l1_del removed the key after epoch was given; nothing there removes it. */
void pc_l1_refill(struct pc_l1 *l1, const char *key, const char *value, size_t len, uint64_t epoch);
void pc_l1_del(struct pc_l1 *l1, const char *key);
void pc_l1_stats(struct pc_l1 *l1, struct pc_l1_stats *out);

#endif
