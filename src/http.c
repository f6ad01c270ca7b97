/*
 * http: predcache's HTTP/1.1 server on libevent bufferevents.
 *
 * One pc_conn per client connection, driven by an explicit state machine:
 *
 *     accept --> READ_HEAD --(blank line)--> READ_BODY --(body complete)--> HANDLING
 *                   ^                                                          |
 *                   |                                              pc_http_reply()
 *                   |                                                          v
 *                   +-----------(keep-alive, output drained)---------------- WRITING
 *                                                                              |
 *     any protocol error --> error reply --> WRITING --(close)--> CLOSING (linger) --> freed
 *
 * A request handed to the handler (struct pc_http_req) outlives its connection: when
 * the client goes away while the handler is busy, the request is orphaned (conn = NULL)
 * and freed by the reply, which then writes nothing. Only one request per connection is
 * handled at a time; pipelined requests wait in the input buffer.
 */
#include "predcache/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "predcache/bevread.h"
#include "predcache/budget.h"
#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/h1parse.h"
#include "predcache/list.h"
#include "predcache/log.h"
#include "predcache/loop.h"
#include "predcache/metrics.h"

#define PC_HTTP_LINGER_MS 2000
/* Held answers (hold_answer): at most this many at once, none longer than this many bytes,
 * none waiting more than this many milliseconds for a busy loop. */
#define PC_HTTP_HOLD_MAX 16
#define PC_HTTP_HOLD_BYTES 16384
#define PC_HTTP_HOLD_MS 1

enum conn_state { CS_READ_HEAD, CS_READ_BODY, CS_HANDLING, CS_WRITING, CS_CLOSING };

struct pc_conn;

struct pc_http_req {
    struct pc_conn *conn; /* NULL once the client has gone (orphaned) */
    struct pc_http_server *srv;
    struct pc_h1req h1; /* the request as read (h1parse), and the reader's state */
    uint64_t start_us;
    size_t in_held; /* bytes counted for it in the input budget (budget.h) */
    int shed;       /* pc_http_reply_refuses decided: 1 refuse (503), -1 admit; 0 not yet */
    char peer[64];
    char id[PC_LOG_ID_MAX + 1]; /* its X-Request-Id once the head is read; "" not given one */
    /* A streamed answer (pc_http_stream_begin): the handler's callbacks, whether the body
     * goes chunked, whether it waits for the output to drain. */
    int streaming;
    int stream_chunked;
    int stream_waiting;
    pc_http_stream_fn stream_gone, stream_drained;
    void *stream_arg;
};

struct pc_conn {
    struct pc_http_server *srv;
    struct bufferevent *bev;
    enum conn_state state;
    struct pc_http_req *req; /* request being read or handled, owned by the conn until handed */
    int close_after;         /* close once the current answer is written */
    int read_eof;            /* the client closed its sending side: never read again */
    int in_paused;           /* reading stopped: the input budget is spent (budget.h) */
    struct pc_bevread rd;    /* its socket's reads (bevread.h) */
    struct event *deadline;  /* a started request must be fully received by then */
    /* Output the socket has not taken, counted in the budget (budget.h) while out_cb
     * follows it: from an answer left over by its first write until written or freed. */
    size_t out_held;
    struct evbuffer_cb_entry *out_cb;
    char peer[64];
    struct pc_list link;      /* in srv->conns */
    int held;                 /* its answer waits in the output for the server's flush */
    struct pc_list held_link; /* in srv->held while held */
};

struct pc_http_server {
    struct event_base *base;
    struct evconnlistener *lev;
    int listen_fd; /* lev's socket while it listens, else -1 */
    struct pc_http_limits lim;
    pc_http_handler handler;
    void *arg;
    int port;
    int stopping;
    size_t n_conns;
    struct pc_list conns; /* of struct pc_conn */
    /* Out of file descriptors (EMFILE, ENFILE): a descriptor held in reserve lets the
     * listener take pending connections and refuse them, instead of leaving them readable
     * (which spins the loop); when even that fails, accepting pauses for a moment. */
    int spare_fd;
    struct event *resume;    /* re-enables a paused listener */
    time_t log_s;            /* last accept failure logged (one line a second at most) */
    size_t n_in_paused;      /* connections with in_paused set */
    struct event *in_resume; /* polls the input budget while some are */
    uint64_t log_quiet;      /* failures since, not logged */
    /* Handing over (a reload): each connection goes to give at its next request boundary. */
    pc_http_give_fn give;
    void *give_arg;
    /* Answers made while a read is handled, held in their connections' outputs and written
     * together when the loop has run what is ready (flush), or sooner: see hold_answer. */
    int handling;        /* a read's handler runs: its answer may be held */
    struct pc_list held; /* of struct pc_conn, by held_link, in the order held */
    size_t n_held;
    struct pc_loop_later flush; /* armed by the first held */
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_process(struct pc_conn *c);
static void conn_fail(struct pc_conn *c, int status, const char *msg);
static void conn_give(struct pc_conn *c);

/* ---- small helpers ---------------------------------------------------------------- */

const char *pc_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* ---- requests ---------------------------------------------------------------------- */

static struct pc_http_req *req_new(struct pc_conn *c)
{
    struct pc_http_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->conn = c;
    r->srv = c->srv;
    struct pc_h1_limits lim = {c->srv->lim.max_header_bytes, c->srv->lim.max_body_bytes};
    pc_h1parse_init(&r->h1, &lim);
    r->start_us = pc_now_us();
    pc_strlcpy(r->peer, c->peer, sizeof r->peer);
    return r;
}

static void req_free(struct pc_http_req *r)
{
    if (r == NULL)
        return;
    pc_budget_input_add(-(int64_t)r->in_held);
    if (r->srv->lim.input_bytes != NULL)
        PC_METRIC_ADD(*r->srv->lim.input_bytes, -(int64_t)r->in_held);
    pc_budget_input_token_release(r);
    pc_h1parse_release(&r->h1);
    free(r);
}

const char *pc_http_req_method(const struct pc_http_req *req)
{
    return req->h1.method;
}

const char *pc_http_req_path(const struct pc_http_req *req)
{
    return req->h1.path;
}

const char *pc_http_req_query(const struct pc_http_req *req)
{
    return req->h1.query;
}

const char *pc_http_req_target(const struct pc_http_req *req)
{
    return req->h1.target;
}

const char *pc_http_req_client(const struct pc_http_req *req)
{
    return req->peer;
}

const char *pc_http_req_header(const struct pc_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->h1.n_headers; i++) {
        if (pc_strcaseeq(req->h1.headers[i].name, name))
            return req->h1.headers[i].value;
    }
    return NULL;
}

const struct pc_header *pc_http_req_headers(const struct pc_http_req *req, size_t *n)
{
    *n = req->h1.n_headers;
    return req->h1.headers;
}

const char *pc_http_req_body(const struct pc_http_req *req, size_t *len)
{
    *len = req->h1.body.len;
    return req->h1.body.data ? req->h1.body.data : "";
}

int pc_http_req_client_alive(const struct pc_http_req *req)
{
    return req->conn != NULL;
}

unsigned long long pc_http_req_start_us(const struct pc_http_req *req)
{
    return req->start_us;
}

const char *pc_http_req_id(const struct pc_http_req *req)
{
    return req->id;
}

/* The request's id, once its head is read: the client's X-Request-Id when sane, else a
 * new one (servers with request_ids only). */
static void req_take_id(struct pc_http_req *r)
{
    if (!r->srv->lim.request_ids)
        return;
    const char *given = pc_http_req_header(r, "X-Request-Id");
    if (given != NULL && pc_log_request_id_ok(given))
        pc_strlcpy(r->id, given, sizeof r->id);
    else
        pc_log_request_id_new(r->id);
}

/* ---- connections ------------------------------------------------------------------- */

/* Sets the bytes c counts in the output budget (and its worker's gauge) to held. */
static void out_count(struct pc_conn *c, size_t held)
{
    int64_t delta = (int64_t)held - (int64_t)c->out_held;
    if (delta == 0)
        return;
    c->out_held = held;
    pc_budget_client_add(delta);
    if (c->srv->lim.output_bytes != NULL)
        PC_METRIC_ADD(*c->srv->lim.output_bytes, delta);
}

/* The output buffer changed while followed: count what is left; stop once it is empty. */
static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)info;
    struct pc_conn *c = arg;
    size_t left = evbuffer_get_length(buf);
    out_count(c, left);
    struct pc_http_req *r = c->state == CS_HANDLING ? c->req : NULL;
    if (r != NULL && r->streaming && r->stream_waiting && left <= PC_HTTP_STREAM_MARK / 2) {
        r->stream_waiting = 0;
        r->stream_drained(r->stream_arg); /* the caller only asks its source to go on */
    }
    if (left == 0)
        evbuffer_cb_clear_flags(buf, c->out_cb, EVBUFFER_CB_ENABLED);
}

/*
 * Counts c's unsent output in the budget and follows it until written (out_cb). Called
 * once an answer is composed and, when possible, written: an answer the socket took at
 * once never touches the process-wide counters.
 */
static void out_follow(struct pc_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t left = evbuffer_get_length(out);
    out_count(c, left);
    if (left == 0)
        return;
    if (c->out_cb == NULL && (c->out_cb = evbuffer_add_cb(out, out_cb, c)) == NULL)
        return; /* out of memory: counted until the connection is freed */
    evbuffer_cb_set_flags(out, c->out_cb, EVBUFFER_CB_ENABLED);
}

static void conn_free(struct pc_conn *c)
{
    struct pc_http_server *srv = c->srv;
    struct pc_http_req *gone = NULL; /* a stream's handler hears of it once c is gone */
    if (c->req != NULL) {
        if (c->state == CS_HANDLING) {
            c->req->conn = NULL; /* the handler owns it now; its reply frees it */
            gone = c->req->streaming ? c->req : NULL;
        } else {
            req_free(c->req);
        }
        c->req = NULL;
    }
    pc_list_remove(&c->link);
    srv->n_conns--;
    if (c->held) { /* gone before its answer went out: nothing left to flush for it */
        pc_list_remove(&c->held_link);
        srv->n_held--;
    }
    if (c->in_paused)
        srv->n_in_paused--;
    if (c->deadline != NULL)
        event_free(c->deadline);
    if (c->out_cb != NULL) /* output dropped unsent leaves the budget here */
        evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
    out_count(c, 0);
    pc_bevread_release(&c->rd);
    bufferevent_free(c->bev);
    free(c);
    if (gone != NULL)
        gone->stream_gone(gone->stream_arg);
}

static void set_read_timeout(struct pc_conn *c, int ms)
{
    struct timeval rt = ms_tv(ms), wt = ms_tv(c->srv->lim.idle_timeout_ms);
    bufferevent_set_timeouts(c->bev, ms > 0 ? &rt : NULL, &wt);
}

/*
 * The idle timeout only bounds silence: a client trickling one byte a second would hold
 * its connection for hours. A request must also arrive whole within read_timeout_ms.
 */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_conn *c = arg;
    if (c->state == CS_READ_HEAD || c->state == CS_READ_BODY)
        conn_fail(c, 408, "request not received in time");
}

static void arm_deadline(struct pc_conn *c)
{
    int ms = c->srv->lim.read_timeout_ms;
    if (ms <= 0)
        return;
    if (c->deadline == NULL && (c->deadline = evtimer_new(c->srv->base, deadline_cb, c)) == NULL)
        return;
    struct timeval tv = ms_tv(ms);
    evtimer_add(c->deadline, &tv);
}

/* The Date header's value for now, formatted once a second per thread. */
static const char *http_date(void)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[40];
    time_t now = time(NULL);
    if (now != cached_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_sec = now;
    }
    return cached;
}

/* A response head composed in a stack buffer, handed to the evbuffer when full or done. */
struct head {
    struct evbuffer *out;
    size_t len;
    char buf[2048];
};

static void head_put(struct head *h, const char *s, size_t n)
{
    if (h->len + n > sizeof h->buf) {
        evbuffer_add(h->out, h->buf, h->len);
        h->len = 0;
        if (n > sizeof h->buf) {
            evbuffer_add(h->out, s, n);
            return;
        }
    }
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

static void head_str(struct head *h, const char *s)
{
    head_put(h, s, strlen(s));
}

static void head_uint(struct head *h, uint64_t v)
{
    char d[PC_U64_TEXT];
    head_put(h, d, pc_u64_text(v, d));
}

/* Starts a response head on c's output: the status line, Server and Date. */
static void head_start(struct head *h, struct pc_conn *c, int status, int minor)
{
    h->out = bufferevent_get_output(c->bev);
    h->len = 0;
    head_str(h, minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ");
    head_uint(h, status > 0 ? (uint64_t)status : 0);
    head_put(h, " ", 1);
    head_str(h, pc_http_reason(status));
    head_str(h, "\r\nServer: predcache\r\nDate: ");
    head_str(h, http_date());
    head_put(h, "\r\n", 2);
}

/* X-Request-Id: id (none when id is ""). */
static void head_id(struct head *h, const char *id)
{
    if (id[0] == '\0')
        return;
    head_str(h, "X-Request-Id: ");
    head_str(h, id);
    head_put(h, "\r\n", 2);
}

/* Composes the status line and headers in h (a head longer than h's buffer goes on to the
 * connection's output as it is written). id: the request's X-Request-Id, in place of any the
 * headers carry ("" none). Returns how many of the body's len bytes go after the head (0
 * for an answer without a body). */
static size_t compose_response(struct head *h, struct pc_conn *c, int status, int minor,
                               int is_head, const char *id, const struct pc_header *headers,
                               size_t n, size_t len)
{
    head_start(h, c, status, minor);
    head_id(h, id);
    const char *head_length = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (pc_strcaseeq(name, "content-length")) {
            head_length = headers[i].value; /* only a HEAD answer may carry its own */
            continue;
        }
        if (pc_strcaseeq(name, "date") || pc_strcaseeq(name, "server") ||
            pc_http_is_hop_by_hop(name) || (id[0] != '\0' && pc_strcaseeq(name, "x-request-id")))
            continue;
        head_str(h, name);
        head_put(h, ": ", 2);
        head_str(h, headers[i].value);
        head_put(h, "\r\n", 2);
    }
    int bodyless = is_head || status == 204 || status == 304 || status < 200;
    if (is_head && head_length != NULL) {
        head_str(h, "Content-Length: ");
        head_str(h, head_length);
        head_put(h, "\r\n", 2);
    } else if (status != 204 && status >= 200) {
        head_str(h, "Content-Length: ");
        head_uint(h, len);
        head_put(h, "\r\n", 2);
    }
    if (c->close_after)
        head_str(h, "Connection: close\r\n");
    else if (minor == 0)
        head_str(h, "Connection: keep-alive\r\n");
    head_put(h, "\r\n", 2);
    return bodyless ? 0 : len;
}

/* Copies a composed answer (h, then blen bytes of body) to the connection's output, from its
 * byte from on (what a socket already took is not copied). */
static void queue_answer(struct head *h, const char *body, size_t blen, size_t from)
{
    if (from < h->len) {
        evbuffer_add(h->out, h->buf + from, h->len - from);
        from = h->len;
    }
    if (from < h->len + blen)
        evbuffer_add(h->out, body + (from - h->len), h->len + blen - from);
}

/* Writes status line, headers and body to the connection's output. */
static void write_response(struct pc_conn *c, int status, int minor, int is_head, const char *id,
                           const struct pc_header *headers, size_t n, const char *body, size_t len)
{
    struct head h;
    size_t blen = compose_response(&h, c, status, minor, is_head, id, headers, n, len);
    queue_answer(&h, body, blen, 0);
}

/* Answers a protocol error before any handler ran, then closes the connection. */
static void conn_fail(struct pc_conn *c, int status, const char *msg)
{
    pc_log(PC_LOG_INFO, "http: %s: %d %s", c->peer, status, msg);
    const struct pc_http_req *r = c->req;
    char id[PC_LOG_ID_MAX + 1] = "";
    if (r != NULL && r->id[0] != '\0')
        memcpy(id, r->id, sizeof id);
    else if (c->srv->lim.request_ids)
        pc_log_request_id_new(id);
    if (c->srv->lim.on_failure != NULL) {
        struct pc_http_failure f = {
            .id = id,
            .client = c->peer,
            .method = r != NULL && r->h1.method != NULL ? r->h1.method : "-",
            .path = r != NULL && r->h1.path != NULL ? r->h1.path : "-",
            .query = r != NULL && r->h1.method != NULL ? r->h1.query : NULL,
            .status = status,
            .total_ms = r != NULL ? (double)(pc_now_us() - r->start_us) / 1000.0 : 0,
        };
        c->srv->lim.on_failure(&f, c->srv->lim.on_failure_arg);
    }
    struct pc_buf body;
    pc_buf_init(&body);
    pc_buf_json_error(&body, msg);
    struct pc_header ct = {(char *)"Content-Type", (char *)"application/json"};
    int minor = c->req != NULL && c->req->h1.method != NULL ? c->req->h1.minor : 1;
    c->close_after = 1;
    write_response(c, status, minor, 0, id, &ct, 1, body.data ? body.data : "", body.len);
    pc_buf_release(&body);
    if (c->req != NULL) {
        req_free(c->req);
        c->req = NULL;
    }
    c->state = CS_WRITING;
    out_follow(c);
    bufferevent_enable(c->bev, EV_WRITE);
}

/*
 * Feeds the buffered input to the request's reader (h1parse) and drains what it took: never
 * more than this request's bytes, so a pipelined request stays in the buffer.
 */
static enum pc_h1_result feed_input(struct pc_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct pc_h1req *h = &c->req->h1;
    enum pc_h1_result res;
    int nv;
    do {
        struct evbuffer_iovec v[8];
        size_t used, taken = 0;
        nv = evbuffer_peek(in, -1, NULL, v, 8);
        res = pc_h1parse_feed(h, NULL, 0, &used); /* a head without a body ends here */
        for (int i = 0; i < nv && i < 8 && res == PC_H1_MORE; i++) {
            res = pc_h1parse_feed(h, v[i].iov_base, v[i].iov_len, &used);
            taken += used;
        }
        evbuffer_drain(in, taken);
    } while (res == PC_H1_MORE && nv > 8);
    return res;
}

/* Counts what the request being read holds in the input budget: its body by length, not by
 * capacity (a Content-Length body is reserved whole at once, and its pages become memory
 * only as they are written). */
static void input_account(struct pc_http_req *r)
{
    size_t held = r->h1.head_bytes + r->h1.line.cap + r->h1.body.len;
    pc_budget_input_add((int64_t)held - (int64_t)r->in_held);
    if (r->srv->lim.input_bytes != NULL)
        PC_METRIC_ADD(*r->srv->lim.input_bytes, (int64_t)held - (int64_t)r->in_held);
    r->in_held = held;
}

/* The request being read needs more input: while the input budget is spent, a request past
 * its head and PC_BUDGET_INPUT_SMALL bytes stops reading until it has room again. */
static void input_pause_if_over(struct pc_conn *c)
{
    struct pc_http_req *r = c->req;
    if (r == NULL || c->in_paused ||
        r->in_held <= c->srv->lim.max_header_bytes + PC_BUDGET_INPUT_SMALL ||
        !pc_budget_input_over() || pc_budget_input_token_take(r))
        return;
    c->in_paused = 1;
    c->srv->n_in_paused++;
    bufferevent_disable(c->bev, EV_READ);
    if (c->srv->lim.input_pauses != NULL)
        PC_METRIC_INC(*c->srv->lim.input_pauses);
    if (c->srv->in_resume != NULL && !evtimer_pending(c->srv->in_resume, NULL)) {
        struct timeval tv = {0, 10 * 1000};
        evtimer_add(c->srv->in_resume, &tv);
    }
}

/* The server's input timer (srv->in_resume, owned by the server, arg); armed only while
 * some of its connections are paused. */
static void input_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_http_server *srv = arg;
    if (srv->n_in_paused == 0)
        return;
    int all = pc_budget_input_may_resume();
    int one = 0; /* else: the token's holder only */
    for (struct pc_list *i = srv->conns.next; i != &srv->conns && (all || !one); i = i->next) {
        struct pc_conn *c = pc_list_entry(i, struct pc_conn, link);
        if (!c->in_paused || (!all && (c->req == NULL || !pc_budget_input_token_take(c->req))))
            continue;
        one = 1;
        c->in_paused = 0;
        srv->n_in_paused--;
        if (c->state == CS_READ_BODY) /* else answered meanwhile (408, say) */
            bufferevent_enable(c->bev, EV_READ);
    }
    if (srv->n_in_paused > 0) {
        struct timeval tv = {0, 10 * 1000};
        evtimer_add(srv->in_resume, &tv);
    }
}

/* Reads the head. 1: head complete; 0: need more input; -1: failed (answered). */
static int read_head(struct pc_conn *c)
{
    if (c->req == NULL && (c->req = req_new(c)) == NULL) {
        conn_fail(c, 503, "out of memory");
        return -1;
    }
    struct pc_h1req *h = &c->req->h1;
    enum pc_h1_result res = feed_input(c);
    input_account(c->req);
    if (res == PC_H1_ERROR) {
        conn_fail(c, h->status, h->why);
        return -1;
    }
    if (res == PC_H1_MORE) {
        if (pc_h1parse_idle(h)) { /* only empty lines so far: no request has begun */
            req_free(c->req);
            c->req = NULL;
        }
        return 0;
    }
    if (h->expect_continue && h->minor >= 1 && h->state != PC_H1_S_DONE &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        bufferevent_enable(c->bev, EV_WRITE); /* it may be off after a written answer */
    }
    return 1;
}

/* Reads the body. 1 complete; 0 need more; -1 failed (answered). */
static int read_body(struct pc_conn *c, struct pc_http_req *r)
{
    enum pc_h1_result res = feed_input(c);
    input_account(r);
    if (res == PC_H1_ERROR) {
        conn_fail(c, r->h1.status, r->h1.why);
        return -1;
    }
    if (res != PC_H1_DONE) {
        input_pause_if_over(c);
        return 0;
    }
    pc_budget_input_token_release(r); /* whole: the token moves on */
    return 1;
}

/* Advances the state machine as far as the buffered input allows. */
static void conn_process(struct pc_conn *c)
{
    if (c->state == CS_READ_HEAD) {
        int rc = read_head(c);
        if (rc <= 0)
            return;
        req_take_id(c->req); /* a failure reading the body answers with it too */
        c->state = CS_READ_BODY;
    }
    if (c->state == CS_READ_BODY) {
        int rc = read_body(c, c->req);
        if (rc <= 0)
            return;
        struct pc_http_req *r = c->req;
        /* Stopping closes after the answer, unless the connection is being handed over. */
        c->close_after = !r->h1.keep_alive || (c->srv->stopping && c->srv->give == NULL);
        c->state = CS_HANDLING;
        if (c->deadline != NULL)
            event_del(c->deadline);
        set_read_timeout(c, 0); /* the handler's own deadline bounds the wait */
        /* The handler may reply (and so free r) before it returns: r is not touched after.
         * handling says to pc_http_reply that the answer is made inside a read (may_hold). */
        struct pc_http_server *srv = c->srv;
        srv->handling++;
        srv->handler(r, srv->arg);
        srv->handling--;
        return;
    }
    if (c->state == CS_HANDLING) {
        /* Pipelined input waits, outside the input budget: stop reading once it holds more
         * than a head and the small allowance (the rest waits in the socket). */
        struct evbuffer *in = bufferevent_get_input(c->bev);
        if (evbuffer_get_length(in) > c->srv->lim.max_header_bytes + PC_BUDGET_INPUT_SMALL)
            bufferevent_disable(c->bev, EV_READ);
    } else if (c->state == CS_CLOSING) {
        evbuffer_drain(bufferevent_get_input(c->bev),
                       evbuffer_get_length(bufferevent_get_input(c->bev)));
    }
}

/* The most one read takes: 64 KB while a request is read; 4 KB while the input budget is
 * spent (a connection stops reading close to it), or between requests (pipelined input
 * waits in the socket). */
static size_t conn_read_limit(void *arg)
{
    const struct pc_conn *c = arg;
    if ((c->state == CS_READ_HEAD || c->state == CS_READ_BODY) && !pc_budget_input_over())
        return 65536;
    return 4096;
}

/* The connection's read event (bevread.h): arg is its bufferevent, whose callback argument
 * is the connection. */
static void conn_read_event(evutil_socket_t fd, short what, void *arg)
{
    void *c;
    bufferevent_getcb(arg, NULL, NULL, NULL, &c);
    pc_bevread_read(&((struct pc_conn *)c)->rd, fd, what);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct pc_conn *c = arg;
    if (pc_bevread_may_hold(&c->rd)) /* edge-triggered: bytes left bring no new edge */
        pc_bevread_rearm(c->bev);
    /* The request's clock starts with its first byte. */
    if (c->state == CS_READ_HEAD && (c->deadline == NULL || !evtimer_pending(c->deadline, NULL)))
        arm_deadline(c);
    conn_process(c);
}

/* Output drained: the answer is out. Next request, or close. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct pc_conn *c = arg;
    /* The write event is gone with the output: reading is edge-triggered again. */
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        pc_bevread_rearm(bev);
    if (c->state != CS_WRITING)
        return;
    if (c->close_after) {
        /* Lingering close: half-close, then discard input for a while so that the client
         * reads our answer instead of a reset caused by its unread request bytes. */
        c->state = CS_CLOSING;
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        bufferevent_disable(bev, EV_WRITE);
        bufferevent_enable(bev, EV_READ);
        struct timeval t = ms_tv(PC_HTTP_LINGER_MS);
        bufferevent_set_timeouts(bev, &t, NULL);
        return;
    }
    c->state = CS_READ_HEAD;
    set_read_timeout(c, c->srv->lim.idle_timeout_ms);
    bufferevent_enable(bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        conn_process(c); /* a pipelined request is already here */
    else if (c->srv->give != NULL)
        conn_give(c); /* between requests: the next one is the new workers' */
}

/* Whether a keep-alive answer may be written straight away, from inside the handler that
 * made it: not when the connection closes after it, nor while a pipelined request waits
 * (conn_write_cb then reads it from the loop, never from inside that handler). */
static int may_write_now(const struct pc_conn *c)
{
    return !c->close_after && !c->read_eof && c->srv->give == NULL &&
           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
}

static void answer_queued(struct pc_conn *c)
{
    if (c->srv->lim.answers_queued != NULL)
        PC_METRIC_INC(*c->srv->lim.answers_queued);
}

/* The answer is written whole: back to reading the next request. */
static void answer_written(struct pc_conn *c)
{
    c->state = CS_READ_HEAD;
    set_read_timeout(c, c->srv->lim.idle_timeout_ms);
    /* The write event stays off until there is something to write: enabling it would arm
     * it (libevent adds it whatever the buffer holds) for one empty wakeup. Every writer
     * (an answer, a 100 Continue, an error) enables it itself. */
    bufferevent_enable(c->bev, EV_READ);
}

/* The answer in the output written straight away. 1 when it all went out and the
 * connection waits for the next request; 0 to let the write event finish it (a partial or
 * failed write, or may_write_now said no). */
static int try_write_now(struct pc_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!may_write_now(c))
        return 0;
    /* A bufferevent keeps the start of its output frozen so that only its own write
     * callback drains it (evbuffer_write fails on a frozen start, writing nothing): thaw
     * it for this one write, as that callback does. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    if (n < 0 || evbuffer_get_length(out) > 0) {
        answer_queued(c);
        return 0;
    }
    answer_written(c);
    return 1;
}

/* After an answer that did not go out whole: its output is counted in the budget and the
 * write event finishes it (and reads on, unless the client closed its side). */
static void answer_later(struct pc_conn *c)
{
    out_follow(c);
    bufferevent_enable(c->bev, c->read_eof ? EV_WRITE : EV_WRITE | EV_READ);
}

/* Writes the held answers, in the order held: each as try_write_now would have at once. */
static void flush_held(struct pc_http_server *srv)
{
    if (srv->n_held == 0)
        return;
    if (srv->lim.answer_flushes != NULL)
        PC_METRIC_INC(*srv->lim.answer_flushes);
    pc_loop_later_disarm(&srv->flush);
    while (!pc_list_empty(&srv->held)) {
        struct pc_conn *c = pc_list_entry(pc_list_first(&srv->held), struct pc_conn, held_link);
        pc_list_remove(&c->held_link);
        c->held = 0;
        srv->n_held--;
        if (!try_write_now(c))
            answer_later(c);
    }
}

/* srv->flush's (the server, arg). */
static void flush_cb(void *arg)
{
    flush_held(arg);
}

/*
 * Holds an answer made while a read is handled (c's output holds it whole), to be written
 * with the others the loop makes before it next waits. Each answer written to a client that
 * waits for it wakes that client: written one by one as they are made, answers to many
 * clients wake them (or the one process that drives them all) again and again, and waking
 * another CPU costs more than writing a small answer (docs/PERFORMANCE.md, "Answers written
 * together"). Written when the loop has run every event that was ready (srv->flush, below
 * every client's event), PC_HTTP_HOLD_MS after the first if the loop stays busy, or at the
 * PC_HTTP_HOLD_MAX-th answer held.
 */
static void hold_answer(struct pc_conn *c)
{
    struct pc_http_server *srv = c->srv;
    c->held = 1;
    pc_list_push_back(&srv->held, &c->held_link);
    if (srv->lim.answers_held != NULL)
        PC_METRIC_INC(*srv->lim.answers_held);
    if (++srv->n_held >= PC_HTTP_HOLD_MAX) {
        flush_held(srv);
        return;
    }
    if (srv->n_held == 1)
        pc_loop_later_arm(&srv->flush);
}

/* Whether an answer of len bytes (head and body) made now may be held (hold_answer). */
static int may_hold(const struct pc_conn *c, size_t len)
{
    return c->srv->handling > 0 && len <= PC_HTTP_HOLD_BYTES;
}

/*
 * Sends a composed answer (h, then blen bytes of body) when nothing waits in the output
 * before it and it may be written now: held with the others a read's handlers make
 * (hold_answer), or straight to the socket from where it lies, and only what the socket
 * does not take is copied to the output. Else all of it goes to the output and is written
 * from there (try_write_now). 1: written whole; 2: held; 0: the write event finishes it.
 */
static int send_answer(struct pc_conn *c, struct head *h, const char *body, size_t blen)
{
    if (evbuffer_get_length(h->out) > 0 || !may_write_now(c)) {
        queue_answer(h, body, blen, 0);
        return try_write_now(c);
    }
    if (may_hold(c, h->len + blen)) {
        queue_answer(h, body, blen, 0);
        hold_answer(c);
        return 2;
    }
    struct iovec v[2] = {{h->buf, h->len}, {(void *)body, blen}};
    ssize_t n = writev(bufferevent_getfd(c->bev), v, blen > 0 ? 2 : 1);
    size_t w = n > 0 ? (size_t)n : 0; /* a failed write: the write event meets it again */
    if (w == h->len + blen) {
        answer_written(c);
        return 1;
    }
    queue_answer(h, body, blen, w);
    answer_queued(c);
    return 0;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct pc_conn *c = arg;
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->state == CS_READ_HEAD &&
        (c->req != NULL || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)) {
        conn_fail(c, 408, "timed out reading the request head");
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->state == CS_READ_BODY) {
        conn_fail(c, 408, "timed out reading the request body");
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        (c->state == CS_HANDLING || c->state == CS_WRITING)) {
        /* EOF may be a half-close (the client shut its sending side and still reads):
         * stop reading and answer anyway, or finish the answer (held, or left over by its
         * first write); a client that is really gone makes the write fail, and the
         * connection is freed then. */
        pc_log(PC_LOG_DEBUG, "http: %s closed its side before the answer", c->peer);
        c->close_after = 1;
        c->read_eof = 1;
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    size_t unsent = evbuffer_get_length(bufferevent_get_output(c->bev));
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING) && unsent > 0) {
        /* The socket took nothing for idle_timeout_ms: a client that does not read would
         * hold its answer (and its share of max_output_bytes) for ever. */
        pc_log(PC_LOG_INFO, "http: %s read nothing for %d ms, %zu answer bytes unsent: closed",
               c->peer, c->srv->lim.idle_timeout_ms, unsent);
        if (c->srv->lim.clients_stalled != NULL)
            PC_METRIC_INC(*c->srv->lim.clients_stalled);
    }
    conn_free(c);
}

/* ---- replies ----------------------------------------------------------------------- */

/*
 * A large answer that no model server transfer handed over (a hit: its bytes were never
 * counted) and that does not fit the output budget is refused rather than buffered: a
 * client that does not read would hold it until idle_timeout_ms, and enough of them would
 * grow memory to max_connections answers. 1 when req's answer is refused.
 */
static int shed_over_budget(const struct pc_conn *c, const struct pc_http_req *req, size_t len,
                            int credit)
{
    if (req->shed != 0)
        return req->shed > 0;
    if (credit || req->h1.is_head || !c->srv->lim.shed_over_budget || pc_budget_fits(len))
        return 0;
    pc_log(PC_LOG_INFO,
           "http: %s %s %s: answer of %zu bytes refused (503): %llu answer bytes held for "
           "clients, max_output_bytes %zu",
           c->peer, req->h1.method, req->h1.path, len,
           (unsigned long long)(pc_budget_client() + pc_budget_backend()), pc_budget_limit());
    if (c->srv->lim.answers_shed != NULL)
        PC_METRIC_INC(*c->srv->lim.answers_shed);
    return 1;
}

int pc_http_reply_refuses(struct pc_http_req *req, size_t len)
{
    if (req->shed == 0 && req->conn != NULL)
        req->shed = shed_over_budget(req->conn, req, len, pc_budget_credit_take()) ? 1 : -1;
    return req->shed > 0;
}

void pc_http_reply(struct pc_http_req *req, int status, const struct pc_header *headers,
                   size_t n_headers, const char *body, size_t len)
{
    /* the first answer a transfer hands over (taken by pc_http_reply_refuses if it ran) */
    int credit = req->shed == 0 ? pc_budget_credit_take() : 0;
    struct pc_conn *c = req->conn;
    if (c == NULL) { /* the client went away while we worked */
        req_free(req);
        return;
    }
    assert(c->state == CS_HANDLING && c->req == req);
    if (c->srv->stopping)
        c->close_after = 1;
    struct pc_buf shed;
    pc_buf_init(&shed);
    struct pc_header shed_h[] = {{(char *)"Content-Type", (char *)"application/json"},
                                 {(char *)"Retry-After", (char *)"1"}};
    if (shed_over_budget(c, req, len, credit)) {
        pc_buf_json_error(&shed, "too many answer bytes waiting for clients to read them");
        status = 503;
        headers = shed_h;
        n_headers = sizeof shed_h / sizeof shed_h[0];
        body = shed.data ? shed.data : "";
        len = shed.len;
    }
    /* Composed with the write event off: most answers fit the socket buffer and are
     * written at once below, without arming the write event and a loop round for it. */
    bufferevent_disable(c->bev, EV_WRITE);
    struct head h;
    size_t blen = compose_response(&h, c, status, req->h1.minor, req->h1.is_head, req->id, headers,
                                   n_headers, len);
    c->req = NULL;
    c->state = CS_WRITING;
    int sent = send_answer(c, &h, body, blen); /* before req_free: body may be req's */
    pc_buf_release(&shed);
    req_free(req);
    if (sent == 0)
        answer_later(c);
}

void pc_http_reply_error(struct pc_http_req *req, int status, const char *msg)
{
    struct pc_buf b;
    pc_buf_init(&b);
    pc_buf_json_error(&b, msg);
    struct pc_header ct = {(char *)"Content-Type", (char *)"application/json"};
    pc_http_reply(req, status, &ct, 1, b.data ? b.data : "", b.len);
    pc_buf_release(&b);
}

/* ---- streamed answers -------------------------------------------------------------- */

int pc_http_stream_begin(struct pc_http_req *req, int status, const struct pc_header *headers,
                         size_t n_headers, pc_http_stream_fn gone, pc_http_stream_fn drained,
                         void *arg)
{
    struct pc_conn *c = req->conn;
    req->streaming = 1;
    req->stream_gone = gone;
    req->stream_drained = drained;
    req->stream_arg = arg;
    if (c == NULL)
        return -1;
    assert(c->state == CS_HANDLING && c->req == req);
    c->close_after = 1; /* one stream a connection: its end is the connection's */
    req->stream_chunked = req->h1.minor >= 1;
    struct head h;
    head_start(&h, c, status, req->h1.minor);
    head_id(&h, req->id);
    for (size_t i = 0; i < n_headers; i++) {
        const char *name = headers[i].name;
        if (pc_strcaseeq(name, "content-length") || pc_strcaseeq(name, "date") ||
            pc_strcaseeq(name, "server") || pc_http_is_hop_by_hop(name) ||
            (req->id[0] != '\0' && pc_strcaseeq(name, "x-request-id")))
            continue;
        head_str(&h, name);
        head_put(&h, ": ", 2);
        head_str(&h, headers[i].value);
        head_put(&h, "\r\n", 2);
    }
    if (req->stream_chunked)
        head_str(&h, "Transfer-Encoding: chunked\r\n");
    head_str(&h, "Connection: close\r\n\r\n");
    evbuffer_add(h.out, h.buf, h.len);
    out_follow(c);
    bufferevent_enable(c->bev, EV_WRITE);
    return 0;
}

int pc_http_stream_full(struct pc_http_req *req)
{
    struct pc_conn *c = req->conn;
    if (c == NULL || evbuffer_get_length(bufferevent_get_output(c->bev)) <= PC_HTTP_STREAM_MARK)
        return 0;
    req->stream_waiting = 1;
    return 1;
}

int pc_http_stream_write(struct pc_http_req *req, const char *p, size_t n)
{
    struct pc_conn *c = req->conn;
    if (c == NULL)
        return -1;
    if (n == 0)
        return 0; /* an empty chunk would end a chunked body */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (req->stream_chunked)
        evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add(out, p, n);
    if (req->stream_chunked)
        evbuffer_add(out, "\r\n", 2);
    out_follow(c);
    bufferevent_enable(c->bev, EV_WRITE);
    return 0;
}

void pc_http_stream_end(struct pc_http_req *req, int whole)
{
    struct pc_conn *c = req->conn;
    if (c == NULL) {
        req_free(req);
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (whole && req->stream_chunked)
        evbuffer_add(out, "0\r\n\r\n", 5);
    c->close_after = 1; /* cut short: the close without the last chunk says so */
    c->req = NULL;
    req_free(req);
    c->state = CS_WRITING;
    out_follow(c);
    bufferevent_enable(c->bev, EV_WRITE);
    if (evbuffer_get_length(out) == 0) /* all out already: the write callback closes it */
        bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

/* ---- listener ---------------------------------------------------------------------- */

/* A connection on fd (this server's now), peer its address as text. NULL: fd closed. */
static struct pc_conn *conn_open(struct pc_http_server *srv, evutil_socket_t fd, const char *peer)
{
    struct pc_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    pc_list_init(&c->link);
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bufferevent_set_max_single_write(c->bev, 65536);
    pc_strlcpy(c->peer, peer, sizeof c->peer);
    c->srv = srv;
    pc_list_push_front(&srv->conns, &c->link);
    srv->n_conns++;
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    if (pc_bevread_own(c->bev, &c->rd, conn_read_event, conn_read_limit, c) != 0 ||
        pc_bevread_edge(c->bev, &c->rd) != 0) {
        pc_bevread_release(&c->rd);
        pc_list_remove(&c->link);
        srv->n_conns--;
        bufferevent_free(c->bev);
        free(c);
        return NULL;
    }
    c->state = CS_READ_HEAD;
    return c;
}

/* Between two requests, nothing read of the next and the last answer written. */
static int conn_idle(struct pc_conn *c)
{
    return c->state == CS_READ_HEAD && c->req == NULL &&
           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
}

/* Frees the listener (its socket closes unless another server holds a duplicate). */
static void stop_listening(struct pc_http_server *srv)
{
    if (srv->lev != NULL) {
        evconnlistener_free(srv->lev);
        srv->lev = NULL;
        srv->listen_fd = -1;
    }
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lev;
    (void)salen;
    struct pc_http_server *srv = arg;
    char peer[64];
    pc_listen_peer(sa, peer);
    struct pc_conn *c = conn_open(srv, fd, peer);
    if (c == NULL)
        return;
    if (srv->n_conns > (size_t)srv->lim.max_connections) {
        if (srv->lim.connections_refused != NULL)
            PC_METRIC_INC(*srv->lim.connections_refused);
        conn_fail(c, 503, "too many connections");
        return;
    }
    set_read_timeout(c, srv->lim.idle_timeout_ms);
    /* Reading only: every writer enables the write event itself (an armed write event
     * would fire once for nothing, and make the fd level-triggered, bevread.h). */
    bufferevent_enable(c->bev, EV_READ);
}

/*
 * Gives c's socket away between two requests (its answer written, no byte of the next one
 * read): the bufferevent lets go of the descriptor (its events deleted first, so this
 * loop's epoll set no longer holds it) and is freed without closing it.
 */
static void conn_give(struct pc_conn *c)
{
    struct pc_http_server *srv = c->srv;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (c->read_eof || c->in_paused || fd < 0) {
        conn_free(c);
        return;
    }
    char peer[64];
    pc_strlcpy(peer, c->peer, sizeof peer);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_setfd(c->bev, -1) != 0) {
        conn_free(c); /* still its descriptor: closed */
        return;
    }
    conn_free(c);
    srv->give(fd, peer, srv->give_arg);
}

void pc_http_server_take(struct pc_http_server *srv, int fd, const char *peer)
{
    if (srv->stopping && srv->give == NULL) { /* shutting down: idle connections close */
        evutil_closesocket(fd);
        return;
    }
    struct pc_conn *c = conn_open(srv, fd, peer);
    if (c == NULL)
        return;
    if (srv->give != NULL) { /* handing over too (reloaded again): on to the newest */
        conn_give(c);
        return;
    }
    /* Past max_connections it is kept all the same: it was admitted when it was accepted. */
    set_read_timeout(c, srv->lim.idle_timeout_ms);
    bufferevent_enable(c->bev, EV_READ);
}

void pc_http_server_hand_over(struct pc_http_server *srv, pc_http_give_fn give, void *arg)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = 1;
    srv->give = give;
    srv->give_arg = arg;
    if (srv->lev != NULL) {
        /* Connections the kernel completed and nobody accepted yet would be reset when
         * this socket closes (a changed address): take them and give them on. */
        evutil_socket_t lfd = evconnlistener_get_fd(srv->lev);
        for (int i = 0; i < 1024; i++) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            char peer[64];
            pc_listen_peer((struct sockaddr *)&ss, peer);
            give(fd, peer, arg);
        }
    }
    stop_listening(srv);
    for (struct pc_list *i = srv->conns.next, *next; i != &srv->conns; i = next) {
        struct pc_conn *c = pc_list_entry(i, struct pc_conn, link);
        next = i->next; /* c may be freed */
        if (conn_idle(c))
            conn_give(c);
    }
}

int pc_http_server_listen_fd(const struct pc_http_server *srv)
{
    return srv != NULL ? srv->listen_fd : -1;
}

/* Refusal written to a connection accepted only to be closed (no descriptor to serve it). */
#define REFUSED_BODY "{\"error\": \"too many connections, retry later\"}"
static const char REFUSED[] = "HTTP/1.1 503 Service Unavailable\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 46\r\n"
                              "Retry-After: 1\r\n"
                              "Connection: close\r\n\r\n" REFUSED_BODY;
_Static_assert(sizeof REFUSED_BODY - 1 == 46, "REFUSED's Content-Length");

/* Accepts fd's pending connections through the spare descriptor and refuses each (503,
 * close), up to 1024; returns how many. Stops when the backlog is empty or when the
 * descriptor freed was taken by another thread (a new EMFILE). */
static size_t shed_pending(struct pc_http_server *srv, evutil_socket_t lfd)
{
    size_t n = 0;
    while (srv->spare_fd >= 0 && n < 1024) {
        close(srv->spare_fd);
        srv->spare_fd = -1;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            /* What the client sent already is read first: closing with unread input would
             * reset the connection and could discard the answer. */
            char sink[2048];
            for (int i = 0; i < 4 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
                ;
            (void)!send(fd, REFUSED, sizeof REFUSED - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
            shutdown(fd, SHUT_WR);
            close(fd);
            n++;
        }
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
    }
    return n;
}

/* The server's pause timer (srv->resume, owned by the server, arg). */
static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_http_server *srv = arg;
    if (srv->lev != NULL)
        evconnlistener_enable(srv->lev);
}

/* The listener's error callback; lev is the server's listener, arg the server (both owned
 * by it). Connections shed here are accepted and closed within the call. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct pc_http_server *srv = arg;
    int e = errno;
    size_t shed = 0;
    int paused = 0;
    if (e == EMFILE || e == ENFILE) {
        shed = shed_pending(srv, evconnlistener_get_fd(lev));
        if (srv->lim.connections_refused != NULL)
            for (size_t i = 0; i < shed; i++)
                PC_METRIC_INC(*srv->lim.connections_refused);
        /* Nothing could be taken: the backlog stays readable, and a listener left on would
         * be called again at once, for ever. Pause it. */
        if (shed == 0 && srv->resume != NULL) {
            evconnlistener_disable(lev);
            struct timeval tv = {0, 100 * 1000};
            evtimer_add(srv->resume, &tv);
            paused = 1;
        }
    }
    time_t now = time(NULL);
    if (now == srv->log_s) {
        srv->log_quiet++;
        return;
    }
    srv->log_s = now;
    char more[64] = "";
    if (srv->log_quiet > 0)
        snprintf(more, sizeof more, " (and %llu more in the last second)",
                 (unsigned long long)srv->log_quiet);
    srv->log_quiet = 0;
    if (e == EMFILE || e == ENFILE)
        pc_log(PC_LOG_WARN,
               "http: accept failed: %s%s: %zu connection%s refused with 503%s; raise the "
               "open-file limit (ulimit -n, LimitNOFILE=) or lower max_connections",
               strerror(e), more, shed, shed == 1 ? "" : "s",
               paused ? ", accepting paused 100 ms" : "");
    else
        pc_log(PC_LOG_WARN, "http: accept failed: %s%s", strerror(e), more);
}

/* A server around a listener being made: everything but the listener. NULL: no memory. */
static struct pc_http_server *server_alloc(struct event_base *base,
                                           const struct pc_http_limits *limits,
                                           pc_http_handler handler, void *arg)
{
    struct pc_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return NULL;
    pc_list_init(&srv->conns);
    pc_list_init(&srv->held);
    srv->base = base;
    srv->lim = *limits;
    srv->handler = handler;
    srv->arg = arg;
    srv->listen_fd = -1;
    srv->spare_fd = -1;
    return srv;
}

/* The listener made: its error callback, the spare descriptor, the timers, the port. */
static struct pc_http_server *server_listening(struct pc_http_server *srv, char *err, size_t errlen)
{
    evconnlistener_set_error_cb(srv->lev, accept_error_cb);
    srv->listen_fd = evconnlistener_get_fd(srv->lev);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv->resume = evtimer_new(srv->base, resume_accepting, srv);
    srv->in_resume = evtimer_new(srv->base, input_resume_cb, srv);
    if (srv->resume == NULL || srv->in_resume == NULL ||
        pc_loop_later_init(&srv->flush, srv->base, PC_HTTP_HOLD_MS, flush_cb, srv) != 0) {
        snprintf(err, errlen, "out of memory");
        pc_http_server_free(srv);
        return NULL;
    }
    srv->port = pc_listen_port(srv->listen_fd);
    return srv;
}

struct pc_http_server *pc_http_server_new(struct event_base *base, const char *hostport,
                                          const struct pc_http_limits *limits,
                                          pc_http_handler handler, void *arg, char *err,
                                          size_t errlen)
{
    int fd = pc_listen_socket(hostport, limits->bind, err, errlen);
    return fd < 0 ? NULL : pc_http_server_adopt(base, fd, limits, handler, arg, err, errlen);
}

struct pc_http_server *pc_http_server_adopt(struct event_base *base, int fd,
                                            const struct pc_http_limits *limits,
                                            pc_http_handler handler, void *arg, char *err,
                                            size_t errlen)
{
    struct pc_http_server *srv = server_alloc(base, limits, handler, arg);
    if (srv == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    evutil_make_socket_nonblocking(fd);
    /* Backlog 0: the socket listens already (pc_listen_socket, or a running server's). */
    srv->lev = evconnlistener_new(base, accept_cb, srv,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (srv->lev == NULL) {
        snprintf(err, errlen, "cannot listen on the inherited socket: %s", strerror(errno));
        close(fd);
        free(srv);
        return NULL;
    }
    return server_listening(srv, err, errlen);
}

void pc_http_server_stop_accepting(struct pc_http_server *srv)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = 1;
    stop_listening(srv);
    /* Idle keep-alive connections close now; busy ones close after their answer. */
    for (struct pc_list *i = srv->conns.next, *next; i != &srv->conns; i = next) {
        struct pc_conn *c = pc_list_entry(i, struct pc_conn, link);
        next = i->next; /* c may be freed */
        if (conn_idle(c))
            conn_free(c);
        else
            c->close_after = 1;
    }
}

void pc_http_server_free(struct pc_http_server *srv)
{
    if (srv == NULL)
        return;
    stop_listening(srv);
    while (!pc_list_empty(&srv->conns))
        conn_free(pc_list_entry(srv->conns.next, struct pc_conn, link));
    if (srv->resume != NULL)
        event_free(srv->resume);
    if (srv->in_resume != NULL)
        event_free(srv->in_resume);
    pc_loop_later_free(&srv->flush);
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    free(srv);
}

int pc_http_server_port(const struct pc_http_server *srv)
{
    return srv->port;
}

size_t pc_http_server_writing(const struct pc_http_server *srv)
{
    size_t n = 0;
    for (const struct pc_list *i = srv->conns.next; i != &srv->conns; i = i->next)
        n += pc_list_entry(i, const struct pc_conn, link)->state == CS_WRITING;
    return n;
}

size_t pc_http_server_connections(const struct pc_http_server *srv)
{
    return srv->n_conns;
}
