/* Unit tests of flight: the in-flight key table used for coalescing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/flight.h"

static void test_start_find_join_finish(void **state)
{
    (void)state;
    struct pc_flights *t = pc_flights_new();
    int leader, w1, w2;
    assert_null(pc_flights_find(t, "k"));
    struct pc_flight *f = pc_flights_start(t, "k", &leader);
    assert_non_null(f);
    assert_ptr_equal(pc_flights_find(t, "k"), f);
    assert_ptr_equal(f->leader, &leader);
    assert_int_equal(pc_flight_join(f, &w1), 0);
    assert_int_equal(pc_flight_join(f, &w2), 0);
    assert_int_equal(f->n_waiters, 2);
    assert_ptr_equal(f->waiters[0], &w1);
    assert_ptr_equal(f->waiters[1], &w2);
    pc_flights_finish(t, f);
    assert_null(pc_flights_find(t, "k"));
    assert_int_equal(pc_flights_count(t), 0);
    pc_flights_free(t);
}

/* Many keys force growth and long chains; every key stays findable until finished. */
static void test_many_keys(void **state)
{
    (void)state;
    struct pc_flights *t = pc_flights_new();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "predcache:v1:%d", i);
        assert_non_null(pc_flights_start(t, key, NULL));
    }
    assert_int_equal(pc_flights_count(t), 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof key, "predcache:v1:%d", i);
        struct pc_flight *f = pc_flights_find(t, key);
        assert_non_null(f);
        for (int w = 0; w < 20; w++)
            assert_int_equal(pc_flight_join(f, &key), 0);
        pc_flights_finish(t, f);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "predcache:v1:%d", i);
        if (i % 2 == 0)
            assert_null(pc_flights_find(t, key));
        else
            assert_string_equal(pc_flights_find(t, key)->key, key);
    }
    assert_int_equal(pc_flights_count(t), 2500);
    pc_flights_free(t); /* frees the rest, waiters lists included */
}

/* ---- against the reference model (tests/model/flight_model.h) ------------------------- */

#include "../model/model_unit.h"

#include "../model/flight_model.h"

/* Random operations against the model: eight seeds, about 6700 operations a run. */
#define MODEL_BYTES 20000
static void test_model(void **state)
{
    (void)state;
    size_t steps = model_run_seeds(flight_model_run, 8, MODEL_BYTES);
    print_message("flight model: 8 runs, %zu operations\n", steps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_find_join_finish),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
