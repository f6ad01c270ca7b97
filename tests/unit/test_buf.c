/* Unit tests of buf's string helpers used on the hot paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The arena: copies go into the caller's buffer while they fit (a NUL each), exactly. */
static void test_arena_caller_buffer_first(void **state)
{
    (void)state;
    char first[16];
    struct pc_arena a;
    pc_arena_init(&a, first, sizeof first);
    char *x = pc_arena_strdup(&a, "abc");         /* 4 bytes */
    char *y = pc_arena_strndup(&a, "defgh", 3);   /* 4 bytes: "def" */
    char *e = pc_arena_strndup(&a, "", 0);        /* 1 byte */
    char *z = pc_arena_strndup(&a, "0123456", 6); /* 7 bytes: 16 used, exactly full */
    assert_ptr_equal(x, first);
    assert_ptr_equal(y, first + 4);
    assert_ptr_equal(e, first + 8);
    assert_ptr_equal(z, first + 9);
    assert_null(a.blocks);
    assert_int_equal(a.left, 0);
    char *h = pc_arena_strndup(&a, "", 0); /* even a NUL needs a byte: the heap now */
    assert_non_null(a.blocks);
    assert_true(h < first || h >= first + sizeof first);
    assert_string_equal(x, "abc");
    assert_string_equal(y, "def");
    assert_string_equal(e, "");
    assert_string_equal(z, "012345");
    assert_string_equal(h, "");
    pc_arena_release(&a);
    assert_null(a.blocks);
    assert_int_equal(a.left, 0);
    pc_arena_release(&a); /* twice, and NULL: nothing */
    pc_arena_release(NULL);
}

/* Against a reference (each copy kept on its own): thousands of copies of every length, some
 * longer than a block, never moved or overwritten until the release (ASan and valgrind see
 * a copy past its block, or a block not freed); a zeroed arena and one moved by a struct copy
 * work as well. */
static void test_arena_against_reference(void **state)
{
    (void)state;
    enum { N = 4000 };
    static char *want[N], *got[N];
    static size_t len[N];
    char first[100];
    for (int round = 0; round < 3; round++) {
        struct pc_arena a;
        if (round == 0)
            pc_arena_init(&a, first, sizeof first);
        else
            memset(&a, 0, sizeof a); /* zeroed: an empty arena without a buffer */
        uint64_t r = 0x9e3779b97f4a7c15ULL + (uint64_t)round;
        for (int i = 0; i < N; i++) {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            len[i] = i % 97 == 0 ? 3000 + (size_t)(r % 5000) : (size_t)(r % 300);
            want[i] = malloc(len[i] + 1);
            assert_non_null(want[i]);
            for (size_t k = 0; k < len[i]; k++)
                want[i][k] = (char)('!' + (int)(((r >> (k % 50)) + k) % 90));
            want[i][len[i]] = '\0';
            got[i] = pc_arena_strndup(&a, want[i], len[i]);
            assert_non_null(got[i]);
            if (round == 2 && i == N / 2) { /* moved to a new owner halfway */
                struct pc_arena b = a;
                memset(&a, 0, sizeof a);
                a = b;
            }
        }
        for (int i = 0; i < N; i++) {
            assert_int_equal(strlen(got[i]), len[i]);
            assert_memory_equal(got[i], want[i], len[i] + 1);
            free(want[i]);
        }
        pc_arena_release(&a);
        assert_null(a.blocks);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_text_matches_printf),
        cmocka_unit_test(test_appends_match_printf),
        cmocka_unit_test(test_strcaseeq),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_arena_caller_buffer_first),
        cmocka_unit_test(test_arena_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
