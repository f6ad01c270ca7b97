/* Unit tests of envelope: round trips, and every malformed value is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "predcache/envelope.h"

/* Encodes env into a fresh buffer the caller releases; asserts success. */
static struct pc_buf encode_ok(const struct pc_envelope *env)
{
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_envelope_encode(env, &b), 0);
    return b;
}

/* Decodes data[0..len) with a 64-byte type buffer and asserts it is refused. */
static void assert_rejected_len(const char *data, size_t len)
{
    struct pc_envelope env = {.status = 7};
    char ctype[64];
    assert_int_equal(pc_envelope_decode(data, len, &env, ctype, sizeof ctype), -1);
    assert_int_equal(env.status, 7); /* untouched on failure */
}

static void assert_rejected(const char *data)
{
    assert_rejected_len(data, strlen(data));
}

static void test_round_trip_binary(void **state)
{
    (void)state;
    static const char body[] = "\0line1\nline2\r\n\0\xff PC1\n200\n";
    const size_t body_len = sizeof body - 1;
    struct pc_envelope in = {.status = 200,
                             .stored_at_ms = 1700000000123,
                             .content_type = "application/json; charset=utf-8",
                             .body = body,
                             .body_len = body_len};
    struct pc_buf b = encode_ok(&in);
    const char head[] = "PC1\n200\n1700000000123\napplication/json; charset=utf-8\n";
    assert_int_equal(b.len, sizeof head - 1 + body_len);
    assert_memory_equal(b.data, head, sizeof head - 1);

    struct pc_envelope out;
    char ctype[64];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 200);
    assert_int_equal(out.stored_at_ms, 1700000000123);
    assert_string_equal(out.content_type, "application/json; charset=utf-8");
    assert_ptr_equal(out.content_type, ctype);
    assert_int_equal(out.body_len, body_len);
    assert_memory_equal(out.body, body, body_len);
    assert_ptr_equal(out.body, b.data + (sizeof head - 1)); /* borrowed, not copied */
    pc_buf_release(&b);
}

static void test_empty_body_and_type(void **state)
{
    (void)state;
    struct pc_envelope in = {.status = 599, .stored_at_ms = 0, .content_type = "", .body = NULL};
    struct pc_buf b = encode_ok(&in);
    assert_int_equal(b.len, strlen("PC1\n599\n0\n\n"));
    assert_memory_equal(b.data, "PC1\n599\n0\n\n", b.len);
    struct pc_envelope out;
    char ctype[1];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 599);
    assert_int_equal(out.stored_at_ms, 0);
    assert_string_equal(out.content_type, "");
    assert_int_equal(out.body_len, 0);
    pc_buf_release(&b);

    in.content_type = NULL; /* NULL type is the empty type */
    b = encode_ok(&in);
    assert_memory_equal(b.data, "PC1\n599\n0\n\n", b.len);
    pc_buf_release(&b);
}

static void test_encode_appends(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "xx"), 0);
    struct pc_envelope in = {
        .status = 100, .stored_at_ms = INT64_MAX, .content_type = "t", .body = "B", .body_len = 1};
    assert_int_equal(pc_envelope_encode(&in, &b), 0);
    assert_string_equal(b.data, "xxPC1\n100\n9223372036854775807\nt\nB");
    struct pc_envelope out;
    char ctype[2];
    assert_int_equal(pc_envelope_decode(b.data + 2, b.len - 2, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.stored_at_ms, INT64_MAX);
    pc_buf_release(&b);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "keep"), 0);
    struct pc_envelope bad[] = {
        {.status = 99, .content_type = "t"},
        {.status = 600, .content_type = "t"},
        {.status = -200, .content_type = "t"},
        {.status = 200, .content_type = "text/plain\nX-Evil: 1"},
        {.status = 200, .content_type = "text/plain\r"},
        {.status = 200, .content_type = "\n"},
        {.status = 200, .stored_at_ms = -1, .content_type = "t"},
        {.status = 200, .content_type = "t", .body = NULL, .body_len = 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pc_envelope_encode(&bad[i], &b), -1);
        assert_string_equal(b.data, "keep"); /* nothing half-written */
        assert_int_equal(b.len, 4);
    }
    pc_buf_release(&b);
}

static void test_decode_rejects_header(void **state)
{
    (void)state;
    assert_rejected("");
    assert_rejected("PC1");
    assert_rejected("PC1\n");
    assert_rejected("PC2\n200\n1\nt\nbody");
    assert_rejected("PC0\n200\n1\nt\nbody");
    assert_rejected("pc1\n200\n1\nt\nbody");
    assert_rejected("XPC1\n200\n1\nt\nbody");
    assert_rejected("PC1\r\n200\n1\nt\nbody");
    assert_rejected_len(NULL, 0);
}

static void test_decode_rejects_status(void **state)
{
    (void)state;
    assert_rejected("PC1\n20\n1\nt\nbody");
    assert_rejected("PC1\n2000\n1\nt\nbody");
    assert_rejected("PC1\n600\n1\nt\nbody");
    assert_rejected("PC1\n099\n1\nt\nbody");
    assert_rejected("PC1\n99\n1\nt\nbody");
    assert_rejected("PC1\n2x0\n1\nt\nbody");
    assert_rejected("PC1\n-20\n1\nt\nbody");
    assert_rejected("PC1\n+20\n1\nt\nbody");
    assert_rejected("PC1\n 200\n1\nt\nbody");
    assert_rejected("PC1\n200 \n1\nt\nbody");
    assert_rejected("PC1\n\n1\nt\nbody");
    assert_rejected("PC1\n200");
}

static void test_decode_rejects_time(void **state)
{
    (void)state;
    assert_rejected("PC1\n200\n\nt\nbody");
    assert_rejected("PC1\n200\n-1\nt\nbody");
    assert_rejected("PC1\n200\n+1\nt\nbody");
    assert_rejected("PC1\n200\n12a\nt\nbody");
    assert_rejected("PC1\n200\n01\nt\nbody");
    assert_rejected("PC1\n200\n1 \nt\nbody");
    assert_rejected("PC1\n200\n12345678901234567890\nt\nbody"); /* 20 digits */
    assert_rejected("PC1\n200\n9223372036854775808\nt\nbody");  /* INT64_MAX + 1 */
    assert_rejected("PC1\n200\n9999999999999999999\nt\nbody");
    assert_rejected("PC1\n200\n17");
    assert_rejected("PC1\n200\n17\r\nt\nbody");
}

static void test_decode_rejects_type(void **state)
{
    (void)state;
    assert_rejected("PC1\n200\n1\ntext/plain");           /* no newline after the type */
    assert_rejected("PC1\n200\n1\ntext/plain\r\nbody");   /* CR in the type */
    assert_rejected_len("PC1\n200\n1\nte\0xt\nbody", 20); /* NUL in the type */

    char longtype[200];
    memset(longtype, 'a', sizeof longtype);
    memcpy(longtype, "PC1\n200\n1\n", 10);
    longtype[10 + 64] = '\n'; /* a 64-byte type: no room for its NUL in 64 bytes */
    assert_rejected_len(longtype, 10 + 64 + 1);

    struct pc_envelope env;
    char ctype[65];
    assert_int_equal(pc_envelope_decode(longtype, 10 + 64 + 1, &env, ctype, sizeof ctype), 0);
    assert_int_equal(strlen(env.content_type), 64);
    assert_int_equal(env.body_len, 0);
    assert_int_equal(pc_envelope_decode(longtype, 10 + 64 + 1, &env, NULL, 0), -1);
}

/* Every strict prefix of a valid envelope up to the type's newline is refused. */
static void test_decode_rejects_truncation(void **state)
{
    (void)state;
    const char full[] = "PC1\n200\n1700000000000\ntext/plain\nhello";
    size_t head = strlen("PC1\n200\n1700000000000\ntext/plain\n");
    for (size_t n = 0; n < head; n++) {
        char *copy = malloc(n ? n : 1); /* exact size, so valgrind sees any over-read */
        assert_non_null(copy);
        memcpy(copy, full, n);
        assert_rejected_len(copy, n);
        free(copy);
    }
    struct pc_envelope env;
    char ctype[32];
    for (size_t n = head; n <= sizeof full - 1; n++) {
        assert_int_equal(pc_envelope_decode(full, n, &env, ctype, sizeof ctype), 0);
        assert_int_equal(env.body_len, n - head);
    }
}

/* PC2: the entry's own TTL (a client's X-Predcache-TTL); PC1 when none is recorded. */
static void test_ttl_round_trip(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    struct pc_envelope in = {.status = 201,
                             .stored_at_ms = 5,
                             .ttl_s = 2147483647,
                             .content_type = "t",
                             .body = "xy",
                             .body_len = 2};
    assert_int_equal(pc_envelope_encode(&in, &b), 0);
    assert_int_equal(b.len, strlen("PC2\n201\n5\n2147483647\nt\nxy"));
    assert_memory_equal(b.data, "PC2\n201\n5\n2147483647\nt\nxy", b.len);
    struct pc_envelope out;
    char ctype[16];
    assert_int_equal(pc_envelope_decode(b.data, b.len, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.status, 201);
    assert_int_equal(out.stored_at_ms, 5);
    assert_int_equal(out.ttl_s, 2147483647);
    assert_string_equal(out.content_type, "t");
    assert_memory_equal(out.body, "xy", 2);
    /* PC1 decodes with ttl_s 0: "the route's". */
    assert_int_equal(pc_envelope_decode("PC1\n200\n1\nt\nb", 13, &out, ctype, sizeof ctype), 0);
    assert_int_equal(out.ttl_s, 0);
    in.ttl_s = -1;
    assert_int_equal(pc_envelope_encode(&in, &b), -1);
    pc_buf_release(&b);
}

static void test_decode_rejects_ttl(void **state)
{
    (void)state;
    assert_rejected("PC2\n200\n1\n0\nt\nbody");
    assert_rejected("PC2\n200\n1\n07\nt\nbody");
    assert_rejected("PC2\n200\n1\n-7\nt\nbody");
    assert_rejected("PC2\n200\n1\n2147483648\nt\nbody");
    assert_rejected("PC2\n200\n1\n12345678901\nt\nbody");
    assert_rejected("PC2\n200\n1\n60");
    assert_rejected("PC2\n200\n1\n60\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_binary),
        cmocka_unit_test(test_ttl_round_trip),
        cmocka_unit_test(test_decode_rejects_ttl),
        cmocka_unit_test(test_empty_body_and_type),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_decode_rejects_header),
        cmocka_unit_test(test_decode_rejects_status),
        cmocka_unit_test(test_decode_rejects_time),
        cmocka_unit_test(test_decode_rejects_type),
        cmocka_unit_test(test_decode_rejects_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
