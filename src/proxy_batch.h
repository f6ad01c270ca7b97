/*
 * proxy_batch: the item flow: requests whose family has an items shape (adapter.h: TF
 * Serving batches, embedding input lists), cached item by item. proxy.c hands a request over
 * before deriving the per-body key; from there the flow goes on through coalesce (struct
 * pc_flow), answer, forward and refresh, never back into proxy.c.
 */
#ifndef PREDCACHE_PROXY_BATCH_H
#define PREDCACHE_PROXY_BATCH_H

#include <stddef.h>

#include "predcache/keymemo.h"
#include "preq.h"

/*
 * Keys the request's batch with p->head: 0 keyed (p->batch set; a large batch is keyed a
 * slice per loop turn, from pc_proxy_batch_lookup on, and put in the key memo under ctx with
 * probe once keyed); 1 not a batch, or an item cannot be keyed alone (use the per-body
 * flow); 2 more items than [cache] max_batch_instances: forward it uncached, nothing keyed;
 * -1 out of memory (the per-body flow, but the outcome must not be remembered).
 * Borrows probe and ctx (copied when kept).
 */
int pc_proxy_batch_key(struct pc_preq *p, const struct pc_keymemo_probe *probe, const char *ctx,
                       size_t ctx_len);
/* Keyed from the key memo (v->n > 0). 0 ok (p->batch set), -1 out of memory. */
int pc_proxy_batch_from_memo(struct pc_preq *p, const struct pc_keymemo_val *v);
/* Looks the keyed batch up (in-process tier, then Redis) and answers: takes p over. */
void pc_proxy_batch_lookup(struct pc_preq *p);

#endif
