/*
 * upstream_h1: predcache's own HTTP/1.1 client, for a model server at http://ADDRESS[:PORT]
 * (an IP address, or localhost). Any other URL (https, a host name to resolve) goes
 * through libcurl (upstream.c).
 *
 *     pc_uph1_start --> a kept connection (up->idle, the newest first) or a new one
 *     (non-blocking connect) --> the request written at once: head and body in one
 *     sendmsg, the rest when the socket takes it (write event) --> conn_read_cb: read(),
 *     h1resp --> the body to the transfer (output budget, or the stream's callbacks)
 *     --> whole: the connection goes back to up->idle (kept alive) or closes, then the
 *     transfer's callback runs (pc_up_deliver).
 *
 * Each connection has one read event, added for as long as it lives (level-triggered): a
 * kept connection that the model server closes is seen and closed, and a request adds and
 * removes no event. The write event is added only while a write waits (connect, a full
 * socket). A request sent on a kept connection that closes or resets before a byte of
 * answer is sent once more on a new connection (the model server closed it while it was
 * idle), as curl does. A transfer that fails inside pc_upstream_send is answered from the
 * loop, through its timer event (early).
 *
 * Backpressure: a chunk the output budget refuses (or a stream's client holds) is kept in
 * x->pend and the connection's read event is removed; pc_uph1_resume adds it back and
 * activates it, and conn_read_cb hands over the kept bytes before it reads again.
 */
#include "upstream_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netdb.h>
#include <event2/event.h>
#include <netinet/tcp.h>
#include <sys/uio.h>

#include "predcache/log.h"

#define UPH1_READ 16384   /* bytes one read takes */
#define UPH1_IDLE_MAX 256 /* kept connections with no transfer */

/* A connection to the model server. Owned by the transfer it carries (x: closed with it
 * when its answer is not read whole), else by up->idle; conn_close frees it. */
struct pc_upconn {
    struct pc_upstream *up;
    int fd;
    struct event *rev; /* EV_READ | EV_PERSIST, added from connect to close */
    struct event *wev; /* EV_WRITE | EV_PERSIST, added while a write waits */
    struct pc_xfer *x; /* the transfer it carries; NULL: idle in up->idle */
    int connecting;
    int idle;            /* in up->idle */
    unsigned answers;    /* answers it carried whole: > 0 is a kept connection */
    struct pc_list link; /* in up->idle */
    size_t in_off, in_len;
    char in[UPH1_READ];
};

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void open_conn(struct pc_xfer *x);

/* ---- the base URL ------------------------------------------------------------------- */

void pc_uph1_setup(struct pc_upstream *up)
{
    pc_list_init(&up->idle);
    up->own = 0;
    const char *u = up->base_url;
    if (up->be.http_client == PC_HTTP_CLIENT_CURL || strncasecmp(u, "http://", 7) != 0 ||
        strpbrk(u, "?#") != NULL)
        return;
    const char *a = u + 7;
    const char *slash = strchr(a, '/');
    size_t alen = slash != NULL ? (size_t)(slash - a) : strlen(a);
    char auth[300], hostport[310], host[256], ps[8];
    if (alen == 0 || alen >= sizeof auth || memchr(a, '@', alen) != NULL)
        return; /* none, too long, or with credentials: curl's */
    memcpy(auth, a, alen);
    auth[alen] = '\0';
    /* A URL may leave its port out (80); the split takes host:port only. */
    const char *after = auth[0] == '[' ? strchr(auth, ']') : auth;
    int port;
    snprintf(hostport, sizeof hostport, after != NULL && strchr(after, ':') ? "%s" : "%s:80", auth);
    if (pc_config_split_hostport(hostport, host, sizeof host, &port) != 0 || port == 0)
        return;
    /* An address, or localhost: nothing to resolve (a name is curl's, which resolves it
     * without holding the loop up). */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
                    *ai = NULL;
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(strcasecmp(host, "localhost") == 0 ? "127.0.0.1" : host, ps, &hints, &ai) != 0)
        return;
    memcpy(&up->addr, ai->ai_addr, ai->ai_addrlen);
    up->addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    pc_strlcpy(up->host, auth, sizeof up->host);
    pc_strlcpy(up->prefix, slash != NULL ? slash : "", sizeof up->prefix);
    up->own = 1;
}

/* ---- connections -------------------------------------------------------------------- */

static void conn_close(struct pc_upconn *c)
{
    struct pc_upstream *up = c->up;
    if (c->idle) {
        pc_list_remove(&c->link);
        up->n_idle--;
    }
    if (c->x != NULL)
        c->x->c = NULL;
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    close(c->fd);
    free(c);
}

/* An answer ended whole on c: c waits for the next transfer, or closes. */
static void conn_release(struct pc_upconn *c, int keep)
{
    struct pc_upstream *up = c->up;
    if (c->x != NULL)
        c->x->c = NULL;
    c->x = NULL;
    c->answers++;
    if (!keep || up->n_idle >= UPH1_IDLE_MAX || c->in_off < c->in_len) {
        conn_close(c);
        return;
    }
    event_del(c->wev);
    c->in_off = c->in_len = 0;
    c->idle = 1;
    pc_list_push_front(&up->idle, &c->link);
    up->n_idle++;
}

void pc_uph1_close_idle(struct pc_upstream *up)
{
    while (!pc_list_empty(&up->idle))
        conn_close(pc_list_entry(up->idle.next, struct pc_upconn, link));
}

static void attach(struct pc_xfer *x, struct pc_upconn *c)
{
    x->c = c;
    c->x = x;
}

/* ---- the end of a transfer ---------------------------------------------------------- */

static void finish(struct pc_xfer *x, enum pc_upstream_error err, const char *msg)
{
    struct pc_upstream_resp *r = &x->resp;
    r->error = err;
    if (err != PC_UP_OK && msg != NULL) /* NULL: set already (an early failure) */
        pc_strlcpy(r->errmsg, msg, sizeof r->errmsg);
    if (r->status == 0)
        r->status = x->rd.status;
    r->total_ms = (double)(pc_now_us() - x->start_us) / 1000.0;
    pc_up_deliver(x); /* frees x; a connection it still has closes */
}

/* x fails: at once, or from the loop while pc_upstream_send is still under way. */
static void fail(struct pc_xfer *x, enum pc_upstream_error err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct pc_xfer *x, enum pc_upstream_error err, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (x->c != NULL)
        conn_close(x->c); /* an answer not read whole: the connection cannot carry another */
    if (x->starting) {
        x->early = 1;
        x->resp.error = err;
        pc_strlcpy(x->resp.errmsg, msg, sizeof x->resp.errmsg);
        event_active(x->tmo, EV_TIMEOUT, 1);
        return;
    }
    finish(x, err, msg);
}

/* The connection broke (err, or 0 for a close) before the answer was whole. A kept
 * connection that carried no byte of this answer gets the request again, once, on a new
 * one: the model server closed it while it was idle. */
static void conn_broke(struct pc_xfer *x, int err)
{
    struct pc_upconn *c = x->c;
    if (c != NULL && c->answers > 0 && !x->rd.got_bytes && !x->retried) {
        conn_close(c);
        x->retried = 1;
        x->sent = 0;
        pc_h1resp_release(&x->rd);
        pc_h1resp_init(&x->rd, x->is_head);
        open_conn(x);
        return;
    }
    if (err == 0) {
        fail(x, PC_UP_PROTOCOL, "%s", x->rd.err);
        return;
    }
    fail(x, PC_UP_PROTOCOL, "model server connection (%s): %s", x->up->host, strerror(err));
}

/* ---- the request -------------------------------------------------------------------- */

/* The request line, Host, the headers that go on, the body's length. 0 ok, -1 no memory. */
static int build_head(struct pc_xfer *x, const char *method, const char *target,
                      const struct pc_header *headers, size_t n)
{
    struct pc_upstream *up = x->up;
    struct pc_buf *h = &x->head;
    int rc = pc_buf_append_str(h, method) | pc_buf_append_char(h, ' ') |
             pc_buf_append_str(h, up->prefix) | pc_buf_append_str(h, target) |
             pc_buf_append_str(h, " HTTP/1.1\r\nHost: ") | pc_buf_append_str(h, up->host) |
             pc_buf_append(h, "\r\n", 2);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = headers[i].name, *value = headers[i].value;
        if (!pc_up_forwards_header(name) || name[0] == '\0' || strpbrk(name, "\r\n: \t") ||
            strpbrk(value, "\r\n"))
            continue; /* never a line of the caller's making */
        rc |= pc_buf_append_str(h, name) | pc_buf_append(h, ": ", 2) | pc_buf_append_str(h, value) |
              pc_buf_append(h, "\r\n", 2);
    }
    if (x->body_len > 0 || (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0))
        rc |= pc_buf_append_str(h, "Content-Length: ") | pc_buf_append_u64(h, x->body_len) |
              pc_buf_append(h, "\r\n", 2);
    rc |= pc_buf_append(h, "\r\n", 2);
    return rc != 0 ? -1 : 0;
}

/* Writes what the socket takes of the request; the write event waits for the rest. */
static void write_request(struct pc_xfer *x)
{
    struct pc_upconn *c = x->c;
    size_t total = x->head.len + x->body_len;
    while (x->sent < total) {
        struct iovec iov[2];
        int n_iov = 0;
        if (x->sent < x->head.len) {
            iov[n_iov].iov_base = x->head.data + x->sent;
            iov[n_iov++].iov_len = x->head.len - x->sent;
        }
        size_t in_body = x->sent > x->head.len ? x->sent - x->head.len : 0;
        if (x->body_len > in_body) {
            iov[n_iov].iov_base = (char *)x->body + in_body;
            iov[n_iov++].iov_len = x->body_len - in_body;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n_iov};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(c->wev, NULL);
                return;
            }
            conn_broke(x, errno);
            return;
        }
        x->sent += (size_t)w;
    }
    event_del(c->wev);
}

/* ---- the answer --------------------------------------------------------------------- */

/* The head is read. 0 go on, -1 x ended (too large, or its stream said stop). */
static int on_head(struct pc_xfer *x)
{
    x->resp.status = x->rd.status;
    pc_arena_release(&x->text); /* nothing yet: a transfer has one final head */
    x->resp.headers = pc_h1resp_take_headers(&x->rd, &x->resp.n_headers, &x->text);
    x->headers_cap = x->resp.n_headers;
    x->length = x->rd.length;
    if (x->ops == NULL) {
        size_t max = x->up->be.max_response_bytes;
        if (x->rd.length >= 0 && (uint64_t)x->rd.length > max) {
            x->too_large = 1;
            fail(x, PC_UP_TOO_LARGE, "model server response larger than %zu bytes", max);
            return -1;
        }
        if (x->rd.length > 0 && pc_buf_reserve(&x->resp.body, (size_t)x->rd.length) != 0) {
            fail(x, PC_UP_PROTOCOL, "out of memory for the model server's answer");
            return -1;
        }
        return 0;
    }
    x->head_done = 1;
    if (x->ops->head(x->resp.status, x->resp.headers, x->resp.n_headers, x->arg) != 0) {
        x->cancelled = 1; /* no callback runs again; the transfer ends quietly */
        finish(x, PC_UP_OK, "");
        return -1;
    }
    return 0;
}

/* Keeps n bytes the transfer could not take now, and stops reading. 0, or -1 x ended. */
static int keep_back(struct pc_xfer *x, const char *d, size_t n)
{
    if (pc_buf_append(&x->pend, d, n) != 0) {
        fail(x, PC_UP_PROTOCOL, "out of memory for the model server's answer");
        return -1;
    }
    pc_up_set_paused(x, 1);
    if (x->c != NULL)
        event_del(x->c->rev);
    if (x->timeout_ms <= 0)
        evtimer_del(x->tmo); /* a stream's silence is the model server's, not ours */
    return 0;
}

/* Body bytes for x. 0 taken; 1 kept back (paused or held); -1 x ended. */
static int on_data(struct pc_xfer *x, const char *d, size_t n)
{
    if (x->ops != NULL) {
        if (x->ops->data(d, n, x->arg) == 0)
            return 0;
        x->held_by_client = 1; /* until pc_upstream_resume */
        return keep_back(x, d, n) == 0 ? 1 : -1;
    }
    size_t max = x->up->be.max_response_bytes;
    if (x->resp.body.len + n > max) {
        x->too_large = 1;
        fail(x, PC_UP_TOO_LARGE, "model server response larger than %zu bytes", max);
        return -1;
    }
    if (!pc_up_budget_allows(x, n)) {
        if (keep_back(x, d, n) != 0)
            return -1;
        pc_up_arm_resume(x->up);
        return 1;
    }
    if (pc_buf_append(&x->resp.body, d, n) != 0) {
        fail(x, PC_UP_PROTOCOL, "out of memory for the model server's answer");
        return -1;
    }
    pc_up_count_body(x);
    return 0;
}

/* The answer is whole: the connection is free before the callback runs (which may start
 * the next transfer on it). */
static void on_done(struct pc_xfer *x)
{
    struct pc_upconn *c = x->c;
    int keep = x->rd.keep_alive && x->sent == x->head.len + x->body_len;
    conn_release(c, keep);
    finish(x, PC_UP_OK, "");
}

/* Feeds x's reader the bytes its connection holds. 0 all taken, x reads on; 1 kept back;
 * -1 x ended. */
static int take_input(struct pc_xfer *x)
{
    for (;;) {
        struct pc_upconn *c = x->c;
        size_t used = 0, dl = 0;
        const char *d = NULL;
        enum pc_h1r_result res =
            pc_h1resp_feed(&x->rd, c->in + c->in_off, c->in_len - c->in_off, &used, &d, &dl);
        c->in_off += used;
        switch (res) {
        case PC_H1R_MORE:
            return 0;
        case PC_H1R_HEAD:
            if (on_head(x) != 0)
                return -1;
            break;
        case PC_H1R_DATA: {
            int r = on_data(x, d, dl);
            if (r != 0)
                return r;
            break;
        }
        case PC_H1R_DONE:
            on_done(x);
            return -1;
        case PC_H1R_ERROR:
            fail(x, PC_UP_PROTOCOL, "%s", x->rd.err);
            return -1;
        }
    }
}

/* The bytes x kept back, then the rest its connection read. As take_input. */
static int take_kept(struct pc_xfer *x)
{
    if (x->pend.len > 0) {
        struct pc_buf kept = x->pend; /* on_data may keep back again, into a new pend */
        pc_buf_init(&x->pend);
        int r = on_data(x, kept.data, kept.len);
        pc_buf_release(&kept);
        if (r != 0)
            return r;
    }
    return take_input(x);
}

static void arm(struct pc_xfer *x, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(x->tmo, &tv);
}

/* The bound that applies once connected: the whole transfer's rest, or a stream's silence. */
static void arm_running(struct pc_xfer *x)
{
    if (x->timeout_ms <= 0) {
        arm(x, x->idle_ms);
        return;
    }
    long spent = (long)((pc_now_us() - x->start_us) / 1000);
    arm(x, spent < x->timeout_ms ? x->timeout_ms - (int)spent : 0);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_upconn *c = arg;
    struct pc_xfer *x = c->x;
    if (x == NULL) { /* idle: the model server closed it, or sent what nobody asked for */
        conn_close(c);
        return;
    }
    if (x->paused) {
        event_del(c->rev);
        return;
    }
    if (x->pend.len > 0 || c->in_off < c->in_len) { /* resumed: what was read first */
        take_kept(x);
        return;
    }
    ssize_t n = read(c->fd, c->in, sizeof c->in);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_broke(x, errno);
        return;
    }
    if (n == 0) {
        if (pc_h1resp_eof(&x->rd) == PC_H1R_DONE)
            on_done(x);
        else
            conn_broke(x, 0);
        return;
    }
    c->in_off = 0;
    c->in_len = (size_t)n;
    if (x->timeout_ms <= 0)
        arm(x, x->idle_ms); /* a stream: silence is counted from the last byte */
    take_input(x);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_upconn *c = arg;
    struct pc_xfer *x = c->x;
    if (x == NULL) {
        event_del(c->wev);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            fail(x, PC_UP_CONNECT, "could not connect to the model server at %s: %s", x->up->host,
                 strerror(err));
            return;
        }
        c->connecting = 0;
        event_add(c->rev, NULL);
        arm_running(x);
    }
    write_request(x);
}

/* A new connection for x: connected now, or when its write event says so. */
static void open_conn(struct pc_xfer *x)
{
    struct pc_upstream *up = x->up;
    int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
            x->out_of_fds = 1;
            fail(x, PC_UP_NO_FD, "out of file descriptors for the connection");
        } else {
            fail(x, PC_UP_CONNECT, "no socket for the model server: %s", strerror(errno));
        }
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pc_upconn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        fail(x, PC_UP_CONNECT, "out of memory for a model server connection");
        return;
    }
    c->up = up;
    c->fd = fd;
    pc_list_init(&c->link);
    c->rev = event_new(up->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    c->wev = event_new(up->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    attach(x, c);
    if (c->rev == NULL || c->wev == NULL) {
        fail(x, PC_UP_CONNECT, "out of memory for a model server connection");
        return;
    }
    if (connect(fd, (struct sockaddr *)&up->addr, up->addr_len) == 0) {
        event_add(c->rev, NULL);
        arm_running(x);
        write_request(x);
        return;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        fail(x, PC_UP_CONNECT, "could not connect to the model server at %s: %s", up->host,
             strerror(errno));
        return;
    }
    c->connecting = 1;
    event_add(c->wev, NULL);
    int ms = up->be.connect_timeout_ms;
    int whole = x->timeout_ms > 0 ? x->timeout_ms : x->idle_ms;
    arm(x, ms < whole ? ms : whole);
}

static void tmo_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_xfer *x = arg;
    if (x->early) {
        finish(x, x->resp.error, NULL);
        return;
    }
    if (x->c != NULL && x->c->connecting)
        fail(x, PC_UP_TIMEOUT, "connecting to the model server at %s timed out after %d ms",
             x->up->host, x->up->be.connect_timeout_ms);
    else if (x->timeout_ms <= 0)
        fail(x, PC_UP_TIMEOUT, "the model server was silent for %d ms", x->idle_ms);
    else
        fail(x, PC_UP_TIMEOUT, "the model server did not answer within %d ms", x->timeout_ms);
}

/* ---- the transfer ------------------------------------------------------------------- */

int pc_uph1_start(struct pc_xfer *x, const char *method, const char *target,
                  const struct pc_header *headers, size_t n_headers)
{
    struct pc_upstream *up = x->up;
    x->start_us = pc_now_us();
    pc_h1resp_init(&x->rd, x->is_head);
    pc_buf_init(&x->head);
    pc_buf_init(&x->pend);
    x->tmo = evtimer_new(up->base, tmo_cb, x);
    if (x->tmo == NULL || build_head(x, method, target, headers, n_headers) != 0)
        return -1;
    x->starting = 1;
    if (!pc_list_empty(&up->idle)) {
        struct pc_upconn *c = pc_list_entry(up->idle.next, struct pc_upconn, link);
        pc_list_remove(&c->link);
        c->idle = 0;
        up->n_idle--;
        attach(x, c);
        arm_running(x);
        write_request(x);
    } else {
        open_conn(x);
    }
    x->starting = 0;
    return 0;
}

void pc_uph1_resume(struct pc_xfer *x)
{
    if (x->c == NULL)
        return;
    if (x->timeout_ms <= 0)
        arm(x, x->idle_ms);
    event_add(x->c->rev, NULL);
    event_active(x->c->rev, EV_READ, 1); /* conn_read_cb hands over the kept bytes first */
}

void pc_uph1_xfer_release(struct pc_xfer *x)
{
    if (x->c != NULL)
        conn_close(x->c); /* its answer was not read whole */
    pc_h1resp_release(&x->rd);
    pc_buf_release(&x->head);
    pc_buf_release(&x->pend);
    if (x->tmo != NULL)
        event_free(x->tmo);
    x->tmo = NULL;
}
