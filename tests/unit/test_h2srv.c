/*
 * The HTTP/2 server on one connection (pc_h2_server_adopt_conn on a socketpair, the loop
 * run without blocking): a client's bytes written by hand, the server's read back as
 * frames. These are the cases the fuzz target (tests/fuzz/fuzz_h2srv.c) found: a gone
 * callback that answers another request of the same connection, while the connection is
 * being freed and while the session is sending.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "predcache/h2srv.h"
#include "predcache/log.h"

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\x00\x00\x00\x04\x00\x00\x00\x00\x00"; /* empty SETTINGS */
/* HEADERS (END_STREAM | END_HEADERS) of a POST to / without a body on stream 1, then on
 * stream 3: :method POST, :scheme http, :path / (HPACK's static table), :authority "h". */
static const uint8_t two_calls[] = "\x00\x00\x06\x01\x05\x00\x00\x00\x01\x83\x86\x84\x01\x01h"
                                   "\x00\x00\x06\x01\x05\x00\x00\x00\x03\x83\x86\x84\x01\x01h";
#define LEN(a) (sizeof(a) - 1)

/* Holds every request; the first one's gone callback answers the second (a flight's
 * leader whose client left answers the call that waited on it). */
struct calls {
    struct pc_h2_req *req[4];
    size_t n;
    int gone;
};

static void gone_first(void *arg)
{
    struct calls *t = arg;
    t->gone++;
    struct pc_header tr[] = {{(char *)"grpc-status", (char *)"0"}};
    pc_h2_reply(t->req[0], 200, NULL, 0, NULL, 0, tr, 1); /* orphaned: only freed */
    t->req[0] = NULL;
    if (t->req[1] != NULL) {
        pc_h2_reply(t->req[1], 200, NULL, 0, NULL, 0, tr, 1); /* Trailers-Only */
        t->req[1] = NULL;
    }
}

static void hold(struct pc_h2_req *req, void *arg)
{
    struct calls *t = arg;
    assert_true(t->n < 4);
    if (t->n == 0)
        pc_h2_req_on_gone(req, gone_first, t);
    t->req[t->n++] = req;
}

struct conn {
    struct event_base *base;
    struct pc_h2_server *srv;
    int fd; /* the client's end */
    uint8_t out[65536];
    size_t out_len;
};

static void conn_open(struct conn *c, struct calls *t)
{
    static const struct pc_h2_limits lim = {.max_header_bytes = 8192,
                                            .max_body_bytes = 65536,
                                            .max_streams = 100,
                                            .max_connections = 1,
                                            .idle_timeout_ms = 60000};
    memset(c, 0, sizeof *c);
    pc_log_set_level(PC_LOG_ERROR);
    c->base = event_base_new();
    assert_non_null(c->base);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    c->srv = pc_h2_server_new_unbound(c->base, &lim, hold, t);
    assert_non_null(c->srv);
    assert_int_equal(pc_h2_server_adopt_conn(c->srv, sv[1], NULL), 0);
    assert_int_equal(pc_h2_server_connections(c->srv), 1);
    c->fd = sv[0];
}

/* Writes the client's bytes, then runs the loop and reads what the server sends until
 * nothing moves. */
static void conn_run(struct conn *c, const uint8_t *in, size_t len)
{
    assert_int_equal(send(c->fd, in, len, MSG_NOSIGNAL), (ssize_t)len);
    for (int quiet = 0, i = 0; quiet < 3 && i < 1000; i++) {
        event_base_loop(c->base, EVLOOP_NONBLOCK);
        ssize_t n = recv(c->fd, c->out + c->out_len, sizeof c->out - c->out_len, MSG_DONTWAIT);
        if (n > 0)
            c->out_len += (size_t)n;
        quiet = n > 0 ? 0 : quiet + 1;
    }
}

static void conn_close(struct conn *c)
{
    pc_h2_server_free(c->srv);
    close(c->fd);
    event_base_free(c->base);
}

/* The client breaks the protocol (DATA on stream 0) while both calls are held: the server
 * sends GOAWAY and frees the connection once it is out. Freeing it orphans the first call,
 * whose gone callback answers the second: that answer must not free the connection a
 * second time from inside its own freeing. */
static void test_gone_answers_another_while_closing(void **state)
{
    (void)state;
    struct calls t = {0};
    struct conn c;
    conn_open(&c, &t);
    static const uint8_t bad[] = "\x00\x00\x00\x00\x00\x00\x00\x00\x00"; /* DATA, stream 0 */
    uint8_t in[256];
    size_t n = 0;
    memcpy(in + n, preface, LEN(preface));
    n += LEN(preface);
    memcpy(in + n, two_calls, LEN(two_calls));
    n += LEN(two_calls);
    memcpy(in + n, bad, LEN(bad));
    n += LEN(bad);
    conn_run(&c, in, n);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.gone, 1);
    assert_null(t.req[1]);
    assert_int_equal(pc_h2_server_connections(c.srv), 0);
    conn_close(&c);
}

/* The client overflows stream 1's window (WINDOW_UPDATE of 2^31-1 on it) while both calls
 * are held: the server resets stream 1, and its stream closes while the session sends the
 * reset. The gone callback answers stream 3 from there: the answer is sent once, after
 * the reset, and the server's bytes stay whole frames. */
static void test_gone_answers_another_while_sending(void **state)
{
    (void)state;
    struct calls t = {0};
    struct conn c;
    conn_open(&c, &t);
    static const uint8_t overflow[] = "\x00\x00\x04\x08\x00\x00\x00\x00\x01\x7f\xff\xff\xff";
    uint8_t in[256];
    size_t n = 0;
    memcpy(in + n, preface, LEN(preface));
    n += LEN(preface);
    memcpy(in + n, two_calls, LEN(two_calls));
    n += LEN(two_calls);
    memcpy(in + n, overflow, LEN(overflow));
    n += LEN(overflow);
    conn_run(&c, in, n);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.gone, 1);
    assert_null(t.req[1]);

    /* SETTINGS, WINDOW_UPDATE, SETTINGS ACK, RST_STREAM 1, HEADERS 3 (END_STREAM) */
    int rst1 = 0, headers3 = 0;
    size_t off = 0, frames = 0;
    while (off + 9 <= c.out_len) {
        const uint8_t *h = c.out + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        uint32_t id = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
        assert_true(h[3] <= 9); /* a frame type there is */
        if (h[3] == 3) {
            assert_int_equal(id, 1);
            rst1++;
        }
        if (h[3] == 1) {
            assert_int_equal(id, 3);
            assert_int_equal(h[4] & 1, 1); /* END_STREAM: Trailers-Only */
            assert_int_equal(rst1, 1);     /* after the reset */
            headers3++;
        }
        off += 9 + len;
        frames++;
    }
    assert_int_equal(off, c.out_len);
    assert_int_equal(rst1, 1);
    assert_int_equal(headers3, 1);
    assert_int_equal(frames, 5);
    conn_close(&c);
}

/* The server's frames in c->out from off: calls fn on each (type, flags, stream, payload). */
struct frame {
    uint8_t type, flags;
    uint32_t id;
    const uint8_t *p;
    size_t len;
};

static size_t frames_of(const struct conn *c, size_t off, struct frame *f, size_t max)
{
    size_t n = 0;
    while (off + 9 <= c->out_len && n < max) {
        const uint8_t *h = c->out + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        assert_true(off + 9 + len <= c->out_len);
        f[n++] = (struct frame){
            h[3], h[4],
            ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) &
                0x7fffffffu,
            h + 9, len};
        off += 9 + len;
    }
    assert_int_equal(off, c->out_len);
    return n;
}

static uint32_t goaway_last(const struct frame *f)
{
    return ((uint32_t)f->p[0] << 24 | (uint32_t)f->p[1] << 16 | (uint32_t)f->p[2] << 8 | f->p[3]) &
           0x7fffffffu;
}

/* A stop (a reload): the server announces it first (GOAWAY with the last stream 2^31-1, and
 * a PING). A call the client sent before it read that is still taken; once the PING's
 * answer is back, the last GOAWAY names it. Both calls answered, the server half-closes
 * and waits for the client's end: it does not close under the client's unread bytes. */
static void test_stop_takes_the_streams_sent_before_the_notice_was_read(void **state)
{
    (void)state;
    struct calls t = {0};
    struct conn c;
    conn_open(&c, &t);
    uint8_t in[256];
    size_t n = 0;
    memcpy(in + n, preface, LEN(preface));
    n += LEN(preface);
    memcpy(in + n, two_calls, 15); /* stream 1 only */
    n += 15;
    conn_run(&c, in, n);
    assert_int_equal(t.n, 1);
    size_t seen = c.out_len;

    pc_h2_server_stop_accepting(c.srv);
    for (int i = 0; i < 20; i++) {
        event_base_loop(c.base, EVLOOP_NONBLOCK);
        ssize_t k = recv(c.fd, c.out + c.out_len, sizeof c.out - c.out_len, MSG_DONTWAIT);
        if (k > 0)
            c.out_len += (size_t)k;
    }
    struct frame f[16];
    size_t nf = frames_of(&c, seen, f, 16);
    const struct frame *ping = NULL;
    int notice = 0;
    for (size_t i = 0; i < nf; i++) {
        if (f[i].type == 7)
            notice += goaway_last(&f[i]) == 0x7fffffffu;
        if (f[i].type == 6 && !(f[i].flags & 1))
            ping = &f[i];
    }
    assert_int_equal(notice, 1); /* not the last stream processed, 1: stream 3 would be refused */
    assert_non_null(ping);
    assert_int_equal(ping->len, 8);

    /* stream 3 was on its way; then the PING's answer */
    seen = c.out_len;
    n = 0;
    memcpy(in + n, two_calls + 15, 15);
    n += 15;
    memcpy(in + n, "\x00\x00\x08\x06\x01\x00\x00\x00\x00", 9);
    memcpy(in + n + 9, ping->p, 8);
    n += 17;
    conn_run(&c, in, n);
    assert_int_equal(t.n, 2); /* taken, not refused */
    nf = frames_of(&c, seen, f, 16);
    int final = 0;
    for (size_t i = 0; i < nf; i++)
        if (f[i].type == 7) {
            assert_int_equal(goaway_last(&f[i]), 3);
            final++;
        }
    assert_int_equal(final, 1);

    struct pc_header tr[] = {{(char *)"grpc-status", (char *)"0"}};
    pc_h2_reply(t.req[0], 200, NULL, 0, NULL, 0, tr, 1);
    pc_h2_reply(t.req[1], 200, NULL, 0, NULL, 0, tr, 1);
    t.req[0] = t.req[1] = NULL;
    conn_run(&c, (const uint8_t *)"", 0);
    char b;
    assert_int_equal(recv(c.fd, &b, 1, MSG_DONTWAIT), 0); /* half-closed: the client sees the end */
    assert_int_equal(pc_h2_server_connections(c.srv), 1); /* and the server waits for its */
    shutdown(c.fd, SHUT_WR);
    for (int i = 0; i < 20 && pc_h2_server_connections(c.srv) > 0; i++)
        event_base_loop(c.base, EVLOOP_NONBLOCK);
    assert_int_equal(pc_h2_server_connections(c.srv), 0);
    conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gone_answers_another_while_closing),
        cmocka_unit_test(test_gone_answers_another_while_sending),
        cmocka_unit_test(test_stop_takes_the_streams_sent_before_the_notice_was_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
