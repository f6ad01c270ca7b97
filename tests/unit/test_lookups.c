/* Unit tests of lookups: the table behind versions and generations. The model-based run
 * (tests/model/lookups_model.h) from fixed seeds, then the contract's cases one by one. */
#include "../model/model_unit.h"

#include "../model/lookups_model.h"

#define SEEDS 1000
#define STEPS 3000

static void test_model_fixed_seeds(void **state)
{
    (void)state;
    size_t total = model_run_seeds(lookups_model_run, SEEDS, STEPS * 3);
    assert_true(total > SEEDS * STEPS / 2);
}

/* ---- the contract, case by case, on a table of ids the test fetches by hand ---------- */

struct fx {
    struct pc_lookups *t;
    int64_t now;
    int refuse;
    int fetches;    /* fetches started */
    void *fetching; /* the last one's block */
    int woken[8];   /* calls per waiter */
    int rewait;     /* waiter 0 waits again from inside its callback */
    int last_values[8];
};

struct fx_block {
    int value; /* what the owner put in before pc_lookups_done */
};

static int64_t fx_now(void *arg)
{
    return ((struct fx *)arg)->now;
}

static int fx_fetch(void *owner, const char *id, void *data)
{
    (void)id;
    struct fx *f = owner;
    if (f->refuse)
        return -1;
    f->fetches++;
    f->fetching = data;
    return 0;
}

static void fx_cb(void) {}

static void fx_wake(void *owner, void *data, pc_lookups_fn fn, void *arg)
{
    struct fx *f = owner;
    int w = (int)(intptr_t)arg;
    assert_ptr_equal(fn, fx_cb);
    f->woken[w]++;
    f->last_values[w] = ((struct fx_block *)data)->value;
    if (w == 0 && f->rewait) {
        f->rewait = 0;
        void *d;
        assert_int_equal(pc_lookups_get(f->t, "a", NULL, fx_cb, (void *)(intptr_t)1, &d),
                         PC_LOOKUP_WAIT);
    }
}

static void fx_init(struct fx *f, int remember, int64_t period, size_t max)
{
    memset(f, 0, sizeof *f);
    f->now = 1000;
    struct pc_lookups_params p = {
        .max = max,
        .data_size = sizeof(struct fx_block),
        .period_ms = period,
        .remember_failures = remember,
        .owner = f,
        .fetch = fx_fetch,
        .wake = fx_wake,
        .clock = {fx_now, f},
    };
    f->t = pc_lookups_new(&p);
    assert_non_null(f->t);
}

static enum pc_lookup fx_get(struct fx *f, const char *id, int waiter)
{
    void *d;
    return pc_lookups_get(f->t, id, NULL, waiter >= 0 ? fx_cb : NULL, (void *)(intptr_t)waiter, &d);
}

static void fx_done(struct fx *f, int ok, int value)
{
    if (ok)
        ((struct fx_block *)f->fetching)->value = value;
    assert_int_equal(pc_lookups_done(f->t, f->fetching, ok), 0);
}

/* Known values are served while they are refreshed behind (one refresh at a time). */
static void test_served_while_refreshing(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, 0, 100, 8);
    assert_int_equal(fx_get(&f, "a", 0), PC_LOOKUP_WAIT);
    assert_int_equal(fx_get(&f, "a", 1), PC_LOOKUP_WAIT);
    assert_int_equal(f.fetches, 1); /* the second caller joined the first's fetch */
    fx_done(&f, 1, 7);
    assert_int_equal(f.woken[0], 1);
    assert_int_equal(f.last_values[1], 7);
    assert_int_equal(fx_get(&f, "a", 2), PC_LOOKUP_SERVE);
    f.now += 101;
    assert_int_equal(fx_get(&f, "a", 2), PC_LOOKUP_SERVE); /* stale: refresh behind */
    assert_int_equal(fx_get(&f, "a", 2), PC_LOOKUP_SERVE);
    assert_int_equal(f.fetches, 2);
    assert_int_equal(f.woken[2], 0);
    pc_lookups_free(f.t);
}

/* A failed lookup is remembered for the period (versions), or not at all (generations). */
static void test_failures(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, 1, 100, 8);
    assert_int_equal(fx_get(&f, "a", 0), PC_LOOKUP_WAIT);
    fx_done(&f, 0, 0);
    assert_int_equal(f.woken[0], 1);
    assert_int_equal(fx_get(&f, "a", 1), PC_LOOKUP_NONE);
    assert_int_equal(f.fetches, 1); /* not asked again within the period */
    f.now += 101;
    assert_int_equal(fx_get(&f, "a", 1), PC_LOOKUP_WAIT);
    assert_int_equal(f.fetches, 2);
    pc_lookups_free(f.t);

    fx_init(&f, 0, 100, 8);
    f.rewait = 1; /* like generations' waiters: asks again from inside its callback */
    assert_int_equal(fx_get(&f, "a", 0), PC_LOOKUP_WAIT);
    fx_done(&f, 0, 0);
    assert_int_equal(f.woken[0], 1);
    assert_int_equal(f.fetches, 2); /* the waiter's own call started the next fetch */
    assert_int_equal(f.woken[1], 0);
    fx_done(&f, 1, 3);
    assert_int_equal(f.woken[1], 1); /* exactly once each */
    assert_int_equal(f.woken[0], 1);
    pc_lookups_free(f.t);
}

/* An announcement during a fetch: its answer may predate it, so fetch again first. */
static void test_forget_during_fetch(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, 0, 1000, 8);
    assert_int_equal(fx_get(&f, "a", 0), PC_LOOKUP_WAIT);
    fx_done(&f, 1, 1);
    assert_int_equal(fx_get(&f, "a", -1), PC_LOOKUP_SERVE);
    pc_lookups_forget(f.t, "a");
    assert_int_equal(fx_get(&f, "a", 1), PC_LOOKUP_WAIT);
    pc_lookups_forget(f.t, "a"); /* again, while fetching */
    fx_done(&f, 1, 2);
    assert_int_equal(f.woken[1], 0);
    assert_int_equal(f.fetches, 3);
    fx_done(&f, 1, 3);
    assert_int_equal(f.woken[1], 1);
    assert_int_equal(f.last_values[1], 3);
    assert_int_equal(fx_get(&f, "a", -1), PC_LOOKUP_SERVE);
    pc_lookups_forget(f.t, "unknown"); /* nothing to forget */
    pc_lookups_free(f.t);
}

/* A full table drops only expired entries that nothing fetches or waits for. */
static void test_full_table(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, 0, 100, 2);
    assert_int_equal(fx_get(&f, "a", 0), PC_LOOKUP_WAIT);
    void *a = f.fetching;
    assert_int_equal(fx_get(&f, "b", 1), PC_LOOKUP_WAIT);
    f.now += 1000;
    assert_int_equal(fx_get(&f, "c", 2), PC_LOOKUP_NONE); /* both fetching: no room */
    f.fetching = a;
    fx_done(&f, 1, 1);
    assert_int_equal(fx_get(&f, "c", 2), PC_LOOKUP_NONE); /* a is fresh */
    f.now += 101;
    assert_int_equal(fx_get(&f, "c", 2), PC_LOOKUP_WAIT); /* a expired: dropped */
    assert_int_equal(pc_lookups_count(f.t), 2);
    assert_int_equal(fx_get(&f, "a", 3), PC_LOOKUP_NONE); /* a is gone; b and c fetch */
    pc_lookups_free(f.t);
    pc_lookups_free(NULL);
}

/* Each visits every entry once, whatever the buckets. */
static void count_id(const void *data, void *arg)
{
    const char *id = pc_lookups_id(data);
    int *seen = arg;
    assert_true(id[0] >= 'a' && id[0] < 'a' + 20 && id[1] == '\0');
    seen[id[0] - 'a']++;
}

static void test_each(void **state)
{
    (void)state;
    struct fx f;
    fx_init(&f, 0, 100, 64);
    int seen[20] = {0};
    pc_lookups_each(f.t, count_id, seen); /* empty: nothing */
    for (int i = 0; i < 20; i++) {
        char id[2] = {(char)('a' + i), '\0'};
        assert_int_equal(fx_get(&f, id, -1), PC_LOOKUP_NONE); /* fetching, no waiter */
    }
    pc_lookups_each(f.t, count_id, seen);
    for (int i = 0; i < 20; i++)
        assert_int_equal(seen[i], 1);
    pc_lookups_each(NULL, count_id, seen);
    pc_lookups_free(f.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_fixed_seeds), cmocka_unit_test(test_served_while_refreshing),
        cmocka_unit_test(test_failures),          cmocka_unit_test(test_forget_during_fetch),
        cmocka_unit_test(test_full_table),        cmocka_unit_test(test_each),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
