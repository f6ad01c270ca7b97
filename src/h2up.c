/*
 * h2up: the HTTP/2 cleartext client (see the header).
 *
 * A call waits on a connection until it is connected, then is submitted as a stream; its
 * answer (headers, body, trailers) is gathered by the session's callbacks and delivered
 * when the stream closes. Failures found inside pc_h2_client_call are delivered from the
 * loop (the call's timer made active). A connection that got GOAWAY takes no new call;
 * calls it refused (REFUSED_STREAM: never processed) are sent once more on a new one.
 */
#include "predcache/h2up.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "predcache/bevread.h"
#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/grpcwire.h"
#include "predcache/h2io.h"
#include "predcache/list.h"
#include "predcache/log.h"

#define H2U_OUT_HIGH (1 << 20)
#define H2U_WINDOW (16 << 20)            /* receive windows: answers are whole tensors */
#define H2U_MAX_ANSWER ((size_t)1 << 30) /* an answer's body at most */

struct uconn {
    struct pc_h2_client *cl;
    struct bufferevent *bev;
    struct pc_bevread rd; /* its socket's reads (bevread.h) */
    nghttp2_session *ng;
    int connected;
    int goaway; /* takes no new call */
    int in_recv;
    int dead;
    struct pc_list calls; /* of pc_h2_call: waiting to be submitted, or streams */
    struct pc_list link;  /* in cl->conns */
};

struct pc_h2_call {
    struct pc_h2_client *cl;
    struct uconn *conn; /* NULL once failed or delivered */
    int32_t id;         /* 0: not submitted */
    char *path;
    struct pc_h2_headers hdrs;
    uint8_t *body;
    size_t len, off;
    int retried;
    struct event *timer; /* the deadline; made active to deliver a failure from the loop */
    enum pc_h2_error fail;
    char fail_text[160];
    int cancelled; /* no callback; freed when its stream closes */
    pc_h2_resp_fn cb;
    void *arg;
    int status;
    struct pc_h2_headers rh, tr;
    struct pc_buf rbody;
    struct pc_list link; /* in conn->calls */
    struct pc_list all;  /* in cl->calls */
};

struct pc_h2_client {
    struct event_base *base;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char authority[PC_CFG_STR];
    int connect_timeout_ms;
    struct uconn *cur; /* the connection new calls go to; NULL: make one */
    struct pc_list conns;
    struct pc_list calls; /* every call not freed */
    size_t active;
};

static void uconn_flush(struct uconn *c);
static void uconn_free(struct uconn *c);
static void call_submit(struct pc_h2_call *call);
static struct uconn *uconn_get(struct pc_h2_client *cl);

/* ---- calls -------------------------------------------------------------------------- */

static void call_free(struct pc_h2_call *call)
{
    if (call->conn != NULL) {
        pc_list_remove(&call->link);
        call->conn = NULL;
    }
    call->cl->active--;
    pc_list_remove(&call->all);
    if (call->timer != NULL)
        event_free(call->timer);
    free(call->path);
    pc_h2_headers_free(&call->hdrs);
    pc_h2_headers_free(&call->rh);
    pc_h2_headers_free(&call->tr);
    free(call->body);
    pc_buf_release(&call->rbody);
    free(call);
}

/* Hands the answer (or error) to the caller, then frees the call. */
static void call_deliver(struct pc_h2_call *call, enum pc_h2_error e, const char *text)
{
    if (call->cancelled) {
        call_free(call);
        return;
    }
    struct pc_h2_resp r = {
        .error = e,
        .error_text = text,
        .status = call->status,
        .headers = call->rh.h,
        .n_headers = call->rh.n,
        .body = (const uint8_t *)(call->rbody.data != NULL ? call->rbody.data : ""),
        .len = call->rbody.len,
        .trailers = call->tr.h,
        .n_trailers = call->tr.n,
    };
    pc_h2_resp_fn cb = call->cb;
    void *arg = call->arg;
    call->cancelled = 1; /* delivered */
    if (call->conn != NULL) {
        pc_list_remove(&call->link);
        call->conn = NULL;
    }
    cb(&r, arg);
    call_free(call);
}

/* A failure delivered from the loop: the call leaves its connection now. */
static void call_fail_later(struct pc_h2_call *call, enum pc_h2_error e, const char *text)
{
    if (call->conn != NULL) {
        pc_list_remove(&call->link);
        call->conn = NULL;
    }
    call->fail = e;
    snprintf(call->fail_text, sizeof call->fail_text, "%s", text);
    event_active(call->timer, EV_TIMEOUT, 1);
}

static void call_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_h2_call *call = arg;
    if (call->fail != PC_H2_OK) {
        call_deliver(call, call->fail, call->fail_text);
        return;
    }
    struct uconn *c = call->conn;
    if (c != NULL && call->id > 0) { /* the stream lives on in the session until reset */
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
        nghttp2_session_set_stream_user_data(c->ng, call->id, NULL);
        pc_list_remove(&call->link);
        call->conn = NULL;
        uconn_flush(c);
    }
    call_deliver(call, PC_H2_TIMEOUT, "the model server did not answer in time");
}

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    struct pc_h2_call *call = src->ptr;
    return (ssize_t)pc_h2_copy_out(call->body, call->len, &call->off, buf, length, flags);
}

static void call_submit(struct pc_h2_call *call)
{
    struct uconn *c = call->conn;
    const struct pc_header pseudo[] = {{(char *)":method", (char *)"POST"},
                                       {(char *)":scheme", (char *)"http"},
                                       {(char *)":authority", c->cl->authority},
                                       {(char *)":path", call->path}};
    nghttp2_nv nv[132];
    size_t n = pc_h2_nv(nv, 0, 132, pseudo, 4);
    n = pc_h2_nv(nv, n, 132, call->hdrs.h, call->hdrs.n);
    call->off = 0;
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, call);
    if (id < 0) {
        call_fail_later(call, PC_H2_PROTOCOL, nghttp2_strerror(id));
        return;
    }
    call->id = id;
}

struct pc_h2_call *pc_h2_client_call(struct pc_h2_client *cl, const char *path,
                                     const struct pc_header *headers, size_t n_headers,
                                     const uint8_t *body, size_t len, int timeout_ms,
                                     pc_h2_resp_fn cb, void *arg)
{
    struct pc_h2_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    call->cl = cl;
    cl->active++;
    pc_list_push_back(&cl->calls, &call->all);
    call->cb = cb;
    call->arg = arg;
    pc_buf_init(&call->rbody);
    call->path = strdup(path);
    call->body = malloc(len ? len : 1);
    call->timer = evtimer_new(cl->base, call_timer, call);
    int bad = call->path == NULL || call->body == NULL || call->timer == NULL;
    for (size_t i = 0; !bad && i < n_headers; i++)
        bad = pc_h2_headers_add(&call->hdrs, headers[i].name, strlen(headers[i].name),
                                headers[i].value, strlen(headers[i].value)) != 0;
    if (bad) {
        call->cancelled = 1;
        call_free(call);
        return NULL;
    }
    memcpy(call->body, body, len);
    call->len = len;
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(call->timer, &tv);
    }
    struct uconn *c = uconn_get(cl);
    if (c == NULL) {
        call_fail_later(call, PC_H2_CONNECT, "cannot connect to the gRPC model server");
        return call;
    }
    call->conn = c;
    pc_list_push_back(&c->calls, &call->link);
    if (c->connected) {
        call_submit(call);
        uconn_flush(c);
    }
    return call;
}

void pc_h2_call_cancel(struct pc_h2_call *call)
{
    if (call == NULL || call->cancelled)
        return;
    call->cancelled = 1;
    struct uconn *c = call->conn;
    if (c == NULL || call->id == 0 || call->fail != PC_H2_OK) { /* never sent, or failed */
        call_free(call);
        return;
    }
    /* Freed when its stream closes: the session may still read its body until then. */
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    event_del(call->timer);
    uconn_flush(c);
}

size_t pc_h2_client_active(const struct pc_h2_client *cl)
{
    return cl != NULL ? cl->active : 0;
}

/* ---- the session's callbacks -------------------------------------------------------- */

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct pc_h2_call *call = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (call == NULL)
        return 0;
    const char *n = (const char *)name, *v = (const char *)value;
    if (nlen == 7 && memcmp(n, ":status", 7) == 0) {
        call->status = atoi(v);
        return 0;
    }
    if (nlen > 0 && n[0] == ':')
        return 0;
    struct pc_h2_headers *l = f->headers.cat == NGHTTP2_HCAT_HEADERS ? &call->tr : &call->rh;
    return pc_h2_headers_add(l, n, nlen, v, vlen) == 0 ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    (void)ud;
    struct pc_h2_call *call = nghttp2_session_get_stream_user_data(ng, id);
    if (call == NULL || call->cancelled)
        return 0;
    if (call->rbody.len + len > H2U_MAX_ANSWER || pc_buf_append(&call->rbody, data, len) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* reset; delivered as a reset */
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *ud)
{
    struct uconn *c = ud;
    struct pc_h2_call *call = nghttp2_session_get_stream_user_data(ng, id);
    if (call == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    if (call->cancelled) {
        call_free(call);
        return 0;
    }
    if (error == NGHTTP2_REFUSED_STREAM && !call->retried) { /* never processed: again */
        call->retried = 1;
        call->id = 0;
        pc_list_remove(&call->link);
        call->conn = NULL;
        c->goaway = 1;
        struct uconn *n = uconn_get(c->cl);
        if (n == NULL) {
            call_fail_later(call, PC_H2_CONNECT, "cannot connect to the gRPC model server");
            return 0;
        }
        call->conn = n;
        pc_list_push_back(&n->calls, &call->link);
        if (n->connected)
            call_submit(call);
        return 0;
    }
    if (error != NGHTTP2_NO_ERROR || call->status == 0) {
        char text[160];
        snprintf(text, sizeof text, "the model server reset the call (%s)",
                 nghttp2_http2_strerror(error));
        call_deliver(call, PC_H2_RESET, text);
        return 0;
    }
    call_deliver(call, PC_H2_OK, NULL);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    struct uconn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1;
        if (c->cl->cur == c)
            c->cl->cur = NULL;
    }
    return 0;
}

/* ---- connections -------------------------------------------------------------------- */

/* Fails every call of c (from the loop), then frees c. */
static void uconn_fail(struct uconn *c, enum pc_h2_error e, const char *text)
{
    while (!pc_list_empty(&c->calls)) {
        struct pc_h2_call *call = pc_list_entry(c->calls.next, struct pc_h2_call, link);
        if (call->cancelled) {
            call_free(call);
            continue;
        }
        call_fail_later(call, e, text);
    }
    uconn_free(c);
}

static void uconn_free(struct uconn *c)
{
    if (c->in_recv) {
        c->dead = 1;
        return;
    }
    while (!pc_list_empty(&c->calls)) { /* the client is being freed: they go with it */
        struct pc_h2_call *call = pc_list_entry(c->calls.next, struct pc_h2_call, link);
        pc_list_remove(&call->link);
        call->conn = NULL;
    }
    if (c->cl->cur == c)
        c->cl->cur = NULL;
    pc_list_remove(&c->link);
    if (c->ng != NULL)
        nghttp2_session_del(c->ng);
    bufferevent_free(c->bev);
    free(c);
}

static void uconn_flush(struct uconn *c)
{
    if (c->in_recv || c->dead || !c->connected)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *why = pc_h2_send(c->ng, c->bev, H2U_OUT_HIGH);
    if (why != NULL) {
        uconn_fail(c, PC_H2_PROTOCOL, why);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        evbuffer_get_length(out) == 0)
        uconn_fail(c, PC_H2_RESET, "the model server closed the connection");
}

/* The connection's read event (bevread.h): arg is its bufferevent, whose callback argument
 * is the connection. */
static void uconn_read_event(evutil_socket_t fd, short what, void *arg)
{
    void *c;
    bufferevent_getcb(arg, NULL, NULL, NULL, &c);
    pc_bevread_read(&((struct uconn *)c)->rd, fd, what);
}

static void uconn_read_cb(struct bufferevent *bev, void *arg)
{
    struct uconn *c = arg;
    if (!c->connected) /* the server's first bytes came before the connect event: kept */
        return;
    c->in_recv = 1;
    const char *why = pc_h2_recv(c->ng, bev, &c->dead);
    c->in_recv = 0;
    if (why != NULL)
        uconn_fail(c, PC_H2_PROTOCOL, why);
    else if (c->dead)
        uconn_free(c);
    else
        uconn_flush(c);
}

static void uconn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    uconn_flush(arg);
}

static int uconn_start(struct uconn *c)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    int rc = nghttp2_session_client_new(&c->ng, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2U_WINDOW},
                                   {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, H2U_WINDOW) != 0)
        return -1;
    c->connected = 1;
    for (struct pc_list *i = c->calls.next, *next; i != &c->calls; i = next) {
        next = i->next; /* a call that cannot be submitted leaves the list */
        struct pc_h2_call *call = pc_list_entry(i, struct pc_h2_call, link);
        if (call->id == 0)
            call_submit(call);
    }
    return 0;
}

static void uconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct uconn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        bufferevent_set_timeouts(bev, NULL, NULL);
        if (uconn_start(c) != 0) {
            uconn_fail(c, PC_H2_PROTOCOL, "out of memory");
            return;
        }
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
            uconn_read_cb(bev, c); /* what arrived before this event; it flushes */
        else
            uconn_flush(c);
        return;
    }
    if (!c->connected) {
        char text[512];
        snprintf(text, sizeof text, "cannot connect to the gRPC model server %s: %s",
                 c->cl->authority,
                 (what & BEV_EVENT_TIMEOUT) ? "timed out"
                                            : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        uconn_fail(c, PC_H2_CONNECT, text);
        return;
    }
    uconn_fail(c, PC_H2_RESET, "the model server closed the connection");
}

/* The connection new calls go to, connecting one when there is none; NULL on failure. */
static struct uconn *uconn_get(struct pc_h2_client *cl)
{
    if (cl->cur != NULL && !cl->cur->goaway && !cl->cur->dead)
        return cl->cur;
    struct uconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->cl = cl;
    pc_list_init(&c->calls);
    c->bev = bufferevent_socket_new(cl->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        free(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, uconn_read_cb, uconn_write_cb, uconn_event_cb, c);
    struct timeval ct = {cl->connect_timeout_ms / 1000, (cl->connect_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &ct, &ct);
    /* Read by a read of its own (bevread.h): after the connect, which makes the events. */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&cl->addr, (int)cl->addrlen) != 0 ||
        pc_bevread_own(c->bev, &c->rd, uconn_read_event, pc_bevread_64k, NULL) != 0) {
        bufferevent_free(c->bev);
        free(c);
        return NULL;
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    pc_list_push_back(&cl->conns, &c->link);
    cl->cur = c;
    return c;
}

/* ---- the client --------------------------------------------------------------------- */

struct pc_h2_client *pc_h2_client_new(struct event_base *base, const char *url,
                                      int connect_timeout_ms, char *err, size_t errlen)
{
    const char *hp = strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;
    char hostport[PC_CFG_STR], host[256];
    int port;
    if (hp == NULL) {
        snprintf(err, errlen, "'%s': only http:// (h2c) is supported", url);
        return NULL;
    }
    size_t hl = strcspn(hp, "/");
    if (hl == 0 || hl >= sizeof hostport) {
        snprintf(err, errlen, "'%s' has no host", url);
        return NULL;
    }
    memcpy(hostport, hp, hl);
    hostport[hl] = '\0';
    if (pc_config_split_hostport(hostport, host, sizeof host, &port) != 0 || port == 0 ||
        host[0] == '\0') {
        snprintf(err, errlen, "'%s' needs a host and a port", url);
        return NULL;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int gai = getaddrinfo(host, ps, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return NULL;
    }
    struct pc_h2_client *cl = calloc(1, sizeof *cl);
    if (cl == NULL) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(&cl->addr, ai->ai_addr, ai->ai_addrlen);
    cl->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    cl->base = base;
    cl->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 1000;
    pc_strlcpy(cl->authority, hostport, sizeof cl->authority);
    pc_list_init(&cl->conns);
    pc_list_init(&cl->calls);
    return cl;
}

void pc_h2_client_abort_all(struct pc_h2_client *cl)
{
    while (cl != NULL && !pc_list_empty(&cl->conns))
        uconn_fail(pc_list_entry(cl->conns.next, struct uconn, link), PC_H2_RESET,
                   "predcache is shutting down");
}

const char *pc_h2_client_authority(const struct pc_h2_client *cl)
{
    return cl->authority;
}

void pc_h2_client_free(struct pc_h2_client *cl)
{
    if (cl == NULL)
        return;
    while (!pc_list_empty(&cl->conns))
        uconn_free(pc_list_entry(cl->conns.next, struct uconn, link));
    while (!pc_list_empty(&cl->calls)) { /* without their callbacks */
        struct pc_h2_call *call = pc_list_entry(cl->calls.next, struct pc_h2_call, all);
        call->cancelled = 1;
        call_free(call);
    }
    free(cl);
}

int pc_h2_grpc_status(const struct pc_h2_resp *r)
{
    if (r->error != PC_H2_OK)
        return -1;
    for (size_t i = 0; i < r->n_trailers; i++)
        if (strcmp(r->trailers[i].name, "grpc-status") == 0)
            return atoi(r->trailers[i].value);
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, "grpc-status") == 0)
            return atoi(r->headers[i].value);
    return r->status == 200 ? PC_GRPC_UNKNOWN : pc_grpc_status_from_http(r->status);
}

int pc_h2_grpc_message(const struct pc_h2_resp *r, const uint8_t **msg, size_t *len)
{
    int compressed;
    size_t used;
    return r->error == PC_H2_OK &&
           pc_grpc_frame_parse(r->body, r->len, r->len, &compressed, msg, len, &used) == 1 &&
           used == r->len && !compressed;
}
