/*
 * Unit tests of h1parse, the HTTP/1.1 request reader: fields, framing lists, limits,
 * chunked bodies, pipelining, and input cut anywhere. Every case is also read by the
 * plain reference (tests/ref/h1parse_ref.c) the fuzz target holds the reader against.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../ref/h1parse_ref.h"
#include "predcache/h1parse.h"

#define INCOMPLETE (-1)

static const struct pc_h1_limits DEFAULTS = {16384, 16u << 20};

/* Feeds s in pieces of at most step bytes (0: whole); 0 when complete, INCOMPLETE, or the
 * refusal's status. r is left initialised: the caller releases it. */
static int read_req(const char *s, size_t n, const struct pc_h1_limits *lim, size_t step,
                    struct pc_h1req *r, size_t *used)
{
    pc_h1parse_init(r, lim);
    size_t pos = 0;
    for (;;) {
        size_t take = step == 0 || n - pos < step ? n - pos : step, u = 0;
        enum pc_h1_result res = pc_h1parse_feed(r, s + pos, take, &u);
        pos += u;
        if (res == PC_H1_HEAD)
            continue;
        if (res == PC_H1_MORE && pos < n)
            continue;
        *used = pos;
        return res == PC_H1_DONE ? 0 : res == PC_H1_MORE ? INCOMPLETE : r->status;
    }
}

/* The status reading s gives, checked to be the reference's and the same for every way
 * of cutting s into two pieces and for one byte at a time. */
static int status_of_lim(const char *s, const struct pc_h1_limits *lim)
{
    size_t n = strlen(s), used, used2;
    struct pc_h1req r, r2;
    int st = read_req(s, n, lim, 0, &r, &used);
    struct pc_ref_h1 ref;
    int want = pc_ref_h1_read(s, n, lim, &ref);
    if (st != want)
        fprintf(stderr, "%d, the reference %d, for: %s\n", st, want, s);
    assert_int_equal(st, want);
    if (st == 0)
        assert_int_equal(used, ref.consumed);
    pc_ref_h1_free(&ref);
    assert_int_equal(read_req(s, n, lim, 1, &r2, &used2), st);
    if (st <= 0) /* how much a refused request consumed does not matter */
        assert_int_equal(used2, used);
    pc_h1parse_release(&r2);
    for (size_t cut = 1; cut < n; cut++) {
        pc_h1parse_init(&r2, lim);
        size_t u1 = 0, u2 = 0;
        enum pc_h1_result res = pc_h1parse_feed(&r2, s, cut, &u1);
        while (res == PC_H1_HEAD)
            res = pc_h1parse_feed(&r2, s + u1, cut - u1, &u2), u1 += u2;
        if (res == PC_H1_MORE) {
            res = pc_h1parse_feed(&r2, s + cut, n - cut, &u2);
            u1 += u2;
            while (res == PC_H1_HEAD)
                res = pc_h1parse_feed(&r2, s + u1, n - u1, &u2), u1 += u2;
        }
        int st2 = res == PC_H1_DONE ? 0 : res == PC_H1_MORE ? INCOMPLETE : r2.status;
        assert_int_equal(st2, st);
        if (st == 0)
            assert_int_equal(u1, used);
        pc_h1parse_release(&r2);
    }
    pc_h1parse_release(&r);
    return st;
}

static int status_of(const char *s)
{
    return status_of_lim(s, &DEFAULTS);
}

static void test_request_line_and_fields(void **state)
{
    (void)state;
    const char *s = "GET /v1/models/m?x=1&y HTTP/1.1\r\nHost: t\r\nX-A:  one two \t\r\n"
                    "Empty:\r\nX-A: again\r\n\r\n";
    struct pc_h1req r;
    size_t used;
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_int_equal(used, strlen(s));
    assert_string_equal(r.method, "GET");
    assert_string_equal(r.target, "/v1/models/m?x=1&y");
    assert_string_equal(r.path, "/v1/models/m");
    assert_string_equal(r.query, "x=1&y");
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.n_headers, 4);
    assert_string_equal(r.headers[1].name, "X-A");
    assert_string_equal(r.headers[1].value, "one two");
    assert_string_equal(r.headers[2].value, "");
    assert_string_equal(r.headers[3].value, "again");
    assert_true(r.keep_alive);
    assert_false(r.is_head || r.chunked || r.expect_continue);
    assert_int_equal(r.body.len, 0);
    pc_h1parse_release(&r);
    assert_int_equal(status_of(s), 0);

    assert_int_equal(status_of("HEAD / HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/2.0\r\n\r\n"), 505);
    assert_int_equal(status_of("GET / HTTP/1.1\r\r\n\r\n"), 505); /* a CR is not a line end */
    assert_int_equal(status_of("GET / http/1.1\r\n\r\n"), 400);
    assert_int_equal(status_of("GET  / HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_int_equal(status_of("get / HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_int_equal(status_of("GET * HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_int_equal(status_of("GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX : a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\n: a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX: a\x7f\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX: a\tb\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: t\r\nX_Y: underscores are read\r\n\r\n"),
                     0);
    assert_int_equal(status_of("GET / HTTP/1.1\nHost: t\n\n"), 0); /* bare LF ends a line */
    const char nul[] = "GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n";
    struct pc_ref_h1 ref;
    assert_int_equal(read_req(nul, sizeof nul - 1, &DEFAULTS, 0, &r, &used), 400);
    pc_h1parse_release(&r);
    assert_int_equal(pc_ref_h1_read(nul, sizeof nul - 1, &DEFAULTS, &ref), 400);
    pc_ref_h1_free(&ref);
}

static void test_absolute_form(void **state)
{
    (void)state;
    struct {
        const char *target, *want;
    } cases[] = {
        {"http://h:80/p?q", "/p?q"}, {"HTTPS://h", "/"},
        {"http://h?x=1", "/?x=1"},   {"http://", "/"},
        {"http://h/", "/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[256];
        snprintf(s, sizeof s, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].target);
        struct pc_h1req r;
        size_t used;
        assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
        assert_string_equal(r.target, cases[i].want);
        pc_h1parse_release(&r);
        assert_int_equal(status_of(s), 0);
    }
    /* found by the reference: a control byte in the authority was dropped with it, unseen */
    assert_int_equal(status_of("GET http://h\x01x/p HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_int_equal(status_of("GET http://h\x7f/p HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
}

/* Transfer-Encoding lines are one list: the same answer one line or several. */
static void test_transfer_encoding_is_one_list(void **state)
{
    (void)state;
    struct {
        const char *lines;
        int status;
    } cases[] = {
        {"Transfer-Encoding: chunked\r\n", 0},
        {"Transfer-Encoding: CHUNKED \r\n", 0},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", 400},
        {"Transfer-Encoding: chunked, identity\r\n", 400},
        {"Transfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n", 400},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 501},
        {"Transfer-Encoding: chunked, chunked\r\n", 501},
        {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501},
        {"Transfer-Encoding: gzip, chunked\r\n", 501},
        {"Transfer-Encoding: gzip\r\n", 501},
        {"Transfer-Encoding: identity\r\n", 501},
        {"Transfer-Encoding: chunked;q=1\r\n", 501},
        {"Transfer-Encoding:\r\n", 400},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n", 400},
        {"Transfer-Encoding: chunked,\r\n", 400},
        {"Transfer-Encoding: , chunked\r\n", 400},
        {"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", 400},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
        {"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[512];
        snprintf(s, sizeof s, "POST / HTTP/1.1\r\nHost: t\r\n%s\r\n0\r\n\r\n", cases[i].lines);
        if (status_of(s) != cases[i].status)
            fail_msg("%s: %d, expected %d", cases[i].lines, status_of(s), cases[i].status);
    }
    /* RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing */
    assert_int_equal(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                     400);
}

static void test_content_length(void **state)
{
    (void)state;
    struct {
        const char *lines;
        int status;
    } cases[] = {
        {"Content-Length: 3\r\n", 0},
        {"Content-Length: 003\r\n", 0},
        {"Content-Length: 3\r\nContent-Length: 3\r\n", 400}, /* a list of two, as "3, 3" */
        {"Content-Length: 3, 3\r\n", 400},
        {"Content-Length: 3\r\ncontent-length: 4\r\n", 400},
        {"Content-Length:\r\n", 400},
        {"Content-Length: +3\r\n", 400},
        {"Content-Length: 0x3\r\n", 400},
        {"Content-Length: 3 3\r\n", 400},
        {"Content-Length: 16777217\r\n", 413},
        {"Content-Length: 18446744073709551615\r\n", 413},
        {"Content-Length: 18446744073709551616\r\n", 400},
        {"Content-Length: 99999999999999999999999\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[512];
        snprintf(s, sizeof s, "POST / HTTP/1.1\r\nHost: t\r\n%s\r\nabc", cases[i].lines);
        if (status_of(s) != cases[i].status)
            fail_msg("%s: %d, expected %d", cases[i].lines, status_of(s), cases[i].status);
    }
    const char *s = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab";
    assert_int_equal(status_of(s), INCOMPLETE);
}

static void test_connection_and_expect(void **state)
{
    (void)state;
    struct pc_h1req r;
    size_t used;
    const char *s =
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nConnection: x, Close\r\n\r\n";
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_false(r.keep_alive); /* "close" on any line */
    pc_h1parse_release(&r);
    s = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_true(r.keep_alive);
    pc_h1parse_release(&r);
    s = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_false(r.keep_alive);
    pc_h1parse_release(&r);

    s = "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_true(r.expect_continue);
    pc_h1parse_release(&r);
    assert_int_equal(status_of(s), 0);
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nExpect: teapot\r\n"
                  "Content-Length: 1\r\n\r\nx"),
        417);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue, x\r\n\r\n"),
                     417);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: t\r\nExpect:\r\n\r\n"), 417);
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-CONTINUE\r\nExpect: 100-continue"
                  "\r\n\r\n"),
        0);
    /* the framing is judged first */
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: t\r\nExpect: x\r\nContent-Length: 1, 1\r\n\r\n"), 400);
}

static void test_chunked(void **state)
{
    (void)state;
    const char *s = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5;a=b;c=\"d\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";
    struct pc_h1req r;
    size_t used;
    assert_int_equal(read_req(s, strlen(s), &DEFAULTS, 0, &r, &used), 0);
    assert_int_equal(used, strlen(s) - 4); /* the next request's bytes are left */
    assert_true(r.chunked);
    assert_int_equal(r.body.len, 11);
    assert_memory_equal(r.body.data, "hello world", 11);
    assert_int_equal(r.n_headers, 2); /* Host and Transfer-Encoding: trailers are dropped */
    pc_h1parse_release(&r);
    assert_int_equal(status_of(s), 0);

    const char *te = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct {
        const char *body;
        int status;
    } cases[] = {
        {"0\r\n\r\n", 0},
        {"0000A\r\n0123456789\r\n0\r\n\r\n", 0},
        {"3\nabc\n0\n\n", 0},
        {"3\r\nabc\r\n0\r\n", INCOMPLETE},
        {"3\r\nabcX\r\n0\r\n\r\n", 400},
        {"0x3\r\nabc\r\n0\r\n\r\n", 400},
        {" 3\r\nabc\r\n0\r\n\r\n", 400},
        {"-3\r\nabc\r\n0\r\n\r\n", 400},
        {"3;a\rb\r\nabc\r\n0\r\n\r\n", 400}, /* a bare CR in an extension */
        {"3;\x01\r\nabc\r\n0\r\n\r\n", 400},
        {"zz\r\n", 400},
        {"\r\n", 400},
        {"fffffffffffffffff\r\n", 400},
        {"1000001\r\n", 413},
        {"0\r\nbad trailer\r\n\r\n", 400},
        {"0\r\n folded: x\r\n\r\n", 400},
        {"0\r\nX: a\rb\r\n\r\n", 400},
        {"0\r\nX: a\r\n\r\n", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s%s", te, cases[i].body);
        if (status_of(buf) != cases[i].status)
            fail_msg("%s: %d, expected %d", cases[i].body, status_of(buf), cases[i].status);
    }
}

static void test_limits(void **state)
{
    (void)state;
    struct pc_h1_limits lim = {64, 8};
    char s[1024];
    /* a head of exactly 64 bytes, then one more */
    const char *line = "GET / HTTP/1.1\r\nHost: t\r\n"; /* 25 */
    snprintf(s, sizeof s, "%sX: %.*s\r\n\r\n", line, 32,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(strlen(s), 64);
    assert_int_equal(status_of_lim(s, &lim), 0);
    snprintf(s, sizeof s, "%sX: %.*s\r\n\r\n", line, 33,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(status_of_lim(s, &lim), 431);
    /* the limit is seen before the line ends: no LF needs to come */
    snprintf(s, sizeof s, "GET /%.*s", 70,
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    assert_int_equal(status_of_lim(s, &lim), 414);
    snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: t\r\nX: %.*s", 60,
             "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc");
    assert_int_equal(status_of_lim(s, &lim), 431);
    /* empty lines before the request count */
    assert_int_equal(
        status_of_lim("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"
                      "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
                      &lim),
        414);
    /* bodies */
    assert_int_equal(
        status_of_lim("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n12345678", &lim), 0);
    assert_int_equal(status_of_lim("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n", &lim),
                     413);
    assert_int_equal(
        status_of_lim("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\n1234\r\n5\r\n",
                      &lim),
        413);
    /* trailers share what is left of the head's limit */
    assert_int_equal(
        status_of_lim("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "0\r\nX: 123456789012345678901234\r\n\r\n",
                      &lim),
        431);
    /* a chunk line is at most 4096 bytes */
    char *big = malloc(8192);
    assert_non_null(big);
    int n =
        snprintf(big, 8192, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(big + n, 'e', 4093 - 2);
    strcpy(big + n + 4091, "\r\n");
    assert_int_equal(status_of(big), INCOMPLETE); /* 4095 bytes with its CRLF: read */
    memset(big + n, 'e', 4094 - 2);
    strcpy(big + n + 4092, "\r\n");
    assert_int_equal(status_of(big), INCOMPLETE); /* 4096 */
    memset(big + n, 'e', 4095 - 2);
    strcpy(big + n + 4093, "\r\n");
    assert_int_equal(status_of(big), 400);
    free(big);
    /* 100 header fields (Host and 99 more), then one more */
    struct pc_buf h;
    pc_buf_init(&h);
    pc_buf_append_str(&h, "GET / HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 99; i++)
        pc_buf_printf(&h, "X%d: %d\r\n", i, i);
    pc_buf_append_str(&h, "\r\n");
    assert_int_equal(status_of(h.data), 0);
    h.len -= 2;
    pc_buf_append_str(&h, "One: more\r\n\r\n");
    assert_int_equal(status_of(h.data), 431);
    pc_buf_release(&h);
}

static void test_pipelining_and_idle(void **state)
{
    (void)state;
    const char *s = "\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: "
                    "t\r\nContent-Length: 2\r\n\r\n"
                    "{}GET /c HTTP/1.1\r\nHost: t\r\n";
    size_t off = 0, used;
    const char *paths[] = {"/a", "/b"};
    for (int i = 0; i < 2; i++) {
        struct pc_h1req r;
        assert_int_equal(read_req(s + off, strlen(s + off), &DEFAULTS, 0, &r, &used), 0);
        assert_string_equal(r.path, paths[i]);
        pc_h1parse_release(&r);
        off += used;
    }
    assert_string_equal(s + off, "GET /c HTTP/1.1\r\nHost: t\r\n");
    assert_int_equal(status_of(s + off), INCOMPLETE);

    struct pc_h1req r;
    struct pc_h1_limits lim = DEFAULTS;
    pc_h1parse_init(&r, &lim);
    assert_int_equal(pc_h1parse_feed(&r, "\r\n\n", 3, &used), PC_H1_MORE);
    assert_true(pc_h1parse_idle(&r)); /* whole empty lines only */
    assert_int_equal(pc_h1parse_feed(&r, "\r", 1, &used), PC_H1_MORE);
    assert_false(pc_h1parse_idle(&r));
    pc_h1parse_release(&r);
    /* a request without a body is done at the next feed, with nothing */
    pc_h1parse_init(&r, &lim);
    assert_int_equal(pc_h1parse_feed(&r, "GET / HTTP/1.1\r\nHost: t\r\n\r\nX", 28, &used),
                     PC_H1_HEAD);
    assert_int_equal(used, 27);
    assert_int_equal(pc_h1parse_feed(&r, NULL, 0, &used), PC_H1_DONE);
    assert_int_equal(used, 0);
    assert_int_equal(pc_h1parse_feed(&r, "X", 1, &used), PC_H1_DONE);
    assert_int_equal(used, 0);
    pc_h1parse_release(&r);
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(pc_h1parse_list_has("a, Close ,b", "close"));
    assert_true(pc_h1parse_list_has(",,close", "close"));
    assert_false(pc_h1parse_list_has("closed, xclose", "close"));
    assert_false(pc_h1parse_list_has("", "close"));
}

/* RFC 9112 3.2: exactly one Host in HTTP/1.1 (at most one in 1.0), of host characters. */
static void test_host(void **state)
{
    (void)state;
    assert_int_equal(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 0); /* empty: allowed */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: predcache.example:8080\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n"), 0);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example%41\r\n\r\n"), 0);
    /* the other refusals of the head come first */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), 417);
}

/* The hop-by-hop names of RFC 9110 7.6.1 and the proxy ones, in any case, and nothing else:
 * not a longer or shorter name, nor one that only starts with the same letter. */
static void test_hop_by_hop(void **state)
{
    (void)state;
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
        char up[64], mixed[64];
        size_t n = strlen(hop[i]);
        for (size_t k = 0; k <= n; k++) {
            up[k] = (char)(hop[i][k] >= 'a' && hop[i][k] <= 'z' ? hop[i][k] - 32 : hop[i][k]);
            mixed[k] = k % 2 ? up[k] : hop[i][k];
        }
        assert_int_equal(pc_http_is_hop_by_hop(hop[i]), 1);
        assert_int_equal(pc_http_is_hop_by_hop(up), 1);
        assert_int_equal(pc_http_is_hop_by_hop(mixed), 1);
        char longer[70];
        snprintf(longer, sizeof longer, "%ss", hop[i]);
        assert_int_equal(pc_http_is_hop_by_hop(longer), 0);
        up[n - 1] = '\0';
        assert_int_equal(pc_http_is_hop_by_hop(up), 0);
    }
    static const char *const not_hop[] = {"",
                                          "content-type",
                                          "content-length",
                                          "date",
                                          "server",
                                          "x-request-id",
                                          "trailers",
                                          "t",
                                          "proxy",
                                          "upgrade-insecure-requests",
                                          "kept-alive",
                                          "@onnection",
                                          "\x03onnection",
                                          "connection "};
    for (size_t i = 0; i < sizeof not_hop / sizeof not_hop[0]; i++)
        assert_int_equal(pc_http_is_hop_by_hop(not_hop[i]), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_and_fields),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_transfer_encoding_is_one_list),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_connection_and_expect),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_pipelining_and_idle),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_hop_by_hop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
