/* Unit tests of purges: the entries a worker heard purged lately. Fixed cases (NULL, the
 * bounds of "at or after", backward times, a full ring), then random operations against
 * an exact model of every purge ever heard. */
#include "../model/model_unit.h"

#include <stdio.h>
#include <string.h>

#include "predcache/purges.h"

/* NULL is an empty log that ignores adds; a capacity of 0 is made 1, and that log works. */
static void test_null_and_zero_cap(void **state)
{
    (void)state;
    assert_int_equal(pc_purges_since(NULL, "k", 0), 0);
    pc_purges_add(NULL, "k", 100); /* no crash */
    assert_int_equal(pc_purges_count(NULL), 0);
    pc_purges_free(NULL);

    struct pc_purges *pl = pc_purges_new(0);
    assert_non_null(pl);
    pc_purges_add(pl, "a", 5);
    assert_int_equal(pc_purges_since(pl, "a", 5), 1);
    assert_int_equal(pc_purges_since(pl, "b", 5), 0);
    pc_purges_add(pl, "b", 6); /* a is forgotten: it was at 5 */
    assert_int_equal(pc_purges_count(pl), 2);
    assert_int_equal(pc_purges_since(pl, "b", 6), 1);
    assert_int_equal(pc_purges_since(pl, "a", 6), 0); /* after the forgotten one: exact */
    assert_int_equal(pc_purges_since(pl, "x", 5), 1); /* at the forgotten one: any key */
    assert_int_equal(pc_purges_since(pl, "x", 7), 0); /* after everything heard */
    pc_purges_free(pl);
}

/* A purge counts for a request that began at or before it, and only for its own key. */
static void test_at_or_after(void **state)
{
    (void)state;
    struct pc_purges *pl = pc_purges_new(8);
    assert_non_null(pl);
    assert_int_equal(pc_purges_since(pl, "k", 0), 0); /* empty */
    assert_int_equal(pc_purges_count(pl), 0);
    pc_purges_add(pl, "k", 100);
    assert_int_equal(pc_purges_count(pl), 1);
    assert_int_equal(pc_purges_since(pl, "k", 100), 1); /* began at the purge: at */
    assert_int_equal(pc_purges_since(pl, "k", 50), 1);  /* began before it */
    assert_int_equal(pc_purges_since(pl, "k", 101), 0); /* began after it */
    assert_int_equal(pc_purges_since(pl, "other", 50), 0);
    pc_purges_free(pl);
}

/* A time before the newest kept counts as the newest: b, added at 150 after a at 200, is
 * purged at 200 (later, never earlier, than it said: the safe direction). */
static void test_backward_time_clamped(void **state)
{
    (void)state;
    struct pc_purges *pl = pc_purges_new(8);
    assert_non_null(pl);
    pc_purges_add(pl, "a", 200);
    pc_purges_add(pl, "b", 150);
    assert_int_equal(pc_purges_since(pl, "b", 150), 1);
    assert_int_equal(pc_purges_since(pl, "b", 200), 1); /* b counts as purged at 200 */
    assert_int_equal(pc_purges_since(pl, "b", 201), 0);
    assert_int_equal(pc_purges_since(pl, "a", 200), 1);
    assert_int_equal(pc_purges_since(pl, "a", 201), 0);
    assert_int_equal(pc_purges_count(pl), 2);
    pc_purges_free(pl);
}

/* A full ring forgets its oldest: at or before the newest forgotten one's time (20) every
 * key may have been purged; after it the kept ones answer exactly. */
static void test_overflow(void **state)
{
    (void)state;
    struct pc_purges *pl = pc_purges_new(4);
    assert_non_null(pl);
    static const char *const keys[] = {"k0", "k1", "k2", "k3", "k4", "k5"};
    for (unsigned i = 0; i < 6; i++)
        pc_purges_add(pl, keys[i], 10 * (i + 1)); /* k0 at 10 ... k5 at 60 */
    assert_int_equal(pc_purges_count(pl), 6);

    /* k0 (10) and k1 (20) are forgotten: at or before 20, any key. */
    assert_int_equal(pc_purges_since(pl, "never", 20), 1);
    assert_int_equal(pc_purges_since(pl, "never", 15), 1);
    assert_int_equal(pc_purges_since(pl, "never", 0), 1);
    assert_int_equal(pc_purges_since(pl, "k0", 20), 1);

    /* After 20: exact. */
    assert_int_equal(pc_purges_since(pl, "never", 21), 0);
    assert_int_equal(pc_purges_since(pl, "k0", 21), 0); /* purged at 10: before */
    assert_int_equal(pc_purges_since(pl, "k1", 21), 0); /* purged at 20: before */
    assert_int_equal(pc_purges_since(pl, "k2", 21), 1);
    assert_int_equal(pc_purges_since(pl, "k2", 30), 1);
    assert_int_equal(pc_purges_since(pl, "k2", 31), 0);
    assert_int_equal(pc_purges_since(pl, "k3", 31), 1);
    assert_int_equal(pc_purges_since(pl, "k5", 60), 1);
    assert_int_equal(pc_purges_since(pl, "k5", 61), 0); /* after everything heard */
    assert_int_equal(pc_purges_since(pl, "k4", 51), 0);
    pc_purges_free(pl);
}

/*
 * The model: every purge ever added, in order (all_key, all_us), and each pool key's
 * latest purge time (last_us; has says it was purged at all). A key was purged at or
 * after since exactly when its latest purge was. Times only grow here, so the log never
 * clamps and the model's times are the log's.
 */
#define POOL 50
#define ABSENT POOL /* a key never added: the pool's 51st name */

struct model {
    char names[POOL + 1][32];
    unsigned *all_key;
    uint64_t *all_us;
    size_t adds, max;
    uint64_t last_us[POOL + 1];
    int has[POOL + 1];
};

static void model_init(struct model *m, size_t max)
{
    memset(m, 0, sizeof *m);
    for (unsigned k = 0; k < POOL; k++)
        snprintf(m->names[k], sizeof m->names[k], "predcache:v2:{%u}", k);
    snprintf(m->names[ABSENT], sizeof m->names[ABSENT], "predcache:v2:{absent}");
    /* The exact answers assume no two names share a 64-bit hash: check it. */
    for (unsigned a = 0; a <= POOL; a++)
        for (unsigned b = a + 1; b <= POOL; b++)
            assert_true(model_fnv1a(m->names[a], strlen(m->names[a])) !=
                        model_fnv1a(m->names[b], strlen(m->names[b])));
    m->all_key = calloc(max, sizeof *m->all_key);
    m->all_us = calloc(max, sizeof *m->all_us);
    assert_non_null(m->all_key);
    assert_non_null(m->all_us);
    m->max = max;
}

static void model_free(struct model *m)
{
    free(m->all_key);
    free(m->all_us);
}

static void model_add(struct model *m, unsigned k, uint64_t us)
{
    assert_true(m->adds < m->max);
    m->all_key[m->adds] = k;
    m->all_us[m->adds] = us;
    m->adds++;
    if (!m->has[k] || us > m->last_us[k])
        m->last_us[k] = us;
    m->has[k] = 1;
}

static int model_since(const struct model *m, unsigned k, uint64_t since_us)
{
    return m->has[k] && m->last_us[k] >= since_us;
}

/* A since worth asking about: around a past purge, the newest forgotten one, now, or any
 * time up to just past now (the boundaries are where an off-by-one would show). */
static uint64_t pick_since(struct model *m, uint64_t *rng, size_t cap)
{
    uint64_t now = m->all_us[m->adds - 1];
    uint64_t r = model_next(rng);
    uint64_t d = (r >> 8) % 3; /* -1, 0, +1 */
    uint64_t base;
    switch (r % 4) {
    case 0:
        return (r >> 16) % (now + 3);
    case 1:
        base = m->all_us[(r >> 16) % m->adds];
        break;
    case 2:
        base = m->adds > cap ? m->all_us[m->adds - cap - 1] : now;
        break;
    default:
        base = now;
        break;
    }
    return base + d > 0 ? base + d - 1 : 0;
}

/*
 * One run: adds purges of random pool keys at non-decreasing times (steps of 0, small and
 * large) into a log of cap, asking QUERIES random (key, since) after each add. Checks:
 * - soundness: purged at or after since by the model => the log says 1;
 * - exactness: nothing forgotten yet, or since after the newest forgotten one's time (the
 *   (adds - cap)-th add's) => the log says what the model says;
 * - at or before the newest forgotten one's time the log says 1 (the header's promise);
 * - the count is the adds.
 */
#define QUERIES 6
static void model_run(size_t cap, uint64_t seed, size_t n_adds)
{
    struct model m;
    model_init(&m, n_adds);
    struct pc_purges *pl = pc_purges_new(cap);
    assert_non_null(pl);
    uint64_t rng = seed;
    uint64_t now = 1000;
    for (size_t i = 0; i < n_adds; i++) {
        uint64_t r = model_next(&rng);
        switch (r % 3) {
        case 0:
            break; /* the same microsecond */
        case 1:
            now += 1 + (r >> 8) % 3;
            break;
        default:
            now += 1 + (r >> 8) % 1000;
            break;
        }
        unsigned k = (unsigned)((r >> 32) % POOL);
        pc_purges_add(pl, m.names[k], now);
        model_add(&m, k, now);
        model_step = m.adds; /* the add being checked, for the failure message */
        assert_int_equal(pc_purges_count(pl), m.adds);

        int lost = m.adds > cap;
        uint64_t lost_us = lost ? m.all_us[m.adds - cap - 1] : 0;
        for (unsigned q = 0; q < QUERIES; q++) {
            /* Mostly pool keys, now and then the absent one. */
            uint64_t rq = model_next(&rng);
            unsigned qk = rq % 8 == 0 ? ABSENT : (unsigned)((rq >> 8) % POOL);
            uint64_t since = pick_since(&m, &rng, cap);
            int want = model_since(&m, qk, since);
            int got = pc_purges_since(pl, m.names[qk], since);
            int exact = !lost || since > lost_us;
            const char *why = NULL;
            if (want && !got)
                why = "unsound: purged since, said not";
            else if (exact && got != want)
                why = "inexact: nothing forgotten matters here";
            else if (!exact && !got)
                why = "at or before the newest forgotten: must say purged";
            if (why != NULL)
                fail_msg("cap %zu seed %llu add %zu: since(%s, %llu) = %d, model %d, "
                         "newest forgotten %llu (0: none): %s",
                         cap, (unsigned long long)seed, model_step, m.names[qk],
                         (unsigned long long)since, got, want, (unsigned long long)lost_us, why);
        }
    }
    pc_purges_free(pl);
    model_free(&m);
}

/* Every capacity from a single entry to the workers' own, from two seeds each, long enough
 * that each ring wraps several times. */
static void test_model(void **state)
{
    (void)state;
    static const size_t caps[] = {1, 2, 3, 16, PC_PURGES_KEEP};
    static const uint64_t seeds[] = {1, 0x5eed};
    size_t runs = 0, total = 0;
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
        for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
            size_t n_adds = 3 * caps[c] + 3000;
            model_run(caps[c], seeds[s], n_adds);
            runs++;
            total += n_adds;
        }
    print_message("purges model: %zu runs, %zu adds\n", runs, total);
}

/* Any purge since a time: the newest heard decides. */
static void test_any_since(void **state)
{
    (void)state;
    assert_int_equal(pc_purges_any_since(NULL, 0), 0);
    struct pc_purges *pl = pc_purges_new(4);
    assert_non_null(pl);
    assert_int_equal(pc_purges_any_since(pl, 0), 0);
    pc_purges_add(pl, "a", 100);
    assert_int_equal(pc_purges_any_since(pl, 100), 1);
    assert_int_equal(pc_purges_any_since(pl, 101), 0);
    pc_purges_free(pl);
}

/* A worker's own purge counts from when it was made; its announcement coming back later is
 * not a second purge (answers fetched after the DEL are stored). Another key's
 * announcement, or the same key's once its echo was taken, is a purge heard then. */
static void test_own_purges_and_their_echoes(void **state)
{
    (void)state;
    pc_purges_add_own(NULL, "k", 1);
    pc_purges_heard(NULL, "k", 1);
    struct pc_purges *pl = pc_purges_new(16);
    assert_non_null(pl);
    pc_purges_add_own(pl, "k", 100);
    assert_int_equal(pc_purges_since(pl, "k", 100), 1);
    pc_purges_heard(pl, "k", 150); /* its echo */
    assert_int_equal(pc_purges_since(pl, "k", 120), 0);
    assert_int_equal(pc_purges_count(pl), 1);
    pc_purges_heard(pl, "k", 200); /* another process's purge of it */
    assert_int_equal(pc_purges_since(pl, "k", 120), 1);
    pc_purges_heard(pl, "other", 210);
    assert_int_equal(pc_purges_since(pl, "other", 205), 1);
    assert_int_equal(pc_purges_count(pl), 3);
    /* More own purges than PC_PURGES_ECHOES awaited: the oldest's echo is added when it
     * comes (a store lost, never a purge undone); the newest's is still taken. */
    char key[32];
    for (int i = 0; i < PC_PURGES_ECHOES + 1; i++) {
        snprintf(key, sizeof key, "own-%d", i);
        pc_purges_add_own(pl, key, 300 + (uint64_t)i);
    }
    pc_purges_heard(pl, "own-0", 1000);
    assert_int_equal(pc_purges_since(pl, "own-0", 999), 1);
    snprintf(key, sizeof key, "own-%d", PC_PURGES_ECHOES);
    pc_purges_heard(pl, key, 1001);
    assert_int_equal(pc_purges_since(pl, key, 1001), 0);
    pc_purges_free(pl);
}

/* An echo awaited longer than PC_PURGES_ECHO_US is no longer awaited (it may never come):
 * the key's next announcement is a purge heard then, not taken as that echo. */
static void test_an_echo_awaited_too_long(void **state)
{
    (void)state;
    struct pc_purges *pl = pc_purges_new(16);
    assert_non_null(pl);
    pc_purges_add_own(pl, "k", 100);
    uint64_t later = 100 + PC_PURGES_ECHO_US + 1;
    pc_purges_heard(pl, "k", later);
    assert_int_equal(pc_purges_since(pl, "k", later), 1);
    /* Expired by another key's announcement first, then the key's own comes. */
    pc_purges_add_own(pl, "j", later + 10);
    pc_purges_heard(pl, "x", later + 10 + PC_PURGES_ECHO_US + 1);
    pc_purges_heard(pl, "j", later + 10 + PC_PURGES_ECHO_US + 2);
    assert_int_equal(pc_purges_since(pl, "j", later + 10 + PC_PURGES_ECHO_US + 2), 1);
    /* Within the wait, it is taken. */
    pc_purges_add_own(pl, "m", 10 * PC_PURGES_ECHO_US);
    pc_purges_heard(pl, "m", 10 * PC_PURGES_ECHO_US + PC_PURGES_ECHO_US);
    assert_int_equal(pc_purges_since(pl, "m", 10 * PC_PURGES_ECHO_US + 1), 0);
    pc_purges_free(pl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_and_zero_cap),
        cmocka_unit_test(test_at_or_after),
        cmocka_unit_test(test_backward_time_clamped),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_any_since),
        cmocka_unit_test(test_own_purges_and_their_echoes),
        cmocka_unit_test(test_an_echo_awaited_too_long),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
