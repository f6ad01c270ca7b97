/* Unit tests of buf's string helpers used on the hot paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
