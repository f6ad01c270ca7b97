/*
 * fuzz: what every libFuzzer target here shares. An invariant that does not hold aborts
 * with the file, line and expression, so libFuzzer records the input as a crash.
 */
#ifndef PREDCACHE_FUZZ_H
#define PREDCACHE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A heap copy of data[0..n): ASan then catches a read of even one byte past the end,
 * which it would not inside libFuzzer's own (larger) buffer. The caller frees it. */
static inline char *fuzz_dup(const uint8_t *data, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    for (size_t i = 0; i < n; i++)
        p[i] = (char)data[i];
    return p;
}

#endif
