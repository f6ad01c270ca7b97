/*
 * forward: a request's model server call on its behalf (the miss of any flow), with the
 * limits that refuse it first: shutting down, only-if-cached, the backend down or full,
 * what is left of the request's deadline.
 */
#ifndef PREDCACHE_FORWARD_H
#define PREDCACHE_FORWARD_H

#include <stddef.h>

#include "preq.h"

/*
 * Readies p for its model server call, labelled result: 0 go on (p->fwd holds its
 * headers); -1 refused (shutting down, only-if-cached, the backend down or full, no
 * memory): p was answered and freed.
 */
int pc_forward_prepare_or_free(struct pc_preq *p, enum pc_cache_result result);

/*
 * Sends the request to the model server with body (borrowed until cb) in place of the
 * client's, labelled result. On any failure to start, answers the client and frees p.
 */
void pc_proxy_forward_body(struct pc_preq *p, enum pc_cache_result result, const char *body,
                           size_t len, pc_upstream_cb cb);

#endif
