/*
 * jsonedit: small edits of one root member of a JSON object text, everything else kept byte
 * for byte. A KServe v2 request carries an "id" that the model server echoes in its answer;
 * a cached answer replayed to another client must carry that client's "id", not the one of
 * the request that filled the cache.
 *
 * Reads JSON as canon does (strict JSON only; a member's name is its decoded text, whole:
 * "i\u0064" is "id", "id\u0000x" is not). Owns nothing past a call; never does I/O, never
 * validates or rewrites a value it is given or keeps: values are JSON text, as written.
 * Pure: allocates only the caller's buffer and its own scratch.
 */
#ifndef PREDCACHE_JSONEDIT_H
#define PREDCACHE_JSONEDIT_H

#include <stddef.h>

#include "predcache/buf.h"

/*
 * Rewrites the root member `name` of the JSON object text body[0..len) (the member whose
 * decoded name equals name; every such member when given twice) to value (JSON text,
 * value[0..value_len), written as given: the caller makes sure it is one JSON value), or
 * removes it when value is NULL, with one adjacent comma (the one before it, when a kept
 * member comes before it, else the one after it) and the whitespace between the two; when
 * absent and value is set, it is inserted as the first member ("name":value, the name
 * escaped as a JSON string). Everything else is kept byte for byte. Appends the result to
 * out. 0 written; 1 when body is not a JSON object (strict JSON, per canon) and nothing was
 * written; -1 no memory (out restored). Borrows every argument.
 */
int pc_jsonedit_set_member(const char *body, size_t len, const char *name, const char *value,
                           size_t value_len, struct pc_buf *out);

/*
 * The value text (span in body, whitespace around it excluded) of the LAST root member whose
 * decoded name is `name` (the one a last-wins reader, like canon's key, takes).
 * 0 found (*off, *vlen set); 1 absent, or body not a JSON object; -1 no memory.
 */
int pc_jsonedit_find_member(const char *body, size_t len, const char *name, size_t *off,
                            size_t *vlen);

#endif
