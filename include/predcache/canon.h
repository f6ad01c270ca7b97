/*
 * canon: reads a JSON text in one pass, without building a tree, and writes its canonical
 * form (the "input" of a v1 cache key).
 *
 * Owns two things. The reading: which texts are read at all and which are refused, with the
 * reason and offset, exactly as the v1 key has always read them (json-c 0.16's strict
 * tokener at depth 64, with its leniencies: single-quoted member names, raw control
 * characters in strings, NaN, Infinity, numbers off the grammar such as "1." or "-01";
 * those are read but reported as PC_CANON_LENIENT). And the canonical form: members sorted
 * bytewise by name (a name is cut at a "\u0000"), no whitespace, strings re-escaped one way,
 * numbers rewritten from their decimal text as ["-"] D ["e" E] (see cachekey.h). Values that
 * form cannot carry exactly (integers json-c saturates, doubles that overflow, exponents
 * beyond 100000, U+FFFD, which stands for any lone surrogate) and objects that give a name
 * twice (parsers differ on which one counts: TF Serving's rapidjson reads the first, json-c
 * and Python the last; the form written keeps the last) make the result PC_CANON_INEXACT.
 * Never hashes, never does I/O, keeps no globals; allocates only its own scratch and the
 * caller's buffer.
 */
#ifndef PREDCACHE_CANON_H
#define PREDCACHE_CANON_H

#include <stddef.h>

#include "predcache/buf.h"

enum pc_canon_rc {
    PC_CANON_INVALID = -1, /* not read: info.error and info.error_off say why */
    PC_CANON_OK = 0,       /* strict JSON with an exact canonical form: written */
    PC_CANON_LENIENT,      /* read, but strict JSON would refuse it: no canonical form */
    PC_CANON_INEXACT,      /* strict JSON, but a value has no exact form (or out of memory) */
};

enum pc_canon_type {
    PC_CANON_NULL = 0,
    PC_CANON_BOOL,
    PC_CANON_NUMBER, /* NaN and Infinity included */
    PC_CANON_STRING,
    PC_CANON_ARRAY,
    PC_CANON_OBJECT,
};

struct pc_canon_info {
    enum pc_canon_type root; /* type of the value read */
    const char *error;       /* PC_CANON_INVALID: json-c's words for the reason (static) */
    size_t error_off;        /* ... and json-c's offset */
};

/*
 * Where canonical text goes: appended to buf when buf is set (left as it was unless the
 * result is PC_CANON_OK), else handed to write in chunks as it is made (write returns 0,
 * or -1 to give up). Chunks handed out are not taken back: on anything but PC_CANON_OK
 * the caller discards what write was given.
 */
struct pc_canon_out {
    struct pc_buf *buf;
    int (*write)(void *arg, const void *p, size_t n);
    void *arg;
};

/* Canonical form of the whole text s[0..len) (read by length; a NUL inside is refused). */
enum pc_canon_rc pc_canon_json(const char *s, size_t len, const struct pc_canon_out *out,
                               struct pc_canon_info *info);

/*
 * Reads s[0..len) and, when it is an object, shows each of its members to the hook in text
 * order: member() gets the name as json-c keeps it (decoded, cut at a NUL; valid during the
 * call) and returns 1 to have the member's canonical value written to out, else 0;
 * member_end() then gets the value's span in s, its type and, when it was written, whether
 * it is exact (PC_CANON_OK or PC_CANON_INEXACT; otherwise PC_CANON_OK). Returns
 * PC_CANON_INVALID, PC_CANON_LENIENT (anywhere in the text), PC_CANON_INEXACT (out of
 * memory, or write gave up) or PC_CANON_OK; the hook may have been called before a
 * refusal is found.
 */
struct pc_canon_hook {
    int (*member)(void *arg, const char *name, size_t name_len);
    void (*member_end)(void *arg, size_t off, size_t len, enum pc_canon_type type,
                       enum pc_canon_rc exact);
    void *arg;
    /*
     * Optional. member_at, when set, is called instead of member and also gets the span
     * of the member name's token in s (quotes included). It may return PC_CANON_EACH:
     * when the value is an array, each element's canonical text is then appended to
     * out's buffer (out->buf is required) and shown to element() with the element's span
     * in s, where its text starts in the buffer, its length, and PC_CANON_OK or
     * PC_CANON_INEXACT; no brackets or commas are written. A value that is not an array
     * is then only read.
     */
    int (*member_at)(void *arg, const char *name, size_t name_len, size_t raw_off, size_t raw_len);
    void (*element)(void *arg, size_t off, size_t len, size_t text_off, size_t text_len,
                    enum pc_canon_rc exact);
};

#define PC_CANON_EACH 2

enum pc_canon_rc pc_canon_scan(const char *s, size_t len, const struct pc_canon_hook *hook,
                               const struct pc_canon_out *out, struct pc_canon_info *info);

/*
 * Decodes the JSON string token s[0..len) (quotes included, as pc_canon_scan read it) and
 * appends its bytes to out as json-c keeps them. PC_CANON_OK; PC_CANON_INEXACT when the
 * bytes hold U+FFFD (also written for any lone surrogate) or out of memory;
 * PC_CANON_INVALID when s is not one string token.
 */
enum pc_canon_rc pc_canon_decode_string(const char *s, size_t len, struct pc_buf *out);

/*
 * Appends the bytes s[0..n) as a canonical JSON string. PC_CANON_OK; PC_CANON_INEXACT,
 * out untouched, when they hold U+FFFD or memory runs out.
 */
enum pc_canon_rc pc_canon_put_string(struct pc_buf *out, const char *s, size_t n);

#endif
