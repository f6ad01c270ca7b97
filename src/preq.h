/*
 * preq: one data-port request as the proxy's modules see it (struct pc_preq), its cache
 * results, and the end of its life (pc_preq_free: everything it holds, undone through the
 * hooks the modules it went through set). Shared by the proxy's modules: proxy (intake and
 * the per-body flow), proxy_batch (the item flow), proxy_stream, proxy_verify, answer,
 * bgcall, forward, coalesce, refresh. Depends on none of them.
 */
#ifndef PREDCACHE_PREQ_H
#define PREDCACHE_PREQ_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "predcache/adapter.h"
#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/http.h"
#include "predcache/reason.h"
#include "predcache/routes.h"
#include "predcache/upstream.h"
#include "lock.h"
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
struct pc_flow;
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
    uint64_t begun_us;         /* when it came (pc_now_us): its answer is not stored when its
                                * entry was purged since (purges.h) */
    struct pc_header *fwd;     /* headers for the model server, owned; their strings in fwd_text */
    size_t n_fwd;
    struct pc_arena fwd_text;
    struct pc_batch_state *batch; /* per-instance state, owned; NULL for the per-body flow */
    struct pc_flight *flight;     /* the coalescing entry this request leads, or NULL */
    char herd[PC_KEY_MAX];        /* a batch's sub-request coalesces on this (else on key) */
    int err_status;               /* the error p was answered with: its waiters get it too */
    char err_msg[200];
    struct pc_lockwait lock; /* the cross-process lock of its key (coalesce.h) */
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
    /* Set by the modules that take part in the request's life, so that none of them calls
     * back into another: the flow it is in (coalesce.h: the miss machinery resumes it
     * through this), what coalesce must undo when it is freed (a lock held, a wait, a
     * flight led), the item flow's state's destructor and its hit keys (proxy_batch.c). */
    const struct pc_flow *flow;
    void (*release)(struct pc_preq *p);
    void (*free_items)(struct pc_batch_state *b);
    int (*hit_keys)(const struct pc_preq *p, char (**keys)[PC_KEY_MAX], size_t *n);
    /* The item flow's item count, and its first item's key into key ("" not keyed yet),
     * for the access line. */
    size_t (*items)(const struct pc_preq *p, char key[PC_KEY_MAX]);
    /* The item flow's: 1 when an instance it is missing was purged since since_us. */
    int (*items_purged)(const struct pc_preq *p, uint64_t since_us);
};

/* The request body as the model server reads it: decoded, or the bytes as received. */
const char *pc_preq_body(const struct pc_preq *p, size_t *len);

const char *pc_proxy_result_name(enum pc_cache_result r);

/* Frees p and all it holds: first what the modules it went through set hooks for (the
 * cross-process lock released, waiters answered with an error, the item flow's state). */
void pc_preq_free(struct pc_preq *p);

/* Request bytes held besides the request's own (a decoded body): the input budget and its
 * gauge ([server] max_input_bytes). delta may be negative. */
void pc_preq_hold_input(struct pc_worker *w, int64_t delta);

/* The worker's entry of the route p took (p->route is that entry, read-only). */
static inline struct pc_wroute *pc_preq_wroute(const struct pc_preq *p)
{
    return &p->w->routes[p->route->v.id];
}

#endif
