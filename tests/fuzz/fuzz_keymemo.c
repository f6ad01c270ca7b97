/*
 * fuzz_keymemo: pc_keymemo against its reference model (tests/model/keymemo_model.h), the
 * same driver test_keymemo runs on fixed seeds. The input is the requests: its first byte
 * picks the bound and the hash (the seeded default, one value for all, 32 values), then
 * each request's context and body, and whether and what to put after its get. Invariant:
 * after every request get's answer (found, and then every key and index byte for byte) and
 * every counter of pc_keymemo_stats are the model's; no leak, no undefined behaviour.
 */
#include "fuzz.h"

#include "../model/keymemo_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keymemo_model_run(data, size);
    return 0;
}
