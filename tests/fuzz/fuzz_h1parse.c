/*
 * fuzz_h1parse: the HTTP/1.1 request reader on arbitrary bytes, read as one connection's
 * input: request after request (pipelining), each one fed to h1parse whole and again in
 * pieces cut where a hash of the input says (as a socket would deliver it), and held
 * against tests/ref/h1parse_ref.c reading the same bytes whole. Each input is read with
 * predcache's default limits and again with tight ones (from the hash) so that every
 * limit is reached. Invariants:
 *   - the reader and the reference agree on each request: complete (same method, target,
 *     path, query, version, header fields in order, body, keep-alive, HEAD, Expect and
 *     chunked, and the same number of bytes: where the next request starts), incomplete
 *     (and idle exactly when the reference has not seen a request begin), or refused
 *     with the same status
 *   - fed whole or in pieces, the reader reads the same, and never consumes a byte past
 *     the request (PC_H1_MORE consumes everything it is given)
 *   - what it accepts is safe to pass on: header names are tchars, values hold no control
 *     byte but HTAB and no OWS at either end, the target starts with '/' and holds no byte
 *     <= 0x20 or 0x7f, the body fits max_body_bytes
 *   - a request it accepted, written out again in plain form, reads back the same
 */
#include "fuzz.h"

#include <string.h>

#include "../ref/h1parse_ref.h"
#include "predcache/h1parse.h"

#define MAX_REQUESTS 64

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Feeds d[0..n) in pieces (whole when seed is NULL) until the request is complete or
 * refused or the input is gone; *pos is how much was consumed. */
static enum pc_h1_result feed(struct pc_h1req *r, const char *d, size_t n, uint64_t *seed,
                              size_t *pos)
{
    enum pc_h1_result res;
    *pos = 0;
    for (;;) {
        size_t left = n - *pos, take = left;
        if (seed != NULL && left > 0) {
            uint64_t x = next(seed);
            take = (x & 3) == 0 ? 1 : (size_t)(x >> 8) % (left < 64 ? left : 64) + 1;
            if (take > left)
                take = left;
        }
        /* an exact-size heap copy: ASan sees a read of one byte past the piece */
        char *piece = fuzz_dup((const uint8_t *)d + *pos, take);
        size_t used = 0;
        res = pc_h1parse_feed(r, piece, take, &used);
        free(piece);
        FUZZ_CHECK(used <= take);
        if (res == PC_H1_MORE)
            FUZZ_CHECK(used == take);
        *pos += used;
        if (res == PC_H1_HEAD)
            continue; /* feed again, even with nothing: a request without a body ends */
        if (res != PC_H1_MORE || *pos == n)
            return res;
    }
}

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_safe(const struct pc_h1req *r)
{
    FUZZ_CHECK(r->method != NULL && r->method[0] != '\0');
    FUZZ_CHECK(r->target[0] == '/' && r->path[0] == '/');
    for (const char *p = r->target; *p; p++)
        FUZZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f);
    const char *q = strchr(r->target, '?');
    if (q == NULL)
        FUZZ_CHECK(strcmp(r->path, r->target) == 0 && r->query[0] == '\0');
    else
        FUZZ_CHECK(strlen(r->path) == (size_t)(q - r->target) &&
                   strncmp(r->path, r->target, strlen(r->path)) == 0 &&
                   strcmp(r->query, q + 1) == 0);
    FUZZ_CHECK(r->n_headers <= PC_H1_MAX_HEADERS);
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *name = r->headers[i].name, *v = r->headers[i].value;
        FUZZ_CHECK(name[0] != '\0');
        for (const char *p = name; *p; p++)
            FUZZ_CHECK(is_tchar(*p));
        size_t vl = strlen(v);
        FUZZ_CHECK(vl == 0 ||
                   (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t'));
        for (const char *p = v; *p; p++)
            FUZZ_CHECK(!(((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f));
    }
    FUZZ_CHECK(r->body.len <= r->lim.max_body_bytes);
    FUZZ_CHECK(r->chunked || r->body.len == r->content_length);
}

static int same_str(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The reader's complete request equals the other reading. */
static void check_same(const struct pc_h1req *r, const char *method, const char *target,
                       const char *path, const char *query, int minor, const struct pc_header *h,
                       size_t nh, const char *body, size_t body_len, int keep_alive, int is_head,
                       int expect_continue, int chunked)
{
    FUZZ_CHECK(same_str(r->method, method) && same_str(r->target, target));
    FUZZ_CHECK(same_str(r->path, path) && same_str(r->query, query));
    FUZZ_CHECK(r->minor == minor && r->n_headers == nh);
    for (size_t i = 0; i < nh; i++) {
        FUZZ_CHECK(same_str(r->headers[i].name, h[i].name));
        FUZZ_CHECK(same_str(r->headers[i].value, h[i].value));
    }
    FUZZ_CHECK(r->body.len == body_len);
    FUZZ_CHECK(body_len == 0 || memcmp(r->body.data, body, body_len) == 0);
    FUZZ_CHECK(r->keep_alive == keep_alive && r->is_head == is_head);
    FUZZ_CHECK(r->expect_continue == expect_continue && r->chunked == chunked);
}

static void check_against_ref(const struct pc_h1req *r, enum pc_h1_result res, size_t used,
                              size_t len, const struct pc_ref_h1 *ref)
{
    if (ref->status == PC_REF_H1_INCOMPLETE) {
        FUZZ_CHECK(res == PC_H1_MORE && used == len);
        FUZZ_CHECK(pc_h1parse_idle(r) == !ref->started);
    } else if (ref->status != 0) {
        FUZZ_CHECK(res == PC_H1_ERROR);
        if (r->status != ref->status)
            fprintf(stderr, "status %d, the reference %d (%s)\n", r->status, ref->status, r->why);
        FUZZ_CHECK(r->status == ref->status && r->why != NULL);
    } else {
        FUZZ_CHECK(res == PC_H1_DONE && used == ref->consumed);
        check_same(r, ref->method, ref->target, ref->path, ref->query, ref->minor, ref->headers,
                   ref->n_headers, ref->body, ref->body_len, ref->keep_alive, ref->is_head,
                   ref->expect_continue, ref->chunked);
        check_safe(r);
    }
}

/* Writes r out in plain form (origin-form target, "Name: value" lines, CRLF, one chunk)
 * and reads it back. */
static void check_round_trip(const struct pc_h1req *r)
{
    struct pc_buf w;
    pc_buf_init(&w);
    FUZZ_CHECK(pc_buf_printf(&w, "%s %s HTTP/1.%d\r\n", r->method, r->target, r->minor) == 0);
    for (size_t i = 0; i < r->n_headers; i++)
        FUZZ_CHECK(pc_buf_printf(&w, "%s: %s\r\n", r->headers[i].name, r->headers[i].value) == 0);
    FUZZ_CHECK(pc_buf_append_str(&w, "\r\n") == 0);
    if (r->chunked && r->body.len > 0)
        FUZZ_CHECK(pc_buf_printf(&w, "%zx\r\n", r->body.len) == 0);
    FUZZ_CHECK(pc_buf_append(&w, r->body.data, r->body.len) == 0);
    if (r->chunked)
        FUZZ_CHECK(pc_buf_append_str(&w, r->body.len > 0 ? "\r\n0\r\n\r\n" : "0\r\n\r\n") == 0);
    /* the plain head may be longer (CRLF for LF, ": " for ":") */
    struct pc_h1_limits lim = {r->lim.max_header_bytes * 2 + 64, r->lim.max_body_bytes};
    struct pc_h1req back;
    pc_h1parse_init(&back, &lim);
    size_t used;
    enum pc_h1_result res = feed(&back, w.data, w.len, NULL, &used);
    FUZZ_CHECK(res == PC_H1_DONE && used == w.len);
    check_same(&back, r->method, r->target, r->path, r->query, r->minor, r->headers, r->n_headers,
               r->body.data, r->body.len, r->keep_alive, r->is_head, r->expect_continue,
               r->chunked);
    pc_h1parse_release(&back);
    pc_buf_release(&w);
}

static void run(const char *data, size_t n, const struct pc_h1_limits *lim, uint64_t seed)
{
    size_t off = 0;
    for (int k = 0; k < MAX_REQUESTS && off < n; k++) {
        struct pc_ref_h1 ref;
        pc_ref_h1_read(data + off, n - off, lim, &ref);
        struct pc_h1req whole, split;
        size_t used_whole, used_split;
        pc_h1parse_init(&whole, lim);
        pc_h1parse_init(&split, lim);
        enum pc_h1_result rw = feed(&whole, data + off, n - off, NULL, &used_whole);
        enum pc_h1_result rs = feed(&split, data + off, n - off, &seed, &used_split);
        check_against_ref(&whole, rw, used_whole, n - off, &ref);
        check_against_ref(&split, rs, used_split, n - off, &ref);
        /* a finished reader stays finished and takes nothing more */
        if (rw != PC_H1_MORE) {
            size_t more = 1;
            FUZZ_CHECK(pc_h1parse_feed(&whole, "x", 1, &more) == rw && more == 0);
        }
        if (ref.status == 0)
            check_round_trip(&whole);
        int go_on = ref.status == 0;
        off += go_on ? ref.consumed : n - off;
        pc_h1parse_release(&whole);
        pc_h1parse_release(&split);
        pc_ref_h1_free(&ref);
        if (!go_on)
            break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = hash(data, size) | 1;
    const char *d = (const char *)data;
    struct pc_h1_limits dflt = {16384, 16u << 20};
    run(d, size, &dflt, h);
    struct pc_h1_limits tight = {16 + (size_t)(h >> 8) % 512, (size_t)(h >> 24) % 64};
    run(d, size, &tight, h ^ 0x9e3779b97f4a7c15ull);
    return 0;
}
