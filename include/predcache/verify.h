/*
 * verify: how shadow verification judges a cached answer against the model server's
 * fresh answer to the same request, and which hits it samples. Pure: no I/O, no clock,
 * no global state (the sampler's state belongs to its caller).
 *
 * Two ways to compare ([cache] verify_compare):
 *   bytes  the status and the body byte for byte;
 *   json   the status, and both bodies parsed as JSON (json-c: a repeated member name
 *          takes the last value, as the model servers read it): objects with the same
 *          member names and equal values whatever their order, arrays element by element,
 *          strings byte for byte, numbers within a tolerance, true/false/null as such.
 *          Two numbers a and b are equal when |a - b| <= tolerance * max(1, |a|, |b|):
 *          an absolute tolerance for values up to 1, a relative one above. Integers that
 *          a double cannot hold exactly are compared exactly when both are integers.
 *          A body that does not parse is compared byte for byte.
 */
#ifndef PREDCACHE_VERIFY_H
#define PREDCACHE_VERIFY_H

#include <stddef.h>
#include <stdint.h>

enum pc_verify_result { PC_VERIFY_MATCH, PC_VERIFY_MISMATCH, PC_VERIFY_ERROR };

/* Label values of predcache_verify_total{result}, indexed by enum pc_verify_result. */
#define PC_VERIFY_RESULT_NAMES                                                                     \
    {                                                                                              \
        "match", "mismatch", "error"                                                               \
    }

/*
 * Compares the cached answer (status a_status, body a) with the model server's (b).
 * compare: enum pc_verify_compare (config.h). Borrows both bodies. MATCH or MISMATCH.
 */
enum pc_verify_result pc_verify_compare(int compare, double tolerance, int a_status, const char *a,
                                        size_t a_len, int b_status, const char *b, size_t b_len);

/* Two JSON texts equal under the json rules above: 1 equal, 0 not, -1 one does not parse. */
int pc_verify_json_equal(const char *a, size_t a_len, const char *b, size_t b_len,
                         double tolerance);

/*
 * The sampler: 1 when this hit is to be verified, with probability rate (0..1; 0 never,
 * 1 always). state: the caller's (one per worker), any value but 0 to start.
 */
int pc_verify_sampled(uint64_t *state, double rate);

#endif
