/*
 * proxy_verify: shadow verification of hits ([cache] verify_*). pc_proxy_answer asks
 * prepare for every HIT before its reply (p->req valid): NULL when this hit is not sampled
 * or cannot be checked now; else a copy of the request and of the answer, which start sends
 * to the model server once the client has its answer (taken over).
 */
#ifndef PREDCACHE_PROXY_VERIFY_H
#define PREDCACHE_PROXY_VERIFY_H

#include <stddef.h>

#include "preq.h"

struct pc_verify;
struct pc_verify *pc_proxy_verify_prepare(struct pc_preq *p, int status, const char *body,
                                          size_t len);
void pc_proxy_verify_start(struct pc_verify *v);

#endif
