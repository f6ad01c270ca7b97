/*
 * model: what the model-based tests share. Each tests/model/<module>_model.h decodes a
 * byte string into operations, runs every one on the real structure and on a reference
 * model simple enough to be right by reading it, and checks they agree after each step.
 * The same driver runs under the unit tests (bytes from a fixed-seed generator) and under
 * libFuzzer (tests/fuzz/fuzz_<module>.c), so a divergence either finds is one input away
 * from a replay in the other.
 *
 * A divergence goes through MODEL_FAIL: abort() by default (libFuzzer records the input);
 * a unit test defines it before the include to fail the cmocka test instead.
 */
#ifndef PREDCACHE_TEST_MODEL_H
#define PREDCACHE_TEST_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The operation being checked, named in the failure message: which step to replay (unused
 * by a test that takes only the generator). */
static size_t model_step __attribute__((unused));

#ifndef MODEL_FAIL
#define MODEL_FAIL(file, line, what)                                                               \
    (fprintf(stderr, "%s:%d: model diverged at step %zu: %s\n", file, line, model_step, what),     \
     abort())
#endif

#define MODEL_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            MODEL_FAIL(__FILE__, __LINE__, #cond);                                                 \
    } while (0)

/* The operation bytes: reading past the end gives zeros, so any input decodes. */
struct model_in {
    const uint8_t *p;
    size_t n, at;
};

static inline unsigned model_u8(struct model_in *in)
{
    return in->at < in->n ? in->p[in->at++] : 0;
}

static inline int model_more(const struct model_in *in)
{
    return in->at < in->n;
}

/* splitmix64: the unit tests' operation bytes and the drivers' value bytes, reproducible. */
static inline uint64_t model_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void model_fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = model_next(&seed);
        for (size_t j = i; j < n && j < i + 8; j++, r >>= 8)
            p[j] = (uint8_t)r;
    }
}

/* FNV-1a 64, the hash l1 and flight place keys with: the models need it to build chains. */
static inline uint64_t model_fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/*
 * Fills keys[0..n) (each key_max bytes) with the first n keys prefix0, prefix1, ... whose
 * FNV-1a hashes agree on the bits of mask: keys that share a shard and a bucket chain.
 */
static inline void model_colliding(char *keys, size_t key_max, unsigned n, const char *prefix,
                                   uint64_t mask)
{
    uint64_t want = 0;
    unsigned found = 0;
    char k[128];
    for (unsigned c = 0; found < n; c++) {
        int len = snprintf(k, sizeof k, "%s%u", prefix, c);
        if (len <= 0 || (size_t)len >= key_max || (size_t)len >= sizeof k)
            abort();
        uint64_t low = model_fnv1a(k, (size_t)len) & mask;
        if (found == 0)
            want = low;
        if (low == want)
            memcpy(keys + (size_t)found++ * key_max, k, (size_t)len + 1);
    }
}

#endif
