/*
 * grpc_proxy: the gRPC port's calls (see the header): intake, the model server's call, the
 * answers. The cached methods go through grpc_cache first.
 */
#include "predcache/grpc_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "predcache/grpcwire.h"
#include "predcache/h2srv.h"
#include "predcache/health.h"
#include "predcache/metrics.h"
#include "predcache/wstate.h"
#include "coalesce.h"
#include "grpc_call.h"

void pc_grpc_call_free(struct gcall *g)
{
    pc_lockwait_stop(&g->lock);
    pc_buf_release(&g->material);
    free(g);
}

/* The access line and the counters of an answer. */
static void account(struct gcall *g, int status, int grpc_status, double backend_ms, size_t bytes)
{
    struct pc_worker *w = g->w;
    double total_ms = (double)(pc_now_us() - pc_h2_req_start_us(g->req)) / 1000.0;
    if (grpc_status < 0 || grpc_status > PC_GRPC_UNAUTHENTICATED)
        grpc_status = PC_GRPC_UNKNOWN;
    PC_METRIC_INC(w->metrics.grpc_calls[grpc_status]);
    PC_METRIC_DEC(w->metrics.in_flight);
    pc_hist_observe(&w->metrics.h_request, total_ms / 1000.0);
    char reason[80];
    snprintf(reason, sizeof reason, "grpc-status=%s%s%s", pc_grpc_status_name(grpc_status),
             g->reason ? "," : "", g->reason ? g->reason : "");
    const char *cache = g->result;
    if (cache == NULL) {
        cache = grpc_status == PC_GRPC_OK ? "PASS" : "ERROR";
    } else { /* a cached method's call */
        static const char *const names[] = PC_GRPC_CACHE_NAMES;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (strcmp(cache, names[i]) == 0)
                PC_METRIC_INC(w->metrics.grpc_cache[i]);
    }
    struct pc_access a = {
        .id = g->id,
        .client = pc_h2_req_client(g->req),
        .method = "GRPC",
        .path = pc_h2_req_path(g->req),
        .upstream = backend_ms >= 0 ? w->cfg->backend_grpc_url : NULL,
        .status = status,
        .cache = cache,
        .reason = reason,
        .key = g->key[0] ? g->key : NULL,
        .backend_ms = backend_ms,
        .total_ms = total_ms,
        .bytes = bytes,
    };
    pc_log_access(&a);
}

/* The headers every answer of predcache's own carries: content type, request id, and
 * X-Cache (and X-Cache-Key once keyed) for a cached method's call. Returns how many (at
 * most OWN_HEADERS). */
#define OWN_HEADERS 4
static size_t own_headers(const struct gcall *g, struct pc_header *h)
{
    size_t n = 0;
    h[n++] = (struct pc_header){(char *)"content-type", (char *)"application/grpc"};
    h[n++] = (struct pc_header){(char *)"x-request-id", (char *)g->id};
    if (g->result != NULL)
        h[n++] = (struct pc_header){(char *)"x-cache", (char *)g->result};
    if (g->key[0] != '\0') /* the entry's key: DELETE /cache/<key> purges it */
        h[n++] = (struct pc_header){(char *)"x-cache-key", (char *)g->key};
    return n;
}

void pc_grpc_call_status(struct gcall *g, int code, const char *msg, double backend_ms)
{
    if (g->req == NULL)
        return;
    char c[8], m[512];
    snprintf(c, sizeof c, "%d", code);
    pc_grpc_message_encode(msg, m, sizeof m);
    struct pc_header h[OWN_HEADERS];
    size_t n = own_headers(g, h);
    struct pc_header t[] = {{(char *)"grpc-status", c}, {(char *)"grpc-message", m}};
    account(g, 200, code, backend_ms, 0);
    pc_h2_reply(g->req, 200, h, n, NULL, 0, t, 2);
    g->req = NULL;
}

void pc_grpc_call_message(struct gcall *g, const uint8_t *msg, size_t len, double backend_ms)
{
    if (g->req == NULL)
        return;
    struct pc_buf body;
    pc_buf_init(&body);
    uint8_t prefix[PC_GRPC_PREFIX];
    pc_grpc_frame_prefix(prefix, 0, (uint32_t)len);
    if (pc_buf_append(&body, prefix, sizeof prefix) != 0 || pc_buf_append(&body, msg, len) != 0) {
        pc_buf_release(&body);
        pc_grpc_call_status(g, PC_GRPC_RESOURCE_EXHAUSTED, "out of memory", backend_ms);
        return;
    }
    struct pc_header h[OWN_HEADERS];
    size_t n = own_headers(g, h);
    struct pc_header t[] = {{(char *)"grpc-status", (char *)"0"}};
    account(g, 200, PC_GRPC_OK, backend_ms, body.len);
    pc_h2_reply(g->req, 200, h, n, (const uint8_t *)body.data, body.len, t, 1);
    g->req = NULL;
    pc_buf_release(&body);
}

/* Headers that end at this hop (RFC 9113 8.2.2 forbids them in HTTP/2 anyway; te, which
 * gRPC requires, is set again), the deadline, passed on as what is left of it, and the
 * request id, passed on as predcache's. */
static int not_passed(const char *name)
{
    return pc_http_is_hop_by_hop(name) || strcmp(name, "grpc-timeout") == 0 ||
           strcmp(name, "host") == 0 || strcmp(name, "x-request-id") == 0;
}

static void on_answer(const struct pc_h2_resp *r, void *arg)
{
    struct gcall *g = arg;
    struct pc_worker *w = g->w;
    g->up = NULL;
    double backend_ms = (double)(pc_now_us() - g->sent_us) / 1000.0;
    pc_hist_observe(&w->metrics.h_backend, backend_ms / 1000.0);
    int code = pc_h2_grpc_status(r);
    if (g->leader)
        pc_grpc_cache_answered(g, r, code);
    if (r->error != PC_H2_OK) {
        PC_METRIC_INC(w->metrics.backend_errors);
        int status = r->error == PC_H2_TIMEOUT    ? PC_GRPC_DEADLINE_EXCEEDED
                     : r->error == PC_H2_PROTOCOL ? PC_GRPC_INTERNAL
                                                  : PC_GRPC_UNAVAILABLE;
        pc_log(PC_LOG_INFO, "grpc: %s: %s", g->req ? pc_h2_req_path(g->req) : "-", r->error_text);
        pc_grpc_call_status(g, status, r->error_text, backend_ms);
        pc_grpc_call_free(g);
        return;
    }
    if (g->req == NULL) { /* the client left; the answer served the flight */
        pc_grpc_call_free(g);
        return;
    }
    /* The model server's headers, with predcache's request id and X-Cache. */
    struct pc_header h[PC_GRPC_MAX_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < r->n_headers && n + 3 < PC_GRPC_MAX_HEADERS; i++)
        if (!pc_http_is_hop_by_hop(r->headers[i].name) &&
            strcmp(r->headers[i].name, "x-request-id") != 0 &&
            strcmp(r->headers[i].name, "x-cache") != 0 &&
            strcmp(r->headers[i].name, "x-cache-key") != 0)
            h[n++] = r->headers[i];
    h[n++] = (struct pc_header){(char *)"x-request-id", g->id};
    if (g->result != NULL)
        h[n++] = (struct pc_header){(char *)"x-cache", (char *)g->result};
    if (g->key[0] != '\0')
        h[n++] = (struct pc_header){(char *)"x-cache-key", g->key};
    account(g, r->status, code, backend_ms, r->len);
    /* A Trailers-Only answer (its status in the headers, no message) stays one. */
    int only = r->len == 0 && r->n_trailers == 0;
    pc_h2_reply(g->req, r->status, h, n, only ? NULL : r->body, r->len, r->trailers, r->n_trailers);
    g->req = NULL;
    pc_grpc_call_free(g);
}

/* The client cancelled (or went away). A model server call is cancelled with it; any
 * other wait ends on its own, and frees g then. */
static void on_gone(void *arg)
{
    struct gcall *g = arg;
    if (g->up != NULL && !g->leader) {
        pc_h2_call_cancel(g->up);
        g->up = NULL;
        pc_grpc_call_status(g, PC_GRPC_CANCELLED, "cancelled by the client", -1);
        pc_grpc_call_free(g);
        return;
    }
    /* waiting on Redis, a lookup, a flight, or leading one (its answer serves the others) */
    pc_grpc_call_status(g, PC_GRPC_CANCELLED, "cancelled by the client", -1);
    g->gone = 1;
}

size_t pc_grpc_call_headers(const struct gcall *g, struct pc_header *h, size_t max)
{
    size_t nh = 0, n = 0;
    const struct pc_header *in = pc_h2_req_headers(g->req, &nh);
    for (size_t i = 0; i < nh && n + 3 < max; i++)
        if (!not_passed(in[i].name))
            h[n++] = in[i];
    h[n++] = (struct pc_header){(char *)"te", (char *)"trailers"}; /* gRPC requires it */
    h[n++] = (struct pc_header){(char *)"x-request-id", (char *)g->id};
    return n;
}

void pc_grpc_call_forward(struct gcall *g)
{
    struct pc_worker *w = g->w;
    if (g->req == NULL) { /* the client left while it waited: its body is gone too */
        if (g->leader)    /* the waiters make their own calls */
            pc_grpc_cache_answered(
                g, &(struct pc_h2_resp){.error = PC_H2_RESET, .error_text = "the client left"}, -1);
        pc_grpc_call_free(g);
        return;
    }
    if (!pc_grpc_backend_up(w)) { /* the health checks say it is down: no wait for it */
        if (g->leader)
            pc_grpc_cache_answered(g, &(struct pc_h2_resp){.error = PC_H2_CONNECT}, -1);
        pc_grpc_call_status(g, PC_GRPC_UNAVAILABLE,
                            "the gRPC model server is down (its health checks fail)", -1);
        pc_grpc_call_free(g);
        return;
    }
    struct pc_h2_req *req = g->req;
    int timeout_ms = w->cfg->backend_timeout_ms;
    const char *gt = req != NULL ? pc_h2_req_header(req, "grpc-timeout") : NULL;
    char left[12] = "";
    if (gt != NULL) {
        int64_t us = pc_grpc_timeout_parse(gt);
        int64_t spent = (int64_t)(pc_now_us() - pc_h2_req_start_us(req));
        if (us >= 0 && us - spent <= 0) {
            if (g->leader)
                pc_grpc_cache_answered(g, &(struct pc_h2_resp){.error = PC_H2_TIMEOUT}, -1);
            pc_grpc_call_status(g, PC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", -1);
            pc_grpc_call_free(g);
            return;
        }
        if (us > 0) {
            pc_grpc_timeout_format(us - spent, left);
            if ((us - spent) / 1000 + 1 < timeout_ms)
                timeout_ms = (int)((us - spent) / 1000 + 1);
        }
    }
    struct pc_header h[PC_GRPC_MAX_HEADERS];
    size_t n = pc_grpc_call_headers(g, h, PC_GRPC_MAX_HEADERS);
    if (left[0] != '\0')
        h[n++] = (struct pc_header){(char *)"grpc-timeout", left};
    size_t len;
    const uint8_t *body = pc_h2_req_body(req, &len);
    g->sent_us = pc_now_us();
    PC_METRIC_INC(w->metrics.backend_requests);
    g->up = pc_h2_client_call(w->grpc_up, pc_h2_req_path(req), h, n, body, len, timeout_ms,
                              on_answer, g);
    if (g->up == NULL) {
        if (g->leader)
            pc_grpc_cache_answered(g, &(struct pc_h2_resp){.error = PC_H2_PROTOCOL}, -1);
        pc_grpc_call_status(g, PC_GRPC_RESOURCE_EXHAUSTED, "out of memory", -1);
        pc_grpc_call_free(g);
    }
}

int pc_grpc_backend_up(const struct pc_worker *w)
{
    return pc_health_up(w->grpc_health);
}

static void on_health(const struct pc_h2_resp *r, void *arg)
{
    int code = pc_h2_grpc_status(r);
    char why[160];
    if (r->error != PC_H2_OK)
        snprintf(why, sizeof why, "%s", r->error_text);
    else
        snprintf(why, sizeof why, "HTTP %d, grpc-status %s", r->status, pc_grpc_status_name(code));
    int ok = r->status == 200 && code == PC_GRPC_OK;
    if (ok) { /* and the answer says serving (ready, live) */
        const uint8_t *m;
        size_t len;
        ok = pc_h2_grpc_message(r, &m, &len) && pc_grpc_health_serving(m, len);
        snprintf(why, sizeof why, "the answer does not say serving");
    }
    pc_health_report(arg, ok, why);
}

int pc_grpc_health_check(struct pc_health *h, void *arg, const char *path, int timeout_ms)
{
    struct pc_worker *w = arg;
    static const uint8_t empty[PC_GRPC_PREFIX]; /* one message of no bytes */
    const struct pc_header hd[] = {{(char *)"content-type", (char *)"application/grpc"},
                                   {(char *)"te", (char *)"trailers"}};
    return pc_h2_client_call(w->grpc_up, path, hd, 2, empty, sizeof empty, timeout_ms, on_health,
                             h) != NULL
               ? 0
               : -1;
}

void pc_grpc_handle(struct pc_h2_req *req, void *arg)
{
    struct pc_worker *w = arg;
    PC_METRIC_INC(w->metrics.in_flight);
    struct gcall *g = calloc(1, sizeof *g);
    if (g == NULL) {
        PC_METRIC_DEC(w->metrics.in_flight);
        pc_h2_reply(req, 503, NULL, 0, NULL, 0, NULL, 0);
        return;
    }
    g->w = w;
    g->req = req;
    g->start_us = pc_h2_req_start_us(req);
    pc_buf_init(&g->material);
    const char *cid = pc_h2_req_header(req, "x-request-id");
    if (cid != NULL && pc_log_request_id_ok(cid))
        pc_strlcpy(g->id, cid, sizeof g->id);
    else
        pc_log_request_id_new(g->id);
    pc_h2_req_on_gone(req, on_gone, g);
    const char *ct = pc_h2_req_header(req, "content-type");
    if (strcmp(pc_h2_req_method(req), "POST") != 0 || ct == NULL ||
        strncmp(ct, "application/grpc", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != '+' && ct[16] != ';')) {
        /* Not gRPC: the protocol's answer is HTTP 415. */
        account(g, 415, PC_GRPC_INTERNAL, -1, 0);
        pc_h2_reply(req, 415, NULL, 0, NULL, 0, NULL, 0);
        pc_grpc_call_free(g);
        return;
    }
    if (pc_h2_req_over(req)) {
        pc_grpc_call_status(g, PC_GRPC_RESOURCE_EXHAUSTED,
                            "request message larger than [server] max_body_bytes, or request "
                            "bytes held over [server] max_input_bytes",
                            -1);
        pc_grpc_call_free(g);
        return;
    }
    if (w->grpc_up == NULL) {
        pc_grpc_call_status(g, PC_GRPC_UNIMPLEMENTED,
                            "no gRPC model server is configured ([backend] grpc_url)", -1);
        pc_grpc_call_free(g);
        return;
    }
    /* A cached method with one message, not compressed, takes the cached path. */
    g->kind = pc_grpc_kind_of(pc_h2_req_path(req));
    if (g->kind != PC_GRPC_UNCACHED) {
        size_t len, used;
        int compressed;
        const uint8_t *body = pc_h2_req_body(req, &len);
        if (pc_grpc_frame_parse(body, len, len, &compressed, &g->msg, &g->msg_len, &used) == 1 &&
            used == len && !compressed) {
            pc_grpc_cache_start(g);
            return;
        }
        g->result = "PASS";
        g->reason = compressed ? "request-encoding" : "not-one-message";
    }
    pc_grpc_call_forward(g);
}
