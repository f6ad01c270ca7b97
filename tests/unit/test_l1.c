/* Unit tests of l1: the in-process tier, on a fake clock, and against its reference model. */
#include "../model/model_unit.h"

#include <string.h>

#include "predcache/buf.h"
#include "predcache/l1.h"

#include "../model/l1_model.h"

static int64_t fake_now(void *arg)
{
    return *(const int64_t *)arg;
}

static uint64_t key_hash(const char *key)
{
    return model_fnv1a(key, strlen(key));
}

/* Two keys whose hashes agree on the low `bits` bits: the same shard (h % 16) and the same
 * bucket chain ((h / 16) & (n_buckets - 1)) for every n_buckets up to 2^(bits - 4). */
static void colliding_pair(unsigned bits, char a[16], char b[16])
{
    char keys[2][16];
    model_colliding(keys[0], sizeof keys[0], 2, "a", ((uint64_t)1 << bits) - 1);
    memcpy(a, keys[0], 16);
    memcpy(b, keys[1], 16);
}

static void test_off_and_null(void **state)
{
    (void)state;
    assert_null(pc_l1_new(0, 1000, NULL));
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_l1_get(NULL, "k", &out), 0);
    pc_l1_put(NULL, "k", "v", 1);
    pc_l1_del(NULL, "k");
    struct pc_l1_stats st;
    pc_l1_stats(NULL, &st);
    assert_int_equal(st.entries, 0);
    pc_l1_free(NULL);
    assert_int_equal(out.len, 0);
}

static void test_round_trip_and_age(void **state)
{
    (void)state;
    int64_t now = 5000;
    struct pc_clock clock = {fake_now, &now};
    struct pc_l1 *l1 = pc_l1_new(1 << 20, 100, &clock);
    assert_non_null(l1);
    struct pc_buf out;
    pc_buf_init(&out);
    pc_l1_put(l1, "k", "value", 5);
    pc_l1_put(l1, "empty", "", 0);
    assert_int_equal(pc_l1_get(l1, "k", &out), 1);
    assert_int_equal(pc_l1_get(l1, "empty", &out), 1);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "value", 5);
    now += 100; /* exactly max_age_ms old: still served */
    assert_int_equal(pc_l1_get(l1, "k", &out), 1);
    now += 1;
    assert_int_equal(pc_l1_get(l1, "k", &out), 0);
    assert_int_equal(out.len, 10);
    struct pc_l1_stats st;
    pc_l1_stats(l1, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.entries, 1); /* "empty" is not read again: it stays until then */
    assert_int_equal(st.bytes, strlen("empty") + 64);
    pc_buf_release(&out);
    pc_l1_free(l1);
}

/*
 * The bug this file was written for: a get that found its entry too old removed it through
 * the bucket slot, which then held the next entry of the chain, and served that entry:
 * another key's value. Here the older key A comes first in its chain and the younger B
 * second. Insertion is at the chain's head, so the later put comes first; the doubling
 * (grow) relinks each chain in reverse, which brings A, put first, back in front of B.
 */
static void test_expired_entry_never_serves_its_chain_neighbour(void **state)
{
    (void)state;
    char a[16], b[16];
    colliding_pair(11, a, b); /* one chain at 64 and at 128 buckets */
    uint64_t shard = key_hash(a) % 16, bucket = (key_hash(a) / 16) & 127;
    int64_t now = 1000;
    struct pc_clock clock = {fake_now, &now};
    struct pc_l1 *l1 = pc_l1_new(1 << 20, 100, &clock); /* 64 KB a shard: nothing evicted */
    assert_non_null(l1);
    pc_l1_put(l1, a, "value-of-A", 10);
    now += 60;
    pc_l1_put(l1, b, "value-of-B", 10); /* chain: B, A */
    /* 63 more keys of the same shard, away from A's chain: the 65th entry doubles the
     * shard's 64 buckets, and the chain becomes A, B. */
    char k[16];
    for (unsigned i = 0, n = 0; n < 63; i++) {
        snprintf(k, sizeof k, "f%u", i);
        uint64_t h = key_hash(k);
        if (h % 16 != shard || ((h / 16) & 127) == bucket)
            continue;
        pc_l1_put(l1, k, "filler", 6);
        n++;
    }
    struct pc_l1_stats st;
    pc_l1_stats(l1, &st);
    assert_int_equal(st.entries, 65);
    now += 41; /* A is 101 ms old, past max_age_ms; B is 41 */
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_l1_get(l1, a, &out), 0);
    assert_int_equal(out.len, 0); /* never B's value */
    assert_int_equal(pc_l1_get(l1, b, &out), 1);
    assert_int_equal(out.len, 10);
    assert_memory_equal(out.data, "value-of-B", 10);
    pc_l1_stats(l1, &st);
    assert_int_equal(st.entries, 64);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    pc_buf_release(&out);
    pc_l1_free(l1);
}

/* The same without the doubling: both too old, the one in front asked for first. */
static void test_expired_entry_never_serves_an_expired_neighbour(void **state)
{
    (void)state;
    char a[16], b[16];
    colliding_pair(10, a, b);
    int64_t now = 1000;
    struct pc_clock clock = {fake_now, &now};
    struct pc_l1 *l1 = pc_l1_new(1 << 20, 100, &clock);
    pc_l1_put(l1, b, "value-of-B", 10);
    pc_l1_put(l1, a, "value-of-A", 10); /* chain: A, B */
    now += 101;
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_l1_get(l1, a, &out), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(pc_l1_get(l1, b, &out), 0);
    assert_int_equal(out.len, 0);
    struct pc_l1_stats st;
    pc_l1_stats(l1, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    pc_buf_release(&out);
    pc_l1_free(l1);
}

/*
 * Random operations against the model: every bound and max_age_ms (the first byte), three
 * seeds each, about 7000 operations a run (341369 in all).
 */
#define MODEL_BYTES 20000
static void test_model(void **state)
{
    (void)state;
    static const uint64_t seeds[] = {1, 0x5eed, 20240611};
    size_t steps = model_run_configs(l1_model_run, 16, seeds, 3, MODEL_BYTES);
    print_message("l1 model: 48 runs, %zu operations\n", steps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_and_null),
        cmocka_unit_test(test_round_trip_and_age),
        cmocka_unit_test(test_expired_entry_never_serves_its_chain_neighbour),
        cmocka_unit_test(test_expired_entry_never_serves_an_expired_neighbour),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
