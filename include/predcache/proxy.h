/*
 * proxy: the life of one data-port request (proxy.c, with proxy_batch.c, proxy_stream.c and
 * proxy_verify.c behind proxy_int.h), and what the rest of the worker asks of it: the
 * handler, the done channel (another process answered a key; a purge), purging an entry,
 * and the lock releases still owed to Redis.
 */
#ifndef PREDCACHE_PROXY_H
#define PREDCACHE_PROXY_H

#include <stddef.h>

#include "predcache/store.h"
#include "predcache/wstate.h"

struct pc_http_req;

/* The data port's handler (arg is the worker). */
void pc_proxy_handle(struct pc_http_req *req, void *arg);

/* The Redis channel on which a process announces an answered key. 0 ok, -1 too long. */
#define PC_CHANNEL_MAX (2 * 256 + 16)
int pc_proxy_done_channel(const struct pc_config *cfg, char *out, size_t len);
/*
 * Deletes the cache entry key: from the in-process tier at once, from Redis, and announces
 * it on the done channel (after the DEL) so the other processes drop it from their tiers.
 * cb (may be NULL) gets the DEL's reply. 0 sent; -1 Redis unavailable (cb never runs).
 */
int pc_proxy_purge(struct pc_worker *w, const char *key, pc_store_cmd_cb cb, void *arg);
/* A message on that channel: another process answered the key (arg is the worker). */
void pc_proxy_on_done(const char *key, size_t len, void *worker);
/* Frees the lock releases still waiting to be sent again (after the store is freed). */
void pc_proxy_unlocks_free(struct pc_worker *w);

#endif
