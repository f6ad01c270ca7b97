/* bevread: a read callback takes what the socket holds at once, past libevent's 4 KB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_what_the_socket_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
