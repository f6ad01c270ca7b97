/*
 * batch: per-item caching of batches (TF Serving row format; embedding input lists), the
 * pure part.
 *
 * Finds the byte spans of the elements of a request's "instances" array (or another
 * member's: an embedding request's "input") and of a response's "predictions" array (or
 * "data", "embeddings", or a body that is one array), builds the sub-request that carries only the
 * missing instances (everything else in the body kept byte for byte), merges cached and new
 * predictions back into their original positions, and encodes the value stored for one
 * instance. Works on the raw bytes with its own strict JSON scanner so that what it
 * writes is exactly what the model server wrote. No I/O, no allocation beyond its own
 * structures.
 */
#ifndef PREDCACHE_BATCH_H
#define PREDCACHE_BATCH_H

#include <stddef.h>

#include "predcache/buf.h"

#define PC_BATCH_MAX_DEPTH 64

struct pc_span {
    size_t off;
    size_t len;
};

/* The elements of one JSON array inside a body. */
struct pc_batch_array {
    struct pc_span *elems; /* owned */
    size_t n;
    size_t cap;
};

struct pc_batch_req {
    struct pc_batch_array inst; /* the "instances" elements */
    struct pc_span signature;   /* raw text of "signature_name"'s value; len 0 when absent */
};

/*
 * Parses a request body. 0: a batch with at least one instance; 1: not a batch (not a
 * JSON object, no "instances" array, an empty one, or the key given twice); -1: not
 * valid JSON. Fills out (free with pc_batch_req_release) on 0 only.
 */
int pc_batch_parse_request(const char *body, size_t len, struct pc_batch_req *out);
/* The same for the array named member (OpenAI's "input", TEI's "inputs", ...). */
int pc_batch_parse_request_at(const char *body, size_t len, const char *member,
                              struct pc_batch_req *out);
void pc_batch_req_release(struct pc_batch_req *r);

/*
 * 1 when a top-level member spelled "instances" (the spelling pc_batch_parse_request reads)
 * is an array of more than max elements; else 0. Reads only up to the element past max and
 * keeps nothing, so counting a hostile batch costs what max elements cost; a body of fewer
 * than 2 (max + 1) bytes cannot hold more and is not read at all. Judges no JSON beyond
 * what it reads (0 for a body that is not valid up to there).
 */
int pc_batch_exceeds(const char *body, size_t len, size_t max);
int pc_batch_exceeds_at(const char *body, size_t len, const char *member, size_t max);

/*
 * Finds the "predictions" array of a response body. 0 ok (out filled, n may be 0);
 * -1 when the body is not a JSON object with a "predictions" array.
 */
int pc_batch_parse_response(const char *body, size_t len, struct pc_batch_array *out);
/* The same for the array named member, or (member "") a body that is one array (TEI). */
int pc_batch_parse_response_at(const char *body, size_t len, const char *member,
                               struct pc_batch_array *out);
void pc_batch_array_release(struct pc_batch_array *a);

/*
 * The sub-request: body with the instances array holding only the elements idx[0..k)
 * (indexes into req->inst, in that order), joined with ",". Appends to out. 0 ok.
 */
int pc_batch_build_subrequest(const char *body, size_t len, const struct pc_batch_req *req,
                              const size_t *idx, size_t k, struct pc_buf *out);

/*
 * The layout of a predictions answer: everything before the first element (prefix),
 * the separator between elements, and everything after the last element (suffix).
 */
struct pc_batch_layout {
    const char *prefix;
    size_t prefix_len;
    const char *sep;
    size_t sep_len; /* 0 when unknown */
    const char *suffix;
    size_t suffix_len;
};

/*
 * Layout of a response whose predictions were found by pc_batch_parse_response (n >= 1).
 * The separator is the one between the first two elements, or else the first comma
 * (and the spaces after it) found outside strings in the body, or else unknown. The
 * pointers borrow body.
 */
void pc_batch_layout_of(const char *body, size_t len, const struct pc_batch_array *preds,
                        struct pc_batch_layout *out);

/*
 * Writes prefix, the n predictions (preds[i] borrowed, pred_len[i] bytes) joined with the
 * separator (default_sep when the layout's is unknown), and suffix. Appends to out. 0 ok.
 */
int pc_batch_merge(const struct pc_batch_layout *layout, const char *const *preds,
                   const size_t *pred_len, size_t n, const char *default_sep, struct pc_buf *out);
/* The same, with prediction i given by pred(arg, i, ...) (borrowed until it returns to
 * merge): no arrays of n pointers and lengths. */
typedef void (*pc_batch_pred_fn)(void *arg, size_t i, const char **pred, size_t *len);
int pc_batch_merge_fn(const struct pc_batch_layout *layout, pc_batch_pred_fn pred, void *arg,
                      size_t n, const char *default_sep, struct pc_buf *out);

/*
 * The value body stored for one instance: the layout it came with and its prediction:
 *     "PI1\n" prefix_len " " sep_len " " suffix_len "\n" prefix sep suffix prediction
 */
int pc_batch_encode_instance(const struct pc_batch_layout *layout, const char *pred,
                             size_t pred_len, struct pc_buf *out);
/* Decodes; the pointers borrow data. 0 ok; -1 malformed. */
int pc_batch_decode_instance(const char *data, size_t len, struct pc_batch_layout *layout,
                             const char **pred, size_t *pred_len);

#endif
