/*
 * fuzz_lookups: pc_lookups (the table behind versions and generations) against its
 * reference model, the input decoded as an operation sequence (tests/model/lookups_model.h,
 * the driver test_lookups runs from fixed seeds).
 *
 * Invariants, after every operation: the same answers, fetches, waiter calls (each exactly
 * once, re-entering the table from inside), entries made and dropped, and entry count as
 * the model; no entry that is fetching or being delivered to is ever dropped.
 */
#include "fuzz.h"

#include "../model/lookups_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lookups_model_run(data, size);
    return 0;
}
