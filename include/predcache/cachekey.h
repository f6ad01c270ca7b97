/*
 * cachekey: derives the cache key of a predict request (key format v1).
 *
 *     key      = prefix "v1:" hex(SHA-256(material))
 *     material = namespace "\n" route "\n" input
 *
 * route is the request path, plus "?" and the query when there is one. input is the
 * canonical JSON of the configured input fields when the body is a JSON object holding
 * any of them; "path:" + the path field when it holds only a path; else the raw body.
 * The body is read and made canonical by canon (canon.h), which reads JSON exactly as the
 * v1 key always has (json-c 0.16's strict tokener), and streamed into SHA-256.
 * Pure: no I/O, no globals; unit-tested with vectors.
 */
#ifndef PREDCACHE_CACHEKEY_H
#define PREDCACHE_CACHEKEY_H

#include <stddef.h>

#include "predcache/batch.h"
#include "predcache/buf.h"

/* prefix (up to 255) + "v1:" + 64 hex digits + NUL */
#define PC_KEY_MAX 332

enum pc_key_kind {
    PC_KEY_FIELDS = 0, /* canonical JSON of the input fields */
    PC_KEY_PATH,       /* path-field fallback */
    PC_KEY_RAW,        /* raw body bytes */
};

struct pc_key_params {
    const char *namespace_;
    const char *prefix;
    const char *const *input_fields;
    size_t n_input_fields;
    const char *path_field; /* NULL or "" disables the fallback */
};

/*
 * Derives the key of one request. body_is_json: the request declared a JSON content
 * type; then a body that does not parse is an error (-1, reason in err) rather than
 * raw bytes. Borrows everything; writes the NUL-terminated key into out.
 */
int pc_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                       size_t len, int body_is_json, char out[PC_KEY_MAX], enum pc_key_kind *kind,
                       char *err, size_t errlen);

/*
 * Canonical JSON of a JSON text: object keys sorted bytewise, no whitespace, strings
 * re-escaped one way, numbers rewritten from their decimal text (never through a double)
 * as ["-"] D ["e" E]: D the significant digits without leading or trailing zeros, E only
 * when nonzero, every zero "0". 100, 1e2 and 100.0 are all "1e2", 1.5 is "15e-1", and
 * two numbers share a form exactly when they denote the same decimal value. 0 ok; -1,
 * out as it was, when text is not JSON or holds a value that cannot be read exactly
 * (saturated integers in any spelling, NaN, Infinity, overflow, non-JSON number forms
 * the v1 reading accepts, exponents beyond 100000 in the text or the result, lone
 * surrogates), or lexemes a strict JSON parser would refuse (single-quoted names, raw
 * control characters in strings, leading zeros): such bodies are keyed raw instead.
 */
int pc_cachekey_canonical(const char *json, size_t len, struct pc_buf *out);

/*
 * Key of one element of a TF Serving "instances" batch:
 *     material = namespace "\n" route "\n" "instance\n" signature "\n" canonical(instance)
 * signature is the raw JSON text of "signature_name" (empty when absent). -1 when the
 * instance cannot be keyed on its own (then the whole body is keyed instead).
 */
int pc_cachekey_instance(const struct pc_key_params *p, const char *route, const char *signature,
                         size_t sig_len, const char *inst, size_t inst_len, char out[PC_KEY_MAX],
                         char *err, size_t errlen);

/*
 * The keys of every element of a TF Serving batch in one pass over the body, the same keys
 * as pc_batch_parse_request followed by pc_cachekey_instance for each element. Returns 0
 * when body is strict JSON, an object with one "instances" member (that spelling) holding
 * a non-empty array, and every element can be keyed alone: then *n elements, (*spans)[i]
 * their spans in body, *sig the span of "signature_name"'s value (the last one; len 0 when
 * absent) and (*keys)[i] their keys, both arrays malloc'ed for the caller to free. 2 when
 * the body was read whole and is certainly no batch (no such member at its root, or not
 * an object): pc_batch_parse_request would not take it either. 1 for any other body: the
 * caller then decides the longer way. Nothing is allocated but on 0. -1 when memory runs
 * out.
 */
int pc_cachekey_instances(const struct pc_key_params *p, const char *route, const char *body,
                          size_t len, struct pc_span **spans, size_t *n, struct pc_span *sig,
                          char (**keys)[PC_KEY_MAX]);

/*
 * The key a batch's sub-request coalesces on (never a stored entry's key): prefix "v1:"
 * hex(SHA-256("herd\n" keys[pick[0]] "\n" ... keys[pick[n-1]] "\n")). Two requests
 * missing the same instances in the same order share it. 0 ok, -1 on failure.
 */
int pc_cachekey_herd(const char *prefix, const char (*keys)[PC_KEY_MAX], const size_t *pick,
                     size_t n, char out[PC_KEY_MAX]);

/* Human name of a kind: "fields", "path", "raw". */
const char *pc_cachekey_kind_name(enum pc_key_kind kind);

#endif
