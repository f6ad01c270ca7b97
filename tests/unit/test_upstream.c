/* upstream's start of a transfer (the kick): against a small HTTP/1.1 server this test runs
 * in a thread on a free loopback port. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <netinet/in.h>

#include "predcache/config.h"
#include "predcache/upstream.h"

/* ---- the model server: one connection at a time, keep-alive, "ok" to every request ---- */

static int srv_fd = -1;
static int srv_port;
static int srv_requests; /* requests read whole, under srv_mu */
static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t srv_thread;

static int requests_seen(void)
{
    pthread_mutex_lock(&srv_mu);
    int n = srv_requests;
    pthread_mutex_unlock(&srv_mu);
    return n;
}

static int srv_conns; /* connections accepted, under srv_mu */

static int conns_seen(void)
{
    pthread_mutex_lock(&srv_mu);
    int n = srv_conns;
    pthread_mutex_unlock(&srv_mu);
    return n;
}

/* Reads one request (a head, then Content-Length bytes) from fd, its target into path:
 * 0, or -1 at its end. */
static int read_request(int fd, char *buf, size_t cap, size_t *have, char *path, size_t plen)
{
    for (;;) {
        buf[*have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strstr(buf, "Content-Length: ");
            size_t body = cl != NULL && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
            size_t whole = (size_t)(end + 4 - buf) + body;
            if (*have >= whole) {
                const char *sp = strchr(buf, ' ');
                size_t n = sp != NULL ? strcspn(sp + 1, " ") : 0;
                snprintf(path, plen, "%.*s", (int)n, sp != NULL ? sp + 1 : "");
                memmove(buf, buf + whole, *have - whole);
                *have -= whole;
                return 0;
            }
        }
        if (*have + 1 >= cap)
            return -1;
        ssize_t n = read(fd, buf + *have, cap - 1 - *have);
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

static int send_all(int fd, const char *s, size_t n)
{
    return write(fd, s, n) == (ssize_t)n ? 0 : -1;
}

/*
 * One connection (its descriptor is arg): every request answered until the client goes,
 * as its path says:
 *   /drop2      the second request on a connection: closed without an answer
 *   /drop       closed without an answer
 *   /chunked    a chunked answer        /close  an answer that runs until the close
 *   /big        a length over the client's bound
 *   /slow       answered after 1.5 s    else    "ok" with its length
 */
static void *serve_conn(void *arg)
{
    int c = (int)(intptr_t)arg;
    char *buf = malloc(65536);
    char path[256];
    size_t have = 0;
    int n = 0;
    while (buf != NULL && read_request(c, buf, 65536, &have, path, sizeof path) == 0) {
        pthread_mutex_lock(&srv_mu);
        srv_requests++;
        pthread_mutex_unlock(&srv_mu);
        n++;
        if (strstr(path, "/drop2") != NULL ? n == 2 : strstr(path, "/drop") != NULL)
            break;
        if (strstr(path, "/chunked") != NULL) {
            static const char a[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            if (send_all(c, a, sizeof a - 1) != 0)
                break;
            continue;
        }
        if (strstr(path, "/close") != NULL) {
            static const char a[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close";
            send_all(c, a, sizeof a - 1);
            break;
        }
        if (strstr(path, "/big") != NULL) {
            static const char a[] = "HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\nxx";
            if (send_all(c, a, sizeof a - 1) != 0)
                break;
            continue;
        }
        if (strstr(path, "/slow") != NULL) {
            struct timespec t = {1, 500000000};
            nanosleep(&t, NULL);
        }
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        if (send_all(c, ok, sizeof ok - 1) != 0)
            break;
    }
    free(buf);
    close(c);
    return NULL;
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(srv_fd, NULL, NULL);
        if (c < 0)
            return NULL; /* the listening socket was shut down */
        pthread_mutex_lock(&srv_mu);
        srv_conns++;
        pthread_mutex_unlock(&srv_mu);
        pthread_t t;
        if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c) == 0)
            pthread_detach(t);
        else
            close(c);
    }
}

static int start_server(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    srv_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (srv_fd < 0 || bind(srv_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(srv_fd, 16) != 0 || getsockname(srv_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    srv_port = ntohs(a.sin_port);
    return pthread_create(&srv_thread, NULL, serve, NULL) == 0 ? 0 : -1;
}

static int stop_server(void **state)
{
    (void)state;
    shutdown(srv_fd, SHUT_RDWR);
    pthread_join(srv_thread, NULL);
    close(srv_fd);
    curl_global_cleanup();
    return 0;
}

/* ---- the client side ---- */

struct rig {
    struct event_base *base;
    struct pc_upstream *up;
    struct event *guard; /* ends a loop that would otherwise wait forever */
};

struct answer {
    int calls;
    int status;
    enum pc_upstream_error error;
    int sending; /* set while pc_upstream_send runs: a callback must not see it */
    int inside;  /* a callback ran from inside pc_upstream_send */
    struct event_base *base;
    char body[64];
    char errmsg[256];
};

static void on_answer(const struct pc_upstream_resp *resp, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = resp->status;
    a->error = resp->error;
    a->inside |= a->sending;
    snprintf(a->body, sizeof a->body, "%.*s", (int)resp->body.len, resp->body.data);
    snprintf(a->errmsg, sizeof a->errmsg, "%s", resp->errmsg);
    event_base_loopbreak(a->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static int use_curl; /* the rig's upstream uses libcurl (http_client = curl) */

static void rig_up(struct rig *r)
{
    r->base = event_base_new();
    assert_non_null(r->base);
    struct pc_backend_cfg be = {0};
    snprintf(be.url, sizeof be.url, "http://127.0.0.1:%d", srv_port);
    be.connect_timeout_ms = 1000;
    be.timeout_ms = 5000;
    be.idle_timeout_ms = 5000;
    be.max_response_bytes = 1 << 20;
    be.max_in_flight = 16;
    be.http_client = use_curl ? PC_HTTP_CLIENT_CURL : PC_HTTP_CLIENT_AUTO;
    r->up = pc_upstream_new_backend(r->base, &be);
    assert_non_null(r->up);
    r->guard = evtimer_new(r->base, on_guard, r->base);
    assert_non_null(r->guard);
}

static void rig_down(struct rig *r)
{
    pc_upstream_free(r->up);
    event_free(r->guard);
    event_base_free(r->base);
}

static void send_to(struct rig *r, struct answer *a, const char *path, int timeout_ms)
{
    static const char body[] = "{\"instances\": [1]}";
    a->base = r->base;
    a->sending = 1;
    struct pc_xfer *x = pc_upstream_send(r->up, "POST", path, NULL, 0, body, sizeof body - 1,
                                         timeout_ms, on_answer, a);
    a->sending = 0;
    assert_non_null(x);
}

static void send_one(struct rig *r, struct answer *a)
{
    send_to(r, a, "/v1/models/m:predict", 0);
}

/* Runs the loop until a's callback ran (or 3 s passed). */
static void wait_answer(struct rig *r, struct answer *a)
{
    struct timeval tv = {3, 0};
    evtimer_add(r->guard, &tv);
    while (a->calls == 0 && evtimer_pending(r->guard, NULL))
        event_base_loop(r->base, EVLOOP_ONCE);
    evtimer_del(r->guard);
}

/* Waits up to 2 s, without running the loop, for the server to have read n requests. */
static int server_reads(int n)
{
    for (int i = 0; i < 2000 && requests_seen() < n; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return requests_seen() >= n;
}

static void test_a_request_on_a_kept_alive_connection_leaves_inside_send(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    int before = requests_seen();
    struct answer first = {0};
    send_one(&r, &first); /* a new connection: curl waits for it to be writable */
    wait_answer(&r, &first);
    assert_int_equal(first.calls, 1);
    assert_int_equal(first.status, 200);
    assert_int_equal(requests_seen(), before + 1);

    /* The connection is kept: the next request is written before send returns, with no
     * turn of the loop, and its answer still comes from the loop. */
    struct answer second = {0};
    send_one(&r, &second);
    assert_true(server_reads(before + 2));
    assert_int_equal(second.calls, 0);
    wait_answer(&r, &second);
    assert_int_equal(second.calls, 1);
    assert_int_equal(second.status, 200);
    assert_int_equal(second.inside, 0);
    rig_down(&r);
}

static void test_a_transfer_the_start_ends_is_answered_from_the_loop(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    /* No descriptor left for the transfer's socket: curl fails it as it starts it. */
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);
    assert_true(probe >= 0);
    close(probe);
    struct rlimit low = {(rlim_t)probe, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct answer a = {0};
    send_one(&r, &a);
    int calls_in_send = a.calls;
    wait_answer(&r, &a);
    /* The limit goes back before any assertion, so that a failure leaves the next tests
     * their descriptors. */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(calls_in_send, 0); /* never from inside pc_upstream_send */
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.inside, 0);
    assert_int_not_equal(a.error, PC_UP_OK);
    assert_int_equal(pc_upstream_active(r.up), 0);
    rig_down(&r);
}

static void test_many_transfers_started_in_one_turn_are_each_answered_once(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    struct answer a[8] = {{0}};
    for (int i = 0; i < 8; i++)
        send_one(&r, &a[i]);
    struct timeval tv = {3, 0};
    evtimer_add(r.guard, &tv);
    for (;;) {
        int done = 0;
        for (int i = 0; i < 8; i++)
            done += a[i].calls;
        if (done == 8 || !evtimer_pending(r.guard, NULL))
            break;
        event_base_loop(r.base, EVLOOP_ONCE);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(a[i].calls, 1);
        assert_int_equal(a[i].status, 200);
        assert_int_equal(a[i].inside, 0);
    }
    assert_int_equal(pc_upstream_active(r.up), 0);
    rig_down(&r);
}

/* One transfer to path, waited for. */
static void ask(struct rig *r, struct answer *a, const char *path, int timeout_ms)
{
    memset(a, 0, sizeof *a);
    send_to(r, a, path, timeout_ms);
    wait_answer(r, a);
    assert_int_equal(a->calls, 1);
    assert_int_equal(a->inside, 0);
    assert_int_equal(pc_upstream_active(r->up), 0);
}

static void test_a_kept_connection_carries_the_next_request(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    int conns = conns_seen();
    struct answer a;
    for (int i = 0; i < 5; i++) {
        ask(&r, &a, "/v1/models/m:predict", 0);
        assert_int_equal(a.status, 200);
        assert_string_equal(a.body, "ok");
    }
    assert_int_equal(conns_seen(), conns + 1);
    rig_down(&r);
}

static void test_a_kept_connection_closed_under_a_request_sends_it_again(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    int before = requests_seen(), conns = conns_seen();
    struct answer a;
    ask(&r, &a, "/drop2", 0);
    assert_int_equal(a.status, 200);
    /* The kept connection closes as it reads the second request: that request goes again,
     * once, on a new connection, and is answered there. */
    ask(&r, &a, "/drop2", 0);
    assert_int_equal(a.error, PC_UP_OK);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "ok");
    assert_int_equal(requests_seen(), before + 3);
    assert_int_equal(conns_seen(), conns + 2);
    rig_down(&r);
}

static void test_a_new_connection_closed_without_an_answer_is_a_502(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    int before = requests_seen();
    struct answer a;
    ask(&r, &a, "/drop", 0);
    assert_int_equal(a.error, PC_UP_PROTOCOL);
    assert_int_equal(pc_upstream_error_status(a.error), 502);
    assert_int_equal(requests_seen(), before + 1); /* not sent again */
    rig_down(&r);
}

static void test_answers_framed_every_way(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    struct answer a;
    ask(&r, &a, "/chunked", 0);
    assert_int_equal(a.error, PC_UP_OK);
    assert_string_equal(a.body, "hello world");
    ask(&r, &a, "/close", 0);
    assert_int_equal(a.error, PC_UP_OK);
    assert_string_equal(a.body, "until the close");
    ask(&r, &a, "/big", 0);
    assert_int_equal(a.error, PC_UP_TOO_LARGE);
    assert_string_equal(a.errmsg, "model server response larger than 1048576 bytes");
    ask(&r, &a, "/v1/models/m:predict", 0); /* and the next one goes through */
    assert_string_equal(a.body, "ok");
    rig_down(&r);
}

static void test_timeouts_and_refusals(void **state)
{
    (void)state;
    struct rig r;
    rig_up(&r);
    struct answer a;
    ask(&r, &a, "/slow", 200);
    assert_int_equal(a.error, PC_UP_TIMEOUT);
    assert_int_equal(pc_upstream_error_status(a.error), 504);
    rig_down(&r);

    /* A port nobody listens on: refused, answered from the loop. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    r.base = event_base_new();
    struct pc_backend_cfg be = {0};
    snprintf(be.url, sizeof be.url, "http://127.0.0.1:%d/prefix/", ntohs(sa.sin_port));
    be.connect_timeout_ms = 1000;
    be.timeout_ms = 5000;
    be.idle_timeout_ms = 5000;
    be.max_response_bytes = 1 << 20;
    r.up = pc_upstream_new_backend(r.base, &be);
    r.guard = evtimer_new(r.base, on_guard, r.base);
    ask(&r, &a, "/x", 0);
    assert_int_equal(a.error, PC_UP_CONNECT);
    assert_int_equal(pc_upstream_error_status(a.error), 502);
    rig_down(&r);
}

/* The same with libcurl ([backend] http_client = curl). */
#define WITH_CURL(name)                                                                            \
    static void name##_with_curl(void **state)                                                     \
    {                                                                                              \
        use_curl = 1;                                                                              \
        name(state);                                                                               \
        use_curl = 0;                                                                              \
    }
WITH_CURL(test_a_request_on_a_kept_alive_connection_leaves_inside_send)
WITH_CURL(test_a_transfer_the_start_ends_is_answered_from_the_loop)
WITH_CURL(test_many_transfers_started_in_one_turn_are_each_answered_once)
WITH_CURL(test_a_kept_connection_carries_the_next_request)
WITH_CURL(test_answers_framed_every_way)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_request_on_a_kept_alive_connection_leaves_inside_send),
        cmocka_unit_test(test_a_transfer_the_start_ends_is_answered_from_the_loop),
        cmocka_unit_test(test_many_transfers_started_in_one_turn_are_each_answered_once),
        cmocka_unit_test(test_a_kept_connection_carries_the_next_request),
        cmocka_unit_test(test_a_kept_connection_closed_under_a_request_sends_it_again),
        cmocka_unit_test(test_a_new_connection_closed_without_an_answer_is_a_502),
        cmocka_unit_test(test_answers_framed_every_way),
        cmocka_unit_test(test_timeouts_and_refusals),
        cmocka_unit_test(test_a_request_on_a_kept_alive_connection_leaves_inside_send_with_curl),
        cmocka_unit_test(test_a_transfer_the_start_ends_is_answered_from_the_loop_with_curl),
        cmocka_unit_test(test_many_transfers_started_in_one_turn_are_each_answered_once_with_curl),
        cmocka_unit_test(test_a_kept_connection_carries_the_next_request_with_curl),
        cmocka_unit_test(test_answers_framed_every_way_with_curl),
    };
    return cmocka_run_group_tests(tests, start_server, stop_server);
}
