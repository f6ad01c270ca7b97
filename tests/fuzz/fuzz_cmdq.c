/*
 * fuzz_cmdq: pc_cmdq (the commands awaiting their replies on one Redis connection) against
 * its reference model, the input decoded as an operation sequence (tests/model/cmdq_model.h,
 * the driver test_cmdq runs from fixed seeds).
 *
 * Invariants, after every operation: replies go to commands in the order they were pushed,
 * each caller is answered at most once (a timed-out command keeps its place and its late
 * reply is discarded), the budgets hold, and every answer and counter is the model's.
 */
#include "fuzz.h"

#include "../model/cmdq_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cmdq_model_run(data, size);
    return 0;
}
