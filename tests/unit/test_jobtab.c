/* Unit tests of jobtab: the jobs a worker holds. The model-based run
 * (tests/model/jobtab_model.h) from fixed seeds, then the twin rule as jobs.c uses it. */
#include "../model/model_unit.h"

#include "../model/jobtab_model.h"

#define SEEDS 1000
#define STEPS 2000

static void test_model_fixed_seeds(void **state)
{
    (void)state;
    size_t total = model_run_seeds(jobtab_model_run, SEEDS, STEPS * 2 + 1);
    assert_int_equal(total, SEEDS * STEPS);
}

/* Three identical jobs and one other: the first runs, the twins park, and the first's
 * answer runs them all (from the cache); the other never waits. */
static void test_twins_park_and_run(void **state)
{
    (void)state;
    int a, b, c, d;
    struct pc_jobtab *t = pc_jobtab_new(8);
    assert_int_equal(pc_jobtab_add(t, "1-0", "k", &a), 0);
    assert_int_equal(pc_jobtab_add(t, "1-1", "k", &b), 0);
    assert_int_equal(pc_jobtab_add(t, "1-2", "k", &c), 0);
    assert_int_equal(pc_jobtab_add(t, "1-3", "", &d), 0);
    assert_int_equal(pc_jobtab_add(t, "1-0", "k", &a), -1); /* held already */
    assert_int_equal(pc_jobtab_run(t, "1-0"), 1);
    assert_int_equal(pc_jobtab_run(t, "1-1"), 0);
    assert_int_equal(pc_jobtab_run(t, "1-2"), 0);
    assert_int_equal(pc_jobtab_run(t, "1-3"), 1);
    assert_int_equal(pc_jobtab_step(t, "1-1"), PC_JOB_PARKED);
    assert_int_equal(pc_jobtab_set_step(t, "1-0", PC_JOB_FINISHING), 0);
    assert_ptr_equal(pc_jobtab_unpark(t, "k"), &b);
    assert_ptr_equal(pc_jobtab_unpark(t, "k"), &c);
    assert_null(pc_jobtab_unpark(t, "k"));
    assert_ptr_equal(pc_jobtab_remove(t, "1-0"), &a);
    assert_null(pc_jobtab_find(t, "1-0"));
    assert_int_equal(pc_jobtab_count(t), 3);
    pc_jobtab_free(t);
}

/* A table of concurrency 0 holds nothing. */
static void test_bound(void **state)
{
    (void)state;
    int a;
    struct pc_jobtab *t = pc_jobtab_new(0);
    assert_int_equal(pc_jobtab_add(t, "1-0", "", &a), -1);
    assert_int_equal(pc_jobtab_count(t), 0);
    pc_jobtab_free(t);
    pc_jobtab_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_fixed_seeds),
        cmocka_unit_test(test_twins_park_and_run),
        cmocka_unit_test(test_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
