/*
 * fuzz_l1: pc_l1 against its reference model (tests/model/l1_model.h), the same driver
 * test_l1 runs on fixed seeds. The input is the operations: its first byte picks the bound
 * and max_age_ms, then kind, key and what the kind needs (a value's size, the clock's
 * step). Invariant: after every operation get's answer, byte for byte, and every counter
 * of pc_l1_stats are the model's; no leak, no undefined behaviour.
 */
#include "fuzz.h"

#include "../model/l1_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    l1_model_run(data, size);
    return 0;
}
