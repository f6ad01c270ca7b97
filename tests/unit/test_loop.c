/* loop: a worker's loop has its three priorities, and a top-priority event that becomes
 * ready during a callback runs before the next waiting callback; work put off until the
 * loop is idle (pc_loop_later) runs then, or at its bound. */
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

static void nothing_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Its priorities; an event made without one (libevent: the middle) is at PC_LOOP_DEFAULT,
 * as every client's, model server's and timer's event is. */
static void test_the_priorities(void **state)
{
    (void)state;
    struct event_base *base = pc_loop_new();
    assert_non_null(base);
    assert_int_equal(event_base_get_npriorities(base), PC_LOOP_PRIORITIES);
    assert_true(PC_LOOP_FIRST < PC_LOOP_DEFAULT && PC_LOOP_DEFAULT < PC_LOOP_IDLE);
    assert_int_equal(PC_LOOP_IDLE, PC_LOOP_PRIORITIES - 1);
    struct event *ev = event_new(base, -1, 0, nothing_cb, NULL);
    assert_non_null(ev);
    assert_int_equal(event_get_priority(ev), PC_LOOP_DEFAULT);
    event_free(ev);
    assert_int_equal(pc_loop_priority(base, PC_LOOP_IDLE), PC_LOOP_IDLE);
    event_base_free(base);
    /* A loop of one priority: everything at its only one. */
    struct event_base *one = event_base_new();
    assert_non_null(one);
    assert_int_equal(pc_loop_priority(one, PC_LOOP_IDLE), 0);
    assert_int_equal(pc_loop_priority(one, PC_LOOP_FIRST), 0);
    event_base_free(one);
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

/* ---- pc_loop_later ---- */

struct later_rec {
    int ran;       /* times the later's fn ran */
    int busy_runs; /* times the busy callback ran */
    int ran_at;    /* busy_runs when fn first ran */
    int keep_busy; /* the busy callback activates itself again, until fn ran */
    struct event *busy;
};

static void later_fn(void *arg)
{
    struct later_rec *r = arg;
    if (r->ran++ == 0)
        r->ran_at = r->busy_runs;
}

static void busy_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct later_rec *r = arg;
    r->busy_runs++;
    /* 2M runs at most: a bound that never came fails the test instead of hanging it. */
    if (r->keep_busy && r->ran == 0 && r->busy_runs < 2000000)
        event_active(r->busy, EV_TIMEOUT, 1);
}

/* Armed while three default callbacks wait: runs once, after all of them; armed twice, still
 * once; disarmed, not at all. */
static void test_later_runs_once_the_loop_is_idle(void **state)
{
    (void)state;
    struct event_base *base = pc_loop_new();
    struct later_rec r = {0};
    struct pc_loop_later l;
    assert_int_equal(pc_loop_later_init(&l, base, 1000, later_fn, &r), 0);
    struct event *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = event_new(base, -1, 0, busy_cb, &r);
        event_active(w[i], EV_TIMEOUT, 1);
    }
    pc_loop_later_arm(&l);
    pc_loop_later_arm(&l);
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.ran, 1);
    assert_int_equal(r.ran_at, 3);
    pc_loop_later_arm(&l);
    pc_loop_later_disarm(&l);
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.ran, 1);
    for (int i = 0; i < 3; i++)
        event_free(w[i]);
    pc_loop_later_free(&l);
    pc_loop_later_free(&l); /* twice: nothing */
    event_base_free(base);
}

/* A loop that is never idle (a callback that activates itself again): the bound runs it. */
static void test_later_runs_at_its_bound_in_a_busy_loop(void **state)
{
    (void)state;
    struct event_base *base = pc_loop_new();
    struct later_rec r = {.keep_busy = 1};
    r.busy = event_new(base, -1, 0, busy_cb, &r);
    struct pc_loop_later l;
    assert_int_equal(pc_loop_later_init(&l, base, 5, later_fn, &r), 0);
    event_active(r.busy, EV_TIMEOUT, 1);
    pc_loop_later_arm(&l);
    /* One call runs until nothing is active: the busy callback stops once fn ran. */
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.ran, 1);
    assert_true(r.ran_at > 10); /* not before the busy callbacks: at the bound */
    /* It ran once: the idle event is gone with it, though the loop is idle now. */
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.ran, 1);
    event_free(r.busy);
    pc_loop_later_free(&l);
    event_base_free(base);
}

/* On a loop of one priority it still runs after what waited before it was armed. */
static void test_later_on_a_plain_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct later_rec r = {0};
    struct pc_loop_later l;
    assert_int_equal(pc_loop_later_init(&l, base, 1000, later_fn, &r), 0);
    struct event *w = event_new(base, -1, 0, busy_cb, &r);
    event_active(w, EV_TIMEOUT, 1);
    pc_loop_later_arm(&l);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.ran, 1);
    assert_int_equal(r.ran_at, 1);
    event_free(w);
    pc_loop_later_free(&l);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_priorities),
        cmocka_unit_test(test_a_ready_top_event_runs_before_the_next_waiting_callback),
        cmocka_unit_test(test_later_runs_once_the_loop_is_idle),
        cmocka_unit_test(test_later_runs_at_its_bound_in_a_busy_loop),
        cmocka_unit_test(test_later_on_a_plain_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
