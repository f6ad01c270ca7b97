/*
 * cachekey: derives the cache key of a predict request (key format v2).
 *
 *     key      = prefix "v2:{" hex(SHA-256(material)) "}"
 *     material = head form "\n" input
 *     head     = "predcache-key-v2\n" "backend " cache_id "\n" "method " METHOD "\n"
 *                "path " resolved-path "\n" "query " query "\n" "media " family "\n"
 *                "scope " credential-scope "\n" "vary " vary "\n" "namespace " ns "\n"
 *
 * The hash tag ({...}) puts an entry and its lock (key ":lock") in one Redis Cluster slot.
 * The input is the body read the way the model server of the route's API family reads it
 * (member names decoded, canonical: see canon.h; a name it reads given twice, at the root or
 * inside, is read two ways by servers, TF Serving the first, Python the last: keyed raw):
 *   tfs      TF Serving :predict: signature_name and instances or inputs, nothing else;
 *            :classify / :regress: signature_name, context, examples (a body holding no
 *            such input is not TF Serving's to read: it is read as plain JSON)
 *   json     KServe v2 and plain JSON: the whole body minus the route's ignore fields
 *   path     a whole-body reading whose only member (ignore fields aside) is the path
 *            field, a string
 *   fields   the route's input_fields (unsafe alias of v1: fields it names are the only
 *            ones read, whatever else the server reads)
 *   raw      anything else, and every body of the raw family: the bytes
 *   instance one element of a TF Serving "instances" batch: canonical(context) "\n"
 *            canonical(element), the context being every other member the server reads
 * Pure: no I/O, no globals; unit-tested with vectors and fuzzed.
 */
#ifndef PREDCACHE_CACHEKEY_H
#define PREDCACHE_CACHEKEY_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/batch.h"
#include "predcache/buf.h"

/* prefix (up to 255) + "v2:{" + 64 hex digits + "}" + NUL */
#define PC_KEY_MAX 332

enum pc_key_kind {
    PC_KEY_FIELDS = 0, /* canonical JSON of the input fields (unsafe alias) */
    PC_KEY_PATH,       /* path-field fallback */
    PC_KEY_RAW,        /* raw body bytes */
    PC_KEY_BODY,       /* the body as the API family reads it, canonical */
};

/* How a route's model server reads a request body. */
enum pc_key_family {
    PC_FAMILY_JSON = 0,     /* plain JSON: the whole body minus ignore fields */
    PC_FAMILY_TFS_PREDICT,  /* signature_name, instances, inputs */
    PC_FAMILY_TFS_EXAMPLES, /* :classify, :regress: signature_name, context, examples */
    PC_FAMILY_KSERVE,       /* KServe v2 infer: the whole body minus ignore fields */
    PC_FAMILY_RAW,          /* the bytes, JSON or not ([route] api = raw) */
};

struct pc_key_params {
    const char *namespace_; /* pc_cachekey_derive only: the head's namespace */
    const char *prefix;
    const char *const *input_fields; /* the unsafe alias; none: the family's reading */
    size_t n_input_fields;
    const char *path_field; /* NULL or "" disables the fallback */
    enum pc_key_family family;
    const char *const *ignore_fields; /* members a whole-body reading leaves out */
    size_t n_ignore_fields;
    const char *items; /* the batch readings' array member; NULL: "instances" */
    int items_text;    /* a batch only when every element is a string or an array */
};

/* What a key holds besides the body; every string one line (no "\n"). */
struct pc_key_head {
    const char *backend; /* the backend's cache_id */
    const char *method;
    const char *path; /* the resolved model path */
    const char *query;
    const char *media; /* pc_cachekey_media() of the Content-Type */
    const char *scope; /* credential scope: "" none */
    const char *ns;    /* namespace, with its invalidation generations */
    const char *vary;  /* pc_cachekey_vary_add() encoding of the Vary headers */
    size_t vary_len;
};

/* Appends the head's material to out. 0 ok; -1 a string holds a newline, or no memory. */
int pc_cachekey_head(const struct pc_key_head *h, struct pc_buf *out);

/* Appends the media type family of a Content-Type value (NULL: absent) to out: "json" for
 * any JSON type (application/json, x/y+json), else the lowercased type/subtype without
 * parameters; nothing when absent. 0 ok, -1 no memory. */
int pc_cachekey_media(const char *content_type, struct pc_buf *out);

/* Appends one Vary header to a vary encoding: name (lowercased) " " ("-" when absent, else
 * length ":" value) ";". Callers add names in sorted order. 0 ok, -1 no memory. */
int pc_cachekey_vary_add(struct pc_buf *out, const char *name, const char *value);

/*
 * Derives the key of one request from its head (pc_cachekey_head) and body. body_is_json:
 * the request declared a JSON content type; then a body that does not parse is an error
 * (-1, reason in err) rather than raw bytes. Borrows everything; writes the key into out.
 */
int pc_cachekey_body(const struct pc_key_params *p, const char *head, size_t head_len,
                     const char *body, size_t len, int body_is_json, char out[PC_KEY_MAX],
                     enum pc_key_kind *kind, char *err, size_t errlen);

/*
 * pc_cachekey_body with a head of p->namespace_ and route (as path) only: the key a job
 * uses to find its twins and to refuse a bad body early, never a stored entry's.
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
 * The keys of every element of a TF Serving batch in one pass over the body:
 *     material = head "instance\n" canonical(context) "\n" canonical(element)
 * context: the members the family reads besides "instances" (TF Serving: signature_name),
 * as a canonical object. Returns 0 when body is strict JSON, an object with exactly one
 * member whose decoded name is "instances", spelled so (what pc_batch_parse_request finds),
 * holding a non-empty array, and every element and the context can be keyed exactly: then
 * *n elements, (*spans)[i] their spans in body, *sig the span of the last signature_name's
 * value (len 0 when absent) and (*keys)[i] their keys, both arrays malloc'ed for the caller
 * to free. 1 for any other body (then the whole body is keyed instead). -1 no memory.
 */
int pc_cachekey_instances(const struct pc_key_params *p, const char *head, size_t head_len,
                          const char *body, size_t len, struct pc_span **spans, size_t *n,
                          struct pc_span *sig, char (**keys)[PC_KEY_MAX]);

/*
 * The same in steps, for the proxy's per-instance flow, which must bound what a batch
 * costs and never hold its event loop for long (proxy_batch.c):
 *   _read reads the body once (the canonical text of every element is kept: O(bytes)) and
 *     keeps at most max_n elements: 0 a batch (*out, free with _free), 1 not one (as
 *     above), 2 more than max_n elements where the model server reads "instances" (the
 *     reading stopped keeping them: key nothing, the batch is not cached per instance),
 *     -1 no memory;
 *   _digest writes the SHA-256 digests of elements [from, to) into digests[from..to): the
 *     key of element i is pc_cachekey_format(prefix, digests[i]); so a batch is keyed a
 *     slice at a time, and held as 32-byte digests, not as key text. 0 ok, -1 failed;
 *   _take_spans hands over the elements' spans (malloc'ed, n of them) and the signature's.
 * Borrows head and body until _free.
 */
#define PC_KEY_DIGEST_LEN 32
struct pc_cachekey_batch;
int pc_cachekey_batch_read(const struct pc_key_params *p, const char *head, size_t head_len,
                           const char *body, size_t len, size_t max_n,
                           struct pc_cachekey_batch **out);
size_t pc_cachekey_batch_count(const struct pc_cachekey_batch *kb);
int pc_cachekey_batch_digest(struct pc_cachekey_batch *kb, size_t from, size_t to,
                             unsigned char (*digests)[PC_KEY_DIGEST_LEN]);
struct pc_span *pc_cachekey_batch_take_spans(struct pc_cachekey_batch *kb, struct pc_span *sig);
void pc_cachekey_batch_free(struct pc_cachekey_batch *kb); /* NULL ok */

/* The key of a digest: prefix "v2:{" hex(digest) "}" into out; its length (0, out "", when
 * the prefix is too long). */
size_t pc_cachekey_format(const char *prefix, const unsigned char digest[PC_KEY_DIGEST_LEN],
                          char out[PC_KEY_MAX]);

/*
 * The key a batch's sub-request coalesces on (never a stored entry's key): prefix "v2:{"
 * hex(SHA-256("herd\n" keys[pick[0]] "\n" ... keys[pick[n-1]] "\n")) "}". Two requests
 * missing the same instances in the same order share it. 0 ok, -1 on failure.
 */
int pc_cachekey_herd(const char *prefix, const char (*keys)[PC_KEY_MAX], const size_t *pick,
                     size_t n, char out[PC_KEY_MAX]);
/* The same key from the instances' digests: keys[i] is pc_cachekey_format(prefix, digests[i]). */
int pc_cachekey_herd_digests(const char *prefix, const unsigned char (*digests)[PC_KEY_DIGEST_LEN],
                             const uint32_t *pick, size_t n, char out[PC_KEY_MAX]);

/* Human name of a kind: "fields", "path", "raw", "body". */
const char *pc_cachekey_kind_name(enum pc_key_kind kind);

#endif
