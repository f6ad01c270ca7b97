/* Request bodies with a Content-Encoding: the codings read from the header, and bounded
 * inflating of gzip (one member or several), zlib-wrapped and raw deflate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "predcache/decode.h"

/* data compressed with window_bits (31: gzip, 15: zlib, -15: raw) into out. */
static size_t squeeze(const char *data, size_t len, int window_bits, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = cap - z.avail_out;
    deflateEnd(&z);
    return n;
}

static void test_codings(void **state)
{
    (void)state;
    assert_int_equal(pc_coding_of(NULL), PC_CODING_IDENTITY);
    assert_int_equal(pc_coding_of(""), PC_CODING_IDENTITY);
    assert_int_equal(pc_coding_of("identity"), PC_CODING_IDENTITY);
    assert_int_equal(pc_coding_of("gzip"), PC_CODING_GZIP);
    assert_int_equal(pc_coding_of(" GZip "), PC_CODING_GZIP);
    assert_int_equal(pc_coding_of("x-gzip"), PC_CODING_GZIP);
    assert_int_equal(pc_coding_of("deflate"), PC_CODING_DEFLATE);
    assert_int_equal(pc_coding_of("br"), PC_CODING_OTHER);
    assert_int_equal(pc_coding_of("zstd"), PC_CODING_OTHER);
    assert_int_equal(pc_coding_of("gzip, gzip"), PC_CODING_OTHER);
    assert_int_equal(pc_coding_of("gzip x"), PC_CODING_OTHER);
    assert_int_equal(pc_coding_of("gzipx"), PC_CODING_OTHER);
}

static void test_round_trips(void **state)
{
    (void)state;
    static char text[200000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)("{\"instances\": [[1.5, 2.25]]} "[i % 29] + (i / 7919) % 3);
    static unsigned char z[300000];
    const struct {
        int bits;
        enum pc_coding coding;
    } v[] = {{31, PC_CODING_GZIP}, {15, PC_CODING_DEFLATE}, {-15, PC_CODING_DEFLATE}};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        size_t n = squeeze(text, sizeof text, v[k].bits, z, sizeof z);
        struct pc_buf out;
        pc_buf_init(&out);
        assert_int_equal(pc_decode_body(v[k].coding, (char *)z, n, sizeof text, &out),
                         PC_DECODE_OK);
        assert_int_equal(out.len, sizeof text);
        assert_memory_equal(out.data, text, sizeof text);
        /* one byte short of room: refused as too large, whatever the stream */
        assert_int_equal(pc_decode_body(v[k].coding, (char *)z, n, sizeof text - 1, &out),
                         PC_DECODE_TOO_LARGE);
        /* cut short, or with bytes after the end: not valid */
        assert_int_equal(pc_decode_body(v[k].coding, (char *)z, n - 3, sizeof text, &out),
                         PC_DECODE_INVALID);
        if (v[k].coding == PC_CODING_GZIP) {
            z[n] = 'x';
            assert_int_equal(pc_decode_body(v[k].coding, (char *)z, n + 1, sizeof text, &out),
                             PC_DECODE_INVALID);
        }
        pc_buf_release(&out);
    }
}

static void test_gzip_members_and_garbage(void **state)
{
    (void)state;
    unsigned char z[4096];
    size_t a = squeeze("{\"instances\": ", 14, 31, z, sizeof z);
    size_t b = squeeze("[1, 2]}", 7, 31, z + a, sizeof z - a);
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_decode_body(PC_CODING_GZIP, (char *)z, a + b, 1000, &out), PC_DECODE_OK);
    assert_string_equal(out.data, "{\"instances\": [1, 2]}");
    assert_int_equal(pc_decode_body(PC_CODING_GZIP, "{\"instances\": [1]}", 18, 1000, &out),
                     PC_DECODE_INVALID);
    assert_int_equal(pc_decode_body(PC_CODING_DEFLATE, "not deflate at all", 18, 1000, &out),
                     PC_DECODE_INVALID);
    assert_int_equal(pc_decode_body(PC_CODING_GZIP, "", 0, 1000, &out), PC_DECODE_INVALID);
    assert_int_equal(pc_decode_body(PC_CODING_OTHER, "x", 1, 1000, &out), PC_DECODE_INVALID);
    assert_int_equal(pc_decode_body(PC_CODING_IDENTITY, "abc", 3, 3, &out), PC_DECODE_OK);
    assert_int_equal(pc_decode_body(PC_CODING_IDENTITY, "abcd", 4, 3, &out), PC_DECODE_TOO_LARGE);
    pc_buf_release(&out);
}

/* A gzip bomb: 64 MB of zeros in a few KB, against a 1 MB bound. */
static void test_bomb_stops_at_the_bound(void **state)
{
    (void)state;
    size_t big = 64u << 20;
    char *zeros = calloc(1, big);
    unsigned char *z = malloc(1 << 20);
    assert_non_null(zeros);
    assert_non_null(z);
    size_t n = squeeze(zeros, big, 31, z, 1 << 20);
    assert_true(n < 200000);
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_decode_body(PC_CODING_GZIP, (char *)z, n, 1 << 20, &out),
                     PC_DECODE_TOO_LARGE);
    assert_true(out.len <= (1u << 20) && out.cap <= (4u << 20)); /* it stopped there */
    pc_buf_release(&out);
    free(zeros);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codings),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_gzip_members_and_garbage),
        cmocka_unit_test(test_bomb_stops_at_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
