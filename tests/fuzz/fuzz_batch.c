/*
 * fuzz_batch: the per-instance batch splicer on arbitrary bodies: request spans and
 * sub-requests, response spans, layouts and merges, and the stored instance value.
 *
 * The whole input is the body; which instances a sub-request or a merge picks comes from
 * a hash of it. Invariants:
 *   - every span lies inside the body, spans are in order, do not touch (a separator lies
 *     between two) and neither start nor end with whitespace; each one alone is a JSON
 *     value (it parses as the single instance of {"instances":[span]})
 *   - the sub-request with every instance in order parses back to the same instances and
 *     signature, and is the body itself when the body separates its instances with bare
 *     commas; any pick of instances (reordered, repeated, none) parses back to exactly that
 *     pick; an index out of range is refused
 *   - a response merged from its own predictions and its own layout parses back to the same
 *     predictions, and is the body itself when the separators between them are all alike
 *     (always, for one prediction); any pick of predictions merged with the layout parses
 *     back to that pick
 *   - encode_instance -> decode_instance gives back the layout's bytes and the prediction;
 *     decode of arbitrary bytes stays inside them and what it reads re-encodes to a value
 *     that decodes the same
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/batch.h"

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

/* xorshift: the picks of one input, reproducible. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_spans(const char *body, size_t len, const struct pc_batch_array *a)
{
    FUZZ_CHECK(a->n <= a->cap);
    for (size_t i = 0; i < a->n; i++) {
        const struct pc_span *s = &a->elems[i];
        FUZZ_CHECK(s->len > 0 && s->off <= len && s->len <= len - s->off);
        FUZZ_CHECK(!is_ws(body[s->off]) && !is_ws(body[s->off + s->len - 1]));
        if (i > 0)
            FUZZ_CHECK(s->off > a->elems[i - 1].off + a->elems[i - 1].len);
    }
}

static int span_eq(const char *a, const struct pc_span *sa, const char *b, const struct pc_span *sb)
{
    return sa->len == sb->len && memcmp(a + sa->off, b + sb->off, sa->len) == 0;
}

/* A span alone is one JSON value: the single instance of a minimal batch. */
static void check_alone(const char *body, const struct pc_span *s)
{
    struct pc_buf w;
    pc_buf_init(&w);
    FUZZ_CHECK(pc_buf_append_str(&w, "{\"instances\":[") == 0);
    FUZZ_CHECK(pc_buf_append(&w, body + s->off, s->len) == 0);
    FUZZ_CHECK(pc_buf_append_str(&w, "]}") == 0);
    struct pc_batch_req r;
    FUZZ_CHECK(pc_batch_parse_request(w.data, w.len, &r) == 0);
    FUZZ_CHECK(r.inst.n == 1 && r.inst.elems[0].off == 14 && r.inst.elems[0].len == s->len);
    pc_batch_req_release(&r);
    pc_buf_release(&w);
}

/* Builds the sub-request of idx[0..k) and checks that it parses back to exactly that pick. */
static void check_subrequest(const char *body, size_t len, const struct pc_batch_req *req,
                             const size_t *idx, size_t k, int want_body)
{
    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_batch_build_subrequest(body, len, req, idx, k, &out) == 0);
    char *sub = fuzz_dup((const uint8_t *)(out.data ? out.data : ""), out.len);
    if (want_body)
        FUZZ_CHECK(out.len == len && memcmp(sub, body, len) == 0);
    struct pc_batch_req back;
    int rc = pc_batch_parse_request(sub, out.len, &back);
    if (k == 0) {
        FUZZ_CHECK(rc == 1); /* an empty instances array is not a batch */
    } else {
        FUZZ_CHECK(rc == 0 && back.inst.n == k);
        for (size_t j = 0; j < k; j++)
            FUZZ_CHECK(span_eq(sub, &back.inst.elems[j], body, &req->inst.elems[idx[j]]));
        FUZZ_CHECK(span_eq(sub, &back.signature, body, &req->signature));
        pc_batch_req_release(&back);
    }
    free(sub);
    pc_buf_release(&out);
}

static void fuzz_request(const char *body, size_t len, uint64_t *seed)
{
    struct pc_batch_req req;
    int rc = pc_batch_parse_request(body, len, &req);
    FUZZ_CHECK(rc >= -1 && rc <= 1);
    if (rc != 0) {
        FUZZ_CHECK(req.inst.elems == NULL && req.inst.n == 0);
        return;
    }
    FUZZ_CHECK(req.inst.n >= 1);
    check_spans(body, len, &req.inst);
    const struct pc_span *sig = &req.signature;
    FUZZ_CHECK(sig->off <= len && sig->len <= len - sig->off);
    if (sig->len > 0)
        FUZZ_CHECK(!is_ws(body[sig->off]) && !is_ws(body[sig->off + sig->len - 1]));

    size_t n = req.inst.n;
    size_t *idx = calloc(2 * n + 1, sizeof *idx);
    FUZZ_CHECK(idx != NULL);
    int bare_commas = 1;
    for (size_t i = 0; i < n; i++) {
        if (i < 64)
            check_alone(body, &req.inst.elems[i]);
        idx[i] = i;
        if (i > 0) {
            size_t gap =
                req.inst.elems[i].off - req.inst.elems[i - 1].off - req.inst.elems[i - 1].len;
            bare_commas &= gap == 1;
        }
    }
    check_subrequest(body, len, &req, idx, n, bare_commas);

    size_t k = (size_t)(next(seed) % (2 * n + 1));
    for (size_t j = 0; j < k; j++)
        idx[j] = (size_t)(next(seed) % n);
    check_subrequest(body, len, &req, idx, k, 0);

    struct pc_buf out;
    pc_buf_init(&out);
    idx[0] = n;
    FUZZ_CHECK(pc_batch_build_subrequest(body, len, &req, idx, 1, &out) == -1);
    pc_buf_release(&out);

    free(idx);
    pc_batch_req_release(&req);
}

/* Merges preds[pick[0..k)] with layout and checks the result parses back to that pick. */
static void check_merge(const char *body, size_t len, const struct pc_batch_array *preds,
                        const struct pc_batch_layout *layout, const size_t *pick, size_t k,
                        int want_body)
{
    const char **p = calloc(k + 1, sizeof *p);
    size_t *pl = calloc(k + 1, sizeof *pl);
    FUZZ_CHECK(p != NULL && pl != NULL);
    for (size_t j = 0; j < k; j++) {
        p[j] = body + preds->elems[pick[j]].off;
        pl[j] = preds->elems[pick[j]].len;
    }
    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_batch_merge(layout, p, pl, k, ", ", &out) == 0);
    char *m = fuzz_dup((const uint8_t *)(out.data ? out.data : ""), out.len);
    if (want_body)
        FUZZ_CHECK(out.len == len && memcmp(m, body, len) == 0);
    struct pc_batch_array back;
    FUZZ_CHECK(pc_batch_parse_response(m, out.len, &back) == 0);
    FUZZ_CHECK(back.n == k);
    for (size_t j = 0; j < k; j++)
        FUZZ_CHECK(span_eq(m, &back.elems[j], body, &preds->elems[pick[j]]));
    pc_batch_array_release(&back);
    free(m);
    pc_buf_release(&out);
    free(p);
    free(pl);
}

/* encode_instance -> decode_instance gives back the layout's bytes and the prediction. */
static void check_instance_value(const struct pc_batch_layout *layout, const char *pred,
                                 size_t pred_len)
{
    struct pc_buf v;
    pc_buf_init(&v);
    FUZZ_CHECK(pc_batch_encode_instance(layout, pred, pred_len, &v) == 0);
    char *copy = fuzz_dup((const uint8_t *)v.data, v.len);
    struct pc_batch_layout l2;
    const char *p2;
    size_t p2len;
    FUZZ_CHECK(pc_batch_decode_instance(copy, v.len, &l2, &p2, &p2len) == 0);
    FUZZ_CHECK(l2.prefix_len == layout->prefix_len &&
               memcmp(l2.prefix, layout->prefix, l2.prefix_len) == 0);
    FUZZ_CHECK(l2.sep_len == layout->sep_len &&
               (l2.sep_len == 0 || memcmp(l2.sep, layout->sep, l2.sep_len) == 0));
    FUZZ_CHECK(l2.suffix_len == layout->suffix_len &&
               memcmp(l2.suffix, layout->suffix, l2.suffix_len) == 0);
    FUZZ_CHECK(p2len == pred_len && memcmp(p2, pred, pred_len) == 0);
    free(copy);
    pc_buf_release(&v);
}

static void fuzz_response(const char *body, size_t len, uint64_t *seed)
{
    struct pc_batch_array preds;
    int rc = pc_batch_parse_response(body, len, &preds);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        FUZZ_CHECK(preds.elems == NULL && preds.n == 0);
        return;
    }
    check_spans(body, len, &preds);
    size_t n = preds.n;
    if (n == 0) {
        pc_batch_array_release(&preds);
        return;
    }

    struct pc_batch_layout lay;
    pc_batch_layout_of(body, len, &preds, &lay);
    FUZZ_CHECK(lay.prefix == body && lay.prefix_len == preds.elems[0].off);
    FUZZ_CHECK(lay.suffix_len <= len && lay.suffix == body + len - lay.suffix_len);
    FUZZ_CHECK(lay.suffix == body + preds.elems[n - 1].off + preds.elems[n - 1].len);
    if (lay.sep_len > 0) {
        FUZZ_CHECK(lay.sep >= body && lay.sep_len <= len && lay.sep <= body + len - lay.sep_len);
        /* one comma, and whitespace around it */
        size_t commas = 0;
        for (size_t i = 0; i < lay.sep_len; i++) {
            commas += lay.sep[i] == ',';
            FUZZ_CHECK(lay.sep[i] == ',' || is_ws(lay.sep[i]));
        }
        FUZZ_CHECK(commas == 1);
    }

    size_t *pick = calloc(2 * n + 1, sizeof *pick);
    FUZZ_CHECK(pick != NULL);
    int uniform = 1;
    for (size_t i = 0; i < n; i++) {
        pick[i] = i;
        if (i > 0) {
            size_t a = preds.elems[i - 1].off + preds.elems[i - 1].len;
            size_t gap = preds.elems[i].off - a;
            uniform &= gap == lay.sep_len && memcmp(body + a, lay.sep, gap) == 0;
        }
    }
    check_merge(body, len, &preds, &lay, pick, n, uniform);

    size_t k = (size_t)(next(seed) % (2 * n + 1));
    for (size_t j = 0; j < k; j++)
        pick[j] = (size_t)(next(seed) % n);
    check_merge(body, len, &preds, &lay, pick, k, 0);

    for (size_t i = 0; i < n && i < 64; i++)
        check_instance_value(&lay, body + preds.elems[i].off, preds.elems[i].len);

    free(pick);
    pc_batch_array_release(&preds);
}

static void fuzz_decode_instance(const char *data, size_t len)
{
    struct pc_batch_layout l;
    const char *p;
    size_t plen;
    if (pc_batch_decode_instance(data, len, &l, &p, &plen) != 0)
        return;
    FUZZ_CHECK(plen > 0 && p >= data && p + plen == data + len);
    FUZZ_CHECK(l.prefix >= data && l.prefix + l.prefix_len == l.sep);
    FUZZ_CHECK(l.sep + l.sep_len == l.suffix && l.suffix + l.suffix_len == p);
    check_instance_value(&l, p, plen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    uint64_t seed = hash(data, size) | 1;
    fuzz_request(body, size, &seed);
    fuzz_response(body, size, &seed);
    fuzz_decode_instance(body, size);
    return 0;
}
