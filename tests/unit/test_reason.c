/* The list of reasons: every one has a token of its own, the store's are BYPASS's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/reason.h"

static void test_tokens(void **state)
{
    (void)state;
    assert_string_equal(pc_reason_token(PC_REASON_NONE), "");
    assert_string_equal(pc_reason_token((enum pc_reason)PC_REASON_COUNT), "");
    assert_string_equal(pc_reason_token((enum pc_reason) - 1), "");
    for (int a = 1; a < PC_REASON_COUNT; a++) {
        const char *t = pc_reason_token((enum pc_reason)a);
        assert_true(strlen(t) > 0);
        assert_true(strlen(pc_reason_words((enum pc_reason)a)) > 0);
        /* a header value and a Prometheus label: lower case, digits and '-' only */
        assert_int_equal(strspn(t, "abcdefghijklmnopqrstuvwxyz0123456789-"), strlen(t));
        for (int b = a + 1; b < PC_REASON_COUNT; b++)
            assert_string_not_equal(t, pc_reason_token((enum pc_reason)b));
    }
    assert_string_equal(pc_reason_token(PC_REASON_VERSION_UNKNOWN), "version-unknown");
    assert_string_equal(pc_reason_token(PC_REASON_RESPONSE_PRIVATE), "response-private");
}

static void test_store_reasons(void **state)
{
    (void)state;
    int store = 0;
    for (int r = 0; r < PC_REASON_COUNT; r++)
        store += pc_reason_is_store((enum pc_reason)r);
    assert_int_equal(store, 3);
    assert_true(pc_reason_is_store(PC_REASON_REDIS_UNAVAILABLE));
    assert_true(pc_reason_is_store(PC_REASON_GENERATION_UNKNOWN));
    assert_false(pc_reason_is_store(PC_REASON_CREDENTIALS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_store_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
