/*
 * fuzz_flight: pc_flights against its reference model (tests/model/flight_model.h), the
 * same driver test_flight runs on fixed seeds. The input is the operations: kind, key and
 * what the kind needs (a leader, a burst of waiters). Invariant: after every operation the
 * count, and find's entry for the key (the very pointer start gave, its key, leader and
 * waiters in order) are the model's; every key every 16 steps; answers freed with their
 * entries (LeakSanitizer), no undefined behaviour.
 */
#include "fuzz.h"

#include "../model/flight_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    flight_model_run(data, size);
    return 0;
}
