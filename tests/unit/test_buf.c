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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64_text_matches_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
