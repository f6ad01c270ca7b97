/* bevread: a bufferevent read by a read of our own: what the socket holds at once, up to
 * the owner's limit; the end, errors and the read timeout as libevent's own read. */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "predcache/bevread.h"

static size_t limit_of(void *arg)
{
    return *(size_t *)arg;
}

/* Every test's callback argument starts with its pc_bevread. */
static void read_event(evutil_socket_t fd, short what, void *bev)
{
    void *owner;
    bufferevent_getcb(bev, NULL, NULL, NULL, &owner);
    pc_bevread_read(owner, fd, what);
}

struct seen {
    struct pc_bevread rd;
    size_t limit;
    size_t first_len;
    int callbacks;
    short events;   /* the event callback's */
    int free_in_cb; /* the read callback frees the bufferevent */
};

static void on_read(struct bufferevent *bev, void *arg)
{
    struct seen *s = arg;
    if (s->callbacks++ == 0)
        s->first_len = evbuffer_get_length(bufferevent_get_input(bev));
    if (s->free_in_cb)
        bufferevent_free(bev);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    ((struct seen *)arg)->events |= what;
}

/* total bytes waiting in a socketpair, read with limit: what the first callback saw; the
 * input in the end, after the loop has run a while. */
static size_t first_callback_sees(size_t limit, size_t total, size_t *in_the_end, int *full)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    evutil_make_socket_nonblocking(sv[0]);
    static char data[300000];
    memset(data, 'x', sizeof data);
    assert_int_equal(write(sv[1], data, total), (ssize_t)total);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct seen s = {.limit = limit};
    bufferevent_setcb(bev, on_read, NULL, on_event, &s);
    assert_int_equal(pc_bevread_own(bev, &s.rd, read_event, limit_of, &s.limit), 0);
    bufferevent_enable(bev, EV_READ);
    event_base_loop(base, EVLOOP_ONCE);
    *full = pc_bevread_may_hold(&s.rd);
    for (int i = 0; i < 200; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    *in_the_end = evbuffer_get_length(bufferevent_get_input(bev));
    assert_int_equal(s.events, 0);
    bufferevent_free(bev);
    event_base_free(base);
    close(sv[1]);
    return s.first_len;
}

static void test_reads_what_the_socket_holds_up_to_the_limit(void **state)
{
    (void)state;
    size_t end;
    int full;
    /* past libevent's 4 KB a read, in one callback */
    assert_int_equal(first_callback_sees(65536, 20000, &end, &full), 20000);
    assert_int_equal(end, 20000);
    assert_false(full);
    /* a short read is the whole of it */
    assert_int_equal(first_callback_sees(65536, 100, &end, &full), 100);
    assert_false(full);
    /* past one reservation (60 KB): several reads in one callback */
    assert_int_equal(first_callback_sees(1 << 20, 300000, &end, &full), 300000);
    assert_false(full);
    /* the limit: the rest comes in later callbacks (level-triggered), nothing lost */
    assert_int_equal(first_callback_sees(4096, 20000, &end, &full), 4096);
    assert_true(full);
    assert_int_equal(end, 20000);
    /* exactly the limit: said to be full (the socket may hold more); nothing lost */
    assert_int_equal(first_callback_sees(4096, 4096, &end, &full), 4096);
    assert_true(full);
    assert_int_equal(end, 4096);
}

/* A bufferevent on fd read by its own read into s (limit 64 KB), on a loop of three
 * priorities, its read at the top; peer is the other end. */
struct rig {
    struct event_base *base;
    struct bufferevent *bev;
    int peer;
};

static void rig_on(struct rig *g, struct seen *s, int fd, int peer)
{
    evutil_make_socket_nonblocking(fd);
    g->base = event_base_new();
    event_base_priority_init(g->base, 3);
    g->bev = bufferevent_socket_new(g->base, fd, BEV_OPT_CLOSE_ON_FREE);
    g->peer = peer;
    bufferevent_priority_set(g->bev, 0);
    s->limit = 65536;
    bufferevent_setcb(g->bev, on_read, NULL, on_event, s);
    assert_int_equal(pc_bevread_own(g->bev, &s->rd, read_event, limit_of, &s->limit), 0);
}

static void rig_pair(struct rig *g, struct seen *s)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    rig_on(g, s, sv[0], sv[1]);
}

static void rig_down(struct rig *g)
{
    if (g->bev != NULL)
        bufferevent_free(g->bev);
    event_base_free(g->base);
    if (g->peer >= 0)
        close(g->peer);
}

/* The end: the event callback with BEV_EVENT_EOF | BEV_EVENT_READING, reading disabled;
 * the bytes before it read first. */
static void test_the_end_goes_to_the_event_callback(void **state)
{
    (void)state;
    struct rig g;
    struct seen s = {0};
    rig_pair(&g, &s);
    bufferevent_enable(g.bev, EV_READ);
    assert_int_equal(write(g.peer, "hello", 5), 5);
    close(g.peer);
    g.peer = -1;
    for (int i = 0; i < 10; i++)
        event_base_loop(g.base, EVLOOP_NONBLOCK);
    assert_int_equal(s.callbacks, 1);
    assert_int_equal(evbuffer_get_length(bufferevent_get_input(g.bev)), 5);
    assert_int_equal(s.events, BEV_EVENT_EOF | BEV_EVENT_READING);
    assert_false(bufferevent_get_enabled(g.bev) & EV_READ);
    rig_down(&g);
}

/* A reset connection: BEV_EVENT_ERROR | BEV_EVENT_READING. */
static void test_an_error_goes_to_the_event_callback(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    int cs = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(cs, (struct sockaddr *)&a, sizeof a), 0);
    int ss = accept(ls, NULL, NULL);
    assert_true(ss >= 0);
    struct rig g;
    struct seen s = {0};
    rig_on(&g, &s, cs, -1);
    bufferevent_enable(g.bev, EV_READ);
    struct linger lg = {1, 0}; /* close with a reset */
    setsockopt(ss, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(ss);
    for (int i = 0; i < 10 && s.events == 0; i++)
        event_base_loop(g.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(s.callbacks, 0);
    assert_int_equal(s.events, BEV_EVENT_ERROR | BEV_EVENT_READING);
    assert_false(bufferevent_get_enabled(g.bev) & EV_READ);
    rig_down(&g);
    close(ls);
}

/* The read timeout (bufferevent_set_timeouts): BEV_EVENT_TIMEOUT | BEV_EVENT_READING. */
static void test_the_read_timeout_goes_to_the_event_callback(void **state)
{
    (void)state;
    struct rig g;
    struct seen s = {0};
    rig_pair(&g, &s);
    struct timeval t = {0, 20000};
    bufferevent_set_timeouts(g.bev, &t, NULL);
    bufferevent_enable(g.bev, EV_READ);
    event_base_loop(g.base, EVLOOP_ONCE);
    assert_int_equal(s.events, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
    assert_false(bufferevent_get_enabled(g.bev) & EV_READ);
    rig_down(&g);
}

/* The read callback may free the bufferevent (and its owner with the pc_bevread). */
static void test_the_read_callback_may_free_the_bufferevent(void **state)
{
    (void)state;
    struct rig g;
    struct seen *s = calloc(1, sizeof *s);
    rig_pair(&g, s);
    s->free_in_cb = 1;
    bufferevent_enable(g.bev, EV_READ);
    assert_int_equal(write(g.peer, "x", 1), 1);
    event_base_loop(g.base, EVLOOP_ONCE);
    assert_int_equal(s->callbacks, 1);
    free(s);
    g.bev = NULL;
    rig_down(&g);
}

/* The read event keeps its priority; once reading is enabled, it cannot be set up again. */
static void test_the_event_keeps_its_priority(void **state)
{
    (void)state;
    struct rig g;
    struct seen s = {0};
    rig_pair(&g, &s);
    assert_int_equal(bufferevent_get_priority(g.bev), 0);
    bufferevent_enable(g.bev, EV_READ);
    assert_int_equal(pc_bevread_own(g.bev, &s.rd, read_event, limit_of, &s.limit), -1);
    rig_down(&g);
}

/* ---- edge-triggered reading ------------------------------------------------------- */

struct edge {
    struct pc_bevread rd;
    int rearm;     /* the callback asks again when bytes may be left */
    size_t per_cb; /* the read's limit */
    int callbacks;
    short events; /* the event callback's */
};

static void on_edge_read(struct bufferevent *bev, void *arg)
{
    struct edge *e = arg;
    e->callbacks++;
    if (pc_bevread_may_hold(&e->rd) && e->rearm)
        pc_bevread_rearm(bev);
}

/* The epoll registration of fd in this process's epoll instances: its events mask, or 0. */
static unsigned epoll_events_of(int fd)
{
    unsigned found = 0;
    for (int efd = 3; efd < 1024 && found == 0; efd++) {
        char path[64], link[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", efd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = 0;
        if (strcmp(link, "anon_inode:[eventpoll]") != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", efd);
        FILE *f = fopen(path, "r");
        char line[256];
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            int tfd;
            unsigned ev;
            if (sscanf(line, "tfd: %d events: %x", &tfd, &ev) == 2 && tfd == fd)
                found = ev;
        }
        if (f != NULL)
            fclose(f);
    }
    return found;
}

/* 300 KB written at once to an edge-triggered bufferevent whose read takes 12 KB:
 * with pc_bevread_rearm every byte arrives; without it the bytes left in the socket bring
 * no new edge and reading stops (the reason the callback must ask again). */
static size_t edge_receives(int rearm, int *callbacks, unsigned *events)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    evutil_make_socket_nonblocking(sv[0]);
    static char data[300000];
    memset(data, 'y', sizeof data);
    struct event_config *cfg = event_config_new();
    event_config_avoid_method(cfg, "poll");
    event_config_avoid_method(cfg, "select");
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    assert_string_equal(event_base_get_method(base), "epoll");
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct edge e = {.rearm = rearm, .per_cb = 4096 + 8192};
    assert_int_equal(pc_bevread_own(bev, &e.rd, read_event, limit_of, &e.per_cb), 0);
    assert_int_equal(pc_bevread_edge(bev, &e.rd), 0);
    bufferevent_setcb(bev, on_edge_read, NULL, NULL, &e);
    bufferevent_enable(bev, EV_READ);
    *events = epoll_events_of(sv[0]);
    assert_int_equal(write(sv[1], data, sizeof data), (ssize_t)sizeof data);
    for (int i = 0; i < 200; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    size_t got = evbuffer_get_length(bufferevent_get_input(bev));
    *callbacks = e.callbacks;
    /* once it is enabled, edge-triggered reading cannot be set up again */
    assert_int_equal(pc_bevread_edge(bev, &e.rd), -1);
    pc_bevread_release(&e.rd);
    bufferevent_free(bev);
    event_base_free(base);
    close(sv[1]);
    return got;
}

static void test_edge_triggered_reading_asks_again_for_what_is_left(void **state)
{
    (void)state;
    int callbacks;
    unsigned events;
    assert_int_equal(edge_receives(1, &callbacks, &events), 300000);
    assert_true(events & (1u << 31)); /* EPOLLET */
    assert_true(events & 1u);         /* EPOLLIN */
    assert_int_equal(callbacks, (300000 + 4096 + 8192 - 1) / (4096 + 8192));
    /* without asking again: one edge, one callback, 12 KB */
    assert_int_equal(edge_receives(0, &callbacks, &events), 4096 + 8192);
    assert_int_equal(callbacks, 1);
}

/* The read event added again (disabled, then enabled) looks at the socket: bytes that came
 * while reading was off are read, edge-triggered or not. */
static void test_rearm_is_nothing_while_reading_is_off(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct edge e = {.rearm = 1, .per_cb = 65536};
    assert_int_equal(pc_bevread_own(bev, &e.rd, read_event, limit_of, &e.per_cb), 0);
    assert_int_equal(pc_bevread_edge(bev, &e.rd), 0);
    bufferevent_setcb(bev, on_edge_read, NULL, NULL, &e);
    pc_bevread_rearm(bev); /* off: stays off */
    assert_false(bufferevent_get_enabled(bev) & EV_READ);
    assert_int_equal(write(sv[1], "abc", 3), 3);
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(e.callbacks, 0);
    bufferevent_enable(bev, EV_READ);
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(e.callbacks, 1);
    assert_int_equal(evbuffer_get_length(bufferevent_get_input(bev)), 3);
    pc_bevread_release(&e.rd);
    bufferevent_free(bev);
    event_base_free(base);
    close(sv[1]);
}

static void on_edge_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    ((struct edge *)arg)->events |= what;
}

/* The request and the peer's end (a half-close) both in the socket before the loop looks:
 * one edge. The read callback's short read leaves the end unread; the watch of the peer's
 * end asks again, and the end is read (BEV_EVENT_EOF), as it is level-triggered. */
static void end_after(size_t len, size_t per_cb)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct edge e = {.rearm = 1, .per_cb = per_cb};
    assert_int_equal(pc_bevread_own(bev, &e.rd, read_event, limit_of, &e.per_cb), 0);
    assert_int_equal(pc_bevread_edge(bev, &e.rd), 0);
    bufferevent_setcb(bev, on_edge_read, NULL, on_edge_event, &e);
    static char data[200000];
    memset(data, 'r', sizeof data);
    assert_int_equal(write(sv[1], data, len), (ssize_t)len);
    shutdown(sv[1], SHUT_WR);
    bufferevent_enable(bev, EV_READ);
    for (int i = 0; i < 100 && !(e.events & BEV_EVENT_EOF); i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(evbuffer_get_length(bufferevent_get_input(bev)), len);
    assert_true(e.events & BEV_EVENT_EOF);
    pc_bevread_release(&e.rd);
    bufferevent_free(bev);
    event_base_free(base);
    close(sv[1]);
}

static void test_the_end_that_came_with_the_last_bytes_is_read(void **state)
{
    (void)state;
    end_after(7, 65536);        /* a request and the end, read in one short read */
    end_after(200000, 8192);    /* many reads, each asked for; the last one short */
    end_after(4096 + 100, 100); /* the watch fires while bytes are still unread */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_what_the_socket_holds_up_to_the_limit),
        cmocka_unit_test(test_the_end_goes_to_the_event_callback),
        cmocka_unit_test(test_an_error_goes_to_the_event_callback),
        cmocka_unit_test(test_the_read_timeout_goes_to_the_event_callback),
        cmocka_unit_test(test_the_read_callback_may_free_the_bufferevent),
        cmocka_unit_test(test_the_event_keeps_its_priority),
        cmocka_unit_test(test_edge_triggered_reading_asks_again_for_what_is_left),
        cmocka_unit_test(test_rearm_is_nothing_while_reading_is_off),
        cmocka_unit_test(test_the_end_that_came_with_the_last_bytes_is_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
