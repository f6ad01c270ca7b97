/*
 * proxy_stream: requests that ask for a streamed answer (see proxy_stream.c).
 */
#ifndef PREDCACHE_PROXY_STREAM_H
#define PREDCACHE_PROXY_STREAM_H

#include "preq.h"

/* Does p ask for a streamed answer? Accept: text/event-stream, or a JSON body whose root
 * "stream" is true (or not false, when the family streams by default: p->ad). */
int pc_proxy_wants_stream(const struct pc_preq *p);
/* Streams p to the model server and its answer back as it comes, labelled result (p taken
 * over: answered or failed there). With p->stream_keep the answer is kept and, once whole,
 * judged and stored (pc_answer_store_result). */
void pc_proxy_stream_send(struct pc_preq *p, enum pc_cache_result result);

#endif
