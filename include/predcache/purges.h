/*
 * purges: the entries a worker heard purged lately, and when, so that an answer whose
 * request began before its entry was purged is not stored after the purge (it may carry
 * what the purge removed: a model call started before it). Owns a bounded ring of
 * (key hash, time) in the order heard; one per worker, used from its thread only.
 *
 * A purge is heard when this worker makes it (pc_done_purge) and when its announcement
 * comes on the done channel (every process's workers, this one's too). Answers are checked
 * where they are stored (answer.c, proxy_batch.c, grpc_cache.c) against the time their
 * request began on this worker's clock.
 *
 * Never wrong in the unsafe direction: a key is said not purged since a time only when
 * every purge heard at or after that time is kept and none is of its hash. A full ring
 * forgets its oldest entry and remembers when that was: asked about a time at or before
 * it, it says purged (an answer not stored: a later miss). Two keys of one 64-bit hash
 * count as one (the same direction).
 */
#ifndef PREDCACHE_PURGES_H
#define PREDCACHE_PURGES_H

#include <stddef.h>
#include <stdint.h>

/* The purges a worker keeps (a ring; older ones are summed up by when the newest lost one
 * was). */
#define PC_PURGES_KEEP 4096

struct pc_purges;

/* An empty log of cap entries (at least 1); NULL out of memory. */
struct pc_purges *pc_purges_new(size_t cap);
void pc_purges_free(struct pc_purges *pl);

/* key was purged at now_us (a monotonic clock; a time before the newest kept counts as
 * the newest). No-op on NULL. */
void pc_purges_add(struct pc_purges *pl, const char *key, uint64_t now_us);

/* The worker purged key itself at now_us (its DEL sent then, on the connection its
 * lookups use): added, and its announcement, when it comes back on the done channel, is
 * not added again (pc_purges_heard). Later lookups of the worker come after the DEL, so
 * the time of the DEL is the one that counts; the announcement's would keep answers
 * fetched after it out of the cache. Up to PC_PURGES_ECHOES wait, each for at most
 * PC_PURGES_ECHO_US (an echo that never came, the subscriber being away, must not hide a
 * later purge of the key by another process); one past either is added when it comes: a
 * store lost, never a purge undone. */
#define PC_PURGES_ECHOES 64
#define PC_PURGES_ECHO_US 1000000
void pc_purges_add_own(struct pc_purges *pl, const char *key, uint64_t now_us);

/* A purge of key announced on the done channel, heard at now_us: added, unless it is the
 * echo of one of the worker's own (pc_purges_add_own). */
void pc_purges_heard(struct pc_purges *pl, const char *key, uint64_t now_us);

/* 1 when key may have been purged at or after since_us (stores of answers whose request
 * began at since_us must not land), 0 when it was not. NULL: 0. */
int pc_purges_since(const struct pc_purges *pl, const char *key, uint64_t since_us);

/* 1 when any purge was heard at or after since_us (or may have been: a forgotten one). */
int pc_purges_any_since(const struct pc_purges *pl, uint64_t since_us);

/* Purges heard (added) so far. */
uint64_t pc_purges_count(const struct pc_purges *pl);

#endif
