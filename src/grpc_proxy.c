/*
 * grpc_proxy: gRPC calls through to the model server (see the header).
 */
#include "predcache/grpc_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/grpcwire.h"
#include "predcache/h2srv.h"
#include "predcache/h2up.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/wstate.h"

#define GRPC_MAX_HEADERS 96

/* One call, from its arrival to its answer. */
struct gcall {
    struct pc_worker *w;
    struct pc_h2_req *req;
    struct pc_h2_call *up; /* the model server's call, while it runs */
    uint64_t sent_us;
    /* x-request-id: the client's when sane, else made here; passed on and answered */
    char id[PC_LOG_ID_MAX + 1];
};

/* The access line and the counters of an answered call. */
static void account(struct gcall *g, int status, int grpc_status, const char *cache,
                    double backend_ms, size_t bytes)
{
    struct pc_worker *w = g->w;
    double total_ms = (double)(pc_now_us() - pc_h2_req_start_us(g->req)) / 1000.0;
    if (grpc_status < 0 || grpc_status > PC_GRPC_UNAUTHENTICATED)
        grpc_status = PC_GRPC_UNKNOWN;
    PC_METRIC_INC(w->metrics.grpc_calls[grpc_status]);
    PC_METRIC_DEC(w->metrics.in_flight);
    pc_hist_observe(&w->metrics.h_request, total_ms / 1000.0);
    char reason[48];
    snprintf(reason, sizeof reason, "grpc-status=%s", pc_grpc_status_name(grpc_status));
    struct pc_access a = {
        .id = g->id,
        .client = pc_h2_req_client(g->req),
        .method = "GRPC",
        .path = pc_h2_req_path(g->req),
        .upstream = backend_ms >= 0 ? w->cfg->backend_grpc_url : NULL,
        .status = status,
        .cache = cache,
        .reason = reason,
        .backend_ms = backend_ms,
        .total_ms = total_ms,
        .bytes = bytes,
    };
    pc_log_access(&a);
}

/* Answers with a status and no message (Trailers-Only), and frees g. */
static void reply_status(struct gcall *g, int code, const char *msg, double backend_ms)
{
    char c[8], m[512];
    snprintf(c, sizeof c, "%d", code);
    pc_grpc_message_encode(msg, m, sizeof m);
    struct pc_header h[] = {{(char *)"content-type", (char *)"application/grpc"},
                            {(char *)"x-request-id", g->id}};
    struct pc_header t[] = {{(char *)"grpc-status", c}, {(char *)"grpc-message", m}};
    account(g, 200, code, code == PC_GRPC_OK ? "PASS" : "ERROR", backend_ms, 0);
    pc_h2_reply(g->req, 200, h, 2, NULL, 0, t, 2);
    free(g);
}

/* Headers that end at this hop (RFC 9113 8.2.2 forbids them in HTTP/2 anyway; te, which
 * gRPC requires, is set again), and the deadline, passed on as what is left of it. */
static int not_passed(const char *name)
{
    return pc_http_is_hop_by_hop(name) || strcmp(name, "grpc-timeout") == 0 ||
           strcmp(name, "host") == 0;
}

/* The gRPC status of an answer: grpc-status of its trailers, else of its headers
 * (Trailers-Only), else the HTTP status's mapping. */
static int answer_status(const struct pc_h2_resp *r)
{
    for (size_t i = 0; i < r->n_trailers; i++)
        if (strcmp(r->trailers[i].name, "grpc-status") == 0)
            return atoi(r->trailers[i].value);
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, "grpc-status") == 0)
            return atoi(r->headers[i].value);
    return r->status == 200 ? PC_GRPC_UNKNOWN : pc_grpc_status_from_http(r->status);
}

static void on_answer(const struct pc_h2_resp *r, void *arg)
{
    struct gcall *g = arg;
    struct pc_worker *w = g->w;
    g->up = NULL;
    double backend_ms = (double)(pc_now_us() - g->sent_us) / 1000.0;
    pc_hist_observe(&w->metrics.h_backend, backend_ms / 1000.0);
    if (r->error != PC_H2_OK) {
        PC_METRIC_INC(w->metrics.backend_errors);
        int code = r->error == PC_H2_TIMEOUT    ? PC_GRPC_DEADLINE_EXCEEDED
                   : r->error == PC_H2_PROTOCOL ? PC_GRPC_INTERNAL
                                                : PC_GRPC_UNAVAILABLE;
        pc_log(PC_LOG_INFO, "grpc: %s: %s", pc_h2_req_path(g->req), r->error_text);
        reply_status(g, code, r->error_text, backend_ms);
        return;
    }
    /* The model server's headers, but the request id is predcache's (it was passed on). */
    struct pc_header h[GRPC_MAX_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < r->n_headers && n + 1 < GRPC_MAX_HEADERS; i++)
        if (!pc_http_is_hop_by_hop(r->headers[i].name) &&
            strcmp(r->headers[i].name, "x-request-id") != 0)
            h[n++] = r->headers[i];
    h[n++] = (struct pc_header){(char *)"x-request-id", g->id};
    int code = answer_status(r);
    account(g, r->status, code, "PASS", backend_ms, r->len);
    /* A Trailers-Only answer (its status in the headers, no message) stays one. */
    int only = r->len == 0 && r->n_trailers == 0;
    pc_h2_reply(g->req, r->status, h, n, only ? NULL : r->body, r->len, r->trailers, r->n_trailers);
    free(g);
}

/* The client cancelled (or went away): the model server's call is cancelled too. */
static void on_gone(void *arg)
{
    struct gcall *g = arg;
    pc_h2_call_cancel(g->up);
    g->up = NULL;
    reply_status(g, PC_GRPC_CANCELLED, "cancelled by the client", -1);
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
    const char *cid = pc_h2_req_header(req, "x-request-id");
    if (cid != NULL && pc_log_request_id_ok(cid))
        pc_strlcpy(g->id, cid, sizeof g->id);
    else
        pc_log_request_id_new(g->id);
    const char *ct = pc_h2_req_header(req, "content-type");
    if (strcmp(pc_h2_req_method(req), "POST") != 0 || ct == NULL ||
        strncmp(ct, "application/grpc", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != '+' && ct[16] != ';')) {
        /* Not gRPC: the protocol's answer is HTTP 415. */
        account(g, 415, PC_GRPC_INTERNAL, "ERROR", -1, 0);
        pc_h2_reply(req, 415, NULL, 0, NULL, 0, NULL, 0);
        free(g);
        return;
    }
    size_t len;
    const uint8_t *body = pc_h2_req_body(req, &len);
    if (pc_h2_req_over(req)) {
        reply_status(g, PC_GRPC_RESOURCE_EXHAUSTED,
                     "request message larger than [server] max_body_bytes, or request bytes "
                     "held over [server] max_input_bytes",
                     -1);
        return;
    }
    if (w->grpc_up == NULL) {
        reply_status(g, PC_GRPC_UNIMPLEMENTED,
                     "no gRPC model server is configured ([backend] grpc_url)", -1);
        return;
    }
    int timeout_ms = w->cfg->backend_timeout_ms;
    const char *gt = pc_h2_req_header(req, "grpc-timeout");
    char left[12] = "";
    if (gt != NULL) {
        int64_t us = pc_grpc_timeout_parse(gt);
        int64_t spent = (int64_t)(pc_now_us() - pc_h2_req_start_us(req));
        if (us >= 0 && us - spent <= 0) {
            reply_status(g, PC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", -1);
            return;
        }
        if (us > 0) {
            pc_grpc_timeout_format(us - spent, left);
            if ((us - spent) / 1000 + 1 < timeout_ms)
                timeout_ms = (int)((us - spent) / 1000 + 1);
        }
    }
    size_t nh;
    const struct pc_header *in = pc_h2_req_headers(req, &nh);
    struct pc_header h[GRPC_MAX_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < nh && n + 3 < GRPC_MAX_HEADERS; i++)
        if (!not_passed(in[i].name) && strcmp(in[i].name, "x-request-id") != 0)
            h[n++] = in[i];
    h[n++] = (struct pc_header){(char *)"te", (char *)"trailers"}; /* gRPC requires it */
    h[n++] = (struct pc_header){(char *)"x-request-id", g->id};
    if (left[0] != '\0')
        h[n++] = (struct pc_header){(char *)"grpc-timeout", left};
    g->sent_us = pc_now_us();
    PC_METRIC_INC(w->metrics.backend_requests);
    g->up = pc_h2_client_call(w->grpc_up, pc_h2_req_path(req), h, n, body, len, timeout_ms,
                              on_answer, g);
    if (g->up == NULL) {
        reply_status(g, PC_GRPC_RESOURCE_EXHAUSTED, "out of memory", -1);
        return;
    }
    pc_h2_req_on_gone(req, on_gone, g);
}
