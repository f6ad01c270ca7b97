/*
 * model_unit: what a cmocka unit test adds to model.h to run a model driver from fixed
 * seeds. Include it first (it includes cmocka and model.h), then the driver's header. A
 * divergence fails the cmocka test and names the seed and the step: replay it with the
 * same seed, or write those bytes to a file and hand it to the fuzz target.
 */
#ifndef PREDCACHE_TEST_MODEL_UNIT_H
#define PREDCACHE_TEST_MODEL_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

/* The seed and config whose bytes are running, for the failure message. */
static uint64_t model_seed;
static unsigned model_cfg;

#define MODEL_FAIL(file, line, what)                                                               \
    fail_msg("%s:%d: diverged from the model (seed %llu, config %u) at step %zu: %s", file, line,  \
             (unsigned long long)model_seed, model_cfg, model_step, what)

#include "model.h"

/* Runs run() on len bytes from each of the seeds 1..seeds; returns the operations run. */
static inline size_t model_run_seeds(size_t (*run)(const uint8_t *, size_t), uint64_t seeds,
                                     size_t len)
{
    uint8_t *ops = malloc(len);
    assert_non_null(ops);
    size_t total = 0;
    for (model_seed = 1; model_seed <= seeds; model_seed++) {
        model_fill(ops, len, model_seed);
        total += run(ops, len);
    }
    free(ops);
    return total;
}

/*
 * For drivers whose first byte picks a configuration: runs run() on len bytes for every
 * config 0..n_cfg-1 and every one of the n_seeds seeds (bytes from seed * n_cfg + config,
 * the first byte set to the config); returns the operations run.
 */
static inline size_t model_run_configs(size_t (*run)(const uint8_t *, size_t), unsigned n_cfg,
                                       const uint64_t *seeds, size_t n_seeds, size_t len)
{
    uint8_t *ops = malloc(len);
    assert_non_null(ops);
    size_t total = 0;
    for (model_cfg = 0; model_cfg < n_cfg; model_cfg++) {
        for (size_t i = 0; i < n_seeds; i++) {
            model_seed = seeds[i];
            model_fill(ops, len, model_seed * n_cfg + model_cfg);
            ops[0] = (uint8_t)model_cfg;
            total += run(ops, len);
        }
    }
    free(ops);
    return total;
}

#endif
