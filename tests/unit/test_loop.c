/* loop: a worker's loop has its three priorities, and a top-priority event that becomes
 * ready during a callback runs before the next waiting callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "predcache/loop.h"

struct rec {
    int order[8];
    int n;
    int wfd; /* what the first callback writes to, or -1 */
};

static void step(struct rec *r, int id)
{
    if (r->n < 8)
        r->order[r->n++] = id;
}

static void waiting_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rec *r = arg;
    step(r, r->n == 0 ? 1 : 3);
    if (r->n == 1 && r->wfd >= 0)
        assert_int_equal(write(r->wfd, "x", 1), 1);
}

static void top_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char c;
    assert_int_equal(read(fd, &c, 1), 1);
    step(arg, 2);
}

static void test_the_priorities(void **state)
{
    (void)state;
    struct event_base *base = pc_loop_new();
    assert_non_null(base);
    assert_int_equal(event_base_get_npriorities(base), PC_LOOP_PRIORITIES);
    event_base_free(base);
}

/* Two callbacks wait at the default priority; the first makes a socket readable whose
 * event is at the top: it runs between the two (a plain loop of three priorities runs it
 * after both, when it next looks for events). */
static void order_with(struct event_base *base, int expect_between)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct rec r = {.wfd = sv[1]};
    struct event *top = event_new(base, sv[0], EV_READ | EV_PERSIST, top_cb, &r);
    struct event *a = event_new(base, -1, 0, waiting_cb, &r);
    struct event *b = event_new(base, -1, 0, waiting_cb, &r);
    assert_int_equal(event_priority_set(top, PC_LOOP_FIRST), 0);
    assert_int_equal(event_add(top, NULL), 0);
    event_active(a, EV_TIMEOUT, 1);
    event_active(b, EV_TIMEOUT, 1);
    for (int i = 0; i < 100 && r.n < 3; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.order[0], 1);
    assert_int_equal(r.order[1], expect_between ? 2 : 3);
    assert_int_equal(r.order[2], expect_between ? 3 : 2);
    event_free(top);
    event_free(a);
    event_free(b);
    close(sv[0]);
    close(sv[1]);
}

static void test_a_ready_top_event_runs_before_the_next_waiting_callback(void **state)
{
    (void)state;
    struct event_base *base = pc_loop_new();
    assert_non_null(base);
    order_with(base, 1);
    event_base_free(base);
    /* The reference: what a loop without the dispatch limit does. */
    struct event_base *plain = event_base_new();
    assert_non_null(plain);
    assert_int_equal(event_base_priority_init(plain, PC_LOOP_PRIORITIES), 0);
    order_with(plain, 0);
    event_base_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_priorities),
        cmocka_unit_test(test_a_ready_top_event_runs_before_the_next_waiting_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
