/*
 * h2srv: the HTTP/2 cleartext server (see the header).
 *
 * One h2conn per client connection: its bytes go to nghttp2_session_mem_recv, whose
 * callbacks build one pc_h2_req per stream (headers, body) and hand it to the handler once
 * the client ended the stream; what the session has to send is copied into the
 * bufferevent's output by conn_flush, never from inside the session's callbacks, and only
 * while that output holds less than H2_OUT_HIGH (the write callback resumes it). A
 * request's life:
 *
 *     HEADERS --> READING --(END_STREAM)--> HANDLING --pc_h2_reply--> REPLYING --> closed
 *                                             |  stream reset / connection gone:
 *                                             +--> orphaned (conn NULL, gone called);
 *                                                  its reply only frees it
 *
 * A request is freed when its stream closes, except while the handler holds it.
 */
#include "predcache/h2srv.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>

#include "predcache/bevread.h"
#include "predcache/budget.h"
#include "predcache/buf.h"
#include "predcache/h2io.h"
#include "predcache/list.h"
#include "predcache/log.h"
#include "predcache/metrics.h"

#define H2_OUT_HIGH (1 << 20)      /* output held before the session stops producing */
#define H2_STREAM_WINDOW (1 << 20) /* each stream's receive window */
#define H2_CONN_WINDOW (16 << 20)  /* the connection's receive window */

enum req_state { RS_READING, RS_HANDLING, RS_REPLYING };

struct h2conn;

struct pc_h2_req {
    struct h2conn *conn; /* NULL once the client is gone (orphaned) */
    int32_t id;
    enum req_state state;
    char method[16];
    char *path;
    struct pc_h2_headers hdrs;
    size_t hdr_bytes;
    struct pc_buf body;
    int over;    /* the body went past max_body_bytes or the input budget: the rest is dropped */
    size_t held; /* body bytes counted in the input budget (budget.h) */
    int64_t *held_gauge; /* and in this worker's gauge of it (NULL: none) */
    uint64_t start_us;
    char peer[64];
    /* The reply being sent: the body, then the trailers. */
    uint8_t *out;
    size_t out_len, out_off;
    struct pc_h2_headers trailers;
    void (*gone)(void *arg);
    void *gone_arg;
    struct pc_list link; /* in conn->reqs */
};

struct h2conn {
    struct pc_h2_server *srv;
    struct bufferevent *bev;
    struct pc_bevread rd; /* its socket's reads (bevread.h) */
    nghttp2_session *ng;
    char peer[64];
    int in_recv;         /* inside nghttp2_session_mem_recv: no send, no free */
    int in_send;         /* inside nghttp2_session_mem_send (its callbacks): no send */
    int dead;            /* to be freed once out of mem_recv */
    int closing;         /* conn_free is running: a reply from a gone callback only submits */
    int draining;        /* pc_h2_server_stop_accepting: DRAIN_* */
    int lingering;       /* its session is over: its end half-closed, reading to the client's */
    struct pc_list reqs; /* of pc_h2_req, its open streams */
    struct pc_list link; /* in srv->conns */
};

struct pc_h2_server {
    struct event_base *base;
    struct evconnlistener *lev;
    int listen_fd;
    int port;
    struct pc_h2_limits lim;
    pc_h2_handler handler;
    void *arg;
    int stopping;
    size_t n_conns;
    struct pc_list conns;
};

static void conn_flush(struct h2conn *c);
static void conn_free(struct h2conn *c);
static void conn_linger(struct h2conn *c);

/*
 * Stopping (a reload or a shutdown) in two steps, as RFC 9113 6.8 advises: a GOAWAY whose
 * last stream is 2^31-1 and a PING (DRAIN_NOTICE), then, once the PING's answer says the
 * client has read that notice and so makes no new streams here, the GOAWAY that names the
 * last stream processed (DRAIN_FINAL). A single GOAWAY at once refused the streams the
 * client had sent meanwhile. When the session is over the connection is half-closed and
 * read until the client closes (at most H2_LINGER_MS): closing at once could reset it
 * while the client still had the last answers and the GOAWAY unread, which a reset
 * discards (a call failed with UNAVAILABLE "Socket closed" across a reload).
 */
enum { DRAIN_NONE = 0, DRAIN_NOTICE, DRAIN_FINAL };
static const uint8_t drain_ping[8] = {'p', 'c', '-', 'd', 'r', 'a', 'i', 'n'};
#define H2_LINGER_MS 2000

/* ---- requests ----------------------------------------------------------------------- */

/* The body's bytes leave the input budget and the worker's gauge. */
static void req_unhold(struct pc_h2_req *r)
{
    pc_budget_input_add(-(int64_t)r->held);
    if (r->held_gauge != NULL)
        PC_METRIC_ADD(*r->held_gauge, -(int64_t)r->held);
    r->held = 0;
}

static void req_free(struct pc_h2_req *r)
{
    if (r->conn != NULL)
        pc_list_remove(&r->link);
    req_unhold(r);
    free(r->path);
    pc_h2_headers_free(&r->hdrs);
    pc_h2_headers_free(&r->trailers);
    pc_buf_release(&r->body);
    free(r->out);
    free(r);
}

/* Detaches r from its connection; the handler holds it, so it learns of it. */
static void req_orphan(struct pc_h2_req *r)
{
    pc_list_remove(&r->link);
    r->conn = NULL;
    if (r->gone != NULL)
        r->gone(r->gone_arg);
}

const char *pc_h2_req_method(const struct pc_h2_req *req)
{
    return req->method;
}

const char *pc_h2_req_path(const struct pc_h2_req *req)
{
    return req->path != NULL ? req->path : "";
}

const char *pc_h2_req_client(const struct pc_h2_req *req)
{
    return req->peer;
}

const char *pc_h2_req_header(const struct pc_h2_req *req, const char *name)
{
    for (size_t i = 0; i < req->hdrs.n; i++) {
        if (strcmp(req->hdrs.h[i].name, name) == 0)
            return req->hdrs.h[i].value;
    }
    return NULL;
}

const struct pc_header *pc_h2_req_headers(const struct pc_h2_req *req, size_t *n)
{
    *n = req->hdrs.n;
    return req->hdrs.h;
}

const uint8_t *pc_h2_req_body(const struct pc_h2_req *req, size_t *len)
{
    *len = req->over ? 0 : req->body.len;
    return (const uint8_t *)(req->body.data != NULL ? req->body.data : "");
}

int pc_h2_req_over(const struct pc_h2_req *req)
{
    return req->over;
}

uint64_t pc_h2_req_start_us(const struct pc_h2_req *req)
{
    return req->start_us;
}

int pc_h2_req_client_alive(const struct pc_h2_req *req)
{
    return req->conn != NULL;
}

void pc_h2_req_on_gone(struct pc_h2_req *req, void (*gone)(void *arg), void *arg)
{
    req->gone = gone;
    req->gone_arg = arg;
}

/* ---- the session's callbacks ---------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct pc_h2_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
    r->conn = c;
    r->id = f->hd.stream_id;
    r->start_us = pc_now_us();
    pc_buf_init(&r->body);
    pc_strlcpy(r->peer, c->peer, sizeof r->peer);
    pc_list_push_back(&c->reqs, &r->link);
    nghttp2_session_set_stream_user_data(ng, r->id, r);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    struct h2conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* a client's trailers: gRPC sends none; not read */
    struct pc_h2_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (r == NULL)
        return 0;
    r->hdr_bytes += nlen + vlen + 32; /* RFC 9113 6.5.2's size of an entry */
    if (r->hdr_bytes > c->srv->lim.max_header_bytes)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const char *n = (const char *)name, *v = (const char *)value;
    if (nlen == 5 && memcmp(n, ":path", 5) == 0) {
        free(r->path);
        r->path = strndup(v, vlen);
        return r->path != NULL ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (nlen == 7 && memcmp(n, ":method", 7) == 0) {
        snprintf(r->method, sizeof r->method, "%.*s", (int)vlen, v);
        return 0;
    }
    if (nlen > 0 && n[0] == ':')
        return 0; /* :scheme, :authority */
    return pc_h2_headers_add(&r->hdrs, n, nlen, v, vlen) == 0
               ? 0
               : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/* The request is whole (or over its bound): the handler takes it. */
static void req_hand(struct h2conn *c, struct pc_h2_req *r)
{
    r->state = RS_HANDLING;
    c->srv->handler(r, c->srv->arg);
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    struct h2conn *c = ud;
    struct pc_h2_req *r = nghttp2_session_get_stream_user_data(ng, id);
    if (r == NULL || r->state != RS_READING || r->over)
        return 0;
    /* Over its own bound, or over the process's input budget ([server] max_input_bytes,
     * shared with the HTTP/1.1 port): the handler refuses it now (RESOURCE_EXHAUSTED) and
     * the rest of the body is dropped, so that no stream holds more than it may. */
    if (r->body.len + len > c->srv->lim.max_body_bytes || pc_budget_input_over()) {
        r->over = 1;
        req_unhold(r);
        pc_buf_release(&r->body);
        req_hand(c, r);
        return 0;
    }
    if (pc_buf_append(&r->body, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    r->held += len;
    pc_budget_input_add((int64_t)len);
    r->held_gauge = c->srv->lim.input_bytes;
    if (r->held_gauge != NULL)
        PC_METRIC_ADD(*r->held_gauge, (int64_t)len);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2conn *c = ud;
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK) &&
        c->draining == DRAIN_NOTICE && memcmp(f->ping.opaque_data, drain_ping, 8) == 0) {
        c->draining = DRAIN_FINAL; /* the client has the notice: no stream comes after */
        return nghttp2_submit_goaway(ng, NGHTTP2_FLAG_NONE,
                                     nghttp2_session_get_last_proc_stream_id(ng), NGHTTP2_NO_ERROR,
                                     NULL, 0) == 0
                   ? 0
                   : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct pc_h2_req *r = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (r != NULL && r->state == RS_READING)
        req_hand(c, r);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *ud)
{
    (void)ud;
    (void)error;
    struct pc_h2_req *r = nghttp2_session_get_stream_user_data(ng, id);
    if (r == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (r->state == RS_HANDLING)
        req_orphan(r); /* reset before the reply: a cancelled call */
    else
        req_free(r);
    return 0;
}

/* The reply's body, then (when there are any) the trailers. */
static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ud;
    struct pc_h2_req *r = src->ptr;
    size_t n = pc_h2_copy_out(r->out, r->out_len, &r->out_off, buf, length, flags);
    if (r->out_off == r->out_len && r->trailers.n > 0) {
        nghttp2_nv nv[64];
        size_t k = pc_h2_nv(nv, 0, 64, r->trailers.h, r->trailers.n);
        if (nghttp2_submit_trailer(ng, id, nv, k) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* ---- replies ------------------------------------------------------------------------ */

void pc_h2_reply(struct pc_h2_req *req, int status, const struct pc_header *headers,
                 size_t n_headers, const uint8_t *body, size_t len,
                 const struct pc_header *trailers, size_t n_trailers)
{
    struct h2conn *c = req->conn;
    if (c == NULL || req->state != RS_HANDLING) { /* the client is gone */
        req_free(req);
        return;
    }
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    nghttp2_nv nv[128];
    size_t n = 0;
    nv[n++] =
        (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, strlen(st), NGHTTP2_NV_FLAG_NONE};
    n = pc_h2_nv(nv, n, 128, headers, n_headers);
    int rc;
    req->state = RS_REPLYING;
    if (body == NULL) { /* headers (and trailers) only */
        n = pc_h2_nv(nv, n, 128, trailers, n_trailers);
        rc = nghttp2_submit_response(c->ng, req->id, nv, n, NULL);
    } else {
        int bad = 0;
        for (size_t i = 0; i < n_trailers; i++)
            bad |= pc_h2_headers_add(&req->trailers, trailers[i].name, strlen(trailers[i].name),
                                     trailers[i].value, strlen(trailers[i].value));
        req->out = malloc(len ? len : 1);
        if (req->out == NULL || bad) {
            rc = -1;
        } else {
            memcpy(req->out, body, len);
            req->out_len = len;
            nghttp2_data_provider prd = {.source.ptr = req, .read_callback = data_read};
            rc = nghttp2_submit_response(c->ng, req->id, nv, n, &prd);
        }
    }
    if (rc != 0) { /* out of memory, or the stream is gone: reset it */
        pc_log(PC_LOG_WARN, "h2: %s: stream %d: cannot answer", c->peer, (int)req->id);
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, req->id, NGHTTP2_INTERNAL_ERROR);
    }
    conn_flush(c);
}

/* ---- connections -------------------------------------------------------------------- */

/* Copies what the session has to send into the output, up to H2_OUT_HIGH; closes the
 * connection once neither side has anything more to say. */
static void conn_flush(struct h2conn *c)
{
    if (c->in_recv || c->in_send || c->dead || c->closing)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* Sending a reset closes its stream: a gone callback may answer another stream of c
     * from inside mem_send, which the loop below sends once that callback returns. */
    c->in_send = 1;
    const char *why = pc_h2_send(c->ng, c->bev, H2_OUT_HIGH);
    c->in_send = 0;
    if (why != NULL) {
        pc_log(PC_LOG_INFO, "h2: %s: %s", c->peer, why);
        conn_free(c);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        evbuffer_get_length(out) == 0) {
        if (c->draining == DRAIN_NONE)
            conn_free(c);
        else
            conn_linger(c);
    }
}

/* The session is over after a drain: half-close, then read and drop until the client
 * closes or H2_LINGER_MS pass (conn_read_cb, conn_event_cb). */
static void conn_linger(struct h2conn *c)
{
    if (c->lingering)
        return;
    c->lingering = 1;
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    struct timeval t = {H2_LINGER_MS / 1000, (H2_LINGER_MS % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &t, NULL);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
}

/* The connection's read event (bevread.h): arg is its bufferevent, whose callback argument
 * is the connection. */
static void conn_read_event(evutil_socket_t fd, short what, void *arg)
{
    void *c;
    bufferevent_getcb(arg, NULL, NULL, NULL, &c);
    pc_bevread_read(&((struct h2conn *)c)->rd, fd, what);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct h2conn *c = arg;
    if (c->lingering) {
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        return;
    }
    c->in_recv = 1;
    const char *why = pc_h2_recv(c->ng, bev, &c->dead);
    c->in_recv = 0;
    if (why != NULL)
        pc_log(PC_LOG_INFO, "h2: %s: %s", c->peer, why);
    if (why != NULL || c->dead)
        conn_free(c);
    else
        conn_flush(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_flush(arg); /* the output drained: the session may produce more */
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct h2conn *c = arg;
    if (c->lingering) { /* the client's end, an error or H2_LINGER_MS: done */
        conn_free(c);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING)) {
        if (!pc_list_empty(&c->reqs)) { /* streams are waiting for their answers */
            bufferevent_enable(bev, EV_READ);
            return;
        }
        nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR); /* idle: GOAWAY */
        conn_flush(c);
        return;
    }
    conn_free(c);
}

static void conn_free(struct h2conn *c)
{
    if (c->in_recv) {
        c->dead = 1;
        return;
    }
    /* A gone callback may answer another of c's requests (a flight's waiters): its reply
     * must not flush c, nor free it again. */
    c->closing = 1;
    while (!pc_list_empty(&c->reqs)) {
        struct pc_h2_req *r = pc_list_entry(c->reqs.next, struct pc_h2_req, link);
        if (r->state == RS_HANDLING) {
            req_orphan(r);
        } else {
            pc_list_remove(&r->link);
            r->conn = NULL;
            req_free(r);
        }
    }
    pc_list_remove(&c->link);
    c->srv->n_conns--;
    nghttp2_session_del(c->ng);
    bufferevent_free(c->bev);
    free(c);
}

int pc_h2_server_adopt_conn(struct pc_h2_server *srv, int fd, const struct sockaddr *peer)
{
    if (srv->stopping || srv->n_conns >= (size_t)srv->lim.max_connections) {
        evutil_closesocket(fd);
        return -1;
    }
    struct h2conn *c = calloc(1, sizeof *c);
    nghttp2_session_callbacks *cb = NULL;
    if (c == NULL || nghttp2_session_callbacks_new(&cb) != 0) {
        free(c);
        evutil_closesocket(fd);
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new(&c->ng, cb, c);
    nghttp2_session_callbacks_del(cb);
    c->bev = rc == 0 ? bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (c->bev == NULL) {
        if (rc == 0)
            nghttp2_session_del(c->ng);
        free(c);
        evutil_closesocket(fd);
        return -1;
    }
    c->srv = srv;
    pc_list_init(&c->reqs);
    pc_list_push_back(&srv->conns, &c->link);
    srv->n_conns++;
    if (peer != NULL)
        pc_listen_peer(peer, c->peer);
    else
        pc_strlcpy(c->peer, "unknown", sizeof c->peer);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on a local socket */
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    if (pc_bevread_own(c->bev, &c->rd, conn_read_event, pc_bevread_64k, NULL) != 0) {
        conn_free(c);
        return -1;
    }
    struct timeval idle = {srv->lim.idle_timeout_ms / 1000,
                           (srv->lim.idle_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &idle, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)srv->lim.max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)srv->lim.max_header_bytes},
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW) != 0) {
        conn_free(c); /* closes fd */
        return -1;
    }
    conn_flush(c);
    return 0;
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lev;
    (void)salen;
    pc_h2_server_adopt_conn(arg, fd, sa);
}

/* ---- the server --------------------------------------------------------------------- */

struct pc_h2_server *pc_h2_server_new_unbound(struct event_base *base,
                                              const struct pc_h2_limits *lim, pc_h2_handler handler,
                                              void *arg)
{
    struct pc_h2_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return NULL;
    srv->base = base;
    srv->lim = *lim;
    srv->handler = handler;
    srv->arg = arg;
    pc_list_init(&srv->conns);
    return srv;
}

struct pc_h2_server *pc_h2_server_adopt(struct event_base *base, int fd,
                                        const struct pc_h2_limits *lim, pc_h2_handler handler,
                                        void *arg, char *err, size_t errlen)
{
    struct pc_h2_server *srv = pc_h2_server_new_unbound(base, lim, handler, arg);
    if (srv == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    evutil_make_socket_nonblocking(fd);
    srv->lev = evconnlistener_new(base, accept_cb, srv,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (srv->lev == NULL) {
        snprintf(err, errlen, "cannot listen for gRPC: %s", strerror(errno));
        close(fd);
        free(srv);
        return NULL;
    }
    srv->listen_fd = fd;
    srv->port = pc_listen_port(fd);
    return srv;
}

struct pc_h2_server *pc_h2_server_new(struct event_base *base, const char *hostport,
                                      const struct pc_h2_limits *lim, pc_h2_handler handler,
                                      void *arg, char *err, size_t errlen)
{
    int fd = pc_listen_socket(hostport, lim->bind, err, errlen);
    return fd < 0 ? NULL : pc_h2_server_adopt(base, fd, lim, handler, arg, err, errlen);
}

int pc_h2_server_listen_fd(const struct pc_h2_server *srv)
{
    return srv != NULL && srv->lev != NULL ? srv->listen_fd : -1;
}

int pc_h2_server_port(const struct pc_h2_server *srv)
{
    return srv->port;
}

size_t pc_h2_server_connections(const struct pc_h2_server *srv)
{
    return srv != NULL ? srv->n_conns : 0;
}

void pc_h2_server_stop_accepting(struct pc_h2_server *srv)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = 1;
    if (srv->lev != NULL) {
        evconnlistener_free(srv->lev);
        srv->lev = NULL;
    }
    for (struct pc_list *i = srv->conns.next, *next; i != &srv->conns; i = next) {
        struct h2conn *c = pc_list_entry(i, struct h2conn, link);
        next = i->next; /* c may be freed */
        if (c->draining != DRAIN_NONE)
            continue;
        c->draining = DRAIN_NOTICE;
        if (nghttp2_submit_shutdown_notice(c->ng) != 0 ||
            nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, drain_ping) != 0) {
            c->draining = DRAIN_FINAL; /* the one step, as a last resort */
            nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        }
        conn_flush(c);
    }
}

void pc_h2_server_free(struct pc_h2_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->lev != NULL)
        evconnlistener_free(srv->lev);
    while (!pc_list_empty(&srv->conns))
        conn_free(pc_list_entry(srv->conns.next, struct h2conn, link));
    free(srv);
}
