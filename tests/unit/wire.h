/*
 * wire: protobuf wire bytes written by hand in unit tests, for the orders and forms
 * protobuf-c itself never writes (test_proto, test_grpckey). Needs cmocka.h first.
 */
#ifndef PREDCACHE_TEST_WIRE_H
#define PREDCACHE_TEST_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Wire bytes written by hand, for the forms protobuf-c itself never writes. */
struct wire {
    uint8_t b[1024];
    size_t n;
};

static inline void put_byte(struct wire *w, uint8_t v)
{
    assert_true(w->n < sizeof w->b);
    w->b[w->n++] = v;
}

static inline void put_varint(struct wire *w, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(w, (uint8_t)v);
}

static inline void put_tag(struct wire *w, uint32_t field, unsigned type)
{
    put_varint(w, ((uint64_t)field << 3) | type);
}

static inline void put_bytes(struct wire *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof w->b);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

/* A length-delimited field: tag, length, bytes. */
static inline void put_len(struct wire *w, uint32_t field, const void *p, size_t n)
{
    put_tag(w, field, 2);
    put_varint(w, n);
    put_bytes(w, p, n);
}

static inline void put_wire(struct wire *w, uint32_t field, const struct wire *inner)
{
    put_len(w, field, inner->b, inner->n);
}

#endif
