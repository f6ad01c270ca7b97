/* Unit tests of slots: CRC16 and key slots against what redis-server 7.0 answers to
 * CLUSTER KEYSLOT, the slot map against a plain reference (one address per slot), and the
 * reading of MOVED / ASK. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/slots.h"

static void test_crc16_and_key_slots(void **state)
{
    (void)state;
    assert_int_equal(pc_slot_crc16("123456789", 9), 0x31C3); /* the XMODEM check value */
    /* redis-cli CLUSTER KEYSLOT <key>, redis-server 7.0.15 */
    static const struct {
        const char *key;
        unsigned slot;
    } v[] = {
        {"123456789", 12739},
        {"foo", 12182},
        {"hello", 866},
        {"somekey", 11058},
        {"{user1000}.following", 3443},
        {"{user1000}.followers", 3443},
        {"foo{}{bar}", 8363},    /* an empty tag: the whole key */
        {"foo{{bar}}zap", 4015}, /* the tag is "{bar" */
        {"foo{bar}{zap}", 5061}, /* the first tag only */
        {"", 0},
        {"{}", 15257},
        {"a{b", 13340}, /* no closing brace: the whole key */
        {"predcache:v2:{7b6156d75f62f246fcdfb55db85a085e81a09ecc3c494319515425d9599432e8}", 599},
        {"predcache:v2:{7b6156d75f62f246fcdfb55db85a085e81a09ecc3c494319515425d9599432e8}:lock",
         599},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned got = pc_slot_of(v[i].key, strlen(v[i].key));
        if (got != v[i].slot)
            fail_msg("slot of '%s': %u, redis says %u", v[i].key, got, v[i].slot);
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The table-driven CRC16 against the bitwise definition, over random bytes. */
static uint16_t crc16_bitwise(const unsigned char *s, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(s[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

static void test_crc16_against_bitwise(void **state)
{
    (void)state;
    unsigned char buf[300];
    for (int round = 0; round < 2000; round++) {
        size_t len = rnd() % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)rnd();
        assert_int_equal(pc_slot_crc16((const char *)buf, len), crc16_bitwise(buf, len));
    }
}

/* Random assignments of slot ranges to a few dozen addresses, against one address per
 * slot kept plainly. */
static void test_slotmap_against_reference(void **state)
{
    (void)state;
    static struct pc_slotmap m;
    static int ref[PC_SLOTS]; /* the port serving each slot, 0 none (hosts follow ports) */
    pc_slotmap_init(&m);
    memset(ref, 0, sizeof ref);
    assert_int_equal(pc_slotmap_uncovered(&m), PC_SLOTS);
    for (int op = 0; op < 20000; op++) {
        unsigned a = (unsigned)(rnd() % PC_SLOTS), b = (unsigned)(rnd() % PC_SLOTS);
        unsigned first = a < b ? a : b, last = a < b ? b : a;
        if (rnd() % 4 == 0)
            last = first; /* a MOVED: one slot */
        int port = 7000 + (int)(rnd() % 40);
        char host[32];
        snprintf(host, sizeof host, "10.0.0.%d", port - 7000);
        assert_int_equal(pc_slotmap_assign(&m, first, last, host, port), 0);
        for (unsigned s = first; s <= last; s++)
            ref[s] = port;
        unsigned probe = (unsigned)(rnd() % PC_SLOTS);
        const struct pc_slot_node *n = pc_slotmap_owner(&m, probe);
        if (ref[probe] == 0) {
            assert_null(n);
        } else {
            assert_non_null(n);
            assert_int_equal(n->port, ref[probe]);
            char want[32];
            snprintf(want, sizeof want, "10.0.0.%d", ref[probe] - 7000);
            assert_string_equal(n->host, want);
        }
    }
    size_t none = 0;
    for (unsigned s = 0; s < PC_SLOTS; s++) {
        const struct pc_slot_node *n = pc_slotmap_owner(&m, s);
        none += ref[s] == 0;
        assert_int_equal(n == NULL ? 0 : n->port, ref[s]);
    }
    assert_int_equal(pc_slotmap_uncovered(&m), none);
    assert_true(m.n_nodes <= 40);
}

static void test_slotmap_limits(void **state)
{
    (void)state;
    static struct pc_slotmap m;
    pc_slotmap_init(&m);
    assert_int_equal(pc_slotmap_assign(&m, 5, 4, "h", 1), -1);        /* first > last */
    assert_int_equal(pc_slotmap_assign(&m, 0, PC_SLOTS, "h", 1), -1); /* past the last slot */
    assert_int_equal(pc_slotmap_assign(&m, 0, 1, "", 1), -1);
    assert_int_equal(pc_slotmap_assign(&m, 0, 1, "h", 0), -1);
    assert_int_equal(pc_slotmap_assign(&m, 0, 1, "h", 65536), -1);
    assert_null(pc_slotmap_owner(&m, PC_SLOTS));
    for (int i = 0; i < PC_SLOT_NODES_MAX; i++)
        assert_int_equal(pc_slotmap_assign(&m, (unsigned)i, (unsigned)i, "h", 1000 + i), 0);
    assert_int_equal(pc_slotmap_assign(&m, 100, 200, "h", 5000), -1); /* no room: unchanged */
    assert_null(pc_slotmap_owner(&m, 150));
    assert_int_equal(pc_slotmap_assign(&m, 100, 200, "h", 1000), 0); /* a known node: fine */
    assert_int_equal(pc_slotmap_owner(&m, 150)->port, 1000);
}

static void test_redirects(void **state)
{
    (void)state;
    int ask, port;
    unsigned slot;
    char host[64];
#define OK(s, want_ask, want_slot, want_host, want_port)                                           \
    do {                                                                                           \
        assert_int_equal(                                                                          \
            pc_slot_parse_redirect(s, strlen(s), &ask, &slot, host, sizeof host, &port), 0);       \
        assert_int_equal(ask, want_ask);                                                           \
        assert_int_equal(slot, want_slot);                                                         \
        assert_string_equal(host, want_host);                                                      \
        assert_int_equal(port, want_port);                                                         \
    } while (0)
#define BAD(s)                                                                                     \
    assert_int_equal(pc_slot_parse_redirect(s, strlen(s), &ask, &slot, host, sizeof host, &port),  \
                     -1)
    OK("MOVED 3999 127.0.0.1:6381", 0, 3999, "127.0.0.1", 6381);
    OK("ASK 0 10.1.2.3:7000", 1, 0, "10.1.2.3", 7000);
    OK("MOVED 16383 redis-2.example:6379", 0, 16383, "redis-2.example", 6379);
    OK("MOVED 1 [::1]:7001", 0, 1, "::1", 7001);
    OK("MOVED 1 ::1:7001", 0, 1, "::1", 7001);
    BAD("MOVED 16384 127.0.0.1:6381"); /* no such slot */
    BAD("MOVED 0399 127.0.0.1:6381");  /* a leading zero */
    BAD("MOVED 3999 127.0.0.1");
    BAD("MOVED 3999 127.0.0.1:");
    BAD("MOVED 3999 :6381");
    BAD("MOVED 3999 127.0.0.1:0");
    BAD("MOVED 3999 127.0.0.1:65536");
    BAD("MOVED 3999 127.0.0.1:6381 x");
    BAD("MOVED  3999 127.0.0.1:6381");
    BAD("ERR MOVED 3999 127.0.0.1:6381");
    BAD("ASK");
    BAD("CLUSTERDOWN The cluster is down");
#undef OK
#undef BAD
}

/* Where the keys of the commands predcache sends are, to route them. */
static void test_command_keys(void **state)
{
    (void)state;
#define KEYS(want_first, want_n, ...)                                                              \
    do {                                                                                           \
        const char *argv[] = {__VA_ARGS__};                                                        \
        size_t lens[sizeof argv / sizeof argv[0]];                                                 \
        int argc = (int)(sizeof argv / sizeof argv[0]), first = -1;                                \
        for (int i = 0; i < argc; i++)                                                             \
            lens[i] = strlen(argv[i]);                                                             \
        int n = pc_slot_command_keys(argc, argv, lens, &first);                                    \
        assert_int_equal(n, want_n);                                                               \
        if (want_n > 0)                                                                            \
            assert_int_equal(first, want_first);                                                   \
    } while (0)
    KEYS(1, 1, "GET", "k");
    KEYS(1, 1, "get", "k");
    KEYS(1, 1, "SET", "k", "v", "EX", "10");
    KEYS(1, 1, "HGETALL", "h");
    KEYS(1, 1, "XAUTOCLAIM", "s", "g", "c", "1000", "0-0", "COUNT", "10");
    KEYS(1, 3, "MGET", "a", "b", "c");
    KEYS(1, 2, "DEL", "a", "b");
    KEYS(3, 2, "EVAL", "script", "2", "k1", "k2", "a1");
    KEYS(3, 1, "EVALSHA", "sha", "1", "k1");
    KEYS(0, 0, "EVAL", "script", "0", "a1");
    KEYS(0, 0, "EVAL", "script", "x", "k1"); /* not a number: no key said */
    KEYS(3, 1, "EVAL", "script", "5", "k1"); /* more keys than arguments: the rest */
    KEYS(9, 1, "XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "10", "STREAMS", "s", ">");
    KEYS(2, 1, "XGROUP", "CREATE", "s", "g", "0");
    KEYS(0, 0, "PING");
    KEYS(0, 0, "PUBLISH", "chan", "msg");
    KEYS(0, 0, "CLUSTER", "SLOTS");
    KEYS(0, 0, "XREADGROUP", "GROUP", "g", "c");
#undef KEYS
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_and_key_slots),
        cmocka_unit_test(test_crc16_against_bitwise),
        cmocka_unit_test(test_slotmap_against_reference),
        cmocka_unit_test(test_slotmap_limits),
        cmocka_unit_test(test_redirects),
        cmocka_unit_test(test_command_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
