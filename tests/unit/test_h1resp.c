/* h1resp, the HTTP/1.1 response reader: each answer is read whole, byte by byte, and cut at
 * every point in two, and must read the same every way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/h1resp.h"

/* What one reading gave. */
struct got {
    enum pc_h1r_result end; /* DONE, ERROR, or MORE when the input ran out */
    int heads;
    int status;
    int keep_alive;
    int64_t length;
    char headers[2048]; /* "name=value;" in order */
    size_t n_headers;
    char body[8192];
    size_t body_len;
    size_t used; /* input bytes consumed in all */
    char err[160];
};

/* Reads in[0..n) in pieces of piece bytes (0: whole; cut > 0: two pieces, cut there);
 * eof: the connection closes after the input. */
static void read_resp(const char *in, size_t n, size_t piece, size_t cut, int head_req, int eof,
                      struct got *g)
{
    memset(g, 0, sizeof *g);
    struct pc_h1resp r;
    pc_h1resp_init(&r, head_req);
    size_t pos = 0;
    enum pc_h1r_result res = PC_H1R_MORE;
    while (res != PC_H1R_DONE && res != PC_H1R_ERROR) {
        size_t end = n;
        if (piece > 0 && pos + piece < n)
            end = pos + piece;
        if (cut > 0)
            end = pos < cut ? cut : n;
        /* an exact-size copy: reading past the piece is an error the sanitizers see */
        size_t len = end - pos;
        char *p = malloc(len ? len : 1);
        memcpy(p, in + pos, len);
        size_t off = 0;
        for (;;) {
            size_t used = 0, dl = 0;
            const char *d = NULL;
            res = pc_h1resp_feed(&r, p + off, len - off, &used, &d, &dl);
            assert_true(used <= len - off);
            off += used;
            if (res == PC_H1R_HEAD) {
                g->heads++;
                g->status = r.status;
                g->keep_alive = r.keep_alive;
                g->length = r.length;
                size_t nh = 0;
                struct pc_arena text;
                struct pc_header *h = pc_h1resp_take_headers(&r, &nh, &text);
                for (size_t i = 0; i < nh; i++) {
                    size_t l = strlen(g->headers);
                    snprintf(g->headers + l, sizeof g->headers - l, "%s=%s;", h[i].name,
                             h[i].value);
                }
                free(h);
                pc_arena_release(&text);
                g->n_headers = nh;
                continue;
            }
            if (res == PC_H1R_DATA) {
                assert_true(d >= p + off - used && d + dl <= p + off);
                assert_true(g->body_len + dl <= sizeof g->body);
                memcpy(g->body + g->body_len, d, dl);
                g->body_len += dl;
                continue;
            }
            break;
        }
        free(p);
        pos += off;
        if (res == PC_H1R_MORE) {
            assert_int_equal(off, len);
            if (pos == n) {
                if (eof)
                    res = pc_h1resp_eof(&r);
                break;
            }
        }
    }
    g->end = res;
    g->used = pos;
    pc_strlcpy(g->err, r.err, sizeof g->err);
    pc_h1resp_release(&r);
}

/* Reads every way and checks that they agree; returns the whole reading. */
static void read_all_ways(const char *in, int head_req, int eof, struct got *whole)
{
    size_t n = strlen(in);
    read_resp(in, n, 0, 0, head_req, eof, whole);
    struct got *g = malloc(sizeof *g);
    for (size_t way = 0; way <= n; way++) {
        if (way == 0)
            read_resp(in, n, 1, 0, head_req, eof, g);
        else if (way < n)
            read_resp(in, n, 0, way, head_req, eof, g);
        else
            read_resp(in, n, 7, 0, head_req, eof, g);
        assert_int_equal(g->end, whole->end);
        assert_int_equal(g->heads, whole->heads);
        assert_int_equal(g->status, whole->status);
        assert_int_equal(g->keep_alive, whole->keep_alive);
        assert_int_equal(g->length, whole->length);
        assert_string_equal(g->headers, whole->headers);
        assert_int_equal(g->body_len, whole->body_len);
        assert_memory_equal(g->body, whole->body, g->body_len);
        if (whole->end != PC_H1R_ERROR)
            assert_int_equal(g->used, whole->used);
        assert_string_equal(g->err, whole->err);
    }
    free(g);
}

static void test_content_length_and_the_headers_kept(void **state)
{
    (void)state;
    struct got g;
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
                  "Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                  "Transfer-Encoding-X: y\r\nX-Req:  a b \r\n\r\nhello",
                  0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.status, 200);
    assert_int_equal(g.keep_alive, 1);
    assert_int_equal(g.length, 5);
    assert_string_equal(g.headers,
                        "Content-Type=application/json;Transfer-Encoding-X=y;X-Req=a b;");
    assert_int_equal(g.body_len, 5);
    assert_memory_equal(g.body, "hello", 5);
}

static void test_the_bytes_after_the_answer_are_not_taken(void **state)
{
    (void)state;
    struct got g;
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
    read_resp(two, strlen(two), 0, 0, 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.used, strlen(two) - strlen("HTTP/1.1 200 OK\r\n"));
}

static void test_chunked_with_extensions_and_trailers(void **state)
{
    (void)state;
    struct got g;
    read_all_ways(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-A: 1\r\n\r\n"
        "5;ext=1\r\nhello\r\n1A \r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-Trailer: t\r\n\r\n",
        0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.length, -1);
    assert_int_equal(g.keep_alive, 0); /* a coding besides chunked: not kept */
    assert_string_equal(g.headers, "X-A=1;");
    assert_int_equal(g.body_len, 31);
    assert_memory_equal(g.body, "hello abcdefghijklmnopqrstuvwxy", 31);

    read_all_ways("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0,
                  0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.body_len, 3);
}

static void test_the_body_runs_until_the_connection_closes(void **state)
{
    (void)state;
    struct got g;
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", 0, 1, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.keep_alive, 0);
    assert_int_equal(g.body_len, 11);
    /* A coding other than chunked last: the same. */
    read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", 0, 1, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.body_len, 2);
}

static void test_interim_answers_are_dropped(void **state)
{
    (void)state;
    struct got g;
    read_all_ways("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nX-B: 2\r\n\r\n",
                  0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.heads, 1);
    assert_int_equal(g.status, 201);
    assert_string_equal(g.headers, "X-B=2;");
    assert_int_equal(g.body_len, 0);
}

static void test_answers_without_a_body(void **state)
{
    (void)state;
    struct got g;
    /* HEAD: the length stays a header for the client; no body comes. */
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 1, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.length, -1);
    assert_string_equal(g.headers, "Content-Length=99;");
    assert_int_equal(g.keep_alive, 1);
    read_all_ways("HTTP/1.1 204 No Content\r\nX-C: 3\r\n\r\n", 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.keep_alive, 1);
    read_all_ways("HTTP/1.1 304 Not Modified\r\n\r\n", 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
}

static void test_keep_alive_by_version_and_connection(void **state)
{
    (void)state;
    struct got g;
    read_all_ways("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, 0, &g);
    assert_int_equal(g.keep_alive, 0);
    read_all_ways("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx", 0, 0,
                  &g);
    assert_int_equal(g.keep_alive, 1);
    assert_string_equal(g.headers, "");
    read_all_ways("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", 0, 0, &g);
    assert_int_equal(g.keep_alive, 0);
    /* The same length twice is one length; both framings: chunked wins, nothing kept. */
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nxy", 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.length, 2);
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "1\r\nx\r\n0\r\n\r\n",
                  0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.keep_alive, 0);
    assert_int_equal(g.body_len, 1);
}

static void test_what_is_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
        "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nxy",
        "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
        "HTTP/1.1 200 OK\r\n: a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\rInjected: 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct got g;
        read_all_ways(bad[i], 0, 0, &g);
        if (g.end != PC_H1R_ERROR)
            fail_msg("not refused: %s", bad[i]);
        assert_true(strncmp(g.err, "model server response: ", 23) == 0);
    }
}

static void test_an_answer_cut_short(void **state)
{
    (void)state;
    struct got g;
    read_all_ways("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, 1, &g);
    assert_int_equal(g.end, PC_H1R_ERROR);
    assert_string_equal(g.err,
                        "model server response: the connection closed before the response ended");
    read_all_ways("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 0, 1, &g);
    assert_int_equal(g.end, PC_H1R_ERROR);
    read_all_ways("", 0, 1, &g);
    assert_int_equal(g.end, PC_H1R_ERROR);
    assert_string_equal(g.err, "model server response: the connection closed without a response");
}

static void test_the_limits(void **state)
{
    (void)state;
    /* A head over PC_H1R_MAX_HEAD is refused; the first PC_H1R_MAX_KEPT fields are kept. */
    size_t cap = PC_H1R_MAX_HEAD + 1024;
    char *big = malloc(cap);
    int n = snprintf(big, cap, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + n, 'a', PC_H1R_MAX_HEAD);
    strcpy(big + n + PC_H1R_MAX_HEAD, "\r\n\r\n");
    struct got g;
    read_resp(big, strlen(big), 0, 0, 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_ERROR);
    assert_string_equal(g.err, "model server response: head too large");

    size_t off = (size_t)snprintf(big, cap, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < PC_H1R_MAX_KEPT + 10; i++)
        off += (size_t)snprintf(big + off, cap - off, "X-%d: v\r\n", i);
    snprintf(big + off, cap - off, "Content-Length: 0\r\n\r\n");
    read_resp(big, strlen(big), 0, 0, 0, 0, &g);
    assert_int_equal(g.end, PC_H1R_DONE);
    assert_int_equal(g.n_headers, PC_H1R_MAX_KEPT);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_and_the_headers_kept),
        cmocka_unit_test(test_the_bytes_after_the_answer_are_not_taken),
        cmocka_unit_test(test_chunked_with_extensions_and_trailers),
        cmocka_unit_test(test_the_body_runs_until_the_connection_closes),
        cmocka_unit_test(test_interim_answers_are_dropped),
        cmocka_unit_test(test_answers_without_a_body),
        cmocka_unit_test(test_keep_alive_by_version_and_connection),
        cmocka_unit_test(test_what_is_refused),
        cmocka_unit_test(test_an_answer_cut_short),
        cmocka_unit_test(test_the_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
