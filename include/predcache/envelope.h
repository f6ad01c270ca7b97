/*
 * envelope: the stored value format of one cached answer, versioned.
 *
 *     "PC1\n" status "\n" stored_at_ms "\n" content_type "\n" body
 *     "PC2\n" status "\n" stored_at_ms "\n" ttl_s "\n" content_type "\n" body
 *
 * Status is 3 digits, stored_at_ms a decimal integer, ttl_s 1..2^31-1 (written as PC2
 * when it is set, else PC1), content_type one line (may be
 * empty); the body is the raw bytes to the end of the value. Pure: no I/O.
 */
#ifndef PREDCACHE_ENVELOPE_H
#define PREDCACHE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

struct pc_envelope {
    int status;               /* 100..599 */
    int64_t stored_at_ms;     /* wall clock at store time */
    int ttl_s;                /* fresh this long (PC2); 0: not recorded (PC1), the route's */
    const char *content_type; /* borrowed; NUL-terminated */
    const char *body;         /* borrowed */
    size_t body_len;
};

/* Appends the encoded envelope to out. 0 ok; -1 on a bad field (status, newline in type). */
int pc_envelope_encode(const struct pc_envelope *env, struct pc_buf *out);

/*
 * Decodes data. On success env->body points into data; env->content_type points into
 * ctype_buf (copied so it can be NUL-terminated). 0 ok; -1 malformed or other version.
 */
int pc_envelope_decode(const char *data, size_t len, struct pc_envelope *env, char *ctype_buf,
                       size_t ctype_len);

#endif
