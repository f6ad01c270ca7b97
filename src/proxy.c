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
#include "predcache/log.h"
#include "predcache/reason.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/versions.h"
#include "predcache/proxy.h"
#include "proxy_int.h"

static const char *const result_names[] = {"HIT",   "MISS",    "BYPASS",    "PASS",
                                           "ERROR", "PARTIAL", "COALESCED", "STALE"};

const char *pc_proxy_result_name(enum pc_cache_result r)
{
    return result_names[r];
}

/* ---- route table and request controls ---------------------------------------------- */

/* Does a comma-separated header value hold the directive (case-insensitive)? */
static int has_directive(const char *value, const char *dir)
{
    if (value == NULL)
        return 0;
    size_t dl = strlen(dir);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, dir, dl) == 0 &&
            (p[dl] == '\0' || p[dl] == ',' || p[dl] == ' ' || p[dl] == '=' || p[dl] == ';'))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

const char *pc_proxy_find_header(const struct pc_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(h[i].name, name))
            return h[i].value;
    }
    return NULL;
}

/* ---- finishing --------------------------------------------------------------------- */

static void answer_entry(struct pc_preq *p, const struct pc_envelope *env,
                         enum pc_cache_result result);

static void flight_fail(struct pc_preq *p);

static void lock_release(struct pc_preq *p);

/* Request bytes held (a decoded body): the input budget and its gauge. */
static void hold_input(struct pc_worker *w, int64_t delta)
{
    pc_budget_input_add(delta);
    PC_METRIC_ADD(w->metrics.input_buffered, delta);
}

void pc_preq_free(struct pc_preq *p)
{
    PC_PREQ_CHECK(p);
    if (p->lock_held)
        lock_release(p); /* after any SET of the answer: same connection, same order */
    if (p->lock_wait != NULL)
        event_free(p->lock_wait);
    if (p->flight != NULL)
        flight_fail(p); /* a leader that never reached the model server */
    for (size_t i = 0; i < p->n_fwd; i++) {
        free(p->fwd[i].name);
        free(p->fwd[i].value);
    }
    free(p->fwd);
    for (size_t i = 0; i < p->n_stream_hdrs; i++) {
        free(p->stream_hdrs[i].name);
        free(p->stream_hdrs[i].value);
    }
    free(p->stream_hdrs);
    pc_buf_release(&p->stream_rec);
    free(p->head);
    if (p->plain != NULL)
        hold_input(p->w, -(int64_t)p->plain_len);
    free(p->plain);
    pc_proxy_batch_free(p->batch);
    p->magic = 0;
    free(p);
}

/* Logs, counts and answers; p->req is gone afterwards. */
void pc_proxy_account(struct pc_preq *p, int status, size_t len)
{
    struct pc_worker *w = p->w;
    double total_ms = (double)(pc_now_us() - pc_http_req_start_us(p->req)) / 1000.0;
    struct pc_access a = {
        .client = pc_http_req_client(p->req),
        .method = pc_http_req_method(p->req),
        .path = pc_http_req_path(p->req),
        .status = status,
        .cache = result_names[p->result],
        .reason = p->reason != PC_REASON_NONE ? pc_reason_token(p->reason) : NULL,
        .key = p->cacheable ? p->key : NULL,
        .backend_ms = p->backend_ms,
        .total_ms = total_ms,
        .bytes = len,
    };
    pc_log_access(&a);
    switch (p->result) {
    case RES_HIT:
        PC_METRIC_INC(w->metrics.req_hit);
        pc_timer_observe(&w->metrics.t_hit, total_ms / 1000.0);
        break;
    case RES_MISS:
        PC_METRIC_INC(w->metrics.req_miss);
        pc_timer_observe(&w->metrics.t_miss, total_ms / 1000.0);
        break;
    case RES_BYPASS:
        PC_METRIC_INC(w->metrics.req_bypass);
        pc_timer_observe(&w->metrics.t_miss, total_ms / 1000.0);
        break;
    case RES_PASS:
        PC_METRIC_INC(w->metrics.req_pass);
        break;
    case RES_ERROR:
        PC_METRIC_INC(w->metrics.req_error);
        break;
    case RES_PARTIAL:
        PC_METRIC_INC(w->metrics.req_partial);
        pc_timer_observe(&w->metrics.t_miss, total_ms / 1000.0);
        break;
    case RES_COALESCED:
        PC_METRIC_INC(w->metrics.req_coalesced);
        pc_timer_observe(&w->metrics.t_miss, total_ms / 1000.0);
        break;
    case RES_STALE:
        PC_METRIC_INC(w->metrics.req_stale);
        break;
    }
    if (p->reason != PC_REASON_NONE && p->reason < PC_REASON_COUNT)
        PC_METRIC_INC(w->metrics.uncached[p->reason]);
    pc_hist_observe(&w->metrics.h_request, total_ms / 1000.0);
    pc_timer_observe(&w->metrics.t_request, total_ms / 1000.0);
    struct pc_route_metrics *rm = &w->route_metrics[p->route ? p->route->v.id + 1 : 0];
    PC_METRIC_INC(rm->requests[p->result]);
    pc_hist_observe(&rm->h_request, total_ms / 1000.0);
    PC_METRIC_DEC(w->metrics.in_flight);
}

void pc_proxy_answer(struct pc_preq *p, int status, const struct pc_header *h, size_t n,
                     const char *body, size_t len)
{
    PC_PREQ_CHECK(p);
    struct pc_worker *w = p->w;
    if (pc_http_reply_refuses(p->req, len)) { /* what the client gets: a 503, not this */
        status = 503;
        p->result = RES_ERROR;
    }
    pc_proxy_account(p, status, len);
    /* A sampled hit is copied before the reply and checked after it: no client waits. */
    struct pc_verify *v = p->result == RES_HIT && w->cfg->verify_sample > 0
                              ? pc_proxy_verify_prepare(p, status, body, len)
                              : NULL;
    pc_http_reply(p->req, status, h, n, body, len);
    p->req = NULL;
    if (v != NULL)
        pc_proxy_verify_start(v);
}

void pc_proxy_answer_error(struct pc_preq *p, int status, const char *msg)
{
    p->result = RES_ERROR;
    p->err_status = status;
    pc_strlcpy(p->err_msg, msg, sizeof p->err_msg);
    struct pc_buf b;
    pc_buf_init(&b);
    pc_buf_json_error(&b, msg);
    struct pc_header ct = {(char *)"Content-Type", (char *)"application/json"};
    pc_log(PC_LOG_INFO, "proxy: %s %s -> %d %s", pc_http_req_method(p->req),
           pc_http_req_path(p->req), status, msg);
    pc_proxy_answer(p, status, &ct, 1, b.data, b.len);
    pc_buf_release(&b);
}

/* ---- storing ----------------------------------------------------------------------- */

static int directive_seconds(const char *value, const char *dir);

/* What an answer's rules are judged against: the route and what p's keys carry. */
struct answer_rules {
    struct pc_worker *w;
    struct pc_wroute *route;
    size_t vary_n; /* the route's Vary headers in the key */
    int ttl_s;     /* fresh this long: bounded by max-age / s-maxage */
    int record;    /* ttl_s goes into the entry */
    int no_grace;  /* not to be served stale */
    int ignore_cc; /* the answer's Cache-Control is not heard (route, or family) */
    int streamed;  /* a streamed answer: no-cache is the convention against buffering */
};

/* Does any header `name` of r hold the directive? */
static int response_directive(const struct pc_upstream_resp *r, const char *name, const char *dir)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        if (pc_strcaseeq(r->headers[i].name, name) && has_directive(r->headers[i].value, dir))
            return 1;
    }
    return 0;
}

/* The smallest value of the directive among r's Cache-Control headers, or -1. */
static int response_seconds(const struct pc_upstream_resp *r, const char *dir)
{
    int best = -1;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (!pc_strcaseeq(r->headers[i].name, "Cache-Control"))
            continue;
        int v = directive_seconds(r->headers[i].value, dir);
        if (v >= 0 && (best < 0 || v < best))
            best = v;
    }
    return best;
}

/*
 * A Vary header of the answer: every request header it names must be in the key (the
 * route's first vary_n headers), else the answer is not shared and the route learns the
 * name, so that later keys carry it. Accept-Encoding is never sent to the model server
 * (its answer cannot vary by it); credential headers are in the key as its scope.
 */
static enum pc_reason vary_refusal(struct answer_rules *a, const char *value)
{
    const struct pc_config *cfg = a->w->cfg;
    enum pc_reason why = PC_REASON_NONE;
    for (const char *v = value; *v;) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, " \t,");
        if (n == 0)
            break;
        char name[64];
        if (n >= sizeof name)
            return PC_REASON_VARY_NAME_TOO_LONG;
        for (size_t i = 0; i < n; i++)
            name[i] = (char)tolower((unsigned char)v[i]);
        name[n] = '\0';
        v += n;
        if (strcmp(name, "*") == 0)
            return PC_REASON_VARY_STAR;
        if (strcmp(name, "accept-encoding") == 0)
            continue;
        if (pc_creds_is_credential(name, cfg->credential_headers, cfg->n_credential_headers)) {
            if (a->route->v.credentials != PC_CREDS_ISOLATE)
                why = PC_REASON_VARY_CREDENTIALS;
            continue;
        }
        size_t k = 0;
        while (k < a->route->n_vary && strcmp(a->route->vary[k], name) != 0)
            k++;
        if (k < a->vary_n)
            continue;
        why = PC_REASON_VARY_UNKEYED;
        if (k == a->route->n_vary && a->route->n_vary < PC_WROUTE_VARY)
            memcpy(a->route->vary[a->route->n_vary++], name, n + 1);
    }
    return why;
}

/*
 * Why an answer belongs to its own request alone, or NULL: a cookie, a Vary beyond the key,
 * a client error (4xx: about this client: its token, its rate), and, unless the route
 * ignores them, Cache-Control private, no-store, no-cache or max-age=0. Such an answer is
 * neither stored nor handed to a request that waited for it.
 */
static enum pc_reason judge_personal(struct answer_rules *a, const struct pc_upstream_resp *r)
{
    if (pc_proxy_find_header(r->headers, r->n_headers, "Set-Cookie") != NULL)
        return PC_REASON_RESPONSE_COOKIE;
    for (size_t i = 0; i < r->n_headers; i++) {
        enum pc_reason why = pc_strcaseeq(r->headers[i].name, "Vary")
                                 ? vary_refusal(a, r->headers[i].value)
                                 : PC_REASON_NONE;
        if (why != PC_REASON_NONE)
            return why;
    }
    if (r->status >= 400 && r->status <= 499)
        return PC_REASON_CLIENT_ERROR;
    if (a->ignore_cc)
        return PC_REASON_NONE;
    if (response_directive(r, "Cache-Control", "no-store") ||
        response_directive(r, "Cache-Control", "private"))
        return PC_REASON_RESPONSE_PRIVATE;
    if (response_directive(r, "Cache-Control", "no-cache") && !a->streamed)
        return PC_REASON_RESPONSE_NO_CACHE;
    int smax = response_seconds(r, "s-maxage"), max = response_seconds(r, "max-age");
    if ((smax >= 0 ? smax : max) == 0)
        return PC_REASON_RESPONSE_MAX_AGE_0;
    return PC_REASON_NONE;
}

/* Why an answer must not be stored (as a shared cache, RFC 9111), or NULL; then its
 * max-age / s-maxage bound a->ttl_s. *personal (when not NULL): judge_personal's verdict,
 * which is part of this one. */
static enum pc_reason judge_answer(struct answer_rules *a, const struct pc_upstream_resp *r,
                                   enum pc_reason *personal)
{
    enum pc_reason why = judge_personal(a, r);
    if (personal != NULL)
        *personal = why;
    if (why != PC_REASON_NONE)
        return why;
    if (r->status < 200 || r->status > 299)
        return PC_REASON_STATUS;
    if (r->body.len > a->w->cfg->max_value_bytes)
        return PC_REASON_TOO_LARGE;
    if (pc_proxy_find_header(r->headers, r->n_headers, "Content-Encoding") != NULL)
        return PC_REASON_RESPONSE_ENCODED;
    const char *ctype = pc_proxy_find_header(r->headers, r->n_headers, "Content-Type");
    if (ctype != NULL && strlen(ctype) >= PC_CFG_STR)
        return PC_REASON_CONTENT_TYPE_TOO_LONG;
    if (a->ignore_cc)
        return PC_REASON_NONE;
    int smax = response_seconds(r, "s-maxage"), max = response_seconds(r, "max-age");
    int bound = smax >= 0 ? smax : max;
    if (bound > 0 && bound < a->ttl_s) {
        a->ttl_s = bound;
        a->record = 1;
    }
    if (smax >= 0 || response_directive(r, "Cache-Control", "must-revalidate") ||
        response_directive(r, "Cache-Control", "proxy-revalidate"))
        a->no_grace = 1;
    return PC_REASON_NONE;
}

static struct pc_wroute *route_of(const struct pc_preq *p)
{
    return &p->w->routes[p->route->v.id];
}

/* Is the model server's Cache-Control not heard for p? The route says ignore, or p's family
 * writes boilerplate (TorchServe's private on every answer) and the route's own section
 * does not say how to hear it. */
static int ignores_cc(const struct pc_preq *p)
{
    const struct pc_route_view *v = &p->route->v;
    return v->response_cache_control == PC_RCC_IGNORE || (p->ad.boilerplate_cc && !v->rcc_set);
}

enum pc_reason pc_proxy_judge(struct pc_preq *p, const struct pc_upstream_resp *r,
                              enum pc_reason *personal)
{
    struct answer_rules a = {p->w,          route_of(p), p->vary_n,     p->ttl_s,
                             p->client_ttl, 0,           ignores_cc(p), p->stream_keep};
    enum pc_reason why = judge_answer(&a, r, personal);
    if (why == PC_REASON_NONE) {
        p->ttl_s = a.ttl_s;
        p->client_ttl = a.record;
        p->no_grace = a.no_grace;
    }
    why = why == PC_REASON_NONE && p->no_store ? PC_REASON_REQUEST_NO_STORE : why;
    if (why != PC_REASON_NONE && p->reason == PC_REASON_NONE)
        p->reason = why; /* the answer says why it was not stored (X-Cache-Reason) */
    return why;
}

/* Seconds an entry fresh for ttl_s lives in Redis: kept past its TTL to be served stale. */
static int redis_ttl(const struct pc_worker *w, int ttl_s)
{
    long long t = (long long)ttl_s + w->cfg->grace_s;
    return t > INT_MAX ? INT_MAX : (int)t;
}

int pc_proxy_store_ttl(const struct pc_preq *p)
{
    return p->no_grace ? p->ttl_s : redis_ttl(p->w, p->ttl_s);
}

/* The answer r as an entry holds it: status, content type, the replayed headers ([cache]
 * replay_headers; as many as an envelope carries), the body. Borrows r. */
static void envelope_of(const struct pc_worker *w, const struct pc_upstream_resp *r,
                        struct pc_envelope *env)
{
    const struct pc_config *cfg = w->cfg;
    const char *ctype = pc_proxy_find_header(r->headers, r->n_headers, "Content-Type");
    memset(env, 0, sizeof *env);
    env->status = r->status;
    env->stored_at_ms = pc_wall_ms();
    env->content_type = ctype ? ctype : "";
    env->body = r->body.data;
    env->body_len = r->body.len;
    for (size_t i = 0; i < r->n_headers && env->n_headers < PC_ENV_MAX_HEADERS; i++) {
        const char *name = r->headers[i].name;
        if (pc_strcaseeq(name, "Content-Type"))
            continue;
        for (size_t k = 0; k < cfg->n_replay_headers; k++) {
            if (pc_strcaseeq(name, cfg->replay_headers[k])) {
                env->headers[env->n_headers++] =
                    (struct pc_env_header){r->headers[i].name, r->headers[i].value};
                break;
            }
        }
    }
}

/* SETs r's answer under key as an envelope fresh for ttl_s (written into it when record),
 * kept redis_ttl_s in Redis. 1 when queued (done_cb runs on its answer). */
static int store_answer(struct pc_worker *w, const char *key, int ttl_s, int record,
                        int redis_ttl_s, const struct pc_upstream_resp *r,
                        pc_store_set_done_cb done_cb, void *done_arg)
{
    struct pc_envelope env;
    envelope_of(w, r, &env);
    env.ttl_s = record ? ttl_s : 0;
    env.key_tag = pc_envelope_key_tag(key, strlen(key)); /* PC4: read back for key only */
    struct pc_buf val;
    pc_buf_init(&val);
    int queued = 0;
    if (pc_envelope_encode(&env, &val) != 0) {
        PC_METRIC_INC(w->metrics.store_skipped);
    } else {
        pc_l1_put(w->l1, key, val.data, val.len);
        queued =
            pc_store_set_cb(w->store, key, val.data, val.len, redis_ttl_s, done_cb, done_arg) == 0;
    }
    pc_buf_release(&val);
    return queued;
}

/* Stores the answer (why: its refusal, judged before); 1 when a SET was queued (then
 * done_cb runs once it is answered). */
static int store_result(struct pc_preq *p, const struct pc_upstream_resp *r, enum pc_reason why,
                        pc_store_set_done_cb done_cb, void *done_arg)
{
    struct pc_worker *w = p->w;
    if (why == PC_REASON_NONE && p->no_store)
        why = PC_REASON_REQUEST_NO_STORE;
    if (why != PC_REASON_NONE) {
        PC_METRIC_INC(w->metrics.store_skipped);
        pc_log(PC_LOG_DEBUG, "proxy: not stored (%s): %s", pc_reason_words(why), p->key);
        return 0;
    }
    return store_answer(w, p->key, p->ttl_s, p->client_ttl, pc_proxy_store_ttl(p), r, done_cb,
                        done_arg);
}

void pc_proxy_store_streamed(struct pc_preq *p, const struct pc_upstream_resp *r,
                             enum pc_reason why)
{
    store_result(p, r, why, NULL, NULL);
}

/* ---- forwarding -------------------------------------------------------------------- */

/* The status and message predcache answers for a failed transfer. */
static int backend_error(const struct pc_upstream_resp *r, char *msg, size_t len)
{
    if (r->error == PC_UP_SHUTDOWN)
        snprintf(msg, len, "%s", r->errmsg);
    else
        snprintf(msg, len, "model server %s: %s",
                 r->error == PC_UP_TIMEOUT ? "timed out" : "unavailable", r->errmsg);
    return pc_upstream_error_status(r->error);
}

int pc_proxy_answer_backend_error(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    struct pc_worker *w = p->w;
    p->backend_ms = r->total_ms;
    pc_hist_observe(&w->metrics.h_backend, r->total_ms / 1000.0);
    pc_timer_observe(&w->metrics.t_backend, r->total_ms / 1000.0);
    pc_hist_observe(&w->route_metrics[p->route ? p->route->v.id + 1 : 0].h_backend,
                    r->total_ms / 1000.0);
    if (r->error == PC_UP_OK)
        return 0;
    PC_METRIC_INC(w->metrics.backend_errors);
    char msg[400];
    int status = backend_error(r, msg, sizeof msg);
    pc_proxy_answer_error(p, status, msg);
    return 1;
}

/* ---- coalescing -------------------------------------------------------------------- */

/* The key p coalesces on: a batch's sub-request has its own, else the per-body key. */
static const char *herd_key(const struct pc_preq *p)
{
    return p->herd[0] != '\0' ? p->herd : p->key;
}

static void forward(struct pc_preq *p, enum pc_cache_result result);

/* Forwarded because the store could not be used (X-Cache: BYPASS and why). */
static void bypass(struct pc_preq *p, enum pc_reason why)
{
    p->reason = why;
    forward(p, RES_BYPASS);
}

/* Answers q with the entry env (X-Cache: COALESCED) and frees it. */
static void answer_coalesced(struct pc_preq *q, const struct pc_envelope *env)
{
    answer_entry(q, env, RES_COALESCED);
    pc_preq_free(q);
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
    int status = r->error != PC_UP_OK ? backend_error(r, msg, sizeof msg) : 0;
    struct pc_envelope env;
    envelope_of(leader->w, r, &env);
    for (size_t i = 0; i < f->n_waiters; i++) {
        struct pc_preq *q = f->waiters[i];
        q->backend_ms = r->total_ms;
        if (status != 0) {
            pc_proxy_answer_error(q, status, msg);
            pc_preq_free(q);
        } else {
            answer_coalesced(q, &env);
        }
    }
    f->n_waiters = 0;
}

struct flight_store {
    struct pc_worker *w;
    char key[PC_KEY_MAX];
};

/* The leader's SET is answered: from now on Redis answers this key, so the entry goes. */
static void on_flight_stored(int ok, void *arg)
{
    (void)ok;
    struct flight_store *fs = arg;
    struct pc_flight *f = pc_flights_find(fs->w->flights, fs->key);
    if (f != NULL && f->done)
        pc_flights_finish(fs->w->flights, f);
    free(fs);
}

/* The leader is gone without an answer to share: its waiters get an error, not silence:
 * the one the leader got (a refusal, say), else 502. */
static void flight_fail(struct pc_preq *p)
{
    struct pc_flight *f = p->flight;
    for (size_t i = 0; i < f->n_waiters; i++) {
        struct pc_preq *q = f->waiters[i];
        if (p->err_status != 0)
            pc_proxy_answer_error(q, p->err_status, p->err_msg);
        else
            pc_proxy_answer_error(q, 502, "the model server request this one waited for failed");
        pc_preq_free(q);
    }
    f->n_waiters = 0;
    pc_flights_finish(p->w->flights, f);
    p->flight = NULL;
}

/* Ends the leader's flight at once (an error, nothing to store). */
static void flight_drop(struct pc_preq *p)
{
    if (p->flight != NULL)
        pc_flights_finish(p->w->flights, p->flight);
    p->flight = NULL;
}

void pc_proxy_flight_drop(struct pc_preq *p)
{
    flight_drop(p);
}

struct pc_preq **pc_proxy_flight_release(struct pc_preq *p, size_t *n)
{
    struct pc_flight *f = p->flight;
    struct pc_preq **out = NULL;
    *n = 0;
    if (f == NULL)
        return NULL;
    if (f->n_waiters > 0 && (out = malloc(f->n_waiters * sizeof *out)) != NULL) {
        memcpy(out, f->waiters, f->n_waiters * sizeof *out);
        *n = f->n_waiters;
        f->n_waiters = 0;
    }
    if (out == NULL && f->n_waiters > 0) { /* no memory: they get an error, not silence */
        flight_fail(p);
        return NULL;
    }
    flight_drop(p);
    return out;
}

/*
 * Keeps the leader's answer in its flight while its SET is on the way: a request whose
 * GET was sent before the SET would still miss, and is answered from here instead.
 * Returns the argument for on_flight_stored, which ends the flight; NULL when there is
 * no flight (or no memory: then it has ended now).
 */
static struct flight_store *flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    struct pc_flight *f = p->flight;
    if (f == NULL)
        return NULL;
    struct flight_store *fs = calloc(1, sizeof *fs);
    struct pc_envelope env;
    envelope_of(p->w, r, &env);
    struct pc_buf val;
    pc_buf_init(&val);
    if (fs == NULL || pc_envelope_encode(&env, &val) != 0 || (f->ctype = strdup("")) == NULL) {
        pc_buf_release(&val);
        free(fs);
        flight_drop(p);
        return NULL;
    }
    f->body_len = val.len;
    f->body = pc_buf_steal(&val, NULL);
    f->status = r->status;
    f->done = 1;
    f->leader = NULL;
    fs->w = p->w;
    pc_strlcpy(fs->key, herd_key(p), sizeof fs->key);
    p->flight = NULL;
    return fs;
}

void *pc_proxy_flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    return flight_keep(p, r);
}

void pc_proxy_flight_stored(int ok, void *arg)
{
    on_flight_stored(ok, arg);
}

static void on_backend(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    if (pc_proxy_answer_backend_error(p, r)) {
        if (p->flight != NULL) {
            answer_waiters(p, r, PC_REASON_NONE);
            flight_drop(p);
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
            h[n++].value = (char *)result_names[p->result];
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
    if (p->cacheable) {
        /* After the answers: no client waits for Redis. */
        struct flight_store *fs = why == PC_REASON_NONE ? flight_keep(p, r) : NULL;
        if (!store_result(p, r, why, fs ? on_flight_stored : NULL, fs) && fs != NULL)
            on_flight_stored(0, fs); /* nothing stored: the entry ends now */
    }
    pc_preq_free(p);
}

/* Copies the request's end-to-end headers for the model server and adds X-Forwarded-For. */
int pc_proxy_forward_headers(struct pc_preq *p)
{
    size_t n;
    const struct pc_header *in = pc_http_req_headers(p->req, &n);
    p->fwd = calloc(n + 2, sizeof *p->fwd); /* + X-Forwarded-For, + Content-Encoding (wire) */
    if (p->fwd == NULL)
        return -1;
    struct pc_buf xff; /* every X-Forwarded-For value in order, then this client */
    pc_buf_init(&xff);
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(in[i].name, "X-Forwarded-For")) {
            if (in[i].value[0] != '\0')
                pc_buf_printf(&xff, "%s, ", in[i].value);
            continue;
        }
        /* A cached body is stored without its encoding: ask the model server for identity. */
        if (p->cacheable && pc_strcaseeq(in[i].name, "Accept-Encoding"))
            continue;
        if (pc_strcaseeq(in[i].name, "X-Predcache-Token")) /* the operator's, not the model's */
            continue;
        if (p->plain != NULL && pc_strcaseeq(in[i].name, "Content-Encoding"))
            continue; /* the body's own: put back by wire_body when the body goes as sent */
        if (pc_http_is_hop_by_hop_in(in[i].name, in, n))
            continue;
        p->fwd[p->n_fwd].name = strdup(in[i].name);
        p->fwd[p->n_fwd].value = strdup(in[i].value);
        if (p->fwd[p->n_fwd].name == NULL || p->fwd[p->n_fwd].value == NULL) {
            pc_buf_release(&xff);
            return -1;
        }
        p->n_fwd++;
    }
    pc_buf_append_str(&xff, pc_http_req_client(p->req));
    p->fwd[p->n_fwd].name = strdup("X-Forwarded-For");
    p->fwd[p->n_fwd].value = pc_buf_steal(&xff, NULL);
    if (p->fwd[p->n_fwd].name == NULL || p->fwd[p->n_fwd].value == NULL)
        return -1;
    p->n_fwd++;
    return 0;
}

const char *pc_preq_body(const struct pc_preq *p, size_t *len)
{
    if (p->plain != NULL) {
        *len = p->plain_len;
        return p->plain;
    }
    return pc_http_req_body(p->req, len);
}

const char *pc_proxy_wire_body(struct pc_preq *p, const char *body, size_t *len)
{
    if (p->plain == NULL || body != p->plain)
        return body;
    char *name = strdup("Content-Encoding"), *value = strdup(p->coding);
    if (name == NULL || value == NULL) { /* the decoded body, then: the same request */
        free(name);
        free(value);
        return body;
    }
    p->fwd[p->n_fwd++] = (struct pc_header){name, value};
    return pc_http_req_body(p->req, len);
}

void pc_proxy_forward_body(struct pc_preq *p, enum pc_cache_result result, const char *body,
                           size_t len, pc_upstream_cb cb)
{
    struct pc_worker *w = p->w;
    p->result = result;
    if (w->closing) {
        pc_proxy_answer_error(p, 503, "predcache is shutting down");
        pc_preq_free(p);
        return;
    }
    if (p->only_if_cached) { /* RFC 9111 5.2.1.7: 504 when the cache cannot answer */
        pc_proxy_answer_error(p, 504, "not in the cache (only-if-cached)");
        pc_preq_free(p);
        return;
    }
    const char *unavailable = pc_worker_backend_refusal(w, p->backend);
    if (unavailable != NULL) {
        PC_METRIC_INC(w->metrics.backend_refused);
        pc_proxy_answer_error(p, 503, unavailable);
        pc_preq_free(p);
        return;
    }
    if (pc_proxy_forward_headers(p) != 0) {
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return;
    }
    body = pc_proxy_wire_body(p, body, &len);
    long elapsed_ms = (long)((pc_now_us() - pc_http_req_start_us(p->req)) / 1000);
    long left_ms = w->cfg->request_timeout_ms - elapsed_ms;
    if (left_ms <= 0) {
        pc_proxy_answer_error(p, 504, "request timed out before reaching the model server");
        pc_preq_free(p);
        return;
    }
    PC_METRIC_INC(w->metrics.backend_requests);
    /* body is borrowed by curl: p (and p->req) stay alive until cb answers. */
    if (pc_upstream_send(w->ups[p->backend], pc_http_req_method(p->req), pc_http_req_target(p->req),
                         p->fwd, p->n_fwd, body, len, (int)left_ms, cb, p) == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        pc_proxy_answer_error(p, 502, "cannot start a model server request");
        pc_preq_free(p);
    }
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

/* ---- model server calls that outlive their request ---------------------------------- */

int pc_bgcall_copy(struct pc_preq *p, const char *body, size_t len, struct pc_bgcall *c)
{
    memset(c, 0, sizeof *c);
    c->backend = p->backend;
    int rc = pc_proxy_forward_headers(p);
    if (rc == 0)
        body = pc_proxy_wire_body(p, body, &len);
    c->hdrs = p->fwd; /* the headers move to the call (also those copied before a failure) */
    c->n_hdrs = p->n_fwd;
    p->fwd = NULL;
    p->n_fwd = 0;
    c->method = strdup(pc_http_req_method(p->req));
    c->target = strdup(pc_http_req_target(p->req));
    c->body = malloc(len + 1);
    if (rc != 0 || c->method == NULL || c->target == NULL || c->body == NULL) {
        pc_bgcall_release(c);
        return -1;
    }
    if (len > 0)
        memcpy(c->body, body, len);
    c->len = len;
    return 0;
}

int pc_bgcall_send(struct pc_worker *w, struct pc_bgcall *c, pc_upstream_cb cb, void *arg)
{
    PC_METRIC_INC(w->metrics.backend_requests);
    if (pc_upstream_send(w->ups[c->backend], c->method, c->target, c->hdrs, c->n_hdrs, c->body,
                         c->len, w->cfg->backend_timeout_ms, cb, arg) == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        return -1;
    }
    return 0;
}

void pc_bgcall_release(struct pc_bgcall *c)
{
    for (size_t i = 0; i < c->n_hdrs; i++) {
        free(c->hdrs[i].name);
        free(c->hdrs[i].value);
    }
    free(c->hdrs);
    free(c->method);
    free(c->target);
    free(c->body);
    memset(c, 0, sizeof *c);
}

static void answer_hit(struct pc_preq *p, const struct pc_envelope *env);

enum value_use { VALUE_FRESH, VALUE_STALE, VALUE_NONE };
static enum value_use judge_value(const struct pc_preq *p, const char *data, size_t len,
                                  struct pc_envelope *env, char *ctype, size_t ctype_len);

/* The miss goes on to the model server, by the flow p is in: a batch keeps the label its
 * lookup gave (MISS or PARTIAL) unless Redis failed on the way. */
static void continue_miss(struct pc_preq *p, enum pc_cache_result result)
{
    if (p->batch != NULL)
        pc_proxy_batch_send(p, result == RES_BYPASS ? RES_BYPASS : p->result);
    else
        forward(p, result);
}

/* ---- coalescing across processes -------------------------------------------------- */
/*
 *   miss --EVAL: value? / SET lock NX PX--> value: answer it (HIT)
 *                                          acquired: forward; when answered and stored,
 *                                                    release the lock and PUBLISH the key
 *                                          held elsewhere: wait for that PUBLISH (or
 *                                                    lock_timeout_ms), then GET again
 *
 * Ownership: at any time exactly one of the lock reply, the wait timer (or the PUBLISH
 * that cuts it short) and the second GET holds p; each either answers and frees p or
 * hands it to the next step (forward, whose transfer then holds it).
 */

/* One round trip: the value if it landed meanwhile, else the lock if it is free. */
static const char lock_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v then return {1, v} end "
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end "
    "return {3}";
static const char unlock_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end "
    "redis.call('PUBLISH', ARGV[2], ARGV[3]) return 1";

/* The lock of a herd key (an entry's key, or a batch's herd key). */
static void lock_key_of(const char *herd, char *out, size_t len)
{
    snprintf(out, len, "%s:lock", herd);
}

static void lock_key(const struct pc_preq *p, char *out, size_t len)
{
    lock_key_of(herd_key(p), out, len);
}

/* This worker's name in locks (process and worker): a lock is only released by its holder,
 * and the workers of one process are as separate as two processes. */
static const char *lock_owner(const struct pc_worker *w, char *buf, size_t len)
{
    snprintf(buf, len, "%ld.%zu", (long)getpid(), w->id);
    return buf;
}

int pc_proxy_done_channel(const struct pc_config *cfg, char *out, size_t len)
{
    return snprintf(out, len, "%sdone:%s", cfg->key_prefix, cfg->namespace_) < (int)len ? 0 : -1;
}

int pc_proxy_purge(struct pc_worker *w, const char *key, pc_store_cmd_cb cb, void *arg)
{
    pc_l1_del(w->l1, key); /* this process's tier at once; the others hear it below */
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    if (pc_store_command(w->store, 0, cb, arg, 2, argv, lens) != 0)
        return -1;
    /* After the DEL on the same connection: a process that hears it reads Redis anew. */
    char chan[PC_CHANNEL_MAX], msg[PC_CFG_STR * 2 + sizeof PC_PURGE_ANNOUNCE];
    if (pc_proxy_done_channel(w->cfg, chan, sizeof chan) == 0 &&
        (size_t)snprintf(msg, sizeof msg, "%s%s", PC_PURGE_ANNOUNCE, key) < sizeof msg) {
        const char *pargv[] = {"PUBLISH", chan, msg};
        size_t plens[] = {7, strlen(chan), strlen(msg)};
        pc_store_command(w->store, 0, NULL, NULL, 3, pargv, plens);
    }
    return 0;
}

/*
 * A lock release that got no reply (the connection dropped, or Redis was not there) would
 * leave the lock held until it expires, and the other processes' requests waiting for it
 * waiting as long (lock_timeout_ms): it is sent again once Redis is back. Each release
 * carries its herd key; the worker keeps at most PC_UNLOCKS_MAX of them, each until its
 * lock would have expired anyway.
 */
#define PC_UNLOCKS_MAX 4096
#define PC_UNLOCK_RETRY_MS 50

struct pc_unlock {
    struct pc_worker *w;
    struct pc_unlock *next;
    uint64_t until_us;
    char herd[PC_KEY_MAX];
};

static void unlock_send(struct pc_unlock *u);

/* The worker's retry timer (w->unlock_timer, owned by the worker, arg): it takes the list
 * and hands each release to unlock_send, which owns it from there. */
static void unlock_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_worker *w = arg;
    if (!pc_store_ready(w->store)) {
        struct timeval tv = {0, PC_UNLOCK_RETRY_MS * 1000};
        evtimer_add(w->unlock_timer, &tv);
        return;
    }
    struct pc_unlock *list = w->unlocks;
    w->unlocks = NULL;
    w->n_unlocks = 0;
    while (list != NULL) {
        struct pc_unlock *u = list;
        list = u->next;
        u->next = NULL;
        unlock_send(u); /* may come back on the list */
    }
}

/* Keeps u for a later attempt, or frees it when its lock has expired or the list is full. */
static void unlock_later(struct pc_unlock *u)
{
    struct pc_worker *w = u->w;
    if (w->closing || pc_now_us() >= u->until_us || w->n_unlocks >= PC_UNLOCKS_MAX ||
        (w->unlock_timer == NULL &&
         (w->unlock_timer = evtimer_new(w->base, unlock_retry_cb, w)) == NULL)) {
        free(u);
        return;
    }
    u->next = w->unlocks;
    w->unlocks = u;
    w->n_unlocks++;
    if (!evtimer_pending(w->unlock_timer, NULL)) {
        struct timeval tv = {0, PC_UNLOCK_RETRY_MS * 1000};
        evtimer_add(w->unlock_timer, &tv);
    }
}

/* The release's reply (or NULL: none came); arg is the release, owned by this call from
 * here: freed, or kept on the worker's list. */
static void on_unlock_reply(const struct pc_reply *r, void *arg)
{
    struct pc_unlock *u = arg;
    if (r == NULL)
        unlock_later(u); /* no reply: it may not have run */
    else
        free(u);
}

static void unlock_send(struct pc_unlock *u)
{
    struct pc_worker *w = u->w;
    char lk[PC_KEY_MAX + 8], owner[32], chan[PC_CHANNEL_MAX];
    lock_key_of(u->herd, lk, sizeof lk);
    lock_owner(w, owner, sizeof owner);
    pc_proxy_done_channel(w->cfg, chan, sizeof chan);
    const char *argv[] = {"EVAL", unlock_script, "1", lk, owner, chan, u->herd};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (pc_store_command(w->store, 0, on_unlock_reply, u, 7, argv, lens) != 0)
        unlock_later(u);
}

void pc_proxy_unlocks_free(struct pc_worker *w)
{
    while (w->unlocks != NULL) {
        struct pc_unlock *u = w->unlocks;
        w->unlocks = u->next;
        free(u);
    }
    w->n_unlocks = 0;
    if (w->unlock_timer != NULL) {
        event_free(w->unlock_timer);
        w->unlock_timer = NULL;
    }
}

static void lock_release(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    p->lock_held = 0;
    struct pc_unlock *u = malloc(sizeof *u);
    if (u == NULL)
        return; /* the lock expires by itself */
    u->w = w;
    u->next = NULL;
    u->until_us = pc_now_us() + (uint64_t)w->cfg->lock_timeout_ms * 1000;
    pc_strlcpy(u->herd, herd_key(p), sizeof u->herd);
    unlock_send(u);
}

/* Answers the leader and every local waiter with a value that is now in Redis. */
static void answer_from_redis(struct pc_preq *p, const struct pc_envelope *env,
                              enum pc_cache_result result)
{
    struct pc_flight *f = p->flight;
    for (size_t i = 0; f != NULL && i < f->n_waiters; i++)
        answer_coalesced(f->waiters[i], env);
    if (f != NULL)
        f->n_waiters = 0;
    flight_drop(p);
    answer_entry(p, env, result);
    pc_preq_free(p);
}

/* After the wait: the other process's answer should be in Redis now. */
static void on_remote_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_envelope env;
    char ctype[PC_ENV_SCRATCH];
    /* Only a fresh value: one stored long ago and expiring is no answer to this miss. */
    if (res == PC_STORE_HIT &&
        judge_value(p, data, len, &env, ctype, sizeof ctype) == VALUE_FRESH) {
        answer_from_redis(p, &env, RES_COALESCED);
        return;
    }
    if (res == PC_STORE_ERROR)
        p->reason = PC_REASON_REDIS_ERROR;
    forward(p, res == PC_STORE_ERROR ? RES_BYPASS : RES_MISS); /* it failed: our own call */
}

static void remote_resolve(struct pc_preq *p)
{
    event_free(p->lock_wait);
    p->lock_wait = NULL;
    if (p->batch != NULL)
        pc_proxy_batch_retry(p); /* its instances, one MGET again */
    else if (pc_store_get(p->w->store, p->key, on_remote_lookup, p) != 0)
        bypass(p, PC_REASON_REDIS_UNAVAILABLE);
}

static void on_lock_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_preq *p = arg;
    PC_METRIC_INC(p->w->metrics.lock_timeouts);
    remote_resolve(p);
}

void pc_proxy_on_done(const char *key, size_t len, void *worker)
{
    struct pc_worker *w = worker;
    char k[PC_KEY_MAX];
    if (len >= sizeof k)
        return;
    memcpy(k, key, len);
    k[len] = '\0';
    size_t al = strlen(PC_GEN_ANNOUNCE);
    if (len > al && memcmp(k, PC_GEN_ANNOUNCE, al) == 0) {
        pc_generations_forget(w->generations, k + al); /* an invalidation of that namespace */
        return;
    }
    al = strlen(PC_PURGE_ANNOUNCE);
    if (len > al && memcmp(k, PC_PURGE_ANNOUNCE, al) == 0) {
        pc_l1_del(w->l1, k + al); /* a purge by another process */
        return;
    }
    struct pc_flight *f = pc_flights_find(w->flights, k);
    struct pc_preq *leader = f != NULL && !f->done ? f->leader : NULL;
    if (leader != NULL && leader->lock_wait != NULL)
        remote_resolve(leader);
    else if (leader != NULL && leader->lock_asking)
        leader->lock_notified = 1; /* the announcement overtook the lock script's answer */
}

static void on_lock_reply(const struct pc_reply *r, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    struct pc_worker *w = p->w;
    p->lock_asking = 0;
    const struct pc_reply *tag = r != NULL ? pc_reply_elem(r, 0) : NULL;
    long long what =
        tag != NULL && pc_reply_type(tag) == PC_REPLY_INTEGER ? pc_reply_integer(tag) : 0;
    if (what == 1) { /* the value landed since our GET */
        size_t len;
        const char *data = pc_reply_str(pc_reply_elem(r, 1), &len);
        struct pc_envelope env;
        char ctype[PC_ENV_SCRATCH];
        if (data != NULL && judge_value(p, data, len, &env, ctype, sizeof ctype) == VALUE_FRESH) {
            answer_from_redis(p, &env, RES_HIT);
            return;
        }
    } else if (what == 2) {
        p->lock_held = 1;
    } else if (what == 3) { /* another process is fetching it: wait for its PUBLISH */
        /* No longer than the request may still wait: past its deadline it gets a 504. */
        long left_ms = w->cfg->request_timeout_ms -
                       (long)((pc_now_us() - pc_http_req_start_us(p->req)) / 1000);
        long ms = w->cfg->lock_timeout_ms < left_ms ? w->cfg->lock_timeout_ms : left_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        p->lock_wait = ms > 0 ? evtimer_new(w->base, on_lock_wait_timeout, p) : NULL;
        if (p->lock_wait != NULL && evtimer_add(p->lock_wait, &tv) == 0) {
            PC_METRIC_INC(w->metrics.lock_waits);
            if (p->lock_notified) /* the holder is done already: no wait */
                remote_resolve(p);
            return;
        }
    }
    continue_miss(p, RES_MISS); /* lock taken by us, or Redis could not say: call the model */
}

/* A batch's herd key holds no value: the script's GET finds nothing and it goes on to the
 * lock. */
static void lock_try(struct pc_preq *p)
{
    struct pc_worker *w = p->w;
    char lk[PC_KEY_MAX + 8], owner[32], ttl[16];
    lock_key(p, lk, sizeof lk);
    snprintf(ttl, sizeof ttl, "%d", w->cfg->lock_timeout_ms);
    const char *argv[] = {
        "EVAL", lock_script, "2", herd_key(p), lk, lock_owner(w, owner, sizeof owner), ttl};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (p->batch == NULL)
        p->result = RES_MISS;
    p->lock_notified = 0;
    p->lock_asking = 1;
    if (pc_store_command(w->store, 0, on_lock_reply, p, 7, argv, lens) != 0) {
        p->lock_asking = 0;
        p->reason = PC_REASON_REDIS_UNAVAILABLE;
        continue_miss(p, RES_BYPASS);
    }
}

int pc_proxy_lock_batch(struct pc_preq *p, enum pc_cache_result result)
{
    if (p->flight == NULL || p->w->cfg->lock_timeout_ms <= 0 ||
        (result != RES_MISS && result != RES_PARTIAL))
        return 0;
    p->result = result;
    lock_try(p);
    return 1;
}

enum pc_join pc_proxy_join(struct pc_preq *p, struct pc_flight **done)
{
    struct pc_worker *w = p->w;
    const char *key = herd_key(p);
    struct pc_flight *f = pc_flights_find(w->flights, key);
    *done = NULL;
    if (f != NULL && f->done) {
        *done = f;
        return PC_JOIN_DONE;
    }
    if (f != NULL && pc_flight_join(f, p) == 0) {
        p->result = RES_COALESCED;
        return PC_JOIN_WAIT;
    }
    if (f == NULL)
        p->flight = pc_flights_start(w->flights, key, p); /* NULL: just go alone */
    return PC_JOIN_LEAD;
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
        struct pc_envelope env;
        char scratch[PC_ENV_SCRATCH];
        if (pc_envelope_decode(f->body, f->body_len, &env, scratch, sizeof scratch) == 0) {
            answer_coalesced(p, &env);
            return;
        }
        forward(p, result); /* cannot happen: the flight holds what flight_keep encoded */
        return;
    }
    case PC_JOIN_WAIT:
        return; /* answered by answer_waiters */
    case PC_JOIN_LEAD:
        break;
    }
    /* The lock script may answer with the stored value: not for a client that found it
     * too old (max-age). */
    if (p->flight != NULL && w->cfg->lock_timeout_ms > 0 && result == RES_MISS && p->max_age_s < 0)
        lock_try(p); /* other processes may be fetching the same key */
    else
        forward(p, result);
}

/* ---- lookup ------------------------------------------------------------------------ */

void pc_proxy_replay_body(const struct pc_preq *p, const char *body, size_t len, size_t json_len,
                          struct pc_buf *tmp, const char **out, size_t *out_len,
                          size_t *out_json_len)
{
    *out = body;
    *out_len = len;
    *out_json_len = json_len;
    /* Only a body keyed as read (not raw: then the id is in the key, and the entry's). */
    if (p->keyp.family != PC_FAMILY_KSERVE || p->key_kind != PC_KEY_BODY || p->req == NULL ||
        json_len > len)
        return;
    int ignored = 0;
    for (size_t i = 0; i < p->keyp.n_ignore_fields; i++)
        ignored |= strcmp(p->keyp.ignore_fields[i], "id") == 0;
    if (!ignored)
        return;
    size_t rlen, off = 0, vlen = 0;
    const char *req = pc_preq_body(p, &rlen);
    int have = pc_jsonedit_find_member(req, rlen, "id", &off, &vlen) == 0;
    /* A binary tensor answer: the JSON part is its first json_len bytes, the rest raw. */
    if (pc_jsonedit_set_member(body, json_len, "id", have ? req + off : NULL, have ? vlen : 0,
                               tmp) == 0) {
        *out_json_len = tmp->len;
        if (pc_buf_append(tmp, body + json_len, len - json_len) != 0)
            return;
        *out = tmp->data;
        *out_len = tmp->len;
    }
}

/* The length of a binary tensor answer's JSON part (Inference-Header-Content-Length), or
 * len when the answer is all JSON (or the header is not a length within it). */
static size_t json_part(const struct pc_envelope *env)
{
    for (size_t i = 0; i < env->n_headers && i < PC_ENV_MAX_HEADERS; i++) {
        if (!pc_strcaseeq(env->headers[i].name, "Inference-Header-Content-Length"))
            continue;
        const char *v = env->headers[i].value;
        size_t n = strlen(v);
        if (n == 0 || n > 12 || strspn(v, "0123456789") != n)
            return env->body_len;
        unsigned long long x = strtoull(v, NULL, 10);
        return x <= env->body_len ? (size_t)x : env->body_len;
    }
    return env->body_len;
}

/*
 * Answers p with a cached answer (an entry, or a flight's kept answer): its status, content
 * type, replayed headers and body (a KServe v2 id made the requester's), with X-Cache as
 * result; Age for HIT and STALE, and a Warning for STALE.
 */
static void answer_entry(struct pc_preq *p, const struct pc_envelope *env,
                         enum pc_cache_result result)
{
    struct pc_header h[PC_ENV_MAX_HEADERS + 6];
    size_t n = 0;
    char age[32];
    if (env->content_type[0] != '\0')
        h[n++] = (struct pc_header){(char *)"Content-Type", (char *)env->content_type};
    for (size_t i = 0; i < env->n_headers && i < PC_ENV_MAX_HEADERS; i++)
        h[n++] = (struct pc_header){(char *)env->headers[i].name, (char *)env->headers[i].value};
    h[n++] = (struct pc_header){(char *)"X-Cache", (char *)result_names[result]};
    h[n++] = (struct pc_header){(char *)"X-Cache-Key", p->key};
    if (result == RES_HIT || result == RES_STALE) {
        int64_t age_s = (pc_wall_ms() - env->stored_at_ms) / 1000;
        snprintf(age, sizeof age, "%lld", (long long)(age_s > 0 ? age_s : 0));
        h[n++] = (struct pc_header){(char *)"Age", age};
        PC_METRIC_ADD(p->w->metrics.bytes_from_cache, env->body_len);
    }
    if (result == RES_STALE)
        h[n++] = (struct pc_header){(char *)"Warning", (char *)"110 - \"Response is Stale\""};
    p->result = result;
    struct pc_buf tmp;
    pc_buf_init(&tmp);
    const char *body;
    size_t len, json_len = json_part(env), new_json_len;
    pc_proxy_replay_body(p, env->body, env->body_len, json_len, &tmp, &body, &len, &new_json_len);
    char ihcl[32];
    if (new_json_len != json_len) { /* the JSON part changed length: so does its header */
        snprintf(ihcl, sizeof ihcl, "%zu", new_json_len);
        for (size_t i = 0; i < n; i++) {
            if (pc_strcaseeq(h[i].name, "Inference-Header-Content-Length"))
                h[i].value = ihcl;
        }
    }
    pc_proxy_answer(p, env->status, h, n, body, len);
    pc_buf_release(&tmp);
}

static void answer_hit(struct pc_preq *p, const struct pc_envelope *env)
{
    answer_entry(p, env, RES_HIT);
}

/* ---- stale-while-revalidate ------------------------------------------------------- */

/* A background call that refreshes one stale entry, or a batch's stale instances. */
struct refresh {
    struct pc_worker *w;
    struct pc_wroute *route;
    size_t vary_n;
    char key[PC_KEY_MAX];            /* the entry's, or the batch's herd key */
    struct pc_batch_keys *inst_keys; /* a batch's: the key of each instance sent, in order */
    int ttl_s;
    int client_ttl;
    int ignore_cc, streamed; /* as answer_rules */
    struct pc_bgcall call;
};

static void refresh_free(struct refresh *rf)
{
    struct pc_flight *f = pc_flights_find(rf->w->refreshing, rf->key);
    if (f != NULL)
        pc_flights_finish(rf->w->refreshing, f);
    pc_bgcall_release(&rf->call);
    pc_proxy_batch_keys_free(rf->inst_keys);
    free(rf);
}

static void on_refresh(const struct pc_upstream_resp *r, void *arg)
{
    struct refresh *rf = arg;
    struct pc_worker *w = rf->w;
    pc_hist_observe(&w->metrics.h_backend, r->total_ms / 1000.0);
    pc_timer_observe(&w->metrics.t_backend, r->total_ms / 1000.0);
    struct answer_rules a = {w, rf->route,     rf->vary_n,  rf->ttl_s, rf->client_ttl,
                             0, rf->ignore_cc, rf->streamed};
    const char *why = r->error != PC_UP_OK ? r->errmsg : NULL;
    enum pc_reason refused = why == NULL ? judge_answer(&a, r, NULL) : PC_REASON_NONE;
    if (refused != PC_REASON_NONE)
        why = pc_reason_words(refused);
    int rttl = a.no_grace ? a.ttl_s : redis_ttl(w, a.ttl_s);
    if (why == NULL && rf->inst_keys != NULL)
        why = pc_proxy_batch_store_refresh(w, r, &rf->inst_keys, a.record ? a.ttl_s : 0, rttl);
    else if (why == NULL)
        store_answer(w, rf->key, a.ttl_s, a.record, rttl, r, NULL, NULL);
    if (why == NULL) {
        PC_METRIC_INC(w->metrics.refresh_ok);
    } else {
        PC_METRIC_INC(w->metrics.refresh_failed);
        pc_log(PC_LOG_INFO, "proxy: refresh of %s not stored: %s", rf->key, why);
    }
    refresh_free(rf);
}

/*
 * Starts a background model call with body (copied) for p's route, keyed key in the
 * refreshing table, unless one of that key is already running or the model server is
 * known to be down or full. stale_ttl_s: the TTL the stale entry was stored with (0 none).
 * inst_keys (taken over: the refresh frees it or hands it to the stores, or this function
 * frees it when none starts), when not NULL: body is a batch of those instances, stored
 * each under its key.
 * p->req must still be valid.
 */
static void refresh_start(struct pc_preq *p, const char *key, int stale_ttl_s, const char *body,
                          size_t len, struct pc_batch_keys *inst_keys)
{
    struct pc_worker *w = p->w;
    struct refresh *rf = NULL;
    if (p->no_store || pc_flights_find(w->refreshing, key) != NULL ||
        !pc_worker_backend_available(w, p->backend) || (rf = calloc(1, sizeof *rf)) == NULL) {
        pc_proxy_batch_keys_free(inst_keys);
        return;
    }
    rf->inst_keys = inst_keys;
    rf->w = w;
    rf->route = route_of(p);
    rf->vary_n = p->vary_n;
    rf->ignore_cc = ignores_cc(p);
    rf->streamed = p->stream_keep;
    /* The refreshed entry keeps the TTL the stale one was stored with, unless this
     * request names one. */
    rf->client_ttl = p->client_ttl || stale_ttl_s > 0;
    rf->ttl_s = p->client_ttl || stale_ttl_s <= 0 ? p->ttl_s : stale_ttl_s;
    pc_strlcpy(rf->key, key, sizeof rf->key);
    if (pc_bgcall_copy(p, body, len, &rf->call) != 0 ||
        pc_flights_start(w->refreshing, rf->key, NULL) == NULL ||
        pc_bgcall_send(w, &rf->call, on_refresh, rf) != 0)
        refresh_free(rf);
}

static void start_refresh(struct pc_preq *p, const struct pc_envelope *stale)
{
    size_t len;
    const char *body = pc_preq_body(p, &len);
    refresh_start(p, p->key, stale->ttl_s, body, len, NULL);
}

void pc_proxy_batch_refresh(struct pc_preq *p, const char *herd, int stale_ttl_s, const char *body,
                            size_t len, struct pc_batch_keys *keys)
{
    refresh_start(p, herd, stale_ttl_s, body, len, keys);
}

/* An entry past its TTL but within grace: answered at once, marked stale. */
static void answer_stale(struct pc_preq *p, const struct pc_envelope *env)
{
    answer_entry(p, env, RES_STALE);
}

/* Redis answered (or failed): the value is valid only during this callback. */

/* What a stored value is worth to p: fresh, stale (within grace) or nothing. */
static enum value_use judge_value(const struct pc_preq *p, const char *data, size_t len,
                                  struct pc_envelope *env, char *ctype, size_t ctype_len)
{
    if (pc_envelope_decode(data, len, env, ctype, ctype_len) != 0) {
        pc_log(PC_LOG_WARN, "proxy: unreadable cache entry %s; treating as a miss", p->key);
        return VALUE_NONE;
    }
    /* An entry is only ever the answer to the key it was stored under. One tagged with
     * another key came back for a GET it does not answer: the connection is out of step
     * (or the value was copied): never served, the connection dropped. Untagged entries
     * (PC3 and older, from earlier versions) cannot say whose they are: a miss. */
    uint64_t want = pc_envelope_key_tag(p->key, strlen(p->key));
    if (env->key_tag != want) {
        if (env->key_tag != 0) {
            pc_log(PC_LOG_WARN, "proxy: the value read for %s was stored under another key",
                   p->key);
            pc_store_out_of_step(p->w->store, "a cache entry of another key answered a GET");
        }
        return VALUE_NONE;
    }
    int64_t age_ms = pc_wall_ms() - env->stored_at_ms;
    /* Redis starts its expiry when it runs the SET, a little after stored_at: an
     * entry older than ttl_s + grace_s is expired whatever Redis says. */
    if (p->max_age_s >= 0 && age_ms > (int64_t)p->max_age_s * 1000)
        return VALUE_NONE;
    /* Fresh for the entry's own TTL (PC2), else the route's: a client's TTL is a store
     * directive, not a lookup one. */
    int fresh_s = env->ttl_s > 0 ? env->ttl_s : p->route->v.ttl_s;
    if (age_ms <= (int64_t)fresh_s * 1000)
        return VALUE_FRESH;
    return age_ms <= (int64_t)redis_ttl(p->w, fresh_s) * 1000 ? VALUE_STALE : VALUE_NONE;
}

static void on_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    if (res == PC_STORE_HIT) {
        struct pc_envelope env;
        char ctype[PC_ENV_SCRATCH];
        switch (judge_value(p, data, len, &env, ctype, sizeof ctype)) {
        case VALUE_FRESH:
            pc_l1_put(p->w->l1, p->key, data, len);
            p->result = RES_HIT;
            answer_hit(p, &env);
            pc_preq_free(p);
            return;
        case VALUE_STALE:
            start_refresh(p, &env); /* before the answer: it copies the request */
            answer_stale(p, &env);
            pc_preq_free(p);
            return;
        case VALUE_NONE:
            break;
        }
        res = PC_STORE_MISS;
    }
    if (res != PC_STORE_MISS)
        p->reason = PC_REASON_REDIS_ERROR;
    forward_or_join(p, res == PC_STORE_MISS ? RES_MISS : RES_BYPASS);
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
    if (pc_l1_get(w->l1, p->key, &v)) {
        struct pc_envelope env;
        char ctype[PC_ENV_SCRATCH];
        if (judge_value(p, v.data, v.len, &env, ctype, sizeof ctype) == VALUE_FRESH) {
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

/* The value of directive dir ("max-age") as a number of seconds, or -1. */
static int directive_seconds(const char *value, const char *dir)
{
    size_t dl = strlen(dir);
    for (const char *p = value; p != NULL && *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncasecmp(p, dir, dl) == 0 && p[dl] == '=') {
            const char *v = p + dl + 1;
            long n = 0;
            int digits = 0;
            for (; *v >= '0' && *v <= '9' && n < 100000000; v++, digits++)
                n = n * 10 + (*v - '0');
            return digits > 0 && (*v == '\0' || *v == ',' || *v == ' ') ? (int)n : -1;
        }
        while (*p && *p != ',')
            p++;
    }
    return -1;
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
    p->no_cache = has_directive(cc, "no-cache") ||
                  has_directive(pc_http_req_header(req, "Pragma"), "no-cache");
    p->no_store = has_directive(cc, "no-store");
    p->only_if_cached = has_directive(cc, "only-if-cached");
    p->max_age_s = directive_seconds(cc, "max-age");
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
    if (!p->skip_lookup && l1_answer(p))
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
    hold_input(p->w, (int64_t)n);
    if (pc_budget_input_over()) {
        hold_input(p->w, -(int64_t)n);
        pc_buf_release(&out);
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
    long id = pc_routes_match(w->cfg, pc_http_req_method(req), pc_http_req_path(req));
    p->route = id >= 0 ? &w->routes[id] : NULL;
    p->backend = p->route != NULL ? p->route->v.backend : 0;
    p->cacheable = p->route != NULL && p->route->v.cache;
    p->stream = pc_proxy_wants_stream(p);
    if (!p->cacheable) {
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
    p->stream = pc_proxy_wants_stream(p); /* read again: decoded, as the family reads it */
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
