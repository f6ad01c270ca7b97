/*
 * proxy: the life of one data-port request, top to bottom.
 *
 *   request --route cacheable?--no--> forward unchanged (PASS) ----------------> answer
 *                  | yes
 *              derive key (400 when a JSON body does not parse)
 *                  |
 *              Cache-Control: no-cache? --yes--------------------------+
 *                  | no                                                |
 *              Redis GET --hit--> answer stored status/type/body (HIT) |
 *                  | miss (MISS) / down, refused, slow (BYPASS)        v
 *                  +-------------------------------------------> forward to the model server
 *                                                                      |
 *                                        answer the client (MISS / BYPASS, or 502/504)
 *                                                                      |
 *                     2xx, <= max_value_bytes, no no-store --> Redis SET EX ttl (async)
 *
 * Every wait has its own bound (Redis command timeout, backend timeout capped by what
 * is left of the request timeout), so every path ends in exactly one answer. Redis is
 * never the reason for an error answer. A client that leaves early does not cancel the
 * model server call: its answer is still stored for the next client.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "predcache/budget.h"
#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/config.h"
#include "predcache/creds.h"
#include "predcache/decode.h"
#include "predcache/envelope.h"
#include "predcache/flight.h"
#include "predcache/generations.h"
#include "predcache/http.h"
#include "predcache/jobs.h"
#include "predcache/jsonedit.h"
#include "predcache/l1.h"
#include "predcache/l1refresh.h"
#include "predcache/log.h"
#include "predcache/proxy.h"
#include "predcache/reason.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/versions.h"
#include "answer.h"
#include "coalesce.h"
#include "forward.h"
#include "preq.h"
#include "proxy_batch.h"
#include "proxy_stream.h"
#include "refresh.h"

static void forward(struct pc_preq *p, enum pc_cache_result result);
static void relook(struct pc_preq *p);
static int found_in_lock(struct pc_preq *p, const char *data, size_t len);

/* How coalesce resumes a request of the per-body flow. */
static const struct pc_flow body_flow = {forward, relook, found_in_lock};

/* ---- the model server's answer ----------------------------------------------------- */

/* Forwarded because the store could not be used (X-Cache: BYPASS and why). */
static void bypass(struct pc_preq *p, enum pc_reason why)
{
    p->reason = why;
    forward(p, RES_BYPASS);
}

/*
 * The leader's model server call is over. When its answer may be shared (why: why it is
 * its requester's alone, NULL when it is not), every waiter gets it as an entry would
 * replay it (an error of the model server too: a herd must not multiply the calls to a
 * failing model); otherwise (a private answer, a cookie, a Vary its key lacks, a client
 * error) each waiter makes its own call. A failed transfer is everyone's failure.
 */
static void answer_waiters(struct pc_preq *leader, const struct pc_upstream_resp *r,
                           enum pc_reason why)
{
    if (r->error == PC_UP_OK && why != PC_REASON_NONE) {
        size_t n;
        struct pc_preq **qs = pc_proxy_flight_release(leader, &n); /* the flight ends */
        pc_log(PC_LOG_DEBUG, "proxy: %zu waiters of %s call on their own: %s", n, leader->key,
               pc_reason_words(why));
        for (size_t i = 0; i < n; i++)
            forward(qs[i], RES_MISS);
        free(qs);
        return;
    }
    struct pc_flight *f = leader->flight;
    char msg[400];
    int status = r->error != PC_UP_OK ? pc_answer_backend_error(r, msg, sizeof msg) : 0;
    struct pc_envelope env;
    pc_answer_envelope(leader->w, r, &env);
    for (size_t i = 0; i < f->n_waiters; i++) {
        struct pc_preq *q = f->waiters[i];
        q->backend_ms = r->total_ms;
        if (status != 0) {
            pc_proxy_answer_error(q, status, msg);
            pc_preq_free(q);
        } else {
            pc_answer_coalesced_free(q, &env);
        }
    }
    f->n_waiters = 0;
}

static void on_backend(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    if (pc_proxy_answer_backend_error(p, r)) {
        if (p->flight != NULL) {
            answer_waiters(p, r, PC_REASON_NONE);
            pc_proxy_flight_drop(p);
        }
        pc_preq_free(p);
        return;
    }
    /* Judged before any answer: it may bound the TTL or teach the route a Vary. */
    enum pc_reason personal = PC_REASON_NOT_CACHEABLE;
    enum pc_reason why = p->cacheable ? pc_proxy_judge(p, r, &personal) : personal;
    size_t n = r->n_headers;
    struct pc_header *h = calloc(n + 3, sizeof *h);
    if (h == NULL) {
        pc_proxy_answer_error(p, 503, "out of memory");
    } else {
        memcpy(h, r->headers, n * sizeof *h);
        if (p->cacheable) {
            h[n].name = (char *)"X-Cache";
            h[n++].value = (char *)pc_proxy_result_name(p->result);
        }
        if (p->cacheable && p->key[0] != '\0') {
            h[n].name = (char *)"X-Cache-Key";
            h[n++].value = p->key;
        }
        if (p->cacheable && p->reason != PC_REASON_NONE)
            h[n++] =
                (struct pc_header){(char *)"X-Cache-Reason", (char *)pc_reason_token(p->reason)};
        pc_proxy_answer(p, r->status, h, n, r->body.data, r->body.len);
        free(h);
    }
    if (p->flight != NULL)
        answer_waiters(p, r, personal);
    /* After the answers, and held (store.h): no client waits for the entry, the flight's
     * PING or the lock's release, so clients' lookups go to Redis before them. */
    struct pc_store *st = p->w->store;
    pc_store_hold(st, 1);
    if (p->cacheable) {
        void *fs = why == PC_REASON_NONE ? pc_proxy_flight_keep(p, r) : NULL;
        if (!pc_answer_store_result(p, r, why, fs ? pc_proxy_flight_stored : NULL, fs) &&
            fs != NULL)
            pc_proxy_flight_stored(0, fs); /* nothing stored: the entry ends now */
    }
    pc_preq_free(p);
    pc_store_hold(st, 0);
}

/* Forwards the client's own body; a request for a streamed answer gets it as it comes. */
static void forward(struct pc_preq *p, enum pc_cache_result result)
{
    PC_PREQ_CHECK(p);
    if (p->stream) {
        pc_proxy_stream_send(p, result);
        return;
    }
    size_t len;
    const char *body = pc_preq_body(p, &len);
    pc_proxy_forward_body(p, result, body, len, on_backend);
}

/* ---- coalescing: the per-body flow's side ------------------------------------------ */

static void answer_hit(struct pc_preq *p, const struct pc_envelope *env);

static enum pc_entry_use judge_value(const struct pc_preq *p, const char *data, size_t len,
                                     struct pc_envelope *env, char *ctype, size_t ctype_len);

/* Answers the leader and every local waiter with a value that is now in Redis, and frees
 * the leader. */
static void answer_from_redis_free(struct pc_preq *p, const struct pc_envelope *env,
                                   enum pc_cache_result result)
{
    struct pc_flight *f = p->flight;
    for (size_t i = 0; f != NULL && i < f->n_waiters; i++)
        pc_answer_coalesced_free(f->waiters[i], env);
    if (f != NULL)
        f->n_waiters = 0;
    pc_proxy_flight_drop(p);
    pc_answer_entry(p, env, result);
    pc_preq_free(p);
}

/* The lock script found the value (it landed since our GET): a HIT when fresh. */
static int found_in_lock(struct pc_preq *p, const char *data, size_t len)
{
    struct pc_envelope env;
    char ctype[PC_ENV_SCRATCH];
    if (judge_value(p, data, len, &env, ctype, sizeof ctype) != PC_ENTRY_FRESH)
        return 0;
    answer_from_redis_free(p, &env, RES_HIT);
    return 1;
}

/* After the wait: the other process's answer should be in Redis now. arg is the leader,
 * taken over here: answered and freed, or forwarded (its transfer then holds it). */
static void on_remote_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    struct pc_envelope env;
    char ctype[PC_ENV_SCRATCH];
    /* Only a fresh value: one stored long ago and expiring is no answer to this miss. */
    if (res == PC_STORE_HIT &&
        judge_value(p, data, len, &env, ctype, sizeof ctype) == PC_ENTRY_FRESH) {
        answer_from_redis_free(p, &env, RES_COALESCED);
        return;
    }
    if (res == PC_STORE_ERROR)
        p->reason = PC_REASON_REDIS_ERROR;
    forward(p, res == PC_STORE_ERROR ? RES_BYPASS : RES_MISS); /* it failed: our own call */
}

static void relook(struct pc_preq *p)
{
    if (pc_store_get(p->w->store, p->key, on_remote_lookup, p) != 0)
        bypass(p, PC_REASON_REDIS_UNAVAILABLE);
}

/*
 * A miss: when the same key's model server call is already running in this process, wait
 * for its answer instead of making another; else lead one.
 */
static void forward_or_join(struct pc_preq *p, enum pc_cache_result result)
{
    struct pc_worker *w = p->w;
    struct pc_flight *f;
    if (p->stream) { /* each stream is its own call: a waiter would not get it as it comes */
        forward(p, result);
        return;
    }
    switch (pc_proxy_join(p, &f)) {
    case PC_JOIN_DONE: {
        pc_coalesce_unlock(p); /* a lock the lookup took: this process has the answer */
        struct pc_envelope env;
        char scratch[PC_ENV_SCRATCH];
        if (pc_envelope_decode(f->body, f->body_len, &env, scratch, sizeof scratch) == 0) {
            pc_answer_coalesced_free(p, &env);
            return;
        }
        forward(p, result); /* cannot happen: the flight holds what the leader kept */
        return;
    }
    case PC_JOIN_WAIT:
        pc_coalesce_unlock(p); /* a lock the lookup took: this process's leader calls */
        return;                /* answered by answer_waiters */
    case PC_JOIN_LEAD:
        break;
    }
    if (p->lock.held) { /* the lookup took the lock (on_lookup_lock) */
        forward(p, result);
        return;
    }
    /* The lock script may answer with the stored value: not for a client that found it
     * too old (max-age). */
    if (p->flight != NULL && result == RES_MISS && p->max_age_s < 0 && pc_lock_wanted(w, 1))
        pc_coalesce_lock(p, &body_flow); /* other processes may be fetching the same key */
    else
        forward(p, result);
}

/* ---- lookup ------------------------------------------------------------------------ */

static void answer_hit(struct pc_preq *p, const struct pc_envelope *env)
{
    pc_answer_entry(p, env, RES_HIT);
}

/* ---- stale-while-revalidate ------------------------------------------------------- */

static void start_refresh(struct pc_preq *p, const struct pc_envelope *stale)
{
    size_t len;
    const char *body = pc_preq_body(p, &len);
    pc_refresh_start(p, p->key, stale->ttl_s, body, len, NULL);
}

/* An entry past its TTL but within grace: answered at once, marked stale. */
static void answer_stale(struct pc_preq *p, const struct pc_envelope *env)
{
    pc_answer_entry(p, env, RES_STALE);
}

/* Redis answered (or failed): the value is valid only during this callback. */

/* What a stored value is worth to p: fresh, stale (within grace) or nothing. */
static enum pc_entry_use judge_value(const struct pc_preq *p, const char *data, size_t len,
                                     struct pc_envelope *env, char *ctype, size_t ctype_len)
{
    return pc_answer_entry_use(p->w, p->key, p->route->v.ttl_s, p->max_age_s, data, len, env, ctype,
                               ctype_len);
}

static void on_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    if (res == PC_STORE_HIT) {
        struct pc_envelope env;
        char ctype[PC_ENV_SCRATCH];
        switch (judge_value(p, data, len, &env, ctype, sizeof ctype)) {
        case PC_ENTRY_FRESH:
            pc_l1_put(p->w->l1, p->key, data, len);
            p->result = RES_HIT;
            answer_hit(p, &env);
            pc_preq_free(p);
            return;
        case PC_ENTRY_STALE:
            start_refresh(p, &env); /* before the answer: it copies the request */
            answer_stale(p, &env);
            pc_preq_free(p);
            return;
        case PC_ENTRY_NONE:
            break;
        }
        res = PC_STORE_MISS;
    }
    if (res != PC_STORE_MISS)
        p->reason = PC_REASON_REDIS_ERROR;
    forward_or_join(p, res == PC_STORE_MISS ? RES_MISS : RES_BYPASS);
}

/*
 * The lookup as the lock script (coalesce.h): the value, else the lock taken, else a mark
 * that this process waits. TAKEN leads (or, when a request of this process leads already,
 * releases it and joins). HELD goes on as a miss after a GET: its leader asks the lock
 * again, now that its flight can hear the holder's announcement (one that came before the
 * flight began was heard by nobody). p was held by the script until now.
 */
static void on_lookup_lock(enum pc_lock what, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    pc_lockwait_answer(&p->lock, what == PC_LOCK_TAKEN ? what : PC_LOCK_UNKNOWN, 0);
    /* Counted and timed as a GET's (store.c). A refused script is not: the plain GET that
     * stands in for it counts, whatever comes of it (pc_store_get). */
    struct pc_metrics *m = &p->w->metrics;
    if (what == PC_LOCK_UNKNOWN) {
        PC_METRIC_INC(m->redis_get_failed);
    } else if (what != PC_LOCK_REFUSED) {
        PC_METRIC_INC(m->redis_get_ok);
        uint64_t us = pc_now_us() - p->lock.asked_us;
        pc_hist_observe(&m->h_redis_get, (double)us / 1e6);
        pc_timer_observe_us(&m->t_redis_get, us);
    }
    switch (what) {
    case PC_LOCK_FOUND:
        on_lookup(PC_STORE_HIT, data, len, p);
        return;
    case PC_LOCK_TAKEN:
    case PC_LOCK_HELD:
        on_lookup(PC_STORE_MISS, NULL, 0, p);
        return;
    case PC_LOCK_REFUSED: /* no scripts for this user (logged): the plain GET still finds */
        if (pc_store_get(p->w->store, p->key, on_lookup, p) == 0)
            return;
        break;
    case PC_LOCK_UNKNOWN:
        break;
    }
    on_lookup(PC_STORE_ERROR, NULL, 0, p);
}

/* A miss's one round trip before its model call: the lookup takes the lock too, when a miss
 * would ask it ([cache] lock_timeout_ms; not for a stream, a client's max-age or
 * only-if-cached) and no request of this process fetches the key already. Only behind the
 * in-process tier: there a lookup that reaches Redis is for a key this process has not
 * seen (its own hits, and their refreshes, are the tier's), mostly a miss; without it every
 * hit would pay the script (docs/PERFORMANCE.md: 64k hits/s by GET, 47k by the script).
 * 1: asked. */
static int lookup_with_lock(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    if (w->l1 == NULL || p->stream || p->max_age_s >= 0 || p->only_if_cached ||
        pc_flights_find(w->flights, p->key) != NULL || !pc_lock_wanted(w, 0))
        return 0;
    return pc_coalesce_lookup(p, on_lookup_lock) == 0;
}

/* The in-process tier: 1 when it answered p (a fresh hit); anything else asks Redis. */
static int l1_answer(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    if (w->l1 == NULL)
        return 0;
    struct pc_buf v;
    pc_buf_init(&v);
    int answered = 0;
    if (pc_l1_get_refresh(w->l1, w->store, p->key, &v, &w->metrics.l1_refreshes)) {
        struct pc_envelope env;
        char ctype[PC_ENV_SCRATCH];
        if (judge_value(p, v.data, v.len, &env, ctype, sizeof ctype) == PC_ENTRY_FRESH) {
            PC_METRIC_INC(w->metrics.l1_hits);
            p->result = RES_HIT;
            answer_hit(p, &env);
            pc_preq_free(p);
            answered = 1;
        }
    }
    pc_buf_release(&v);
    return answered;
}

static int body_declares_json(const struct pc_http_req *req)
{
    const char *ct = pc_http_req_header(req, "Content-Type");
    return ct != NULL && strcasestr(ct, "json") != NULL;
}

/*
 * The client's say in caching, unless [cache] allow_client_controls is off: what narrows
 * its own answer (Cache-Control no-cache, no-store, max-age=N, only-if-cached) from anyone;
 * X-Predcache-Namespace (a key space of its own) and X-Predcache-TTL (at most the route's
 * ttl_s, or max_ttl_s in a namespace of its own) only with X-Predcache-Token. NULL ok;
 * else why the request is refused (400).
 */
static const char *read_controls(struct pc_preq *p)
{
    struct pc_http_req *req = p->req;
    p->keyp = p->route->keyp;
    p->max_age_s = -1;
    if (!p->w->cfg->allow_client_controls)
        return NULL;
    const char *cc = pc_http_req_header(req, "Cache-Control");
    p->no_cache =
        pc_cc_has(cc, "no-cache") || pc_cc_has(pc_http_req_header(req, "Pragma"), "no-cache");
    p->no_store = pc_cc_has(cc, "no-store");
    p->only_if_cached = pc_cc_has(cc, "only-if-cached");
    p->max_age_s = pc_cc_seconds(cc, "max-age");
    /* What changes the answers of others (a TTL, a namespace) is the operator's: only a
     * request carrying [cache] client_controls_token may say it; others are not heard. */
    const char *token = p->w->cfg->client_controls_token;
    const char *given = pc_http_req_header(req, "X-Predcache-Token");
    if (token[0] == '\0' || given == NULL || !pc_token_equal(given, token))
        return NULL;
    const char *ns = pc_http_req_header(req, "X-Predcache-Namespace");
    if (ns != NULL) {
        if (!pc_name_ok(ns, sizeof p->ns - 1))
            return "X-Predcache-Namespace: 1 to 64 of A-Z a-z 0-9 . _ -";
        memcpy(p->ns, ns, strlen(ns) + 1);
        p->keyp.namespace_ = p->ns;
    }
    const char *ttl = pc_http_req_header(req, "X-Predcache-TTL");
    if (ttl != NULL) {
        size_t n = strlen(ttl);
        long long v = 0;
        if (n == 0 || n > 12 || strspn(ttl, "0123456789") != n || (v = atoll(ttl)) < 1)
            return "X-Predcache-TTL: a number of seconds, 1 or more";
        /* Longer than the route's only in a namespace of the caller's own: an entry that
         * other clients share is never made to outlive what the operator set. */
        long long most = ns != NULL && strcmp(ns, p->w->cfg->namespace_) != 0 ? p->w->cfg->max_ttl_s
                                                                              : p->route->v.ttl_s;
        p->ttl_s = v > most ? (int)most : (int)v;
        p->client_ttl = 1;
    }
    return NULL;
}

/* ---- the request: route, controls, model version, generation, key, lookup --------- */

/*
 * How the model server reads p's body, from its API family (adapter.h): TF Serving
 * (predict, or classify / regress), KServe v2, raw bytes, else JSON; and the noise its
 * whole-body reading leaves out when the route says "auto": KServe v2's "id" (written back
 * into replayed answers), the others' "request_id".
 */
static void pass_uncached(struct pc_preq *p, enum pc_reason why);

static void key_family(struct pc_preq *p)
{
    p->keyp.family = pc_adapter_family(&p->ad, pc_http_req_header(p->req, "Content-Type"));
    if (p->route->ignore_auto) {
        p->keyp.ignore_fields = p->ad.noise;
        p->keyp.n_ignore_fields = p->ad.n_noise;
    }
    p->keyp.items = p->ad.items != NULL ? p->ad.items->request : NULL;
    p->keyp.items_text = p->ad.items != NULL && p->ad.items->text_items;
}

/*
 * The model a path names: TF Serving's and KServe v2's (their version is then resolved),
 * TorchServe's /predictions/NAME[/VERSION] (its version as sent: invalidation by model).
 */
static void model_of(struct pc_preq *p)
{
    const char *path = pc_http_req_path(p->req);
    memset(&p->model, 0, sizeof p->model);
    if (p->ad.status_versions) {
        if (pc_model_of_path(path, &p->model) != 0)
            memset(&p->model, 0, sizeof p->model);
        return;
    }
    if (p->ad.api != PC_ADAPTER_TORCHSERVE || strncmp(path, "/predictions/", 13) != 0)
        return;
    const char *name = path + 13, *slash = strchr(name, '/');
    size_t n = slash ? (size_t)(slash - name) : strlen(name);
    const char *version = slash ? slash + 1 : "";
    if (n == 0 || n >= sizeof p->model.name || strlen(version) >= sizeof p->model.version ||
        strchr(version, '/') != NULL)
        return;
    memcpy(p->model.name, name, n);
    pc_strlcpy(p->model.version, version, sizeof p->model.version);
}

/*
 * A request carrying credentials (Authorization, Proxy-Authorization, Cookie, [cache]
 * credential_headers): isolate puts their scope in its keys; shared leaves them out;
 * bypass forwards it uncached. 0 go on; -1 p was taken over.
 */
static int key_credentials(struct pc_preq *p)
{
    const struct pc_config *cfg = p->w->cfg;
    size_t n;
    const struct pc_header *h = pc_http_req_headers(p->req, &n);
    switch (p->route->v.credentials) {
    case PC_CREDS_SHARED:
        return 0;
    case PC_CREDS_BYPASS:
        if (pc_creds_present(h, n, cfg->credential_headers, cfg->n_credential_headers)) {
            pass_uncached(p, PC_REASON_CREDENTIALS);
            return -1;
        }
        return 0;
    default:
        break;
    }
    if (pc_creds_scope(h, n, cfg->credential_headers, cfg->n_credential_headers, p->scope) != 0) {
        p->cacheable = 0;
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return -1;
    }
    return 0;
}

/* Forwarded without the cache (X-Cache: PASS and the reason): the request cannot be
 * cached, or what would key it cannot be known now. */
static void pass_uncached(struct pc_preq *p, enum pc_reason why)
{
    pc_log(PC_LOG_DEBUG, "proxy: %s %s not cached: %s", pc_http_req_method(p->req),
           pc_http_req_path(p->req), pc_reason_words(why));
    p->no_store = 1;
    p->key[0] = '\0';
    p->reason = why;
    forward(p, RES_PASS);
}

/* Appends every value of request header name, joined with ", "; *found: any present. */
static int header_values(const struct pc_http_req *req, const char *name, struct pc_buf *out,
                         int *found)
{
    size_t n;
    const struct pc_header *h = pc_http_req_headers(req, &n);
    int rc = 0;
    *found = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pc_strcaseeq(h[i].name, name))
            continue;
        if (*found)
            rc |= pc_buf_append_str(out, ", ");
        rc |= pc_buf_append_str(out, h[i].value);
        *found = 1;
    }
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The Vary part of p's keys: the route's Vary headers as they are now (p->vary_n of them)
 * and, for KServe v2, Inference-Header-Content-Length (it says where the body's JSON
 * ends), in name order.
 */
static int vary_of(struct pc_preq *p, struct pc_buf *out)
{
    const struct pc_wroute *r = p->route;
    const char *names[PC_WROUTE_VARY + 1];
    size_t n = 0;
    int kserve = p->keyp.family == PC_FAMILY_KSERVE;
    p->vary_n = r->n_vary;
    for (size_t i = 0; i < r->n_vary; i++) {
        names[n++] = r->vary[i];
        if (strcmp(r->vary[i], "inference-header-content-length") == 0)
            kserve = 0;
    }
    if (kserve)
        names[n++] = "inference-header-content-length";
    qsort(names, n, sizeof names[0], name_cmp);
    struct pc_buf v;
    pc_buf_init(&v);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int found;
        v.len = 0;
        rc |= header_values(p->req, names[i], &v, &found);
        rc |= pc_buf_append_char(&v, '\0');
        rc |= pc_cachekey_vary_add(out, names[i], found && rc == 0 ? v.data : NULL);
    }
    pc_buf_release(&v);
    return rc;
}

/* The head of p's keys (pc_cachekey_head): everything but the body. */
static int key_head(struct pc_preq *p, struct pc_buf *out)
{
    struct pc_buf media, vary;
    pc_buf_init(&media);
    pc_buf_init(&vary);
    int rc = pc_cachekey_media(pc_http_req_header(p->req, "Content-Type"), &media);
    rc |= pc_buf_append_char(&media, '\0');
    rc |= vary_of(p, &vary);
    if (rc == 0) {
        struct pc_key_head h = {
            .backend = p->w->cache_ids[p->backend],
            .method = pc_http_req_method(p->req),
            .path = p->key_path[0] ? p->key_path : pc_http_req_path(p->req),
            .query = pc_http_req_query(p->req),
            .media = media.data,
            .scope = p->scope,
            .ns = p->keyp.namespace_,
            .vary = vary.data,
            .vary_len = vary.len,
        };
        rc = pc_cachekey_head(&h, out);
    }
    pc_buf_release(&media);
    pc_buf_release(&vary);
    return rc;
}

/*
 * What a request's keys depend on besides its body, as one byte string for the key memo:
 * the route taken (its key parameters and per-instance setting), whether the body was
 * declared JSON, the request path (a batch only on :predict routes) and the keys' head
 * (backend, method, resolved path, query, media type, credential scope, Vary headers,
 * namespace with its generations), which starts at *head_off.
 */
static int memo_context(struct pc_preq *p, struct pc_buf *ctx, size_t *head_off)
{
    size_t route_id = (size_t)(p->route - p->w->routes);
    char flags = (char)('0' + body_declares_json(p->req));
    int rc = pc_buf_append(ctx, &route_id, sizeof route_id);
    rc |= pc_buf_append_char(ctx, flags);
    rc |= pc_buf_append(ctx, pc_http_req_path(p->req), strlen(pc_http_req_path(p->req)) + 1);
    *head_off = ctx->len;
    rc |= key_head(p, ctx);
    return rc;
}

/*
 * Keys the request: from the key memo when the same bytes came before with the same
 * context, else by reading the body (per instance for a TF Serving batch on a per-instance
 * route), and then remembered. 0 keyed (p->key, or p->batch); -1 answered (400, 503).
 */
static int key_request(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    size_t len, head_off = 0;
    const char *body = pc_preq_body(p, &len);
    struct pc_buf ctx;
    pc_buf_init(&ctx);
    if (memo_context(p, &ctx, &head_off) != 0 ||
        (p->head = malloc(ctx.len - head_off + 1)) == NULL) {
        pc_buf_release(&ctx);
        pc_proxy_answer_error(p, 400, "the request's path, query or headers cannot be keyed");
        pc_preq_free(p);
        return -1;
    }
    p->head_len = ctx.len - head_off;
    memcpy(p->head, ctx.data + head_off, p->head_len);
    p->head[p->head_len] = '\0';
    struct pc_keymemo_probe probe;
    struct pc_keymemo_val mv;
    if (pc_keymemo_get(w->memo, ctx.data, ctx.len, body, len, &probe, &mv)) {
        PC_METRIC_INC(w->metrics.key_memo_hits);
        int rc = 0;
        if (mv.n > 0) {
            rc = pc_proxy_batch_from_memo(p, &mv);
        } else if (mv.keys_len >= 2 && mv.keys_len <= PC_KEY_MAX + 1) {
            /* the key, its NUL and the kind it was read as */
            memcpy(p->key, mv.keys, mv.keys_len - 1);
            p->key_kind = (enum pc_key_kind)mv.keys[mv.keys_len - 1];
        }
        pc_buf_release(&ctx);
        if (rc != 0) {
            pc_proxy_answer_error(p, 503, "out of memory");
            pc_preq_free(p);
        }
        return rc;
    }
    if (w->memo != NULL)
        PC_METRIC_INC(w->metrics.key_memo_misses);
    int batch = p->route->v.per_instance && p->keyp.family != PC_FAMILY_RAW
                    ? pc_proxy_batch_key(p, &probe, ctx.data, ctx.len)
                    : 1;
    if (batch == 0 || batch == 2)
        pc_buf_release(&ctx);
    if (batch == 0) /* a TF Serving batch: cached instance by instance (remembered once keyed) */
        return 0;
    if (batch == 2) { /* more instances than max_batch_instances: not cached, not keyed */
        pass_uncached(p, PC_REASON_TOO_MANY_INSTANCES);
        return -1;
    }
    char err[256];
    int rc = pc_cachekey_body(&p->keyp, p->head, p->head_len, body, len, body_declares_json(p->req),
                              p->key, &p->key_kind, err, sizeof err);
    if (rc == 0 && batch == 1) { /* not after a failure: the outcome may differ next time */
        char kv[PC_KEY_MAX + 1];
        size_t kl = strlen(p->key);
        memcpy(kv, p->key, kl + 1);
        kv[kl + 1] = (char)p->key_kind;
        mv = (struct pc_keymemo_val){0, 1, NULL, kv, kl + 2};
        pc_keymemo_put(w->memo, &probe, ctx.data, ctx.len, body, len, &mv);
    }
    pc_buf_release(&ctx);
    if (rc != 0) {
        p->cacheable = 0;
        pc_proxy_answer_error(p, 400, err);
        pc_preq_free(p);
        return -1;
    }
    return 0;
}

/* Last step: the key, then the lookup (or the per-instance flow). */
static void key_and_lookup(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    if (key_request(p) != 0)
        return;
    if (p->batch != NULL) {
        pc_proxy_batch_lookup(p);
        return;
    }
    if (p->no_cache) {
        forward(p, RES_MISS);
        return;
    }
    if (!p->skip_lookup && (l1_answer(p) || lookup_with_lock(p)))
        return;
    if (p->skip_lookup || pc_store_get(w->store, p->key, on_lookup, p) != 0) {
        p->reason = p->skip_lookup && pc_store_ready(w->store) ? PC_REASON_GENERATION_UNKNOWN
                                                               : PC_REASON_REDIS_UNAVAILABLE;
        forward_or_join(p, RES_BYPASS);
    }
}

static void on_generation(void *arg);

/*
 * The invalidation generations of the request's namespace, model and version. Only a
 * lookup needs them exact (may_wait): an answer stored under an older generation's key
 * is still a fresh answer.
 */
static void with_generation(struct pc_preq *p, int may_wait)
{
    struct pc_worker *w = p->w;
    if (w->closing) {
        pc_proxy_answer_error(p, 503, "predcache is shutting down");
        pc_preq_free(p);
        return;
    }
    const char *ns = p->keyp.namespace_;
    const char *version = p->model.version[0] ? p->model.version : p->version;
    char gen[PC_GEN_MAX];
    switch (pc_generations_get(w->generations, ns, p->model.name, version, gen, sizeof gen,
                               may_wait ? on_generation : NULL, p)) {
    case PC_GEN_PENDING:
        return;
    case PC_GEN_UNKNOWN: /* Redis cannot say: no lookup with a maybe older generation */
        p->skip_lookup = 1;
        break;
    case PC_GEN_KNOWN:
        break;
    }
    if (gen[0] != '\0') { /* keys of older generations are out of reach */
        snprintf(p->ns_gen, sizeof p->ns_gen, "%s\x1f%s", ns, gen);
        p->keyp.namespace_ = p->ns_gen;
    }
    key_and_lookup(p);
}

static void on_generation(void *arg)
{
    with_generation(arg, 0); /* answered: asked once more, without waiting again */
}

/* The model version the key names (resolved when the path names none). */
static void with_version(struct pc_preq *p, const char *version)
{
    if (p->w->closing) {
        pc_proxy_answer_error(p, 503, "predcache is shutting down");
        pc_preq_free(p);
        return;
    }
    if (version == NULL) {
        pass_uncached(p, PC_REASON_VERSION_UNKNOWN);
        return;
    }
    if (version[0] == '\0') { /* a model without versions: keyed by the path as sent */
        with_generation(p, !p->no_cache);
        return;
    }
    struct pc_buf path;
    pc_buf_init(&path);
    if (pc_model_versioned_path(&p->model, version, &path) != 0 || path.len >= sizeof p->key_path) {
        pc_buf_release(&path);
        pass_uncached(p, PC_REASON_PATH_TOO_LONG);
        return;
    }
    memcpy(p->key_path, path.data, path.len + 1);
    pc_strlcpy(p->version, version, sizeof p->version);
    pc_buf_release(&path);
    with_generation(p, !p->no_cache);
}

static void on_version(const char *version, void *arg)
{
    with_version(arg, version);
}

/*
 * A body sent with a Content-Encoding is keyed as the model server reads it: gzip and
 * deflate are decoded (at most max_body_bytes: 413 past it, 400 when not valid); another
 * coding is forwarded uncached (PASS, request-encoding). The decoded bytes are request
 * bytes held like any other ([server] max_input_bytes): when they would take the figure
 * past its bound, they are dropped and the request is forwarded as sent, uncached (PASS,
 * input-budget), so that small bodies that inflate cannot hold memory without bound.
 * 0 go on; -1 p was answered.
 */
static int decode_request(struct pc_preq *p)
{
    const char *ce = pc_http_req_header(p->req, "Content-Encoding");
    enum pc_coding coding = pc_coding_of(ce);
    if (coding == PC_CODING_IDENTITY)
        return 0;
    if (coding == PC_CODING_OTHER || strlen(ce) >= sizeof p->coding) {
        p->stream = pc_proxy_wants_stream(p); /* as sent: only Accept can say so */
        pass_uncached(p, PC_REASON_REQUEST_ENCODING);
        return -1;
    }
    size_t len;
    const char *body = pc_http_req_body(p->req, &len);
    struct pc_buf out;
    pc_buf_init(&out);
    enum pc_decode_result rc = pc_decode_body(coding, body, len, p->w->cfg->max_body_bytes, &out);
    if (rc != PC_DECODE_OK) {
        pc_buf_release(&out);
        pc_proxy_answer_error(p, rc == PC_DECODE_TOO_LARGE ? 413 : 400,
                              rc == PC_DECODE_TOO_LARGE
                                  ? "request body larger than max_body_bytes once decoded"
                                  : "request body is not valid for its Content-Encoding");
        pc_preq_free(p);
        return -1;
    }
    pc_strlcpy(p->coding, ce, sizeof p->coding);
    if (out.data == NULL && pc_buf_reserve(&out, 1) != 0) { /* an empty body: still owned */
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return -1;
    }
    size_t n = out.len;
    pc_preq_hold_input(p->w, (int64_t)n);
    if (pc_budget_input_over()) {
        pc_preq_hold_input(p->w, -(int64_t)n);
        pc_buf_release(&out);
        p->stream = pc_proxy_wants_stream(p); /* as sent: only Accept can say so */
        pass_uncached(p, PC_REASON_INPUT_BUDGET);
        return -1;
    }
    p->plain = pc_buf_steal(&out, &p->plain_len);
    return 0;
}

void pc_proxy_handle(struct pc_http_req *req, void *arg)
{
    struct pc_worker *w = arg;
    if (w->jobs != NULL && pc_jobs_handle(w->jobs, req))
        return; /* an async job request: the jobs module answers it */
    PC_METRIC_INC(w->metrics.in_flight);
    struct pc_preq *p = calloc(1, sizeof *p);
    if (p == NULL) {
        PC_METRIC_DEC(w->metrics.in_flight);
        PC_METRIC_INC(w->metrics.req_error);
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    p->magic = PC_PREQ_MAGIC;
    p->w = w;
    p->req = req;
    p->backend_ms = -1;
    p->begun_us = pc_http_req_start_us(req);
    long id = pc_routes_match(w->cfg, pc_http_req_method(req), pc_http_req_path(req));
    p->route = id >= 0 ? &w->routes[id] : NULL;
    p->backend = p->route != NULL ? p->route->v.backend : 0;
    p->cacheable = p->route != NULL && p->route->v.cache;
    if (!p->cacheable) {
        p->stream = pc_proxy_wants_stream(p);
        forward(p, RES_PASS);
        return;
    }
    p->ttl_s = p->route->v.ttl_s;
    const char *bad = read_controls(p);
    if (bad != NULL) {
        p->cacheable = 0;
        pc_proxy_answer_error(p, 400, bad);
        pc_preq_free(p);
        return;
    }
    if (decode_request(p) != 0)
        return;
    pc_adapter_view(p->route->v.api, pc_http_req_path(req), &p->ad);
    p->stream = pc_proxy_wants_stream(p); /* the body decoded, as the family reads it */
    size_t len;
    const char *body = pc_preq_body(p, &len);
    enum pc_reason sampled = pc_adapter_judge_request(&p->ad, body, len, p->route->v.absent_greedy);
    if (sampled != PC_REASON_NONE) {
        pass_uncached(p, sampled);
        return;
    }
    if (p->stream && !p->ad.completion) { /* passed on as it comes, not cached */
        pass_uncached(p, PC_REASON_STREAMED);
        return;
    }
    p->stream_keep = p->stream; /* a deterministic generation: its events are stored */
    model_of(p);
    key_family(p);
    if (key_credentials(p) != 0)
        return;
    if (p->ad.status_versions && p->model.api != PC_API_NONE && p->model.version[0] == '\0' &&
        w->cfg->version_refresh_s > 0) {
        char version[64];
        switch (pc_versions_get(w->versions, p->backend, &p->model, version, sizeof version,
                                on_version, p)) {
        case PC_VERSION_PENDING:
            return;
        case PC_VERSION_UNKNOWN:
            with_version(p, NULL);
            return;
        case PC_VERSION_KNOWN:
            with_version(p, version);
            return;
        }
    }
    with_generation(p, !p->no_cache);
}
