/* Unit tests of verify: comparing a cached answer with a fresh one, and the sampler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/config.h"
#include "predcache/verify.h"

static int json_eq(const char *a, const char *b, double tol)
{
    return pc_verify_json_equal(a, strlen(a), b, strlen(b), tol);
}

static enum pc_verify_result cmp(int mode, double tol, int sa, const char *a, int sb, const char *b)
{
    return pc_verify_compare(mode, tol, sa, a, strlen(a), sb, b, strlen(b));
}

static void test_bytes(void **state)
{
    (void)state;
    assert_int_equal(cmp(PC_VERIFY_BYTES, 0, 200, "{\"a\":1}", 200, "{\"a\":1}"), PC_VERIFY_MATCH);
    assert_int_equal(cmp(PC_VERIFY_BYTES, 0, 200, "{\"a\":1}", 200, "{\"a\": 1}"),
                     PC_VERIFY_MISMATCH);
    assert_int_equal(cmp(PC_VERIFY_BYTES, 0, 200, "x", 201, "x"), PC_VERIFY_MISMATCH);
    assert_int_equal(cmp(PC_VERIFY_BYTES, 0, 200, "", 200, ""), PC_VERIFY_MATCH);
    /* Bytes after a NUL count. */
    assert_int_equal(pc_verify_compare(PC_VERIFY_BYTES, 0, 200, "a\0b", 3, 200, "a\0c", 3),
                     PC_VERIFY_MISMATCH);
}

static void test_json_structure(void **state)
{
    (void)state;
    assert_int_equal(json_eq("{\"a\":1,\"b\":[1,2]}", " { \"b\" : [1, 2], \"a\" : 1 } ", 0), 1);
    assert_int_equal(json_eq("{\"a\":1}", "{\"a\":1,\"b\":null}", 0), 0);
    assert_int_equal(json_eq("{\"a\":1,\"b\":2}", "{\"a\":1,\"c\":2}", 0), 0);
    assert_int_equal(json_eq("[1,2]", "[2,1]", 0), 0);
    assert_int_equal(json_eq("[1,2]", "[1,2,3]", 0), 0);
    assert_int_equal(json_eq("\"x\"", "\"x\"", 0), 1);
    assert_int_equal(json_eq("\"x\"", "\"y\"", 0), 0);
    assert_int_equal(json_eq("\"a\\u0000b\"", "\"a\\u0000c\"", 0), 0); /* whole string */
    assert_int_equal(json_eq("true", "true", 0), 1);
    assert_int_equal(json_eq("true", "false", 0), 0);
    assert_int_equal(json_eq("null", "null", 0), 1);
    assert_int_equal(json_eq("null", "0", 0), 0);
    assert_int_equal(json_eq("{}", "[]", 0), 0);
    assert_int_equal(json_eq("\"1\"", "1", 0), 0);
    /* The last of repeated names is the value, as the model servers read it. */
    assert_int_equal(json_eq("{\"a\":1,\"a\":2}", "{\"a\":2}", 0), 1);
    assert_int_equal(json_eq("{\"a\":1,\"a\":2}", "{\"a\":1}", 0), 0);
}

static void test_json_numbers(void **state)
{
    (void)state;
    assert_int_equal(json_eq("[1]", "[1.0]", 0), 1);
    assert_int_equal(json_eq("[0.1]", "[0.10000000001]", 0), 0);
    assert_int_equal(json_eq("[0.1]", "[0.10000000001]", 1e-9), 1);
    /* Absolute up to 1, relative above. */
    assert_int_equal(json_eq("[0.5]", "[0.5000009]", 1e-6), 1);
    assert_int_equal(json_eq("[0.5]", "[0.500002]", 1e-6), 0);
    assert_int_equal(json_eq("[2000]", "[2000.0015]", 1e-6), 1);
    assert_int_equal(json_eq("[2000]", "[2000.003]", 1e-6), 0);
    assert_int_equal(json_eq("[-3]", "[3]", 1e-6), 0);
    /* Integers past 2^53: only the same integer. */
    assert_int_equal(json_eq("[9007199254740993]", "[9007199254740992]", 0.5), 0);
    assert_int_equal(json_eq("[9007199254740993]", "[9007199254740993]", 0), 1);
    assert_int_equal(json_eq("[18446744073709551615]", "[18446744073709551614]", 0.5), 0);
    assert_int_equal(json_eq("[1e400]", "[1e400]", 0), 1); /* json-c: both infinite */
}

static void test_json_unparsable(void **state)
{
    (void)state;
    assert_int_equal(json_eq("{\"a\":", "{\"a\":1}", 0), -1);
    assert_int_equal(json_eq("{\"a\":1} x", "{\"a\":1}", 0), -1);
    assert_int_equal(json_eq("", "", 0), -1);
    /* Not JSON: bytes decide. */
    assert_int_equal(cmp(PC_VERIFY_JSON, 0, 200, "abc", 200, "abc"), PC_VERIFY_MATCH);
    assert_int_equal(cmp(PC_VERIFY_JSON, 0, 200, "abc", 200, "abd"), PC_VERIFY_MISMATCH);
    assert_int_equal(cmp(PC_VERIFY_JSON, 0, 200, "{\"a\":1}", 200, "{ \"a\" : 1 }"),
                     PC_VERIFY_MATCH);
    assert_int_equal(cmp(PC_VERIFY_JSON, 0, 200, "{\"a\":1}", 404, "{\"a\":1}"),
                     PC_VERIFY_MISMATCH);
}

static void test_sampler(void **state)
{
    (void)state;
    uint64_t s = 12345;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(pc_verify_sampled(&s, 0), 0);
        assert_int_equal(pc_verify_sampled(&s, 1), 1);
    }
    int n = 0;
    for (int i = 0; i < 100000; i++)
        n += pc_verify_sampled(&s, 0.1);
    assert_in_range(n, 9000, 11000); /* mean 10000, sd 95 */
    s = 0;                           /* a zero state does not stick */
    n = 0;
    for (int i = 0; i < 1000; i++)
        n += pc_verify_sampled(&s, 0.5);
    assert_in_range(n, 400, 600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes),        cmocka_unit_test(test_json_structure),
        cmocka_unit_test(test_json_numbers), cmocka_unit_test(test_json_unparsable),
        cmocka_unit_test(test_sampler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
