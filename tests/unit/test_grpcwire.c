/* gRPC's wire pieces: framing, timeouts, status names, grpc-message encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/grpcwire.h"

static void test_frame_round_trip_and_partial(void **state)
{
    (void)state;
    uint8_t buf[16];
    pc_grpc_frame_prefix(buf, 0, 3);
    memcpy(buf + 5, "abc", 3);
    int c;
    const uint8_t *m;
    size_t len, used;
    for (size_t n = 0; n < 8; n++) /* every cut before the end: more bytes needed */
        assert_int_equal(pc_grpc_frame_parse(buf, n, 100, &c, &m, &len, &used), 0);
    assert_int_equal(pc_grpc_frame_parse(buf, 8, 100, &c, &m, &len, &used), 1);
    assert_int_equal(c, 0);
    assert_int_equal(len, 3);
    assert_int_equal(used, 8);
    assert_memory_equal(m, "abc", 3);
    /* with a second message behind it, only the first is taken */
    assert_int_equal(pc_grpc_frame_parse(buf, 10, 100, &c, &m, &len, &used), 1);
    assert_int_equal(used, 8);
    /* an empty message */
    pc_grpc_frame_prefix(buf, 1, 0);
    assert_int_equal(pc_grpc_frame_parse(buf, 5, 100, &c, &m, &len, &used), 1);
    assert_int_equal(c, 1);
    assert_int_equal(len, 0);
}

static void test_frame_limits(void **state)
{
    (void)state;
    uint8_t buf[5];
    int c;
    const uint8_t *m;
    size_t len, used;
    pc_grpc_frame_prefix(buf, 0, 0x01020304);
    assert_int_equal(buf[1], 1);
    assert_int_equal(buf[4], 4);
    assert_int_equal(pc_grpc_frame_parse(buf, 5, 0x01020303, &c, &m, &len, &used), -1);
    assert_int_equal(pc_grpc_frame_parse(buf, 5, 0x01020304, &c, &m, &len, &used), 0);
    buf[0] = 2; /* neither compressed nor not */
    assert_int_equal(pc_grpc_frame_parse(buf, 1, 100, &c, &m, &len, &used), -1);
    /* the largest length there is */
    pc_grpc_frame_prefix(buf, 0, 0xFFFFFFFFu);
    assert_int_equal(pc_grpc_frame_parse(buf, 5, SIZE_MAX, &c, &m, &len, &used), 0);
}

static void test_timeout_parse(void **state)
{
    (void)state;
    assert_int_equal(pc_grpc_timeout_parse("1S"), 1000000);
    assert_int_equal(pc_grpc_timeout_parse("100m"), 100000);
    assert_int_equal(pc_grpc_timeout_parse("2M"), 120000000);
    assert_int_equal(pc_grpc_timeout_parse("1H"), INT64_C(3600000000));
    assert_int_equal(pc_grpc_timeout_parse("7u"), 7);
    assert_int_equal(pc_grpc_timeout_parse("1n"), 1); /* under a microsecond: rounds up */
    assert_int_equal(pc_grpc_timeout_parse("1500n"), 2);
    assert_int_equal(pc_grpc_timeout_parse("0m"), 0);
    assert_int_equal(pc_grpc_timeout_parse("99999999S"), INT64_C(99999999000000));
    assert_int_equal(pc_grpc_timeout_parse("123456789S"), -1); /* 9 digits */
    assert_int_equal(pc_grpc_timeout_parse(""), -1);
    assert_int_equal(pc_grpc_timeout_parse("S"), -1);
    assert_int_equal(pc_grpc_timeout_parse("10"), -1);
    assert_int_equal(pc_grpc_timeout_parse("10s"), -1);
    assert_int_equal(pc_grpc_timeout_parse("10SS"), -1);
    assert_int_equal(pc_grpc_timeout_parse("-1S"), -1);
    assert_int_equal(pc_grpc_timeout_parse(" 1S"), -1);
}

static void test_timeout_format_round_trips_upward(void **state)
{
    (void)state;
    char b[12];
    assert_int_equal(pc_grpc_timeout_format(1500000, b), 8);
    assert_string_equal(b, "1500000u");
    pc_grpc_timeout_format(INT64_C(100000000), b); /* 100 s: 9 digits in u */
    assert_string_equal(b, "100000m");
    pc_grpc_timeout_format(0, b);
    assert_string_equal(b, "1u");
    pc_grpc_timeout_format(INT64_MAX, b);
    assert_string_equal(b, "99999999H");
    /* never shorter than asked, and the parse gives it back rounded up to the unit */
    int64_t vals[] = {1, 999, 1001, 99999999, 100000001, INT64_C(123456789012)};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        pc_grpc_timeout_format(vals[i], b);
        int64_t back = pc_grpc_timeout_parse(b);
        assert_true(back >= vals[i]);
        assert_true(back - vals[i] < 1000 || back - vals[i] <= vals[i] / 10000);
    }
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(pc_grpc_status_name(0), "OK");
    assert_string_equal(pc_grpc_status_name(4), "DEADLINE_EXCEEDED");
    assert_string_equal(pc_grpc_status_name(14), "UNAVAILABLE");
    assert_string_equal(pc_grpc_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(pc_grpc_status_name(17), "UNKNOWN");
    assert_string_equal(pc_grpc_status_name(-1), "UNKNOWN");
    assert_int_equal(pc_grpc_status_from_http(503), PC_GRPC_UNAVAILABLE);
    assert_int_equal(pc_grpc_status_from_http(404), PC_GRPC_UNIMPLEMENTED);
    assert_int_equal(pc_grpc_status_from_http(401), PC_GRPC_UNAUTHENTICATED);
    assert_int_equal(pc_grpc_status_from_http(500), PC_GRPC_UNKNOWN);
}

static void test_message_encoding(void **state)
{
    (void)state;
    char b[64];
    assert_int_equal(pc_grpc_message_encode("plain text", b, sizeof b), 10);
    assert_string_equal(b, "plain text");
    pc_grpc_message_encode("100% sure\n\xc3\xa9", b, sizeof b);
    assert_string_equal(b, "100%25 sure%0A%C3%A9");
    /* never cuts an escape: "a%" -> "a" when %25 does not fit */
    char small[4];
    assert_int_equal(pc_grpc_message_encode("a%b", small, sizeof small), 1);
    assert_string_equal(small, "a");
    assert_int_equal(pc_grpc_message_encode("abc", b, 0), 0);
}

static void test_health_serving(void **state)
{
    (void)state;
    /* HealthCheckResponse{status: SERVING} / ServerReadyResponse{ready: true}: 08 01 */
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x08\x01", 2), 1);
    /* NOT_SERVING (2), UNKNOWN (0), ready false: not */
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x08\x02", 2), 0);
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x08\x00", 2), 0);
    /* an empty message: ready false, UNKNOWN (proto3 writes no default value) */
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"", 0), 0);
    /* other fields skipped: a string field 2, a fixed64 field 3, then status 1 */
    const uint8_t other[] = {0x12, 0x02, 'o', 'k', 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x01};
    assert_int_equal(pc_grpc_health_serving(other, sizeof other), 1);
    /* the last field 1 counts */
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x08\x01\x08\x02", 4), 0);
    /* truncated: a length past the end, a varint cut, a bad wire type */
    assert_int_equal(
        pc_grpc_health_serving((const uint8_t[]){0x12, 0x05, (uint8_t)'a', (uint8_t)'b'}, 4), 0);
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x08\x81", 2), 0);
    assert_int_equal(pc_grpc_health_serving((const uint8_t *)"\x0f\x01", 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_round_trip_and_partial),
        cmocka_unit_test(test_frame_limits),
        cmocka_unit_test(test_timeout_parse),
        cmocka_unit_test(test_timeout_format_round_trips_upward),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_message_encoding),
        cmocka_unit_test(test_health_serving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
