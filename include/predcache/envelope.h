/*
 * envelope: the stored value format of one cached answer, versioned.
 *
 *     "PC3\n" status "\n" stored_at_ms "\n" ttl_s "\n" n_headers "\n" content_type "\n"
 *             (name ":" value "\n") * n_headers  body
 *     "PC2\n" status "\n" stored_at_ms "\n" ttl_s "\n" content_type "\n" body   (read only)
 *     "PC1\n" status "\n" stored_at_ms "\n" content_type "\n" body              (read only)
 *
 * PC3 is what encode writes: a cached answer is replayed with the end-to-end headers that
 * describe its body (Inference-Header-Content-Length says where a binary KServe answer's
 * JSON ends), so the value keeps them, in order, to be replayed faithfully. Status is 3
 * digits, stored_at_ms a decimal integer, ttl_s 0..2^31-1 (0: not recorded, the route's),
 * n_headers 0..PC_ENV_MAX_HEADERS, content_type one line (may be empty), each header name
 * an RFC 9110 token of 1..64 bytes and its value a line without CR or NUL; the body is the
 * raw bytes to the end of the value. PC1 and PC2, written before, still decode (with no
 * headers). Pure: no I/O.
 */
#ifndef PREDCACHE_ENVELOPE_H
#define PREDCACHE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

#define PC_ENV_MAX_HEADERS 8
#define PC_ENV_MAX_NAME 64 /* bytes of a header name */
/* Size of the buffer decode copies the text lines into: content_type and every header name
 * and value, each with its NUL. Encode refuses an envelope whose text would not fit. */
#define PC_ENV_SCRATCH 4096

struct pc_env_header {
    const char *name;  /* borrowed; NUL-terminated token */
    const char *value; /* borrowed; NUL-terminated, no CR or LF */
};

struct pc_envelope {
    int status;           /* 100..599 */
    int64_t stored_at_ms; /* wall clock at store time */
    int ttl_s;            /* fresh this long; 0: not recorded (PC1, or PC3 with 0), the route's */
    const char *content_type; /* borrowed; NUL-terminated; NULL encodes as "" */
    struct pc_env_header headers[PC_ENV_MAX_HEADERS]; /* other replayed headers, in order */
    size_t n_headers;
    const char *body; /* borrowed */
    size_t body_len;
};

/*
 * Appends the PC3 encoding of env to out. 0 ok; -1 on a bad field (status, a negative time
 * or TTL, CR or LF in the type, more than PC_ENV_MAX_HEADERS headers, a name that is not a
 * token, a NULL value or one holding CR or LF, text that would not fit PC_ENV_SCRATCH) or
 * no memory, and out is then as it was.
 */
int pc_envelope_encode(const struct pc_envelope *env, struct pc_buf *out);

/*
 * Decodes data[0..len) (PC1, PC2 or PC3). On success env->body points into data;
 * env->content_type and every header name and value point into ctype_buf, scratch of
 * ctype_len bytes that gets NUL-terminated copies of them (pass char[PC_ENV_SCRATCH]: a
 * smaller one refuses values whose text does not fit it); headers past n_headers are
 * {NULL, NULL}. 0 ok; -1 malformed, other version, or the text does not fit, and env is
 * then untouched (ctype_buf may have been written).
 */
int pc_envelope_decode(const char *data, size_t len, struct pc_envelope *env, char *ctype_buf,
                       size_t ctype_len);

#endif
