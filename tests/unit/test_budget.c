/* Unit tests of the output budget's rules (budget.h): allowance, bound, progress token,
 * low-water mark and the hand-over credit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "predcache/budget.h"

#define KB 1024
#define MB (1024 * 1024)

static int a_, b_; /* two transfers' identities */
static const void *const A = &a_, *const B = &b_;

/* Empty figures, no token, the given bound. */
static void reset(size_t limit, uint64_t client, uint64_t backend)
{
    pc_budget_client_add(-(int64_t)pc_budget_client());
    pc_budget_backend_add(-(int64_t)pc_budget_backend());
    pc_budget_release(A);
    pc_budget_release(B);
    pc_budget_set_limit(limit);
    pc_budget_client_add((int64_t)client);
    pc_budget_backend_add((int64_t)backend);
}

static void test_no_bound_never_pauses(void **state)
{
    (void)state;
    reset(0, 10 * MB, 10 * MB);
    assert_false(pc_budget_over());
    assert_true(pc_budget_may_take(A, 100 * MB, 16 * KB));
    assert_true(pc_budget_may_resume(A));
}

static void test_figures_add_up(void **state)
{
    (void)state;
    reset(MB, 0, 0);
    pc_budget_client_add(300 * KB);
    pc_budget_backend_add(200 * KB);
    pc_budget_client_add(-100 * KB);
    assert_int_equal(pc_budget_client(), 200 * KB);
    assert_int_equal(pc_budget_backend(), 200 * KB);
    assert_false(pc_budget_over());
    pc_budget_backend_add(MB - 400 * KB - 1);
    assert_false(pc_budget_over());
    pc_budget_backend_add(1);
    assert_true(pc_budget_over()); /* at the bound is over it */
}

static void test_small_answers_never_wait(void **state)
{
    (void)state;
    reset(MB, 2 * MB, 2 * MB); /* far over, clients included: no token either */
    assert_true(pc_budget_may_take(A, 0, 16 * KB));
    assert_true(pc_budget_may_take(A, PC_BUDGET_SMALL - 16 * KB, 16 * KB));
    assert_false(pc_budget_may_take(A, PC_BUDGET_SMALL - 16 * KB, 16 * KB + 1));
}

static void test_within_the_bound_everyone_goes_on(void **state)
{
    (void)state;
    reset(MB, 256 * KB, 256 * KB);
    assert_true(pc_budget_may_take(A, 200 * KB, 16 * KB));
    assert_true(pc_budget_may_take(B, 200 * KB, 512 * KB)); /* exactly up to the bound */
    /* Past it, one of them at most: the holder of the progress token. */
    assert_true(pc_budget_may_take(B, 200 * KB, 512 * KB + 1));
    assert_false(pc_budget_may_take(A, 200 * KB, 512 * KB + 1));
}

static void test_one_transfer_goes_on_while_partial_answers_fill_the_budget(void **state)
{
    (void)state;
    reset(MB, 100 * KB, MB); /* paused transfers' partial answers fill it; clients do not */
    assert_true(pc_budget_may_take(A, 512 * KB, 16 * KB)); /* A takes the token */
    assert_false(pc_budget_may_take(B, 512 * KB, 16 * KB));
    assert_false(pc_budget_may_resume(B));
    assert_true(pc_budget_may_resume(A));
    /* Clients' own bytes at the bound: even the holder waits for them. */
    pc_budget_client_add(MB);
    assert_false(pc_budget_may_take(A, 512 * KB, 16 * KB));
    assert_false(pc_budget_may_resume(A));
    pc_budget_client_add(-MB);
    /* A ends: B may take the token. */
    pc_budget_release(A);
    pc_budget_release(B); /* not the holder: nothing happens */
    assert_true(pc_budget_may_resume(B));
    assert_false(pc_budget_may_resume(A));
    pc_budget_release(B);
}

static void test_paused_transfers_resume_below_low_water(void **state)
{
    (void)state;
    reset(MB, 600 * KB, 400 * KB);
    assert_false(pc_budget_may_resume(A)); /* clients over half the bound: nobody */
    reset(MB, 300 * KB, 500 * KB);
    assert_true(pc_budget_may_resume(A));  /* A takes the token */
    assert_false(pc_budget_may_resume(B)); /* above 3/4 of the bound */
    pc_budget_backend_add(-60 * KB);
    assert_true(pc_budget_may_resume(B)); /* below it: every paused transfer */
}

static void test_known_lengths_are_admitted_whole(void **state)
{
    (void)state;
    reset(MB, 2 * MB, 2 * MB);
    assert_true(pc_budget_admit(A, PC_BUDGET_SMALL)); /* small: always */
    reset(MB, 300 * KB, 300 * KB);
    assert_true(pc_budget_admit(A, MB - 600 * KB)); /* fits exactly */
    assert_false(pc_budget_admit(A, MB - 600 * KB + 1));
    reset(MB, 600 * KB, 0);
    assert_false(pc_budget_admit(A, 600 * KB)); /* waits until it fits */
    pc_budget_client_add(-200 * KB);
    assert_true(pc_budget_admit(A, 600 * KB));
}

static void test_an_answer_larger_than_the_room_goes_in_alone(void **state)
{
    (void)state;
    reset(MB, 600 * KB, 0);
    assert_false(pc_budget_admit(A, 2 * MB)); /* not before half the budget is free */
    pc_budget_client_add(-200 * KB);
    assert_true(pc_budget_admit(A, 2 * MB));   /* A takes the token */
    pc_budget_backend_add(2 * MB);             /* and counts its answer */
    pc_budget_backend_add(-2 * MB);            /* ... which is handed over */
    assert_false(pc_budget_admit(B, 2 * MB));  /* one at a time */
    assert_true(pc_budget_admit(B, 400 * KB)); /* what fits still goes in */
    pc_budget_release(A);
    assert_true(pc_budget_admit(B, 2 * MB));
}

static void test_answers_from_memory_go_in_when_they_fit(void **state)
{
    (void)state;
    reset(MB, 2 * MB, 0);
    assert_true(pc_budget_fits(PC_BUDGET_SMALL));
    assert_false(pc_budget_fits(PC_BUDGET_SMALL + 1));
    reset(MB, 600 * KB, 0);
    assert_true(pc_budget_fits(MB - 600 * KB));
    assert_false(pc_budget_fits(MB - 600 * KB + 1));
    reset(MB, 500 * KB, 0);
    assert_true(pc_budget_fits(4 * MB)); /* into a half-empty budget */
    reset(0, 100 * MB, 0);
    assert_true(pc_budget_fits(100 * MB));
}

static void test_credit_is_taken_once(void **state)
{
    (void)state;
    assert_false(pc_budget_credit_take());
    pc_budget_credit_begin();
    assert_true(pc_budget_credit_take());
    assert_false(pc_budget_credit_take()); /* a second answer (a coalesced waiter) has none */
    pc_budget_credit_end();
    pc_budget_credit_begin();
    pc_budget_credit_end();
    assert_false(pc_budget_credit_take()); /* not taken in time: gone */
}

/* The input side: its own figure and bound, over at the bound, resume under 3/4 of it, one
 * token holder at a time until it gives the token back. */
static void test_input_figure_bound_and_token(void **state)
{
    (void)state;
    reset(0, 0, 0); /* the output side's figures at 0 */
    pc_budget_input_add(-(int64_t)pc_budget_input());
    pc_budget_input_set_limit(0);
    pc_budget_input_add(1 << 30);
    assert_false(pc_budget_input_over()); /* no bound */
    assert_true(pc_budget_input_may_resume());
    pc_budget_input_add(-(1 << 30));
    pc_budget_input_set_limit(1000);
    pc_budget_input_add(999);
    assert_false(pc_budget_input_over());
    pc_budget_input_add(1);
    assert_true(pc_budget_input_over());
    assert_int_equal(pc_budget_client() + pc_budget_backend(), 0); /* a figure of its own */
    assert_false(pc_budget_input_may_resume());
    pc_budget_input_add(-250);
    assert_false(pc_budget_input_may_resume()); /* 750: not under 3/4 */
    pc_budget_input_add(-1);
    assert_true(pc_budget_input_may_resume());
    int a, b;
    assert_true(pc_budget_input_token_take(&a));
    assert_true(pc_budget_input_token_take(&a)); /* its holder keeps it */
    assert_false(pc_budget_input_token_take(&b));
    pc_budget_input_token_release(&b); /* not b's to give back */
    assert_false(pc_budget_input_token_take(&b));
    pc_budget_input_token_release(&a);
    assert_true(pc_budget_input_token_take(&b));
    pc_budget_input_token_release(&b);
    pc_budget_input_add(-(int64_t)pc_budget_input());
    pc_budget_input_set_limit(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_bound_never_pauses),
        cmocka_unit_test(test_figures_add_up),
        cmocka_unit_test(test_small_answers_never_wait),
        cmocka_unit_test(test_within_the_bound_everyone_goes_on),
        cmocka_unit_test(test_one_transfer_goes_on_while_partial_answers_fill_the_budget),
        cmocka_unit_test(test_paused_transfers_resume_below_low_water),
        cmocka_unit_test(test_known_lengths_are_admitted_whole),
        cmocka_unit_test(test_an_answer_larger_than_the_room_goes_in_alone),
        cmocka_unit_test(test_answers_from_memory_go_in_when_they_fit),
        cmocka_unit_test(test_credit_is_taken_once),
        cmocka_unit_test(test_input_figure_bound_and_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
