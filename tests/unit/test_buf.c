/* Unit tests of buf's string helpers used on the hot paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "predcache/buf.h"

static void test_u64_text_matches_printf(void **state)
{
    (void)state;
    const uint64_t v[] = {
        0, 1, 9, 10, 99, 100, 12345, 4294967295u, 4294967296u, 999999999999999999u, UINT64_MAX};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char got[PC_U64_TEXT], want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)v[i]);
        assert_int_equal(pc_u64_text(v[i], got), strlen(want));
        assert_string_equal(got, want);
    }
    for (uint64_t x = 1; x < UINT64_MAX / 7; x = x * 7 + 3) {
        char got[PC_U64_TEXT], want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)x);
        pc_u64_text(x, got);
        assert_string_equal(got, want);
    }
}

/* The appends that stand in for printf on the hot paths write what printf writes. */
static void test_appends_match_printf(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    for (uint64_t x = 0; x < UINT64_MAX / 5; x = x * 5 + 1) {
        char want[64];
        snprintf(want, sizeof want, "%llu|%016llx", (unsigned long long)x, (unsigned long long)x);
        b.len = 0;
        assert_int_equal(pc_buf_append_u64(&b, x), 0);
        assert_int_equal(pc_buf_append_char(&b, '|'), 0);
        assert_int_equal(pc_buf_append_hex64(&b, x), 0);
        assert_string_equal(b.data, want);
    }
    b.len = 0;
    assert_int_equal(pc_buf_append_hex64(&b, UINT64_MAX), 0);
    assert_string_equal(b.data, "ffffffffffffffff");
    /* pc_buf_printf: a text that fits its line on the stack, and one that does not */
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    b.len = 0;
    assert_int_equal(pc_buf_printf(&b, "a%db", 42), 0);
    assert_int_equal(pc_buf_printf(&b, "<%s>", big), 0);
    assert_int_equal(b.len, 4 + 2 + strlen(big));
    assert_memory_equal(b.data, "a42b<", 5);
    assert_memory_equal(b.data + 5, big, strlen(big));
    assert_string_equal(b.data + 5 + strlen(big), ">");
    pc_buf_release(&b);
}

/* ASCII case folding, as strcasecmp in the C locale: every pair of bytes, and lengths. */
static void test_strcaseeq(void **state)
{
    (void)state;
    for (int x = 1; x < 256; x++) {
        for (int y = 1; y < 256; y++) {
            char a[3] = {(char)x, 'k', '\0'}, b[3] = {(char)y, 'K', '\0'};
            assert_int_equal(pc_strcaseeq(a, b), strcasecmp(a, b) == 0);
        }
    }
    assert_true(pc_strcaseeq("", ""));
    assert_true(pc_strcaseeq("Content-Type", "content-TYPE"));
    assert_false(pc_strcaseeq("Content-Type", "Content-Typ"));
    assert_false(pc_strcaseeq("Content", "Content-Type"));
    assert_false(pc_strcaseeq("", "a"));
}

/* JSON string escaping: quotes, controls, bytes that are not UTF-8; cut at whole
 * characters when the output is full. */
static void test_json_escape(void **state)
{
    (void)state;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_json_chars(&b, "a\"b\\c\n\x01\x7f"), 0);
    assert_string_equal(b.data, "a\\\"b\\\\c\\u000a\\u0001\x7f");
    b.len = 0;
    /* é, €, 😀 kept; a lone continuation byte, an overlong form, a surrogate, a cut
     * sequence escaped byte by byte. */
    assert_int_equal(
        pc_buf_json_chars(
            &b, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82"),
        0);
    assert_string_equal(b.data, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\\u0080|\\u00c0\\u00af|"
                                "\\u00ed\\u00a0\\u0080|\\u00e2\\u0082");
    pc_buf_release(&b);
    char out[8];
    size_t used;
    /* "ab" then \u0001 would need 8: only "ab" and the quote's escape fit in 7. */
    assert_int_equal(pc_json_escape("ab\"\x01", 4, &used, out, 7), 4);
    assert_int_equal(used, 3);
    assert_memory_equal(out, "ab\\\"", 4);
    assert_int_equal(pc_json_escape("x\xe2\x82\xac", 4, &used, out, 3), 1); /* € not cut */
    assert_int_equal(used, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_text_matches_printf),
        cmocka_unit_test(test_appends_match_printf),
        cmocka_unit_test(test_strcaseeq),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
