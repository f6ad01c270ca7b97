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
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/metrics.h"

#define PC_HTTP_MAX_HEADERS 100
#define PC_HTTP_LINGER_MS 2000

enum conn_state { CS_READ_HEAD, CS_READ_BODY, CS_HANDLING, CS_WRITING, CS_CLOSING };
enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

struct pc_conn;

struct pc_http_req {
    struct pc_conn *conn; /* NULL once the client has gone (orphaned) */
    struct pc_http_server *srv;
    char *method;
    char *target;
    char *path;
    char *query;
    int minor; /* HTTP/1.<minor> */
    struct pc_header headers[PC_HTTP_MAX_HEADERS];
    size_t n_headers;
    size_t head_bytes;
    struct pc_buf body;
    int chunked;
    enum chunk_state chunk;
    size_t body_left; /* Content-Length bytes or current chunk bytes still to read */
    int keep_alive;
    int is_head;
    uint64_t start_us;
    char peer[64];
};

struct pc_conn {
    struct pc_http_server *srv;
    struct bufferevent *bev;
    enum conn_state state;
    struct pc_http_req *req; /* request being read or handled, owned by the conn until handed */
    int close_after;         /* close once the current answer is written */
    int read_eof;            /* the client closed its sending side: never read again */
    struct event *deadline;  /* a started request must be fully received by then */
    char peer[64];
    struct pc_conn *prev, *next;
};

struct pc_http_server {
    struct event_base *base;
    struct evconnlistener *lev;
    struct pc_http_limits lim;
    pc_http_handler handler;
    void *arg;
    int port;
    int stopping;
    size_t n_conns;
    struct pc_conn *conns;
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_process(struct pc_conn *c);
static void conn_fail(struct pc_conn *c, int status, const char *msg);

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

int pc_http_is_hop_by_hop(const char *name)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-authenticate",
                                      "proxy-authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
        if (pc_strcaseeq(name, hop[i]))
            return 1;
    }
    return 0;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* Does the comma-separated header value hold token (case-insensitive)? */
static int header_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end != '\0' && *end != ',')
            end++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == tl && strncasecmp(p, token, tl) == 0)
            return 1;
        p = *end ? end + 1 : NULL;
    }
    return 0;
}

int pc_http_is_hop_by_hop_in(const char *name, const struct pc_header *h, size_t n)
{
    if (pc_http_is_hop_by_hop(name))
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(h[i].name, "connection") && header_has_token(h[i].value, name))
            return 1;
    }
    return 0;
}

/* ---- requests ---------------------------------------------------------------------- */

static struct pc_http_req *req_new(struct pc_conn *c)
{
    struct pc_http_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->conn = c;
    r->srv = c->srv;
    pc_buf_init(&r->body);
    r->start_us = pc_now_us();
    pc_strlcpy(r->peer, c->peer, sizeof r->peer);
    return r;
}

static void req_free(struct pc_http_req *r)
{
    if (r == NULL)
        return;
    free(r->method);
    free(r->target);
    free(r->path);
    free(r->query);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    pc_buf_release(&r->body);
    free(r);
}

const char *pc_http_req_method(const struct pc_http_req *req)
{
    return req->method;
}

const char *pc_http_req_path(const struct pc_http_req *req)
{
    return req->path;
}

const char *pc_http_req_query(const struct pc_http_req *req)
{
    return req->query;
}

const char *pc_http_req_target(const struct pc_http_req *req)
{
    return req->target;
}

const char *pc_http_req_client(const struct pc_http_req *req)
{
    return req->peer;
}

const char *pc_http_req_header(const struct pc_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (pc_strcaseeq(req->headers[i].name, name))
            return req->headers[i].value;
    }
    return NULL;
}

const struct pc_header *pc_http_req_headers(const struct pc_http_req *req, size_t *n)
{
    *n = req->n_headers;
    return req->headers;
}

const char *pc_http_req_body(const struct pc_http_req *req, size_t *len)
{
    *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

int pc_http_req_client_alive(const struct pc_http_req *req)
{
    return req->conn != NULL;
}

unsigned long long pc_http_req_start_us(const struct pc_http_req *req)
{
    return req->start_us;
}

/* ---- connections ------------------------------------------------------------------- */

static void conn_free(struct pc_conn *c)
{
    struct pc_http_server *srv = c->srv;
    if (c->req != NULL) {
        if (c->state == CS_HANDLING)
            c->req->conn = NULL; /* the handler owns it now; its reply frees it */
        else
            req_free(c->req);
        c->req = NULL;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_conns--;
    if (c->deadline != NULL)
        event_free(c->deadline);
    bufferevent_free(c->bev);
    free(c);
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

/* Writes status line, headers and body to the connection's output. */
static void write_response(struct pc_conn *c, int status, int minor, int is_head,
                           const struct pc_header *headers, size_t n, const char *body, size_t len)
{
    struct head h;
    h.out = bufferevent_get_output(c->bev);
    h.len = 0;
    head_str(&h, minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ");
    head_uint(&h, status > 0 ? (uint64_t)status : 0);
    head_put(&h, " ", 1);
    head_str(&h, pc_http_reason(status));
    head_str(&h, "\r\nServer: predcache\r\nDate: ");
    head_str(&h, http_date());
    head_put(&h, "\r\n", 2);
    const char *head_length = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (pc_strcaseeq(name, "content-length")) {
            head_length = headers[i].value; /* only a HEAD answer may carry its own */
            continue;
        }
        if (pc_strcaseeq(name, "date") || pc_strcaseeq(name, "server") ||
            pc_http_is_hop_by_hop(name))
            continue;
        head_str(&h, name);
        head_put(&h, ": ", 2);
        head_str(&h, headers[i].value);
        head_put(&h, "\r\n", 2);
    }
    int bodyless = is_head || status == 204 || status == 304 || status < 200;
    if (is_head && head_length != NULL) {
        head_str(&h, "Content-Length: ");
        head_str(&h, head_length);
        head_put(&h, "\r\n", 2);
    } else if (status != 204 && status >= 200) {
        head_str(&h, "Content-Length: ");
        head_uint(&h, len);
        head_put(&h, "\r\n", 2);
    }
    if (c->close_after)
        head_str(&h, "Connection: close\r\n");
    else if (minor == 0)
        head_str(&h, "Connection: keep-alive\r\n");
    head_put(&h, "\r\n", 2);
    evbuffer_add(h.out, h.buf, h.len);
    if (!bodyless && len > 0)
        evbuffer_add(h.out, body, len);
}

/* Answers a protocol error before any handler ran, then closes the connection. */
static void conn_fail(struct pc_conn *c, int status, const char *msg)
{
    pc_log(PC_LOG_INFO, "http: %s: %d %s", c->peer, status, msg);
    if (c->srv->lim.on_failure != NULL) {
        const struct pc_http_req *r = c->req;
        struct pc_http_failure f = {
            .client = c->peer,
            .method = r != NULL && r->method != NULL ? r->method : "-",
            .path = r != NULL && r->path != NULL ? r->path : "-",
            .status = status,
            .total_ms = r != NULL ? (double)(pc_now_us() - r->start_us) / 1000.0 : 0,
        };
        c->srv->lim.on_failure(&f, c->srv->lim.on_failure_arg);
    }
    struct pc_buf body;
    pc_buf_init(&body);
    pc_buf_json_error(&body, msg);
    struct pc_header ct = {(char *)"Content-Type", (char *)"application/json"};
    int minor = c->req != NULL && c->req->method != NULL ? c->req->minor : 1;
    c->close_after = 1;
    write_response(c, status, minor, 0, &ct, 1, body.data ? body.data : "", body.len);
    pc_buf_release(&body);
    if (c->req != NULL) {
        req_free(c->req);
        c->req = NULL;
    }
    c->state = CS_WRITING;
    bufferevent_enable(c->bev, EV_WRITE);
}

/* Parses "METHOD SP target SP HTTP/1.x". 0 ok; else the status to answer. */
static int parse_request_line(struct pc_http_req *r, const char *line, const char **why)
{
    const char *sp1 = strchr(line, ' ');
    if (sp1 == NULL || sp1 == line) {
        *why = "malformed request line";
        return 400;
    }
    const char *sp2 = strchr(sp1 + 1, ' ');
    if (sp2 == NULL || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ') != NULL) {
        *why = "malformed request line";
        return 400;
    }
    for (const char *p = line; p < sp1; p++) {
        if (*p < 'A' || *p > 'Z') {
            *why = "malformed request method";
            return 400;
        }
    }
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/1.", 7) != 0 || ver[7] < '0' || ver[7] > '9' || ver[8] != '\0') {
        *why =
            strncmp(ver, "HTTP/", 5) == 0 ? "HTTP version not supported" : "malformed HTTP version";
        return strncmp(ver, "HTTP/", 5) == 0 ? 505 : 400;
    }
    r->minor = ver[7] - '0';
    r->method = strndup(line, (size_t)(sp1 - line));
    r->target = strndup(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    if (r->method == NULL || r->target == NULL) {
        *why = "out of memory";
        return 503;
    }
    if (strncasecmp(r->target, "http://", 7) == 0 || strncasecmp(r->target, "https://", 8) == 0) {
        /* absolute-form (RFC 9112 3.2.2): keep the path and query, drop the authority */
        const char *auth = strstr(r->target, "//") + 2;
        const char *path = auth + strcspn(auth, "/?");
        char *t = *path == '/' ? strdup(path) : NULL;
        if (*path != '/' && asprintf(&t, "/%s", path) < 0)
            t = NULL;
        if (t == NULL) {
            *why = "out of memory";
            return 503;
        }
        free(r->target);
        r->target = t;
    }
    if (r->target[0] != '/') {
        *why = "request target must be an absolute path";
        return 400;
    }
    for (const char *p = r->target; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            *why = "invalid character in request target";
            return 400;
        }
    }
    const char *q = strchr(r->target, '?');
    r->path = q ? strndup(r->target, (size_t)(q - r->target)) : strdup(r->target);
    r->query = strdup(q ? q + 1 : "");
    if (r->path == NULL || r->query == NULL) {
        *why = "out of memory";
        return 503;
    }
    r->is_head = strcmp(r->method, "HEAD") == 0;
    r->keep_alive = r->minor >= 1;
    return 0;
}

static int is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Parses one "Name: value" line. 0 ok; else the status to answer. */
static int parse_header_line(struct pc_http_req *r, const char *line, const char **why)
{
    if (line[0] == ' ' || line[0] == '\t') {
        *why = "obsolete header line folding";
        return 400;
    }
    const char *colon = strchr(line, ':');
    if (colon == NULL || colon == line) {
        *why = "malformed header line";
        return 400;
    }
    for (const char *p = line; p < colon; p++) {
        if (!is_tchar(*p)) {
            *why = "invalid character in header name";
            return 400;
        }
    }
    if (r->n_headers >= PC_HTTP_MAX_HEADERS) {
        *why = "too many header fields";
        return 431;
    }
    const char *v = colon + 1;
    for (const char *q = v; *q; q++) {
        /* A bare CR (or any control byte but tab) would reach the model server as a
         * header boundary of its own: header injection. */
        if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) {
            *why = "control character in header value";
            return 400;
        }
    }
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    struct pc_header *h = &r->headers[r->n_headers];
    h->name = strndup(line, (size_t)(colon - line));
    h->value = strndup(v, vl);
    if (h->name == NULL || h->value == NULL) {
        free(h->name);
        free(h->value);
        *why = "out of memory";
        return 503;
    }
    r->n_headers++;
    return 0;
}

/* Decides the body framing once the head is complete. 0 ok; else the status to answer. */
static int finish_head(struct pc_conn *c, struct pc_http_req *r, const char **why)
{
    const char *te = pc_http_req_header(r, "Transfer-Encoding");
    const char *cl = NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (!pc_strcaseeq(r->headers[i].name, "Content-Length"))
            continue;
        if (cl != NULL && strcmp(cl, r->headers[i].value) != 0) {
            *why = "conflicting Content-Length headers";
            return 400;
        }
        cl = r->headers[i].value;
    }
    const char *conn = pc_http_req_header(r, "Connection");
    if (conn != NULL) {
        if (header_has_token(conn, "close"))
            r->keep_alive = 0;
        else if (r->minor == 0 && header_has_token(conn, "keep-alive"))
            r->keep_alive = 1;
    }
    if (te != NULL) {
        if (cl != NULL) { /* both: a smuggling attempt or a broken client */
            *why = "both Transfer-Encoding and Content-Length";
            return 400;
        }
        if (!pc_strcaseeq(te, "chunked")) {
            *why = "unsupported Transfer-Encoding";
            return 501;
        }
        r->chunked = 1;
        r->chunk = CH_SIZE;
    } else if (cl != NULL) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (cl[0] < '0' || cl[0] > '9' || *end != '\0' || errno != 0) {
            *why = "invalid Content-Length";
            return 400;
        }
        if (n > c->srv->lim.max_body_bytes) {
            *why = "request body too large";
            return 413;
        }
        r->body_left = (size_t)n;
        if (n > 0 && pc_buf_reserve(&r->body, (size_t)n) != 0) {
            *why = "out of memory";
            return 503;
        }
    }
    const char *expect = pc_http_req_header(r, "Expect");
    if (expect != NULL) {
        if (!pc_strcaseeq(expect, "100-continue")) {
            *why = "unsupported expectation";
            return 417;
        }
        if (r->minor >= 1 && (r->chunked || r->body_left > 0) &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
            evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
            bufferevent_enable(c->bev, EV_WRITE); /* it may be off after a written answer */
        }
    }
    return 0;
}

/* The request line alone (414) or the whole head (431) is over max_header_bytes. */
static void fail_head_too_large(struct pc_conn *c)
{
    if (c->req != NULL && c->req->method != NULL)
        conn_fail(c, 431, "request header fields too large");
    else
        conn_fail(c, 414, "request line too long");
}

/* Reads head lines. 1: head complete; 0: need more input; -1: failed (answered). */
static int read_head(struct pc_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t max = c->srv->lim.max_header_bytes;
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            size_t pending = evbuffer_get_length(in);
            size_t used = c->req ? c->req->head_bytes : 0;
            if (used + pending > max) {
                fail_head_too_large(c);
                return -1;
            }
            return 0;
        }
        if (c->req == NULL) {
            if (n == 0) { /* empty lines before a request are allowed */
                free(line);
                continue;
            }
            c->req = req_new(c);
            if (c->req == NULL) {
                free(line);
                conn_fail(c, 503, "out of memory");
                return -1;
            }
        }
        struct pc_http_req *r = c->req;
        r->head_bytes += n + 2;
        const char *why = NULL;
        int st = 0;
        if (r->head_bytes > max) {
            free(line);
            fail_head_too_large(c);
            return -1;
        }
        if (memchr(line, '\0', n) != NULL) {
            st = 400;
            why = "NUL byte in request head";
        } else if (r->method == NULL)
            st = parse_request_line(r, line, &why);
        else if (n == 0)
            st = finish_head(c, r, &why);
        else
            st = parse_header_line(r, line, &why);
        free(line);
        if (st != 0) {
            conn_fail(c, st, why);
            return -1;
        }
        if (n == 0 && r->method != NULL)
            return 1;
    }
}

/*
 * chunk-size = 1*HEXDIG [BWS ";" ext]: strtoull would also take signs, "0x" and leading
 * blanks, which a front proxy may read differently (request smuggling). 0 ok.
 */
static int parse_chunk_size(const char *line, size_t *out)
{
    size_t v = 0;
    const char *p = line;
    for (; isxdigit((unsigned char)*p); p++) {
        if (v > (SIZE_MAX >> 4))
            return -1;
        v = (v << 4) | (size_t)(isdigit((unsigned char)*p) ? *p - '0' : (tolower(*p) - 'a' + 10));
    }
    if (p == line)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '\0' && *p != ';')
        return -1;
    *out = v;
    return 0;
}

/* Moves up to body_left buffered bytes into the body. 0 ok; -1 failed (answered). */
static int take_body(struct pc_conn *c, struct pc_http_req *r)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in);
    size_t take = avail < r->body_left ? avail : r->body_left;
    if (take == 0)
        return 0;
    if (pc_buf_reserve(&r->body, take) != 0) {
        conn_fail(c, 503, "out of memory");
        return -1;
    }
    evbuffer_remove(in, r->body.data + r->body.len, take);
    r->body.len += take;
    r->body.data[r->body.len] = '\0';
    r->body_left -= take;
    return 0;
}

/* Reads the chunked body. 1 complete; 0 need more; -1 failed (answered). */
static int read_chunked(struct pc_conn *c, struct pc_http_req *r)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (r->chunk == CH_DATA) {
            if (take_body(c, r) != 0)
                return -1;
            if (r->body_left > 0)
                return 0;
            r->chunk = CH_DATA_END;
            continue;
        }
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (line == NULL) {
            if (evbuffer_get_length(in) > 4096) {
                conn_fail(c, 400, "malformed chunked body");
                return -1;
            }
            return 0;
        }
        int bad = 0;
        if (r->chunk == CH_SIZE) {
            size_t sz;
            if (parse_chunk_size(line, &sz) != 0)
                bad = 1;
            else if (sz > c->srv->lim.max_body_bytes ||
                     r->body.len + sz > c->srv->lim.max_body_bytes) {
                free(line);
                conn_fail(c, 413, "request body too large");
                return -1;
            } else if (sz == 0) {
                r->chunk = CH_TRAILER;
            } else {
                r->body_left = (size_t)sz;
                r->chunk = CH_DATA;
            }
        } else if (r->chunk == CH_DATA_END) {
            bad = n != 0;
            r->chunk = CH_SIZE;
        } else { /* CH_TRAILER: ignore trailer fields until the blank line */
            r->head_bytes += n + 2;
            if (r->head_bytes > c->srv->lim.max_header_bytes)
                bad = 1;
            else if (n == 0) {
                free(line);
                return 1;
            }
        }
        free(line);
        if (bad) {
            conn_fail(c, 400, "malformed chunked body");
            return -1;
        }
    }
}

/* Reads the body. 1 complete; 0 need more; -1 failed (answered). */
static int read_body(struct pc_conn *c, struct pc_http_req *r)
{
    if (r->chunked)
        return read_chunked(c, r);
    if (take_body(c, r) != 0)
        return -1;
    return r->body_left == 0 ? 1 : 0;
}

/* Advances the state machine as far as the buffered input allows. */
static void conn_process(struct pc_conn *c)
{
    if (c->state == CS_READ_HEAD) {
        int rc = read_head(c);
        if (rc <= 0)
            return;
        c->state = CS_READ_BODY;
    }
    if (c->state == CS_READ_BODY) {
        int rc = read_body(c, c->req);
        if (rc <= 0)
            return;
        struct pc_http_req *r = c->req;
        c->close_after = !r->keep_alive || c->srv->stopping;
        c->state = CS_HANDLING;
        if (c->deadline != NULL)
            event_del(c->deadline);
        set_read_timeout(c, 0); /* the handler's own deadline bounds the wait */
        /* The handler may reply (and so free r) before it returns: touch neither after. */
        c->srv->handler(r, c->srv->arg);
        return;
    }
    if (c->state == CS_HANDLING) {
        /* Pipelined input waits; stop reading when it grows past one full request. */
        struct evbuffer *in = bufferevent_get_input(c->bev);
        if (evbuffer_get_length(in) > c->srv->lim.max_header_bytes + c->srv->lim.max_body_bytes)
            bufferevent_disable(c->bev, EV_READ);
    } else if (c->state == CS_CLOSING) {
        evbuffer_drain(bufferevent_get_input(c->bev),
                       evbuffer_get_length(bufferevent_get_input(c->bev)));
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct pc_conn *c = arg;
    /* The request's clock starts with its first byte. */
    if (c->state == CS_READ_HEAD && (c->deadline == NULL || !evtimer_pending(c->deadline, NULL)))
        arm_deadline(c);
    conn_process(c);
}

/* Output drained: the answer is out. Next request, or close. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct pc_conn *c = arg;
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
}

/*
 * The keep-alive answer written straight away. 1 when it all went out and the connection
 * waits for the next request; 0 to let the write event finish it (a partial or failed
 * write, a close after the answer, or a pipelined request waiting: conn_write_cb then
 * reads it from the loop, never from inside the handler that answered).
 */
static int try_write_now(struct pc_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->close_after || c->read_eof || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        return 0;
    /* A bufferevent keeps the start of its output frozen so that only its own write
     * callback drains it (evbuffer_write fails on a frozen start, writing nothing): thaw
     * it for this one write, as that callback does. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    if (n < 0 || evbuffer_get_length(out) > 0) {
        if (c->srv->lim.answers_queued != NULL)
            PC_METRIC_INC(*c->srv->lim.answers_queued);
        return 0;
    }
    c->state = CS_READ_HEAD;
    set_read_timeout(c, c->srv->lim.idle_timeout_ms);
    /* The write event stays off until there is something to write: enabling it would arm
     * it (libevent adds it whatever the buffer holds) for one empty wakeup. Every writer
     * (an answer, a 100 Continue, an error) enables it itself. */
    bufferevent_enable(c->bev, EV_READ);
    return 1;
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
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state == CS_HANDLING) {
        /* EOF may be a half-close (the client shut its sending side and still reads):
         * stop reading and answer anyway; a client that is really gone makes the write
         * fail, and the connection is freed then. */
        pc_log(PC_LOG_DEBUG, "http: %s closed its side before the answer", c->peer);
        c->close_after = 1;
        c->read_eof = 1;
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    conn_free(c);
}

/* ---- replies ----------------------------------------------------------------------- */

void pc_http_reply(struct pc_http_req *req, int status, const struct pc_header *headers,
                   size_t n_headers, const char *body, size_t len)
{
    struct pc_conn *c = req->conn;
    if (c == NULL) { /* the client went away while we worked */
        req_free(req);
        return;
    }
    assert(c->state == CS_HANDLING && c->req == req);
    if (c->srv->stopping)
        c->close_after = 1;
    /* Composed with the write event off: most answers fit the socket buffer and are
     * written at once below, without arming the write event and a loop round for it. */
    bufferevent_disable(c->bev, EV_WRITE);
    write_response(c, status, req->minor, req->is_head, headers, n_headers, body, len);
    c->req = NULL;
    req_free(req);
    c->state = CS_WRITING;
    if (try_write_now(c))
        return;
    bufferevent_enable(c->bev, c->read_eof ? EV_WRITE : EV_WRITE | EV_READ);
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

/* ---- listener ---------------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lev;
    (void)salen;
    struct pc_http_server *srv = arg;
    struct pc_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* libevent reads 4 KB per callback by default: a body of a few KB would take several
     * reads and parser passes. Take what the socket has, up to 64 KB, at once. */
    bufferevent_set_max_single_read(c->bev, 65536);
    bufferevent_set_max_single_write(c->bev, 65536);
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer, sizeof c->peer);
    else
        pc_strlcpy(c->peer, "unknown", sizeof c->peer);
    c->srv = srv;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    c->state = CS_READ_HEAD;
    if (srv->n_conns > (size_t)srv->lim.max_connections) {
        conn_fail(c, 503, "too many connections");
        return;
    }
    set_read_timeout(c, srv->lim.idle_timeout_ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    (void)lev;
    (void)arg;
    /* EMFILE and friends: log and go on; the listener keeps running. */
    pc_log(PC_LOG_WARN, "http: accept failed: %s", strerror(errno));
}

/* 1 when a socket without SO_REUSEPORT cannot bind ai: something listens there already. */
static int port_taken(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0; /* let the real bind report it */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int taken = bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

struct pc_http_server *pc_http_server_new(struct event_base *base, const char *hostport,
                                          const struct pc_http_limits *limits,
                                          pc_http_handler handler, void *arg, char *err,
                                          size_t errlen)
{
    char host[256];
    int port;
    if (pc_config_split_hostport(hostport, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "invalid listen address '%s'", hostport);
        return NULL;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return NULL;
    }
    struct pc_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->base = base;
    srv->lim = *limits;
    srv->handler = handler;
    srv->arg = arg;
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (limits->bind != PC_HTTP_EXCLUSIVE)
        flags |= LEV_OPT_REUSEABLE_PORT;
    /* SO_REUSEPORT would let this listener share the port with any other program of the
     * same user that set it too: first make sure that nothing listens there yet. */
    int inuse = limits->bind == PC_HTTP_SHARE_FIRST && port != 0 && port_taken(ai);
    srv->lev = inuse ? NULL
                     : evconnlistener_new_bind(base, accept_cb, srv, flags, 1024, ai->ai_addr,
                                               (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (srv->lev == NULL) {
        snprintf(err, errlen, "cannot listen on %s: %s", hostport,
                 strerror(inuse ? EADDRINUSE : errno));
        free(srv);
        return NULL;
    }
    evconnlistener_set_error_cb(srv->lev, accept_error_cb);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evconnlistener_get_fd(srv->lev), (struct sockaddr *)&ss, &sl) == 0)
        srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    return srv;
}

void pc_http_server_stop_accepting(struct pc_http_server *srv)
{
    if (srv == NULL || srv->stopping)
        return;
    srv->stopping = 1;
    if (srv->lev != NULL) {
        evconnlistener_free(srv->lev);
        srv->lev = NULL;
    }
    /* Idle keep-alive connections close now; busy ones close after their answer. */
    struct pc_conn *c = srv->conns;
    while (c != NULL) {
        struct pc_conn *next = c->next;
        if (c->state == CS_READ_HEAD && c->req == NULL &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
            conn_free(c);
        else
            c->close_after = 1;
        c = next;
    }
}

void pc_http_server_free(struct pc_http_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->lev != NULL)
        evconnlistener_free(srv->lev);
    while (srv->conns != NULL)
        conn_free(srv->conns);
    free(srv);
}

int pc_http_server_port(const struct pc_http_server *srv)
{
    return srv->port;
}

size_t pc_http_server_writing(const struct pc_http_server *srv)
{
    size_t n = 0;
    for (const struct pc_conn *c = srv->conns; c != NULL; c = c->next)
        n += c->state == CS_WRITING;
    return n;
}

size_t pc_http_server_connections(const struct pc_http_server *srv)
{
    return srv->n_conns;
}
