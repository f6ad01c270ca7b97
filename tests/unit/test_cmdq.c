/* Unit tests of cmdq: the commands awaiting their replies on one Redis connection. The
 * model-based run (tests/model/cmdq_model.h) from fixed seeds, then store.c's uses. */
#include "../model/model_unit.h"

#include "../model/cmdq_model.h"

#define SEEDS 1000
#define STEPS 3000

static void test_model_fixed_seeds(void **state)
{
    (void)state;
    size_t total = model_run_seeds(cmdq_model_run, SEEDS, STEPS * 2 + 1);
    assert_int_equal(total, SEEDS * STEPS);
}

/* A timed-out command is answered once, keeps its place, and its late reply is discarded;
 * the command behind it gets the next reply. */
static void test_timeout_keeps_place(void **state)
{
    (void)state;
    int a, b;
    uint64_t ia, ib;
    struct pc_cmdq *q = pc_cmdq_new(0, 0);
    assert_int_equal(pc_cmdq_push(q, &a, 0, 0, &ia), PC_CMDQ_OK);
    assert_int_equal(pc_cmdq_push(q, &b, 0, 0, &ib), PC_CMDQ_OK);
    assert_int_equal(pc_cmdq_claim(q, ia), 1); /* the timer: answered with a failure */
    assert_int_equal(pc_cmdq_claim(q, ia), 0); /* never twice */
    assert_int_equal(pc_cmdq_head(q), ia);
    int answered;
    assert_ptr_equal(pc_cmdq_shift(q, &answered), &a); /* its late reply: discarded */
    assert_int_equal(answered, 1);
    assert_int_equal(pc_cmdq_head(q), ib);
    assert_int_equal(pc_cmdq_claim(q, ib), 1);
    assert_ptr_equal(pc_cmdq_shift(q, &answered), &b);
    assert_null(pc_cmdq_shift(q, &answered));
    pc_cmdq_free(q);
}

/* The store budgets: SETs bounded by count and bytes, GETs never refused. */
static void test_budgets(void **state)
{
    (void)state;
    int x;
    uint64_t id[4];
    struct pc_cmdq *q = pc_cmdq_new(2, 100);
    assert_int_equal(pc_cmdq_push(q, &x, 1, 101, &id[0]), PC_CMDQ_FULL); /* alone too big */
    assert_int_equal(pc_cmdq_push(q, &x, 1, 60, &id[0]), PC_CMDQ_OK);
    assert_int_equal(pc_cmdq_full(q, 41), 1);
    /* With stores held back elsewhere (the store's held writes) counted first. */
    assert_int_equal(pc_cmdq_full_after(q, 0, 0, 40), 0);
    assert_int_equal(pc_cmdq_full_after(q, 1, 0, 0), 1);   /* 1 queued + 1 held: the count */
    assert_int_equal(pc_cmdq_full_after(q, 0, 30, 11), 1); /* 60 + 30 + 11 bytes */
    assert_int_equal(pc_cmdq_full_after(q, 0, 30, 10), 0);
    assert_int_equal(pc_cmdq_full_after(q, 0, 50, 0), 1); /* the held ones alone are past it */
    assert_int_equal(pc_cmdq_push(q, &x, 1, 40, &id[1]), PC_CMDQ_OK);
    assert_int_equal(pc_cmdq_push(q, &x, 1, 0, &id[2]), PC_CMDQ_FULL);  /* count */
    assert_int_equal(pc_cmdq_push(q, &x, 0, 5000, &id[2]), PC_CMDQ_OK); /* a GET */
    assert_int_equal(pc_cmdq_bounded(q), 2);
    assert_int_equal(pc_cmdq_bytes(q), 100);
    assert_ptr_equal(pc_cmdq_remove(q, id[1]), &x);
    assert_int_equal(pc_cmdq_bytes(q), 60);
    assert_int_equal(pc_cmdq_push(q, &x, 1, 40, &id[3]), PC_CMDQ_OK);
    assert_true(id[3] > id[2]);
    pc_cmdq_free(q);
    pc_cmdq_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_fixed_seeds),
        cmocka_unit_test(test_timeout_keeps_place),
        cmocka_unit_test(test_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
