/*
 * answer: answering a request and storing its answer, for every flow. The access line and
 * the counters of an answer, error answers, the shared cache's rules an answer is judged
 * by (RFC 9111: status, size, Set-Cookie, Vary, Cache-Control), the entry an answer is
 * stored as and its SET, and the replay of an entry (a hit, a stale answer, a coalesced
 * one) with the requester's own KServe v2 id. A sampled hit goes to proxy_verify.
 */
#ifndef PREDCACHE_ANSWER_H
#define PREDCACHE_ANSWER_H

#include <stddef.h>

#include "predcache/envelope.h"
#include "predcache/store.h"
#include "preq.h"

/* Does a comma-separated header value hold the directive (case-insensitive)? */
int pc_cc_has(const char *value, const char *dir);
/* The value of directive dir ("max-age") as a number of seconds, or -1. */
int pc_cc_seconds(const char *value, const char *dir);
const char *pc_proxy_find_header(const struct pc_header *h, size_t n, const char *name);

/* Logs and counts an answer of status and len body bytes (done by pc_proxy_answer; a
 * streamed answer is counted once it ends). p->req must still be valid. */
void pc_proxy_account(struct pc_preq *p, int status, size_t len);
/* Logs, counts and answers; p->req is gone afterwards (p itself stays). */
void pc_proxy_answer(struct pc_preq *p, int status, const struct pc_header *h, size_t n,
                     const char *body, size_t len);
void pc_proxy_answer_error(struct pc_preq *p, int status, const char *msg);
/* The status and message predcache answers for a failed transfer. */
int pc_answer_backend_error(const struct pc_upstream_resp *r, char *msg, size_t len);
/* Answers a failed transfer (502/503/504) when r->error is set. 1 if it answered. */
int pc_proxy_answer_backend_error(struct pc_preq *p, const struct pc_upstream_resp *r);

/* What an answer's rules are judged against: the route and what the keys carry. */
struct pc_answer_rules {
    struct pc_worker *w;
    struct pc_wroute *route;
    size_t vary_n; /* the route's Vary headers in the key */
    int ttl_s;     /* fresh this long: bounded by max-age / s-maxage */
    int record;    /* ttl_s goes into the entry */
    int no_grace;  /* not to be served stale */
    int ignore_cc; /* the answer's Cache-Control is not heard (route, or family) */
    int streamed;  /* a streamed answer: no-cache is the convention against buffering */
};
/* Why an answer must not be stored (as a shared cache, RFC 9111), or NONE; then its
 * max-age / s-maxage bound a->ttl_s. *personal (when not NULL): why it belongs to its own
 * request alone (then not handed to waiters either), part of the verdict. */
enum pc_reason pc_answer_judge(struct pc_answer_rules *a, const struct pc_upstream_resp *r,
                               enum pc_reason *personal);
/* Is the model server's Cache-Control not heard for p (the route, or its family)? */
int pc_answer_ignores_cc(const struct pc_preq *p);
/*
 * Judges a backend answer to p once. Returns why it must not be stored (status not 2xx, the
 * size, Content-Encoding, the request's no-store, and all of *personal; also p->reason
 * unless one is set), or PC_REASON_NONE: then a max-age or s-maxage of the answer bounds
 * p->ttl_s (recorded in the entry) and s-maxage or must-revalidate set p->no_grace.
 * *personal: why the answer belongs to p alone (a cookie, a Vary beyond p's keys, a client
 * error, Cache-Control private / no-store / no-cache / max-age=0 unless the route ignores
 * it), or NONE: then it may be handed to the requests that waited for it. A Vary header the
 * key lacked is learned by the route.
 */
enum pc_reason pc_proxy_judge(struct pc_preq *p, const struct pc_upstream_resp *r,
                              enum pc_reason *personal);

/* Seconds an entry fresh for ttl_s lives in Redis: kept past its TTL to be served stale. */
int pc_answer_redis_ttl(const struct pc_worker *w, int ttl_s);
/* What a stored value is worth to a request keyed key: fresh for the entry's own TTL
 * (else ttl_s), stale within grace_s, or nothing: unreadable, older than max_age_s (when
 * >= 0), or another key's (then the store is told its connection is out of step). env
 * points into data and scratch. */
enum pc_entry_use { PC_ENTRY_FRESH, PC_ENTRY_STALE, PC_ENTRY_NONE };
enum pc_entry_use pc_answer_entry_use(const struct pc_worker *w, const char *key, int ttl_s,
                                      int max_age_s, const char *data, size_t len,
                                      struct pc_envelope *env, char *scratch, size_t scratch_len);
/* Seconds p's entry lives in Redis: ttl_s, plus grace_s to be served stale. */
int pc_proxy_store_ttl(const struct pc_preq *p);
/* The answer r as an entry holds it (status, content type, replayed headers, body).
 * Borrows r. */
void pc_answer_envelope(const struct pc_worker *w, const struct pc_upstream_resp *r,
                        struct pc_envelope *env);
/* SETs r's answer under key as an envelope fresh for ttl_s (written into it when record),
 * kept redis_ttl_s in Redis. 1 when queued (done_cb runs on its answer). Not stored (0) when
 * key was purged since begun_us, when what asked for r began (pc_answer_purged). */
int pc_answer_store(struct pc_worker *w, const char *key, int ttl_s, int record, int redis_ttl_s,
                    const struct pc_upstream_resp *r, uint64_t begun_us,
                    pc_store_set_done_cb done_cb, void *done_arg);
/* 1 when key's entry was purged since begun_us (a monotonic time, pc_now_us): an answer
 * fetched for it from then on may be what the purge removed, and is not stored (counted as
 * skipped, and logged). */
int pc_answer_purged(struct pc_worker *w, const char *key, uint64_t begun_us);
/* Stores p's answer r under p->key (why: its refusal, judged before); 1 when a SET was
 * queued (then done_cb runs once it is answered). */
int pc_answer_store_result(struct pc_preq *p, const struct pc_upstream_resp *r, enum pc_reason why,
                           pc_store_set_done_cb done_cb, void *done_arg);
/* The body a replayed answer carries for p: a KServe v2 answer's "id" is the requester's,
 * in its first json_len bytes (all of it, or the JSON part of a binary tensor answer).
 * *out is body, or tmp's data when rewritten; *out_json_len the JSON part's new length. */
void pc_proxy_replay_body(const struct pc_preq *p, const char *body, size_t len, size_t json_len,
                          struct pc_buf *tmp, const char **out, size_t *out_len,
                          size_t *out_json_len);
/* Answers p with a cached answer (an entry, or a flight's kept answer): its status, content
 * type, replayed headers and body, with X-Cache as result; Age for HIT and STALE, and a
 * Warning for STALE. */
void pc_answer_entry(struct pc_preq *p, const struct pc_envelope *env, enum pc_cache_result result);
/* Answers q with the entry env (X-Cache: COALESCED), then frees q. */
void pc_answer_coalesced_free(struct pc_preq *q, const struct pc_envelope *env);

#endif
