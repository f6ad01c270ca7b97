/*
 * answer: answering and storing, for every flow (see answer.h).
 */
#include "answer.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "predcache/config.h"
#include "predcache/creds.h"
#include "predcache/jsonedit.h"
#include "predcache/l1.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/purges.h"
#include "proxy_verify.h"

/* Does a comma-separated header value hold the directive (case-insensitive)? */
int pc_cc_has(const char *value, const char *dir)
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

/* The name an access line gives backend i: a [backend NAME]'s name, else the [backend]
 * url. */
static const char *upstream_name(const struct pc_config *cfg, size_t i)
{
    return i == 0 || i > cfg->n_backends ? cfg->backend_url : cfg->backends[i - 1].name;
}

/* Logs, counts and answers; p->req is gone afterwards. */
void pc_proxy_account(struct pc_preq *p, int status, size_t len)
{
    struct pc_worker *w = p->w;
    double total_ms = (double)(pc_now_us() - pc_http_req_start_us(p->req)) / 1000.0;
    char first[PC_KEY_MAX]; /* an item request's line names its first item's key */
    size_t items = p->items != NULL ? p->items(p, first) : 0;
    struct pc_access a = {
        .id = pc_http_req_id(p->req),
        .client = pc_http_req_client(p->req),
        .method = pc_http_req_method(p->req),
        .path = pc_http_req_path(p->req),
        .query = pc_http_req_query(p->req),
        .route = p->route != NULL ? p->route->v.name : NULL,
        .upstream = p->backend_ms >= 0 ? upstream_name(w->cfg, p->backend) : NULL,
        .status = status,
        .cache = pc_proxy_result_name(p->result),
        .reason = p->reason != PC_REASON_NONE ? pc_reason_token(p->reason) : NULL,
        .key = items > 0      ? first
               : p->cacheable ? p->key
                              : NULL,
        .items = items,
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
    /* A 503 is a passing state (a shortage, a shutdown, a model server that is down): the
     * client is told when to try again. */
    struct pc_header h[2] = {{(char *)"Content-Type", (char *)"application/json"},
                             {(char *)"Retry-After", (char *)"1"}};
    pc_log(PC_LOG_INFO, "proxy: %s %s -> %d %s", pc_http_req_method(p->req),
           pc_http_req_path(p->req), status, msg);
    pc_proxy_answer(p, status, h, status == 503 ? 2 : 1, b.data, b.len);
    pc_buf_release(&b);
}

/* Does any header `name` of r hold the directive? */
static int response_directive(const struct pc_upstream_resp *r, const char *name, const char *dir)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        if (pc_strcaseeq(r->headers[i].name, name) && pc_cc_has(r->headers[i].value, dir))
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
        int v = pc_cc_seconds(r->headers[i].value, dir);
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
static enum pc_reason vary_refusal(struct pc_answer_rules *a, const char *value)
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
static enum pc_reason judge_personal(struct pc_answer_rules *a, const struct pc_upstream_resp *r)
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
enum pc_reason pc_answer_judge(struct pc_answer_rules *a, const struct pc_upstream_resp *r,
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

/* Is the model server's Cache-Control not heard for p? The route says ignore, or p's family
 * writes boilerplate (TorchServe's private on every answer) and the route's own section
 * does not say how to hear it. */
int pc_answer_ignores_cc(const struct pc_preq *p)
{
    const struct pc_route_view *v = &p->route->v;
    return v->response_cache_control == PC_RCC_IGNORE || (p->ad.boilerplate_cc && !v->rcc_set);
}

enum pc_reason pc_proxy_judge(struct pc_preq *p, const struct pc_upstream_resp *r,
                              enum pc_reason *personal)
{
    struct pc_answer_rules a = {
        p->w, pc_preq_wroute(p),       p->vary_n,     p->ttl_s, p->client_ttl,
        0,    pc_answer_ignores_cc(p), p->stream_keep};
    enum pc_reason why = pc_answer_judge(&a, r, personal);
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
int pc_answer_redis_ttl(const struct pc_worker *w, int ttl_s)
{
    long long t = (long long)ttl_s + w->cfg->grace_s;
    return t > INT_MAX ? INT_MAX : (int)t;
}

enum pc_entry_use pc_answer_entry_use(const struct pc_worker *w, const char *key, int ttl_s,
                                      int max_age_s, const char *data, size_t len,
                                      struct pc_envelope *env, char *scratch, size_t scratch_len)
{
    if (pc_envelope_decode(data, len, env, scratch, scratch_len) != 0) {
        pc_log(PC_LOG_WARN, "proxy: unreadable cache entry %s; treating as a miss", key);
        return PC_ENTRY_NONE;
    }
    /* An entry is only ever the answer to the key it was stored under. One tagged with
     * another key came back for a GET it does not answer: the connection is out of step
     * (or the value was copied): never served, the connection dropped. Untagged entries
     * (PC3 and older, from earlier versions) cannot say whose they are: a miss. */
    uint64_t want = pc_envelope_key_tag(key, strlen(key));
    if (env->key_tag != want) {
        if (env->key_tag != 0) {
            pc_log(PC_LOG_WARN, "proxy: the value read for %s was stored under another key", key);
            pc_store_out_of_step(w->store, "a cache entry of another key answered a GET");
        }
        return PC_ENTRY_NONE;
    }
    int64_t age_ms = pc_wall_ms() - env->stored_at_ms;
    /* Redis starts its expiry when it runs the SET, a little after stored_at: an
     * entry older than ttl_s + grace_s is expired whatever Redis says. */
    if (max_age_s >= 0 && age_ms > (int64_t)max_age_s * 1000)
        return PC_ENTRY_NONE;
    /* Fresh for the entry's own TTL (PC2), else the caller's: a client's TTL is a store
     * directive, not a lookup one. */
    int fresh_s = env->ttl_s > 0 ? env->ttl_s : ttl_s;
    if (age_ms <= (int64_t)fresh_s * 1000)
        return PC_ENTRY_FRESH;
    return age_ms <= (int64_t)pc_answer_redis_ttl(w, fresh_s) * 1000 ? PC_ENTRY_STALE
                                                                     : PC_ENTRY_NONE;
}

int pc_proxy_store_ttl(const struct pc_preq *p)
{
    return p->no_grace ? p->ttl_s : pc_answer_redis_ttl(p->w, p->ttl_s);
}

/* The answer r as an entry holds it: status, content type, the replayed headers ([cache]
 * replay_headers; as many as an envelope carries), the body. Borrows r. */
void pc_answer_envelope(const struct pc_worker *w, const struct pc_upstream_resp *r,
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

int pc_answer_purged(struct pc_worker *w, const char *key, uint64_t begun_us)
{
    if (!pc_purges_since(w->purges, key, begun_us))
        return 0;
    PC_METRIC_INC(w->metrics.store_skipped);
    pc_log(PC_LOG_INFO, "proxy: not stored: %s was purged while its answer was fetched", key);
    return 1;
}

/* SETs r's answer under key as an envelope fresh for ttl_s (written into it when record),
 * kept redis_ttl_s in Redis. 1 when queued (done_cb runs on its answer). */
int pc_answer_store(struct pc_worker *w, const char *key, int ttl_s, int record, int redis_ttl_s,
                    const struct pc_upstream_resp *r, uint64_t begun_us,
                    pc_store_set_done_cb done_cb, void *done_arg)
{
    if (pc_answer_purged(w, key, begun_us))
        return 0;
    struct pc_envelope env;
    pc_answer_envelope(w, r, &env);
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
int pc_answer_store_result(struct pc_preq *p, const struct pc_upstream_resp *r, enum pc_reason why,
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
    return pc_answer_store(w, p->key, p->ttl_s, p->client_ttl, pc_proxy_store_ttl(p), r,
                           p->begun_us, done_cb, done_arg);
}

/* The status and message predcache answers for a failed transfer. */
int pc_answer_backend_error(const struct pc_upstream_resp *r, char *msg, size_t len)
{
    if (r->error == PC_UP_SHUTDOWN)
        snprintf(msg, len, "%s", r->errmsg);
    else if (r->error == PC_UP_NO_FD)
        snprintf(msg, len, "%s to the model server, retry later", r->errmsg);
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
    int status = pc_answer_backend_error(r, msg, sizeof msg);
    pc_proxy_answer_error(p, status, msg);
    return 1;
}

/* Answers q with the entry env (X-Cache: COALESCED) and frees it. */
void pc_answer_coalesced_free(struct pc_preq *q, const struct pc_envelope *env)
{
    pc_answer_entry(q, env, RES_COALESCED);
    pc_preq_free(q);
}

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
void pc_answer_entry(struct pc_preq *p, const struct pc_envelope *env, enum pc_cache_result result)
{
    struct pc_header h[PC_ENV_MAX_HEADERS + 6];
    size_t n = 0;
    char age[32];
    if (env->content_type[0] != '\0')
        h[n++] = (struct pc_header){(char *)"Content-Type", (char *)env->content_type};
    for (size_t i = 0; i < env->n_headers && i < PC_ENV_MAX_HEADERS; i++)
        h[n++] = (struct pc_header){(char *)env->headers[i].name, (char *)env->headers[i].value};
    h[n++] = (struct pc_header){(char *)"X-Cache", (char *)pc_proxy_result_name(result)};
    h[n++] = (struct pc_header){(char *)"X-Cache-Key", p->key};
    if (result == RES_HIT || result == RES_STALE) {
        int64_t age_s = (pc_wall_ms() - env->stored_at_ms) / 1000;
        snprintf(age, sizeof age, "%lld", (long long)(age_s > 0 ? age_s : 0));
        h[n++] = (struct pc_header){(char *)"Age", age};
        PC_METRIC_ADD(p->w->metrics.from_cache_bytes, env->body_len);
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

/* The value of directive dir ("max-age") as a number of seconds, or -1. */
int pc_cc_seconds(const char *value, const char *dir)
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
