/*
 * proxy_int: what proxy.c (the per-body flow) and proxy_batch.c (the per-instance flow
 * for TF Serving batches) share. Private to those two files.
 */
#ifndef PREDCACHE_PROXY_INT_H
#define PREDCACHE_PROXY_INT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "predcache/adapter.h"
#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/http.h"
#include "predcache/keymemo.h"
#include "predcache/reason.h"
#include "predcache/routes.h"
#include "predcache/upstream.h"
#include "predcache/proxy.h"
#include "predcache/wstate.h"

enum pc_cache_result {
    RES_HIT,
    RES_MISS,
    RES_BYPASS,
    RES_PASS,
    RES_ERROR,
    RES_PARTIAL,
    RES_COALESCED,
    RES_STALE,
};

struct pc_batch_state;
struct pc_flight;
struct event;

/* A live request carries this; pc_preq_free clears it. PC_PREQ_CHECK on entry to the
 * functions a request is handed to catches one that was freed, or never was one. */
#define PC_PREQ_MAGIC 0x70726571u /* "preq" */
#define PC_PREQ_CHECK(p) assert((p) != NULL && (p)->magic == PC_PREQ_MAGIC)

/* One request in the proxy. Freed by pc_preq_free once answered (and stored, if any). */
struct pc_preq {
    unsigned magic; /* PC_PREQ_MAGIC while alive */
    struct pc_worker *w;
    struct pc_http_req *req; /* valid until answered */
    int cacheable;
    int no_cache;
    int no_store;
    int only_if_cached;            /* Cache-Control: only-if-cached: 504 rather than a model call */
    int max_age_s;                 /* Cache-Control: max-age=N: older entries are misses; -1 none */
    char ns[65];                   /* X-Predcache-Namespace, when given */
    struct pc_key_params keyp;     /* the route's, with the request's namespace */
    const struct pc_wroute *route; /* the route taken; NULL: none (forwarded as is) */
    size_t backend;                /* index of the backend it goes to (0: [backend]) */
    int ttl_s;                     /* fresh this long once stored: route or X-Predcache-TTL */
    int skip_lookup;               /* Redis could not give the generation: forward (BYPASS) */
    int client_ttl;                /* ttl_s came from X-Predcache-TTL: the entry records it */
    char key_path[320];            /* the path keys use when it differs (resolved version) */
    char ns_gen[PC_CFG_STR + 80];  /* namespace plus invalidation generations, for keys */
    struct pc_model_ref model;     /* the model the path names (api NONE when none) */
    char version[64];              /* its resolved version, when the path names none */
    enum pc_cache_result result;
    enum pc_reason reason;     /* why not from the cache, or not stored (X-Cache-Reason); NONE */
    char key[PC_KEY_MAX];      /* per-body key; empty for batches */
    enum pc_key_kind key_kind; /* how the body was read for it */
    double backend_ms;         /* < 0 until the model server answered */
    struct pc_header *fwd;     /* headers for the model server, owned */
    size_t n_fwd;
    struct pc_batch_state *batch; /* per-instance state, owned; NULL for the per-body flow */
    struct pc_flight *flight;     /* the coalescing entry this request leads, or NULL */
    char herd[PC_KEY_MAX];        /* a batch's sub-request coalesces on this (else on key) */
    int err_status;               /* the error p was answered with: its waiters get it too */
    char err_msg[200];
    int lock_held;           /* holds the cross-process lock of key: release when done */
    int lock_asking;         /* the lock script is on its way */
    int lock_notified;       /* and the holder's announcement came before its answer */
    struct event *lock_wait; /* waiting for another process's answer: its deadline */
    char scope[65];          /* the credential scope in its keys; "" none */
    size_t vary_n;           /* its keys carry the route's first vary_n Vary headers */
    char *head;              /* its keys' head (pc_cachekey_head), owned */
    size_t head_len;
    int no_grace; /* the answer may not be served stale (s-maxage, *-revalidate) */
    /* A body sent with Content-Encoding gzip or deflate: decoded (owned), what the key and
     * the batch reading read; the client's own bytes still go to the model server when the
     * whole body does, with their coding (a sub-request goes decoded). */
    char *plain;
    size_t plain_len; /* counted in the input budget while plain is held */
    char coding[32];
    struct pc_adapter_view ad; /* what the request's API family means (cacheable routes) */
    int stream;                /* it asks for a streamed answer: forwarded as one */
    struct pc_xfer *xfer;      /* a streamed answer's transfer, while it runs (proxy_stream.c) */
    size_t streamed;           /* its bytes passed on */
    int stream_status;
    /* A cacheable streamed answer (a deterministic generation): looked up as any request;
     * on a miss its bytes are kept as they pass (up to max_value_bytes, else dropped) and
     * stored once it ended whole; the head's headers are kept for the entry. */
    int stream_keep;
    struct pc_buf stream_rec;
    int stream_over; /* past max_value_bytes: not stored */
    struct pc_header *stream_hdrs;
    size_t n_stream_hdrs;
};

/* The request body as the model server reads it: decoded, or the bytes as received. */
const char *pc_preq_body(const struct pc_preq *p, size_t *len);

const char *pc_proxy_result_name(enum pc_cache_result r);
void pc_preq_free(struct pc_preq *p);

/* Logs and counts an answer of status and len body bytes (done by pc_proxy_answer; a
 * streamed answer is counted once it ends). p->req must still be valid. */
void pc_proxy_account(struct pc_preq *p, int status, size_t len);
/* Copies the request's end-to-end headers for the model server into p->fwd, with
 * X-Forwarded-For. 0 ok; -1 no memory. */
int pc_proxy_forward_headers(struct pc_preq *p);
/* Does p ask for a streamed answer? Accept: text/event-stream, or a JSON body whose root
 * "stream" is true (or not false, when the family streams by default: p->ad). */
int pc_proxy_wants_stream(const struct pc_preq *p);
/* Streams p to the model server and its answer back as it comes, labelled result (p taken
 * over: answered or failed there). With p->stream_keep the answer is kept and, once whole,
 * judged and stored (pc_proxy_store_streamed). */
void pc_proxy_stream_send(struct pc_preq *p, enum pc_cache_result result);
/* Stores a whole streamed answer r (its body the bytes passed on) under p->key, judged as
 * any answer: for after the stream's end (why: pc_proxy_judge's verdict, before it). */
void pc_proxy_store_streamed(struct pc_preq *p, const struct pc_upstream_resp *r,
                             enum pc_reason why);
/* The bytes to send for body (after pc_proxy_forward_headers): the client's own encoded
 * bytes, with their Content-Encoding, when body is its whole decoded body; else body. */
const char *pc_proxy_wire_body(struct pc_preq *p, const char *body, size_t *len);

/* Logs, counts and answers; p->req is gone afterwards (p itself stays). */
void pc_proxy_answer(struct pc_preq *p, int status, const struct pc_header *h, size_t n,
                     const char *body, size_t len);
void pc_proxy_answer_error(struct pc_preq *p, int status, const char *msg);
/* Answers a failed transfer (502/503/504) when r->error is set. 1 if it answered. */
int pc_proxy_answer_backend_error(struct pc_preq *p, const struct pc_upstream_resp *r);

/*
 * Sends the request to the model server with body (borrowed until cb) in place of the
 * client's. On any failure to start, answers the client and frees p.
 */
void pc_proxy_forward_body(struct pc_preq *p, enum pc_cache_result result, const char *body,
                           size_t len, pc_upstream_cb cb);

/*
 * A model server call that outlives its request (a stale refresh, a shadow verification):
 * a copy of the request as it is forwarded, owning every string.
 */
struct pc_bgcall {
    size_t backend;
    char *method, *target;
    struct pc_header *hdrs;
    size_t n_hdrs;
    char *body;
    size_t len;
};
/* Copies p's request with body (copied) in place of the client's. p->req must be valid.
 * 0 ok; -1 no memory (c is left empty). */
int pc_bgcall_copy(struct pc_preq *p, const char *body, size_t len, struct pc_bgcall *c);
/* Starts c (borrowed until cb) with the backend's timeout. 0 started; -1 not (cb never runs). */
int pc_bgcall_send(struct pc_worker *w, struct pc_bgcall *c, pc_upstream_cb cb, void *arg);
/* Frees what c owns; c is left empty. */
void pc_bgcall_release(struct pc_bgcall *c);

/*
 * Shadow verification of hits ([cache] verify_*), in proxy_verify.c. pc_proxy_answer asks
 * prepare for every HIT before its reply (p->req valid): NULL when this hit is not
 * sampled or cannot be checked now; else a copy of the request and of the answer, which
 * start sends to the model server once the client has its answer (taken over).
 */
struct pc_verify;
struct pc_verify *pc_proxy_verify_prepare(struct pc_preq *p, int status, const char *body,
                                          size_t len);
void pc_proxy_verify_start(struct pc_verify *v);
/* The keys of the entries that answered a batch hit (malloc'ed copy in *keys, count in *n).
 * 0 ok; -1 no memory or not a batch. */
int pc_proxy_batch_hit_keys(const struct pc_preq *p, char (**keys)[PC_KEY_MAX], size_t *n);

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
const char *pc_proxy_find_header(const struct pc_header *h, size_t n, const char *name);
/* Seconds an entry lives in Redis: ttl_s, plus grace_s to be served stale. */
int pc_proxy_store_ttl(const struct pc_preq *p);
/* The body a replayed answer carries for p: a KServe v2 answer's "id" is the requester's,
 * in its first json_len bytes (all of it, or the JSON part of a binary tensor answer).
 * *out is body, or tmp's data when rewritten; *out_json_len the JSON part's new length. */
void pc_proxy_replay_body(const struct pc_preq *p, const char *body, size_t len, size_t json_len,
                          struct pc_buf *tmp, const char **out, size_t *out_len,
                          size_t *out_json_len);

/*
 * Coalescing, shared by both flows, on p->key or (for a batch's sub-request) p->herd.
 * pc_proxy_join: PC_JOIN_WAIT p waits for the flight's leader (answered by it);
 * PC_JOIN_DONE *done is a flight already answered whose stores are on the way (answer p
 * from its kept answer); PC_JOIN_LEAD p leads (p->flight set, or NULL: no memory, go alone).
 */
enum pc_join { PC_JOIN_LEAD, PC_JOIN_WAIT, PC_JOIN_DONE };
enum pc_join pc_proxy_join(struct pc_preq *p, struct pc_flight **done);
/* Waiters of p's flight that the leader's answer cannot serve: ends the flight and hands
 * them back (count in *n, malloc'ed array, NULL when none). */
struct pc_preq **pc_proxy_flight_release(struct pc_preq *p, size_t *n);
/*
 * A leader of the batch flow asks the cross-process lock on p->herd: 1 asked (p is held
 * until pc_proxy_batch_send, when the lock is ours or cannot be had, or
 * pc_proxy_batch_retry, when another process answered or lock_timeout_ms passed); 0 not
 * asked (the caller goes on).
 */
int pc_proxy_lock_batch(struct pc_preq *p, enum pc_cache_result result);
/* Keeps the leader's answer in its flight while its stores are on the way: the argument for
 * pc_proxy_flight_stored, which ends the flight; NULL when there is no flight (then it has
 * ended now). */
void *pc_proxy_flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r);
void pc_proxy_flight_stored(int ok, void *arg);
/* Ends the leader's flight at once (nothing to share). */
void pc_proxy_flight_drop(struct pc_preq *p);

/*
 * Per-instance flow, keyed one of two ways, then looked up. Keys the request's batch with
 * p->head: 0 keyed (p->batch set; a large batch is keyed a slice per loop turn, from
 * pc_proxy_batch_lookup on, and put in the key memo under ctx with probe once keyed);
 * 1 not a batch, or an instance cannot be keyed alone (use the per-body flow); 2 more
 * instances than [cache] max_batch_instances: forward it uncached (BYPASS), nothing
 * keyed; -1 out of memory (the per-body flow, but the outcome must not be remembered).
 * Borrows probe and ctx (copied when kept).
 */
int pc_proxy_batch_key(struct pc_preq *p, const struct pc_keymemo_probe *probe, const char *ctx,
                       size_t ctx_len);
/* Keyed from the key memo (v->n > 0). 0 ok (p->batch set), -1 out of memory. */
int pc_proxy_batch_from_memo(struct pc_preq *p, const struct pc_keymemo_val *v);
/* Looks the keyed batch up (in-process tier, then Redis) and answers: takes p over. */
void pc_proxy_batch_lookup(struct pc_preq *p);
void pc_proxy_batch_free(struct pc_batch_state *b);
/* Sends the batch's missing instances to the model server (result as the answer's label). */
void pc_proxy_batch_send(struct pc_preq *p, enum pc_cache_result result);
/* Another process answered p's sub-request, or the wait ended: look the batch up again. */
void pc_proxy_batch_retry(struct pc_preq *p);
/* The keys of some of a batch's instances (as digests: 32 bytes each, whatever the
 * prefix), for a refresh that outlives its request. */
struct pc_batch_keys;
void pc_proxy_batch_keys_free(struct pc_batch_keys *k); /* NULL ok */
/* Refreshes a batch's stale instances in the background: body (copied) holds exactly the
 * instances whose keys are keys (taken over, and freed when no refresh starts), in order;
 * herd keys the refresh (one at a time); stale_ttl_s: a client's TTL they were stored with
 * (0: none). p->req must still be valid. */
void pc_proxy_batch_refresh(struct pc_preq *p, const char *herd, int stale_ttl_s, const char *body,
                            size_t len, struct pc_batch_keys *keys);
/* Stores a refresh's answer r, one prediction under each of *keys: NULL (then *keys is
 * taken over, NULL, and the stores go out a slice at a time), or why nothing was stored. */
const char *pc_proxy_batch_store_refresh(struct pc_worker *w, const struct pc_upstream_resp *r,
                                         struct pc_batch_keys **keys, int env_ttl_s,
                                         int redis_ttl_s);

#endif
