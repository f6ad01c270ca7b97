/*
 * fuzz_jobtab: pc_jobtab (the jobs a worker holds) against its reference model, the input
 * decoded as an operation sequence (tests/model/jobtab_model.h, the driver test_jobtab runs
 * from fixed seeds).
 *
 * Invariants, after every operation: every answer (add, find, remove, step, run, unpark,
 * first) is the model's, the table never holds more than its bound, and read in order it
 * is the model's jobs oldest first, with their entry ids and steps.
 */
#include "fuzz.h"

#include "../model/jobtab_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jobtab_model_run(data, size);
    return 0;
}
