/*
 * refresh: stale-while-revalidate. A background model server call that refreshes one
 * stale entry, or a batch's stale instances, after the client had its stale answer: one at
 * a time per key, not when the model server is down or full, stored with the TTL the stale
 * entry had unless the request names one. The item flow hands its own store through
 * struct pc_refresh_items.
 */
#ifndef PREDCACHE_REFRESH_H
#define PREDCACHE_REFRESH_H

#include <stddef.h>

#include "preq.h"

struct pc_batch_keys;

/* A refresh of a batch's instances: their keys (taken over) and how the answer is stored
 * under them (NULL: why nothing was; *keys may be taken; an instance purged since begun_us
 * is not stored) and the keys freed. */
struct pc_refresh_items {
    struct pc_batch_keys *keys;
    const char *(*store)(struct pc_worker *w, const struct pc_upstream_resp *r,
                         struct pc_batch_keys **keys, int env_ttl_s, int redis_ttl_s,
                         uint64_t begun_us);
    void (*free_keys)(struct pc_batch_keys *k);
};

/*
 * Starts a background model call with body (copied) for p's route, keyed key in the
 * refreshing table, unless one of that key is already running or the model server is
 * known to be down or full. stale_ttl_s: the TTL the stale entry was stored with (0 none).
 * items: a batch's (its keys are freed when no refresh starts), or NULL for one entry.
 * p->req must still be valid.
 */
void pc_refresh_start(struct pc_preq *p, const char *key, int stale_ttl_s, const char *body,
                      size_t len, const struct pc_refresh_items *items);

#endif
