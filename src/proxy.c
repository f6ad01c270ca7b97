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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/config.h"
#include "predcache/envelope.h"
#include "predcache/http.h"
#include "predcache/log.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/worker.h"

enum pc_cache_result { RES_HIT, RES_MISS, RES_BYPASS, RES_PASS, RES_ERROR };
static const char *const result_names[] = {"HIT", "MISS", "BYPASS", "PASS", "ERROR"};

/* One request in the proxy. Freed by finish() after the answer (and the store, if any). */
struct pc_preq {
    struct pc_worker *w;
    struct pc_http_req *req; /* valid until answered */
    int cacheable;
    int no_cache;
    int no_store;
    enum pc_cache_result result;
    char key[PC_KEY_MAX];
    double backend_ms;
    struct pc_header *fwd; /* headers for the model server, owned */
    size_t n_fwd;
};

/* ---- route table and request controls ---------------------------------------------- */

/* Glob match where '*' matches any run of characters, '/' included. */
static int glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *retry = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            retry = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++retry;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

int pc_proxy_route_cacheable(const struct pc_config *cfg, const char *method, const char *path)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct pc_route_rule *r = &cfg->routes[i];
        if ((strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0) &&
            glob_match(r->pattern, path))
            return 1;
    }
    return 0;
}

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

static const char *find_header(const struct pc_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(h[i].name, name))
            return h[i].value;
    }
    return NULL;
}

/* ---- finishing --------------------------------------------------------------------- */

static void preq_free(struct pc_preq *p)
{
    for (size_t i = 0; i < p->n_fwd; i++) {
        free(p->fwd[i].name);
        free(p->fwd[i].value);
    }
    free(p->fwd);
    free(p);
}

/* Logs, counts and answers; p->req is gone afterwards. */
static void answer(struct pc_preq *p, int status, const struct pc_header *h, size_t n,
                   const char *body, size_t len)
{
    struct pc_worker *w = p->w;
    double total_ms = (double)(pc_now_us() - pc_http_req_start_us(p->req)) / 1000.0;
    struct pc_access a = {
        .client = pc_http_req_client(p->req),
        .method = pc_http_req_method(p->req),
        .path = pc_http_req_path(p->req),
        .status = status,
        .cache = result_names[p->result],
        .key = p->cacheable ? p->key : NULL,
        .backend_ms = p->backend_ms,
        .total_ms = total_ms,
        .bytes = len,
    };
    pc_log_access(&a);
    switch (p->result) {
    case RES_HIT:
        w->metrics.req_hit++;
        break;
    case RES_MISS:
        w->metrics.req_miss++;
        break;
    case RES_BYPASS:
        w->metrics.req_bypass++;
        break;
    case RES_PASS:
        w->metrics.req_pass++;
        break;
    case RES_ERROR:
        w->metrics.req_error++;
        break;
    }
    pc_hist_observe(&w->metrics.h_request, total_ms / 1000.0);
    w->metrics.in_flight--;
    pc_http_reply(p->req, status, h, n, body, len);
    p->req = NULL;
}

static void answer_error(struct pc_preq *p, int status, const char *msg)
{
    p->result = RES_ERROR;
    struct pc_buf b;
    pc_buf_init(&b);
    pc_buf_append_str(&b, "{\"error\":\"");
    for (const char *s = msg; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            pc_buf_printf(&b, "\\%c", ch);
        else if (ch < 0x20)
            pc_buf_printf(&b, "\\u%04x", ch);
        else
            pc_buf_append_char(&b, (char)ch);
    }
    pc_buf_append_str(&b, "\"}");
    struct pc_header ct = {(char *)"Content-Type", (char *)"application/json"};
    pc_log(PC_LOG_INFO, "proxy: %s %s -> %d %s", pc_http_req_method(p->req),
           pc_http_req_path(p->req), status, msg);
    answer(p, status, &ct, 1, b.data, b.len);
    pc_buf_release(&b);
}

/* ---- storing ----------------------------------------------------------------------- */

/* Why a backend answer must not be stored, or NULL when it may be. */
static const char *store_refusal(const struct pc_preq *p, const struct pc_upstream_resp *r)
{
    if (p->no_store)
        return "request no-store";
    if (r->status < 200 || r->status > 299)
        return "status not 2xx";
    if (r->body.len > p->w->cfg->max_value_bytes)
        return "larger than max_value_bytes";
    const char *cc = find_header(r->headers, r->n_headers, "Cache-Control");
    if (has_directive(cc, "no-store") || has_directive(cc, "private"))
        return "response no-store/private";
    if (find_header(r->headers, r->n_headers, "Set-Cookie") != NULL)
        return "response sets a cookie";
    if (find_header(r->headers, r->n_headers, "Content-Encoding") != NULL)
        return "response is content-encoded";
    const char *ctype = find_header(r->headers, r->n_headers, "Content-Type");
    if (ctype != NULL && strlen(ctype) >= PC_CFG_STR)
        return "content type too long to store";
    return NULL;
}

static void store_result(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    struct pc_worker *w = p->w;
    const char *why = store_refusal(p, r);
    if (why != NULL) {
        w->metrics.store_skipped++;
        pc_log(PC_LOG_DEBUG, "proxy: not stored (%s): %s", why, p->key);
        return;
    }
    const char *ctype = find_header(r->headers, r->n_headers, "Content-Type");
    struct pc_envelope env = {
        .status = r->status,
        .stored_at_ms = pc_wall_ms(),
        .content_type = ctype ? ctype : "",
        .body = r->body.data,
        .body_len = r->body.len,
    };
    struct pc_buf val;
    pc_buf_init(&val);
    if (pc_envelope_encode(&env, &val) != 0) {
        w->metrics.store_skipped++;
    } else {
        pc_store_set(w->store, p->key, val.data, val.len, w->cfg->ttl_s);
    }
    pc_buf_release(&val);
}

/* ---- forwarding -------------------------------------------------------------------- */

static void on_backend(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_worker *w = p->w;
    p->backend_ms = r->total_ms;
    pc_hist_observe(&w->metrics.h_backend, r->total_ms / 1000.0);
    if (r->error != PC_UP_OK) {
        w->metrics.backend_errors++;
        char msg[400];
        if (r->error == PC_UP_SHUTDOWN)
            snprintf(msg, sizeof msg, "%s", r->errmsg);
        else
            snprintf(msg, sizeof msg, "model server %s: %s",
                     r->error == PC_UP_TIMEOUT ? "timed out" : "unavailable", r->errmsg);
        answer_error(p, pc_upstream_error_status(r->error), msg);
        preq_free(p);
        return;
    }
    size_t n = r->n_headers;
    struct pc_header *h = calloc(n + 2, sizeof *h);
    if (h == NULL) {
        answer_error(p, 503, "out of memory");
        preq_free(p);
        return;
    }
    memcpy(h, r->headers, n * sizeof *h);
    if (p->cacheable) {
        h[n].name = (char *)"X-Cache";
        h[n++].value = (char *)result_names[p->result];
        h[n].name = (char *)"X-Cache-Key";
        h[n++].value = p->key;
    }
    answer(p, r->status, h, n, r->body.data, r->body.len);
    free(h);
    if (p->cacheable)
        store_result(p, r); /* after the answer: the client never waits for Redis */
    preq_free(p);
}

/* Copies the request's end-to-end headers for the model server and adds X-Forwarded-For. */
static int build_forward_headers(struct pc_preq *p)
{
    size_t n;
    const struct pc_header *in = pc_http_req_headers(p->req, &n);
    p->fwd = calloc(n + 1, sizeof *p->fwd);
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
        if (pc_http_is_hop_by_hop(in[i].name))
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

static void forward(struct pc_preq *p, enum pc_cache_result result)
{
    struct pc_worker *w = p->w;
    p->result = result;
    if (w->closing) {
        answer_error(p, 503, "predcache is shutting down");
        preq_free(p);
        return;
    }
    if (build_forward_headers(p) != 0) {
        answer_error(p, 503, "out of memory");
        preq_free(p);
        return;
    }
    long elapsed_ms = (long)((pc_now_us() - pc_http_req_start_us(p->req)) / 1000);
    long left_ms = w->cfg->request_timeout_ms - elapsed_ms;
    if (left_ms <= 0) {
        answer_error(p, 504, "request timed out before reaching the model server");
        preq_free(p);
        return;
    }
    size_t len;
    const char *body = pc_http_req_body(p->req, &len);
    w->metrics.backend_requests++;
    /* body is borrowed by curl: p->req stays alive until on_backend answers it. */
    if (pc_upstream_send(w->up, pc_http_req_method(p->req), pc_http_req_target(p->req), p->fwd,
                         p->n_fwd, body, len, (int)left_ms, on_backend, p) == NULL) {
        w->metrics.backend_errors++;
        answer_error(p, 502, "cannot start a model server request");
        preq_free(p);
    }
}

/* ---- lookup ------------------------------------------------------------------------ */

static void answer_hit(struct pc_preq *p, const struct pc_envelope *env)
{
    char age[32];
    int64_t age_s = (pc_wall_ms() - env->stored_at_ms) / 1000;
    snprintf(age, sizeof age, "%lld", (long long)(age_s > 0 ? age_s : 0));
    struct pc_header h[4];
    size_t n = 0;
    if (env->content_type[0] != '\0')
        h[n++] = (struct pc_header){(char *)"Content-Type", (char *)env->content_type};
    h[n++] = (struct pc_header){(char *)"X-Cache", (char *)"HIT"};
    h[n++] = (struct pc_header){(char *)"X-Cache-Key", p->key};
    h[n++] = (struct pc_header){(char *)"Age", age};
    p->w->metrics.bytes_from_cache += env->body_len;
    answer(p, env->status, h, n, env->body, env->body_len);
}

/* Redis answered (or failed): the value is valid only during this callback. */
static void on_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    if (res == PC_STORE_HIT) {
        struct pc_envelope env;
        char ctype[PC_CFG_STR];
        if (pc_envelope_decode(data, len, &env, ctype, sizeof ctype) == 0) {
            p->result = RES_HIT;
            answer_hit(p, &env);
            preq_free(p);
            return;
        }
        pc_log(PC_LOG_WARN, "proxy: unreadable cache entry %s; treating as a miss", p->key);
        res = PC_STORE_MISS;
    }
    forward(p, res == PC_STORE_MISS ? RES_MISS : RES_BYPASS);
}

static int body_declares_json(const struct pc_http_req *req)
{
    const char *ct = pc_http_req_header(req, "Content-Type");
    return ct != NULL && strcasestr(ct, "json") != NULL;
}

void pc_proxy_handle(struct pc_http_req *req, void *arg)
{
    struct pc_worker *w = arg;
    w->metrics.in_flight++;
    struct pc_preq *p = calloc(1, sizeof *p);
    if (p == NULL) {
        w->metrics.in_flight--;
        w->metrics.req_error++;
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    p->w = w;
    p->req = req;
    p->backend_ms = -1;
    p->cacheable = pc_proxy_route_cacheable(w->cfg, pc_http_req_method(req), pc_http_req_path(req));
    if (!p->cacheable) {
        forward(p, RES_PASS);
        return;
    }
    const char *cc = pc_http_req_header(req, "Cache-Control");
    p->no_cache = has_directive(cc, "no-cache") ||
                  has_directive(pc_http_req_header(req, "Pragma"), "no-cache");
    p->no_store = has_directive(cc, "no-store");

    /* The route is the path plus its query: a query that changes the answer changes the key. */
    struct pc_buf route;
    pc_buf_init(&route);
    pc_buf_append_str(&route, pc_http_req_path(req));
    if (pc_http_req_query(req)[0] != '\0')
        pc_buf_printf(&route, "?%s", pc_http_req_query(req));
    size_t len;
    const char *body = pc_http_req_body(req, &len);
    enum pc_key_kind kind;
    char err[256];
    int rc = pc_cachekey_derive(&w->keyp, route.data ? route.data : "", body, len,
                                body_declares_json(req), p->key, &kind, err, sizeof err);
    pc_buf_release(&route);
    if (rc != 0) {
        p->cacheable = 0;
        answer_error(p, 400, err);
        preq_free(p);
        return;
    }
    if (p->no_cache) {
        forward(p, RES_MISS);
        return;
    }
    if (pc_store_get(w->store, p->key, on_lookup, p) != 0)
        forward(p, RES_BYPASS);
}
