/*
 * envelope: the stored value format of one cached answer, versioned.
 *
 *     "PC4\n" key_tag "\n" status "\n" stored_at_ms "\n" ttl_s "\n" n_headers "\n"
 *             content_type "\n" (name ":" value "\n") * n_headers  body
 *     "PC3\n" status "\n" stored_at_ms "\n" ttl_s "\n" n_headers "\n" content_type "\n"
 *             (name ":" value "\n") * n_headers  body
 *     "PC2\n" status "\n" stored_at_ms "\n" ttl_s "\n" content_type "\n" body   (read only)
 *     "PC1\n" status "\n" stored_at_ms "\n" content_type "\n" body              (read only)
 *
 * PC4 is what encode writes for a cache entry (key_tag not 0): PC3 plus key_tag, 16
 * lowercase hex digits of pc_envelope_key_tag(key), the key it was stored under. A reader
 * takes an entry only for the key it asked for: a reply that is not the answer to that
 * GET (a Redis or proxy out of step, a value copied under another key) cannot be served
 * for it. PC3 (key_tag 0) is written for values that are not cache entries (job records,
 * in-process copies). PC3 carries the rest: a cached answer is replayed with the end-to-end headers
 * that describe its body (Inference-Header-Content-Length says where a binary KServe answer's JSON
 * ends), so the value keeps them, in order, to be replayed faithfully. Status is 3 digits,
 * stored_at_ms a decimal integer, ttl_s 0..2^31-1 (0: not recorded, the route's), n_headers
 * 0..PC_ENV_MAX_HEADERS, content_type one line (may be empty), each header name an RFC 9110 token
 * of 1..64 bytes and its value a line without CR or NUL; the body is the raw bytes to the end of
 * the value. PC1 and PC2, written before, still decode (with no headers). Pure: no I/O.
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
    uint64_t key_tag;     /* PC4: pc_envelope_key_tag of its key; 0: none (PC1..PC3) */
    int status;           /* 100..599 */
    int64_t stored_at_ms; /* wall clock at store time */
    int ttl_s;            /* fresh this long; 0: not recorded (PC1, or PC3 with 0), the route's */
    const char *content_type; /* borrowed; NUL-terminated; NULL encodes as "" */
    struct pc_env_header headers[PC_ENV_MAX_HEADERS]; /* other replayed headers, in order */
    size_t n_headers;
    const char *body; /* borrowed */
    size_t body_len;
};

/* The tag of a cache key (FNV-1a 64 of its bytes, never 0). */
uint64_t pc_envelope_key_tag(const char *key, size_t len);

/*
 * Appends the PC4 encoding of env to out (PC3 when env->key_tag is 0). 0 ok; -1 on a bad field
 * (status, a negative time or TTL, CR or LF in the type, more than PC_ENV_MAX_HEADERS headers, a
 * name that is not a token, a NULL value or one holding CR or LF, text that would not fit
 * PC_ENV_SCRATCH) or no memory, and out is then as it was.
 */
int pc_envelope_encode(const struct pc_envelope *env, struct pc_buf *out);

/*
 * Decodes data[0..len) (PC1 to PC4; env->key_tag 0 for PC1 to PC3). On success env->body points
 * into data; env->content_type and every header name and value point into ctype_buf, scratch of
 * ctype_len bytes that gets NUL-terminated copies of them (pass char[PC_ENV_SCRATCH]: a
 * smaller one refuses values whose text does not fit it); headers past n_headers are
 * {NULL, NULL}. 0 ok; -1 malformed, other version, or the text does not fit, and env is
 * then untouched (ctype_buf may have been written).
 */
int pc_envelope_decode(const char *data, size_t len, struct pc_envelope *env, char *ctype_buf,
                       size_t ctype_len);

#endif
