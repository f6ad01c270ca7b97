/* Unit tests of resp: fixed commands byte for byte, then random commands (any bytes, any
 * length, the lengths around each power of ten) against hiredis's redisFormatCommandArgv,
 * the formatter predcache used before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "../model/model.h"
#include "predcache/resp.h"

static void expect(int argc, const char *const *argv, const size_t *lens, const char *want)
{
    char *out = NULL;
    long n = pc_resp_command(&out, argc, argv, lens);
    assert_non_null(out);
    assert_int_equal(n, (long)strlen(want));
    assert_memory_equal(out, want, (size_t)n);
    assert_int_equal(out[n], '\0');
    free(out);
}

static void test_fixed(void **state)
{
    (void)state;
    const char *ping[] = {"PING"};
    size_t ping_len[] = {4};
    expect(1, ping, ping_len, "*1\r\n$4\r\nPING\r\n");
    const char *set[] = {"SET", "k", "", "EX", "86400"};
    size_t set_len[] = {3, 1, 0, 2, 5};
    expect(5, set, set_len, "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nEX\r\n$5\r\n86400\r\n");
    const char *bin[] = {"GET", "a\r\n\0b"};
    size_t bin_len[] = {3, 5};
    char *out = NULL;
    long n = pc_resp_command(&out, 2, bin, bin_len);
    assert_int_equal(n, 24);
    assert_memory_equal(out, "*2\r\n$3\r\nGET\r\n$5\r\na\r\n\0b\r\n", 24);
    free(out);
}

static void test_refused(void **state)
{
    (void)state;
    char *out = (char *)"x";
    assert_int_equal(pc_resp_command(&out, 0, NULL, NULL), -1);
    assert_null(out);
}

static uint64_t rng = 88172645463325252ull;

static uint64_t next(void)
{
    return model_next(&rng);
}

/* A length: often near a power of ten (where the digits of "$<len>" change). */
static size_t some_len(void)
{
    static const size_t near[] = {0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 9999, 10000};
    if (next() % 2 == 0)
        return near[next() % (sizeof near / sizeof near[0])];
    return (size_t)(next() % 20000);
}

static void test_against_hiredis(void **state)
{
    (void)state;
    enum { ARGS = 24, RUNS = 3000 };
    char *bytes = malloc(ARGS * 20000);
    assert_non_null(bytes);
    model_fill((uint8_t *)bytes, ARGS * 20000, 7);
    for (int run = 0; run < RUNS; run++) {
        int argc = 1 + (int)(next() % (run % 10 == 0 ? ARGS : 6));
        const char *argv[ARGS];
        size_t lens[ARGS];
        for (int i = 0; i < argc; i++) {
            lens[i] = some_len();
            argv[i] = bytes + (size_t)i * 20000;
        }
        char *want = NULL, *got = NULL;
        int wn = redisFormatCommandArgv(&want, argc, argv, lens);
        long gn = pc_resp_command(&got, argc, argv, lens);
        assert_true(wn > 0);
        assert_int_equal(gn, wn);
        assert_memory_equal(got, want, (size_t)wn);
        redisFreeCommand(want);
        free(got);
    }
    free(bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_against_hiredis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
