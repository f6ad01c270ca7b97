/*
 * upstream: the model server client, libcurl multi_socket on the worker's event_base.
 *
 *     pc_upstream_send --add_handle--> curl asks for socket watches (sock_cb) and a timer
 *     (timer_cb); libevent calls event_cb / timeout_cb --> curl_multi_socket_action -->
 *     check_done --> finish() --> caller's callback --> easy handle cleaned up.
 *
 * The pattern is curl's hiperfifo example. curl is never called from inside one of its
 * own callbacks: timer_cb only arms a libevent timer, and in_curl says when a call into
 * curl is under way. A socket's struct is not touched after curl_multi_socket_action
 * returns, since CURL_POLL_REMOVE may have freed it. Connections stay in the multi
 * handle's cache and are reused across transfers.
 *
 * A transfer starts inside pc_upstream_send (kick): on a kept-alive connection its request
 * is written before pc_upstream_send returns, not on the loop's next turn, where the 0 ms
 * timer curl asks for would leave it behind every other callback that turn runs. A miss's
 * model call so leaves in the callback that read the lookup's answer; with the model server
 * on the same CPU, it reads each call as it comes instead of a whole burst's calls at once.
 * Transfers that the kick ends (a failure to connect) are answered from the loop (done).
 *
 * Backpressure (the output budget, budget.h): write_cb counts each chunk of answer in the
 * budget; when the budget is full it returns CURL_WRITEFUNC_PAUSE (curl keeps the chunk and
 * stops reading the socket) and arms the resume timer. resume_cb, a libevent timer and so
 * outside any curl callback, lets paused transfers go on with curl_easy_pause(CONT) once
 * the budget allows; curl may hand over the kept chunk inside that call, and write_cb may
 * pause again. A transfer's answer is handed over with the budget's credit (finish()).
 */
#include "predcache/upstream.h"

#include "upstream_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "predcache/budget.h"
#include "predcache/config.h"
#include "predcache/list.h"
#include "predcache/log.h"
#include "predcache/metrics.h"

/* How often paused transfers look at the budget again. The workers share the budget but
 * not their loops: a client of another worker that drains its output wakes nobody here. */
#define PC_UPSTREAM_RESUME_MS 10

struct sock_watch {
    struct event *ev;
    struct pc_upstream *up;
};

static void check_done(struct pc_upstream *up);

int pc_upstream_error_status(enum pc_upstream_error e)
{
    return e == PC_UP_TIMEOUT ? 504 : e == PC_UP_SHUTDOWN || e == PC_UP_NO_FD ? 503 : 502;
}

/* ---- transfer bookkeeping ---------------------------------------------------------- */

/* Drops the answer's headers and their strings (an interim response's: they never add up). */
static void resp_clear(struct pc_xfer *x)
{
    x->resp.n_headers = 0;
    pc_arena_release(&x->text);
}

/* x is paused (1) or goes on (0): the counts follow. */
void pc_up_set_paused(struct pc_xfer *x, int paused)
{
    struct pc_upstream *up = x->up;
    if (x->paused == paused)
        return;
    x->paused = paused;
    if (paused)
        up->n_paused++;
    else
        up->n_paused--;
    if (up->g.paused != NULL)
        PC_METRIC_ADD(*up->g.paused, paused ? 1 : -1);
    if (paused && up->g.pauses != NULL)
        PC_METRIC_INC(*up->g.pauses);
}

static void count_held(struct pc_xfer *x, int64_t delta)
{
    x->held = (size_t)((int64_t)x->held + delta);
    pc_budget_backend_add(delta);
    if (x->up->g.buffered != NULL)
        PC_METRIC_ADD(*x->up->g.buffered, delta);
}

static void xfer_free(struct pc_xfer *x)
{
    struct pc_upstream *up = x->up;
    pc_up_set_paused(x, 0);
    count_held(x, -(int64_t)x->held);
    pc_budget_release(x);
    pc_list_remove(&x->link);
    up->active--;
    if (x->easy != NULL) {
        curl_multi_remove_handle(up->multi, x->easy);
        curl_easy_cleanup(x->easy);
    } else {
        pc_uph1_xfer_release(x);
    }
    curl_slist_free_all(x->req_headers);
    resp_clear(x);
    free(x->resp.headers);
    pc_buf_release(&x->resp.body);
    pc_buf_release(&x->conn);
    free(x);
}

static enum pc_upstream_error map_error(CURLcode rc, const struct pc_xfer *x)
{
    switch (rc) {
    case CURLE_OK:
        return PC_UP_OK;
    case CURLE_COULDNT_CONNECT:
        return x->out_of_fds ? PC_UP_NO_FD : PC_UP_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
        return PC_UP_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return PC_UP_TIMEOUT;
    case CURLE_WRITE_ERROR:
        return x->too_large ? PC_UP_TOO_LARGE : PC_UP_PROTOCOL;
    default:
        return PC_UP_PROTOCOL;
    }
}

/* Drops the headers the model server's Connection header named (RFC 9110 7.6.1). */
static void drop_connection_named(struct pc_xfer *x)
{
    if (x->conn.len > 0)
        x->resp.n_headers =
            pc_http_drop_connection_named(x->resp.headers, x->resp.n_headers, x->conn.data);
}

/* curl's socket(): the same, but a failure for want of descriptors is remembered, so the
 * transfer is answered as the shortage it is (503, like the listener's refusals), not as a
 * model server that cannot be reached. */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct pc_xfer *x = arg;
    (void)purpose;
    curl_socket_t fd = socket(a->family, a->socktype, a->protocol);
    if (fd == CURL_SOCKET_BAD && (errno == EMFILE || errno == ENFILE))
        x->out_of_fds = 1;
    return fd;
}

void pc_up_deliver(struct pc_xfer *x)
{
    struct pc_upstream_resp *r = &x->resp;
    if (x->cancelled) {
        xfer_free(x);
        return;
    }
    if (r->body.data == NULL)
        pc_buf_append(&r->body, "", 0);
    if (x->ops != NULL) {
        if (!x->head_done && r->error == PC_UP_OK) {
            x->head_done = 1;
            if (x->ops->head(r->status, r->headers, r->n_headers, x->arg) != 0) {
                xfer_free(x);
                return;
            }
        }
        x->ops->end(r, x->arg);
        xfer_free(x);
        return;
    }
    /* Its bytes were admitted to the budget as they came: its answer is not refused. */
    pc_budget_credit_begin();
    x->cb(r, x->arg);
    pc_budget_credit_end();
    xfer_free(x);
}

/* The transfer is over: fill in the answer, call back once, free everything. */
static void finish(struct pc_xfer *x, CURLcode rc)
{
    struct pc_upstream_resp *r = &x->resp;
    if (x->cancelled) {
        xfer_free(x);
        return;
    }
    drop_connection_named(x);
    long status = 0;
    double total = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &total);
    r->status = (int)status;
    r->total_ms = total * 1000.0;
    r->error = map_error(rc, x);
    if (r->error == PC_UP_NO_FD)
        snprintf(r->errmsg, sizeof r->errmsg, "out of file descriptors for the connection");
    else if (x->bad_header)
        snprintf(r->errmsg, sizeof r->errmsg,
                 "model server response: control character in a header field");
    else if (r->error == PC_UP_TOO_LARGE)
        snprintf(r->errmsg, sizeof r->errmsg, "model server response larger than %zu bytes",
                 x->up->be.max_response_bytes);
    else if (r->error != PC_UP_OK)
        snprintf(r->errmsg, sizeof r->errmsg, "%s",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    curl_multi_remove_handle(x->up->multi, x->easy);
    pc_up_deliver(x);
}

static void check_done(struct pc_upstream *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct pc_xfer *x = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        finish(x, rc);
    }
}

/* ---- event loop glue --------------------------------------------------------------- */

static void event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pc_upstream *up = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    up->in_curl++;
    curl_multi_socket_action(up->multi, fd, action, &running);
    up->in_curl--;
    check_done(up);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_upstream *up = arg;
    int running;
    up->in_curl++;
    curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    up->in_curl--;
    check_done(up);
}

/* up->done: answers the transfers a kick ended. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    check_done(arg);
}

/* Starts what curl has due now, the transfer just added among it (see the top). Never
 * from inside curl; what ends here is answered from the loop, never from the caller's
 * pc_upstream_send. */
static void kick(struct pc_upstream *up)
{
    if (up->in_curl > 0)
        return; /* the 0 ms timer curl asked for starts it */
    int running = 0;
    up->in_curl++;
    CURLMcode rc = curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    up->in_curl--;
    /* Every transfer added and not yet answered is running unless it ended. */
    if (rc != CURLM_OK || (size_t)running < up->active)
        event_active(up->done, EV_TIMEOUT, 1);
}

/* CURLMOPT_TIMERFUNCTION: only arms our timer; curl must not be called from here. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct pc_upstream *up = userp;
    if (timeout_ms < 0) {
        evtimer_del(up->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(up->timer, &tv);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: keeps one libevent event per socket curl watches. */
static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct pc_upstream *up = userp;
    struct sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w != NULL) {
            event_free(w->ev);
            free(w);
            curl_multi_assign(up->multi, s, NULL);
        }
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (w == NULL) {
        w = calloc(1, sizeof *w);
        if (w == NULL)
            return -1;
        w->up = up;
        curl_multi_assign(up->multi, s, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(up->base, s, kind, event_cb, up);
    if (w->ev == NULL)
        return -1;
    event_add(w->ev, NULL);
    return 0;
}

/* ---- per-transfer callbacks -------------------------------------------------------- */

/*
 * May x take n more bytes of answer now (budget.h)? An answer of known length asks once
 * for all of it and is counted whole when admitted; one of unknown length asks per chunk.
 */
int pc_up_budget_allows(struct pc_xfer *x, size_t n)
{
    if (x->admitted || x->up->unbudgeted)
        return 1;
    if (x->length < 0)
        return pc_budget_may_take(x, x->held, n);
    if (!pc_budget_admit(x, (size_t)x->length))
        return 0;
    x->admitted = 1;
    if ((size_t)x->length > x->held)
        count_held(x, (int64_t)((size_t)x->length - x->held));
    return 1;
}

/* A streamed transfer's chunk: the head first, then the chunk handed on (or kept). */
static size_t stream_write(struct pc_xfer *x, char *ptr, size_t n)
{
    if (!x->head_done) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        x->head_done = 1;
        if (x->ops->head((int)status, x->resp.headers, x->resp.n_headers, x->arg) != 0) {
            x->cancelled = 1; /* no callback runs again; the transfer ends quietly */
            return 0;
        }
    }
    if (x->ops->data(ptr, n, x->arg) == 0)
        return n;
    x->held_by_client = 1; /* curl keeps the chunk until pc_upstream_resume */
    pc_up_set_paused(x, 1);
    return CURL_WRITEFUNC_PAUSE;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct pc_xfer *x = userdata;
    size_t n = size * nmemb;
    if (x->cancelled)
        return 0;
    if (x->ops != NULL)
        return stream_write(x, ptr, n);
    if (x->length == -2 &&
        curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &x->length) != CURLE_OK)
        x->length = -1;
    size_t max = x->up->be.max_response_bytes;
    if (x->resp.body.len + n > max || (x->length >= 0 && (uint64_t)x->length > max)) {
        x->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (!pc_up_budget_allows(x, n)) {
        /* curl keeps this chunk and hands it over again when resume_cb lets x go on. */
        pc_up_set_paused(x, 1);
        pc_up_arm_resume(x->up);
        return CURL_WRITEFUNC_PAUSE;
    }
    if (pc_buf_append(&x->resp.body, ptr, n) != 0)
        return 0;
    pc_up_count_body(x);
    return n;
}

void pc_up_count_body(struct pc_xfer *x)
{
    if (x->resp.body.len > x->held && !x->up->unbudgeted)
        count_held(x, (int64_t)(x->resp.body.len - x->held));
}

void pc_up_arm_resume(struct pc_upstream *up)
{
    if (!evtimer_pending(up->resume, NULL)) {
        struct timeval tv = {0, PC_UPSTREAM_RESUME_MS * 1000};
        evtimer_add(up->resume, &tv);
    }
}

/* A libevent timer, outside any curl callback: paused transfers the budget lets go on
 * resume. curl_easy_pause may call write_cb (the kept chunk), which may pause x again. */
static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_upstream *up = arg;
    for (struct pc_list *i = up->xfers.next, *next; i != &up->xfers; i = next) {
        struct pc_xfer *x = pc_list_entry(i, struct pc_xfer, link);
        next = i->next;          /* x may be finished */
        if (x->held_by_client) { /* a stream: its client's output decides, not the budget */
            if (!x->resume_wanted)
                continue;
            x->held_by_client = x->resume_wanted = 0;
        } else if (!x->paused ||
                   !(x->length >= 0 ? pc_up_budget_allows(x, 0) : pc_budget_may_resume(x))) {
            continue;
        }
        pc_up_set_paused(x, 0);
        if (x->easy == NULL) { /* the own client: from its read event, not from here */
            pc_uph1_resume(x);
            continue;
        }
        up->in_curl++;
        CURLcode rc = curl_easy_pause(x->easy, CURLPAUSE_CONT);
        up->in_curl--;
        if (rc != CURLE_OK) {
            /* The kept chunk was refused: the transfer would wait for data that never
             * comes. Fail it now (outside curl's callbacks, so its handle may go). */
            pc_log(PC_LOG_WARN, "upstream: resuming a transfer failed: %s", curl_easy_strerror(rc));
            finish(x, rc);
        }
    }
    size_t budget_paused = 0;
    for (struct pc_list *i = up->xfers.next; i != &up->xfers; i = i->next) {
        const struct pc_xfer *x = pc_list_entry(i, struct pc_xfer, link);
        budget_paused += x->paused && !x->held_by_client;
    }
    if (budget_paused > 0) {
        struct timeval tv = {0, PC_UPSTREAM_RESUME_MS * 1000};
        evtimer_add(up->resume, &tv);
    }
}

void pc_upstream_resume(struct pc_xfer *x)
{
    if (x == NULL || !x->held_by_client)
        return;
    x->resume_wanted = 1;
    struct timeval now = {0, 0};
    evtimer_add(x->up->resume, &now); /* resume_cb, outside any curl or caller callback */
}

void pc_upstream_cancel(struct pc_xfer *x)
{
    if (x != NULL)
        xfer_free(x);
}

/* Keeps the end-to-end headers of the final response (a 100 Continue resets them). */
static size_t header_cb(char *line, size_t size, size_t nitems, void *userdata)
{
    struct pc_xfer *x = userdata;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        resp_clear(x);
        x->conn.len = 0;
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (colon == NULL)
        return n; /* the blank line that ends the head */
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *p = v; p < end; p++) { /* a value goes on to the client: no CR, no NUL */
        unsigned char ch = (unsigned char)*p;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            x->bad_header = 1;
            return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
        }
    }
    /* In the arena at once: a name dropped below stays there until the response ends (curl
     * bounds a response's headers), not worth a copy of its own first. */
    char *name = pc_arena_strndup(&x->text, line, nl);
    if (name == NULL)
        return 0;
    if (pc_strcaseeq(name, "connection")) {
        if ((x->conn.len > 0 && pc_buf_append(&x->conn, ",", 1) != 0) ||
            pc_buf_append(&x->conn, v, (size_t)(end - v)) != 0)
            return 0;
    }
    /* The length of a HEAD answer describes a body that never comes: keep it for the client. */
    if (pc_http_is_hop_by_hop(name) || (pc_strcaseeq(name, "content-length") && !x->is_head))
        return n;
    if (x->resp.n_headers == x->headers_cap) {
        size_t cap = x->headers_cap ? x->headers_cap * 2 : 16;
        if (cap > 256) /* a model server with hundreds of headers: keep the first ones */
            return n;
        struct pc_header *h = realloc(x->resp.headers, cap * sizeof *h);
        if (h == NULL)
            return 0;
        x->resp.headers = h;
        x->headers_cap = cap;
    }
    struct pc_header *h = &x->resp.headers[x->resp.n_headers];
    h->name = name;
    h->value = pc_arena_strndup(&x->text, v, (size_t)(end - v));
    if (h->value == NULL)
        return 0;
    x->resp.n_headers++;
    return n;
}

/* ---- public ------------------------------------------------------------------------ */

struct pc_upstream *pc_upstream_new(struct event_base *base, const struct pc_config *cfg)
{
    struct pc_backend_cfg be;
    return pc_upstream_new_backend(base, pc_config_backend(cfg, 0, &be));
}

struct pc_upstream *pc_upstream_new_for(struct event_base *base, const struct pc_config *cfg,
                                        const char *base_url)
{
    struct pc_backend_cfg be;
    pc_config_backend(cfg, 0, &be);
    pc_strlcpy(be.url, base_url, sizeof be.url);
    struct pc_upstream *up = pc_upstream_new_backend(base, &be);
    if (up != NULL)
        up->unbudgeted = 1;
    return up;
}

struct pc_upstream *pc_upstream_new_backend(struct event_base *base,
                                            const struct pc_backend_cfg *be)
{
    struct pc_upstream *up = calloc(1, sizeof *up);
    if (up == NULL)
        return NULL;
    pc_list_init(&up->xfers);
    up->base = base;
    up->be = *be;
    pc_strlcpy(up->base_url, be->url, sizeof up->base_url);
    size_t bl = strlen(up->base_url);
    while (bl > 0 && up->base_url[bl - 1] == '/')
        up->base_url[--bl] = '\0';
    pc_uph1_setup(up);
    up->multi = curl_multi_init();
    up->timer = evtimer_new(base, timeout_cb, up);
    up->resume = evtimer_new(base, resume_cb, up);
    up->done = event_new(base, -1, 0, done_cb, up);
    if (up->multi == NULL || up->timer == NULL || up->resume == NULL || up->done == NULL) {
        pc_upstream_free(up);
        return NULL;
    }
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 256L);
    return up;
}

void pc_upstream_abort_all(struct pc_upstream *up)
{
    /* Each caller still hears back once, so that nothing it holds for the answer leaks. */
    while (!pc_list_empty(&up->xfers)) {
        struct pc_xfer *x = pc_list_entry(up->xfers.next, struct pc_xfer, link);
        if (x->easy != NULL)
            curl_multi_remove_handle(up->multi, x->easy);
        x->resp.error = PC_UP_SHUTDOWN;
        snprintf(x->resp.errmsg, sizeof x->resp.errmsg, "predcache is shutting down");
        if (x->cancelled)
            ; /* its caller said stop: it hears nothing more */
        else if (x->ops != NULL)
            x->ops->end(&x->resp, x->arg);
        else
            x->cb(&x->resp, x->arg);
        xfer_free(x);
    }
}

void pc_upstream_free(struct pc_upstream *up)
{
    if (up == NULL)
        return;
    pc_upstream_abort_all(up);
    if (up->idle.next != NULL) /* set up: its kept connections close */
        pc_uph1_close_idle(up);
    if (up->multi)
        curl_multi_cleanup(up->multi);
    if (up->timer)
        event_free(up->timer);
    if (up->resume)
        event_free(up->resume);
    if (up->done)
        event_free(up->done);
    free(up);
}

size_t pc_upstream_active(const struct pc_upstream *up)
{
    return up->active;
}

void pc_upstream_set_gauges(struct pc_upstream *up, const struct pc_upstream_gauges *g)
{
    up->g = *g;
}

static int has_header(const struct pc_header *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(h[i].name, name))
            return 1;
    }
    return 0;
}

int pc_up_forwards_header(const char *name)
{
    return !(pc_http_is_hop_by_hop(name) || pc_strcaseeq(name, "host") ||
             pc_strcaseeq(name, "content-length") || pc_strcaseeq(name, "expect") ||
             strchr(name, '_') != NULL);
}

/*
 * Request headers for curl: end-to-end ones only, and none that curl must own. A name
 * with an underscore is dropped (as nginx does): CGI-style servers read X_Foo and X-Foo
 * as one name (HTTP_X_FOO), so a client could pass what predcache took for another
 * header, or none, as Content-Length, Authorization or X-Api-Key. Every other header goes
 * on whole, whatever its length (http.c bounds the head).
 */
static struct curl_slist *build_headers(const struct pc_header *headers, size_t n)
{
    struct curl_slist *list = NULL, *t;
    struct pc_buf line;
    pc_buf_init(&line);
    for (size_t i = 0; i < n; i++) {
        const char *name = headers[i].name;
        if (!pc_up_forwards_header(name))
            continue;
        line.len = 0;
        int rc = pc_buf_append_str(&line, name);
        if (headers[i].value[0] == '\0')
            rc |= pc_buf_append_char(&line, ';'); /* curl's form for an empty value */
        else
            rc |= pc_buf_append(&line, ": ", 2) | pc_buf_append_str(&line, headers[i].value);
        if (rc != 0 || (t = curl_slist_append(list, line.data)) == NULL)
            goto fail;
        list = t;
    }
    pc_buf_release(&line);
    /* No "Expect: 100-continue" round trip to the model server, and none of the headers
     * curl would add on its own: what the client did not send is not sent. */
    if ((t = curl_slist_append(list, "Expect:")) == NULL)
        goto fail;
    list = t;
    if (!has_header(headers, n, "accept") && (t = curl_slist_append(list, "Accept:")) == NULL)
        goto fail;
    list = t;
    if (!has_header(headers, n, "content-type") &&
        (t = curl_slist_append(list, "Content-Type:")) == NULL)
        goto fail;
    return t;
fail:
    pc_buf_release(&line);
    curl_slist_free_all(list);
    return NULL;
}

/* One transfer, buffered (cb) or streamed (ops, idle_ms). */
static struct pc_xfer *xfer_start(struct pc_upstream *up, const char *method, const char *target,
                                  const struct pc_header *headers, size_t n_headers,
                                  const char *body, size_t body_len, int timeout_ms,
                                  pc_upstream_cb cb, const struct pc_stream_ops *ops, int idle_ms,
                                  void *arg)
{
    struct pc_xfer *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    pc_list_init(&x->link);
    x->up = up;
    x->cb = cb;
    x->ops = ops;
    x->arg = arg;
    x->length = -2;
    pc_buf_init(&x->resp.body);
    pc_buf_init(&x->conn);
    x->is_head = strcmp(method, "HEAD") == 0;
    if (up->own) {
        x->body = body;
        x->body_len = body_len;
        if (ops != NULL) {
            x->idle_ms = idle_ms > 0 ? idle_ms : up->be.idle_timeout_ms;
        } else {
            x->timeout_ms =
                timeout_ms > 0 && timeout_ms < up->be.timeout_ms ? timeout_ms : up->be.timeout_ms;
        }
        pc_list_push_front(&up->xfers, &x->link);
        up->active++;
        if (pc_uph1_start(x, method, target, headers, n_headers) != 0) {
            x->cancelled = 1;
            xfer_free(x);
            return NULL;
        }
        return x;
    }
    x->easy = curl_easy_init();
    x->req_headers = build_headers(headers, n_headers);
    struct pc_buf url;
    pc_buf_init(&url);
    if (x->easy == NULL || x->req_headers == NULL || pc_buf_append_str(&url, up->base_url) != 0 ||
        pc_buf_append_str(&url, target) != 0)
        goto fail;

    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url.data);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");      /* never an http_proxy from the environment */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* forward the path exactly as received */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)up->be.connect_timeout_ms);
    if (ops != NULL) { /* no bound on the whole: a long generation; silence is bounded */
        long idle_s = idle_ms > 0 ? (idle_ms + 999) / 1000 : (up->be.idle_timeout_ms + 999) / 1000;
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle_s);
    } else {
        long total =
            timeout_ms > 0 && timeout_ms < up->be.timeout_ms ? timeout_ms : up->be.timeout_ms;
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, total);
    }
    if (x->is_head) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0 || body_len > 0) {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        /* Not copied: the caller keeps body alive until the callback. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body_len > 0 ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    pc_buf_release(&url);

    if (curl_multi_add_handle(up->multi, e) != CURLM_OK)
        goto fail_easy;
    pc_list_push_front(&up->xfers, &x->link);
    up->active++;
    kick(up);
    return x;

fail:
    pc_buf_release(&url);
fail_easy:
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->req_headers);
    free(x);
    return NULL;
}

struct pc_xfer *pc_upstream_send(struct pc_upstream *up, const char *method, const char *target,
                                 const struct pc_header *headers, size_t n_headers,
                                 const char *body, size_t body_len, int timeout_ms,
                                 pc_upstream_cb cb, void *arg)
{
    return xfer_start(up, method, target, headers, n_headers, body, body_len, timeout_ms, cb, NULL,
                      0, arg);
}

struct pc_xfer *pc_upstream_stream(struct pc_upstream *up, const char *method, const char *target,
                                   const struct pc_header *headers, size_t n_headers,
                                   const char *body, size_t body_len, int idle_ms,
                                   const struct pc_stream_ops *ops, void *arg)
{
    return xfer_start(up, method, target, headers, n_headers, body, body_len, 0, NULL, ops, idle_ms,
                      arg);
}
