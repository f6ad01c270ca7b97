/* bevread: a read callback takes what the socket holds at once, past libevent's 4 KB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "predcache/bevread.h"

struct seen {
    struct pc_bevread rd;
    int more; /* pc_bevread_more called */
    size_t first_len;
    int callbacks;
};

static void on_read(struct bufferevent *bev, void *arg)
{
    struct seen *s = arg;
    if (s->more)
        pc_bevread_more(bev, &s->rd, 65536);
    if (s->callbacks++ == 0)
        s->first_len = evbuffer_get_length(bufferevent_get_input(bev));
}

/* 20000 bytes waiting: one callback sees them all with pc_bevread_more, 4096 without. */
static size_t first_callback_sees(int more, size_t total, size_t *in_the_end)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    static char data[20000];
    memset(data, 'x', sizeof data);
    assert_int_equal(write(sv[1], data, total), (ssize_t)total);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    struct seen s = {.more = more};
    assert_int_equal(pc_bevread_follow(bev, &s.rd), 0);
    bufferevent_set_max_single_read(bev, 65536);
    bufferevent_setcb(bev, on_read, NULL, NULL, &s);
    bufferevent_enable(bev, EV_READ);
    event_base_loop(base, EVLOOP_ONCE);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    *in_the_end = evbuffer_get_length(bufferevent_get_input(bev));
    bufferevent_free(bev);
    event_base_free(base);
    close(sv[1]);
    return s.first_len;
}

static void test_reads_what_the_socket_holds(void **state)
{
    (void)state;
    size_t end;
    assert_int_equal(first_callback_sees(1, 20000, &end), 20000);
    assert_int_equal(end, 20000);
    /* without it, libevent's cap: the reason for the module */
    assert_int_equal(first_callback_sees(0, 20000, &end), 4096);
    assert_int_equal(end, 20000);
    /* a short read is the whole of it: nothing more is asked of the socket */
    assert_int_equal(first_callback_sees(1, 100, &end), 100);
    /* exactly the cap: one more read, which finds nothing, and nothing is lost */
    assert_int_equal(first_callback_sees(1, 4096, &end), 4096);
    assert_int_equal(end, 4096);
}

/* ---- edge-triggered reading ------------------------------------------------------- */

struct edge {
    struct pc_bevread rd;
    int rearm;     /* the callback asks again when bytes may be left */
    size_t per_cb; /* what the callback reads past libevent's own read */
    int callbacks;
    short events; /* the event callback's */
};

static void on_edge_read(struct bufferevent *bev, void *arg)
{
    struct edge *e = arg;
    e->callbacks++;
    int more = pc_bevread_may_hold(&e->rd);
    if (more)
        more = pc_bevread_more(bev, &e->rd, e->per_cb);
    if (more && e->rearm)
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

/* 300 KB written at once to an edge-triggered bufferevent whose callback takes 4 KB + 8 KB:
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
    struct edge e = {.rearm = rearm, .per_cb = 8192};
    assert_int_equal(pc_bevread_follow(bev, &e.rd), 0);
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
    assert_true(callbacks >= 300000 / (4096 + 8192));
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
    assert_int_equal(pc_bevread_follow(bev, &e.rd), 0);
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
    assert_int_equal(pc_bevread_follow(bev, &e.rd), 0);
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
        cmocka_unit_test(test_reads_what_the_socket_holds),
        cmocka_unit_test(test_edge_triggered_reading_asks_again_for_what_is_left),
        cmocka_unit_test(test_rearm_is_nothing_while_reading_is_off),
        cmocka_unit_test(test_the_end_that_came_with_the_last_bytes_is_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
