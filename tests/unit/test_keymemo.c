/* Unit tests of keymemo: the memo of keys derived from request bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/keymemo.h"

static struct pc_keymemo_val one_key(const char *key)
{
    return (struct pc_keymemo_val){0, 1, NULL, key, strlen(key) + 1};
}

static int get(struct pc_keymemo *m, const char *ctx, const char *body, struct pc_keymemo_val *out)
{
    struct pc_keymemo_probe probe;
    return pc_keymemo_get(m, ctx, strlen(ctx), body, strlen(body), &probe, out);
}

/* One sighting: probe, then put (the doorkeeper notes the bytes the first time). */
static void see(struct pc_keymemo *m, const char *ctx, const char *body,
                const struct pc_keymemo_val *v)
{
    struct pc_keymemo_probe probe;
    struct pc_keymemo_val ignored;
    pc_keymemo_get(m, ctx, strlen(ctx), body, strlen(body), &probe, &ignored);
    pc_keymemo_put(m, &probe, ctx, strlen(ctx), body, strlen(body), v);
}

/* Two sightings: remembered. */
static void put(struct pc_keymemo *m, const char *ctx, const char *body,
                const struct pc_keymemo_val *v)
{
    see(m, ctx, body, v);
    see(m, ctx, body, v);
}

/* Every entry lands in one chain: only the byte comparisons tell entries apart. */
static uint64_t same_hash(uint64_t seed, const char *ctx, size_t ctx_len, const char *body,
                          size_t len)
{
    (void)seed, (void)ctx, (void)ctx_len, (void)body, (void)len;
    return 42;
}

static void test_whole_body_key_round_trip(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(1 << 20, NULL);
    assert_non_null(m);
    struct pc_keymemo_val v, got;
    assert_int_equal(get(m, "ctx", "{\"a\":1}", &got), 0);
    v = one_key("predcache:v1:abc");
    put(m, "ctx", "{\"a\":1}", &v);
    assert_int_equal(get(m, "ctx", "{\"a\":1}", &got), 1);
    assert_int_equal(got.n, 0);
    assert_int_equal(got.n_uniq, 1);
    assert_null(got.uniq_of);
    assert_string_equal(got.keys, "predcache:v1:abc");
    assert_int_equal(got.keys_len, strlen("predcache:v1:abc") + 1);
    struct pc_keymemo_stats st;
    pc_keymemo_stats(m, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 3); /* the first get, and put()'s two probes */
    assert_int_equal(st.first_seen, 1);
    assert_int_equal(st.puts, 1);
    pc_keymemo_free(m);
}

static void test_batch_round_trip(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(1 << 20, NULL);
    const uint32_t uniq_of[5] = {0, 1, 0, 2, 1};
    const char keys[] = "k0\0k1\0k2"; /* three keys, NULs included */
    struct pc_keymemo_val v = {5, 3, uniq_of, keys, sizeof keys}, got;
    put(m, "c", "{\"instances\":[1,2,1,3,2]}", &v);
    assert_int_equal(get(m, "c", "{\"instances\":[1,2,1,3,2]}", &got), 1);
    assert_int_equal(got.n, 5);
    assert_int_equal(got.n_uniq, 3);
    assert_memory_equal(got.uniq_of, uniq_of, sizeof uniq_of);
    assert_int_equal(got.keys_len, sizeof keys);
    assert_memory_equal(got.keys, keys, sizeof keys);
    pc_keymemo_free(m);
}

/* With one hash for everything, context and body still have to match byte for byte. */
static void test_collisions_never_answer_another_entry(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(1 << 20, same_hash);
    char ctx[32], body[64], key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(ctx, sizeof ctx, "route%d", i % 7);
        snprintf(body, sizeof body, "{\"x\":%d}", i);
        snprintf(key, sizeof key, "key-%d", i);
        struct pc_keymemo_val v = one_key(key);
        put(m, ctx, body, &v);
    }
    struct pc_keymemo_val got;
    for (int i = 0; i < 200; i++) {
        snprintf(ctx, sizeof ctx, "route%d", i % 7);
        snprintf(body, sizeof body, "{\"x\":%d}", i);
        snprintf(key, sizeof key, "key-%d", i);
        assert_int_equal(get(m, ctx, body, &got), 1);
        assert_string_equal(got.keys, key);
        snprintf(ctx, sizeof ctx, "route%d", (i + 1) % 7); /* same body, another context */
        assert_int_equal(get(m, ctx, body, &got), 0);
    }
    assert_int_equal(get(m, "route0", "{\"x\":0} ", &got), 0); /* one byte more */
    assert_int_equal(get(m, "route0", "{\"x\":1}", &got), 0);  /* same length, other bytes */
    assert_int_equal(get(m, "route", "0{\"x\":0}", &got), 0);  /* the same bytes, split apart */
    pc_keymemo_free(m);
}

static void test_put_replaces_the_same_request(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(1 << 20, NULL);
    struct pc_keymemo_val a = one_key("a"), b = one_key("b"), got;
    put(m, "c", "body", &a);
    put(m, "c", "body", &b);
    assert_int_equal(get(m, "c", "body", &got), 1);
    assert_string_equal(got.keys, "b");
    struct pc_keymemo_stats st;
    pc_keymemo_stats(m, &st);
    assert_int_equal(st.entries, 1);
    pc_keymemo_free(m);
}

/* Bounded: the least recently used entries leave first, a lookup refreshes one. */
static void test_bounded_lru(void **state)
{
    (void)state;
    size_t max = 64 * 1024;
    struct pc_keymemo *m = pc_keymemo_new(max, NULL);
    char body[1100], key[32];
    struct pc_keymemo_val got;
    memset(body, 'a', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    for (int i = 0; i < 500; i++) {
        snprintf(key, sizeof key, "%06d", i); /* distinct bodies of 1099 bytes */
        memcpy(body, key, 6);
        snprintf(key, sizeof key, "k%d", i);
        struct pc_keymemo_val v = one_key(key);
        put(m, "c", body, &v);
        if (i >= 1) { /* keep entry 0 in use: it must survive */
            memcpy(body, "000000", 6);
            assert_int_equal(get(m, "c", body, &got), 1);
            assert_string_equal(got.keys, "k0");
        }
        struct pc_keymemo_stats st;
        pc_keymemo_stats(m, &st);
        assert_true(st.bytes <= max);
    }
    struct pc_keymemo_stats st;
    pc_keymemo_stats(m, &st);
    assert_true(st.evictions > 400);
    assert_true(st.entries < 60);
    pc_keymemo_free(m);
}

static void test_too_large_entries_are_not_kept(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(4096, NULL);
    char big[2000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct pc_keymemo_val v = one_key("k"), got;
    put(m, "c", big, &v);
    assert_int_equal(get(m, "c", big, &got), 0);
    put(m, "c", "small", &v);
    assert_int_equal(get(m, "c", "small", &got), 1);
    pc_keymemo_free(m);
}

/* Bytes seen once are not remembered, and a stream of them leaves the memo as it was. */
static void test_doorkeeper_admits_the_second_sighting(void **state)
{
    (void)state;
    struct pc_keymemo *m = pc_keymemo_new(64 * 1024, NULL);
    struct pc_keymemo_val v = one_key("k"), got;
    see(m, "c", "once", &v);
    assert_int_equal(get(m, "c", "once", &got), 0);
    see(m, "c", "once", &v); /* the get above was the second sighting's probe: now the put */
    assert_int_equal(get(m, "c", "once", &got), 1);
    put(m, "c", "hot", &v);
    char body[600];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    for (int i = 0; i < 2000; i++) { /* 1.2 MB of one-off bodies through a 64 KB memo */
        char n[16];
        int len = snprintf(n, sizeof n, "%d", i);
        memcpy(body, n, (size_t)len);
        see(m, "c", body, &v);
    }
    assert_int_equal(get(m, "c", "hot", &got), 1);
    struct pc_keymemo_stats st;
    pc_keymemo_stats(m, &st);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.puts, 2);
    assert_true(st.first_seen >= 2000);
    pc_keymemo_free(m);
}

/* Large bodies are held as their SHA-256: found again, told apart, and cheap to keep. */
static void test_large_bodies_by_digest(void **state)
{
    (void)state;
    size_t big = 1 << 20;
    struct pc_keymemo *m = pc_keymemo_new(64 * 1024, same_hash); /* smaller than one body */
    char *a = malloc(big + 1), *b = malloc(big + 1);
    memset(a, 'a', big);
    a[big] = '\0';
    memcpy(b, a, big + 1);
    b[big / 2] = 'b'; /* one byte apart, same length */
    struct pc_keymemo_val va = one_key("key-a"), vb = one_key("key-b"), got;
    put(m, "c", a, &va);
    put(m, "c", b, &vb);
    assert_int_equal(get(m, "c", a, &got), 1);
    assert_string_equal(got.keys, "key-a");
    assert_int_equal(get(m, "c", b, &got), 1);
    assert_string_equal(got.keys, "key-b");
    a[big - 1] = 'z';
    assert_int_equal(get(m, "c", a, &got), 0);
    struct pc_keymemo_stats st;
    pc_keymemo_stats(m, &st);
    assert_int_equal(st.entries, 2);
    assert_true(st.bytes < 1024);
    /* At the threshold a body is kept as bytes; one byte over, as its digest. A body of
     * 32 bytes never matches a digest that happens to equal its bytes (flagged apart). */
    char edge[PC_KEYMEMO_DIGEST_MIN + 2];
    memset(edge, 'e', sizeof edge - 1);
    edge[sizeof edge - 1] = '\0';
    put(m, "c", edge, &va); /* DIGEST_MIN + 1 bytes: digest */
    edge[PC_KEYMEMO_DIGEST_MIN] = '\0';
    assert_int_equal(get(m, "c", edge, &got), 0); /* DIGEST_MIN bytes: another request */
    free(a);
    free(b);
    pc_keymemo_free(m);
}

static void test_off_and_empty(void **state)
{
    (void)state;
    assert_null(pc_keymemo_new(0, NULL));
    struct pc_keymemo_val v = one_key("k"), got;
    struct pc_keymemo_probe probe;
    assert_int_equal(pc_keymemo_get(NULL, "c", 1, "b", 1, &probe, &got), 0);
    pc_keymemo_put(NULL, &probe, "c", 1, "b", 1, &v); /* nothing, no crash */
    pc_keymemo_free(NULL);
    struct pc_keymemo *m = pc_keymemo_new(1 << 16, NULL);
    put(m, "", "", &v); /* an empty context and body are bytes like any */
    assert_int_equal(get(m, "", "", &got), 1);
    assert_int_equal(get(m, "", "x", &got), 0);
    pc_keymemo_free(m);
}

/*
 * The hash is XXH64 applied twice: XXH64(XXH64(seed, ctx), body). Expected values from
 * the reference implementation (Debian's python3-xxhash, xxhash.xxh64_intdigest).
 */
static void test_hash_is_xxh64(void **state)
{
    (void)state;
    assert_true(pc_keymemo_hash(0, "", 0, "", 0) == 0xa258d6ec1fb5d95cull);
    assert_true(pc_keymemo_hash(0, "", 0, "abc", 3) == 0x52d58cdd5301992eull);
    char x[31], y[32], d[1000];
    memset(x, 'x', sizeof x);
    memset(y, 'y', sizeof y);
    for (size_t i = 0; i < sizeof d; i++)
        d[i] = (char)('0' + i % 10);
    assert_true(pc_keymemo_hash(0, "", 0, x, sizeof x) == 0xf6c423b5bd9199c7ull);
    assert_true(pc_keymemo_hash(0, "", 0, y, sizeof y) == 0xa93017dd72db33dfull);
    assert_true(pc_keymemo_hash(0, "", 0, d, sizeof d) == 0x6e9f62a0c071163aull);
    const char ctx[] = "route\0/v1/models/m:predict\0default";
    const char body[] = "{\"instances\":[[1,2,3]]}";
    assert_true(pc_keymemo_hash(12345, ctx, sizeof ctx - 1, body, sizeof body - 1) ==
                0x7677568b0e7a7ceeull);
}

/* Every single-bit change of the body, at every length and tail shape, changes the hash. */
static void test_hash_sees_every_bit(void **state)
{
    (void)state;
    char b[80];
    for (size_t len = 1; len <= sizeof b; len++) {
        for (size_t i = 0; i < len; i++)
            b[i] = (char)(i * 7 + len);
        uint64_t h0 = pc_keymemo_hash(7, "c", 1, b, len);
        for (size_t i = 0; i < len; i++) {
            for (int bit = 0; bit < 8; bit++) {
                b[i] ^= (char)(1 << bit);
                assert_true(pc_keymemo_hash(7, "c", 1, b, len) != h0);
                b[i] ^= (char)(1 << bit);
            }
        }
        assert_true(pc_keymemo_hash(8, "c", 1, b, len) != h0); /* the seed counts */
    }
}

/* ---- against the reference model (tests/model/keymemo_model.h) ------------------------ */

#include "../model/model_unit.h"

#include "../model/keymemo_model.h"

/*
 * Random requests against the model: every bound with every hash (the first byte: the
 * default seeded one, one hash for all, 32 hashes over 2 doorkeeper slots), three seeds
 * each, about 3800 requests a run (181852 in all).
 */
#define MODEL_BYTES 20000
static void test_model(void **state)
{
    (void)state;
    static const uint64_t seeds[] = {1, 0x5eed, 20240611};
    size_t steps = model_run_configs(keymemo_model_run, 16, seeds, 3, MODEL_BYTES);
    print_message("keymemo model: 48 runs, %zu requests\n", steps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_body_key_round_trip),
        cmocka_unit_test(test_batch_round_trip),
        cmocka_unit_test(test_collisions_never_answer_another_entry),
        cmocka_unit_test(test_put_replaces_the_same_request),
        cmocka_unit_test(test_bounded_lru),
        cmocka_unit_test(test_too_large_entries_are_not_kept),
        cmocka_unit_test(test_doorkeeper_admits_the_second_sighting),
        cmocka_unit_test(test_large_bodies_by_digest),
        cmocka_unit_test(test_off_and_empty),
        cmocka_unit_test(test_hash_is_xxh64),
        cmocka_unit_test(test_hash_sees_every_bit),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
