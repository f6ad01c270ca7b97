/*
 * fuzz_cachekey: the v2 key (pc_cachekey_derive, pc_cachekey_body, pc_cachekey_canonical,
 * pc_cachekey_instances) on arbitrary bodies, under every parameter set of the reference
 * (tests/ref/cachekey_ref.c: each family, ignore fields, path field, the fields alias).
 *
 * Input: byte 0 holds flags (bit 0: body_is_json; bits 1-3: which parameter set), the rest
 * is the body.
 * Invariants:
 *   - derive never fails on a body not declared JSON; it fails on a declared one only when
 *     the body is not JSON, and then the same body undeclared is keyed raw; a body that
 *     parses gets the same key and kind whether declared or not
 *   - a key is prefix "v2:{" 64 lowercase hex digits "}"; kind is one of the four
 *   - derive and pc_cachekey_body (under a head with every line set) give what the
 *     json-c reference gives: return code, kind, key and error text
 *   - canonical output, when there is one, is the reference's, is itself canonical and
 *     canonicalising it again gives the same bytes; a failed call leaves out as it was
 *   - canonical succeeds only on RFC 8259 JSON (batch.c's strict scanner is the oracle), a
 *     body that is not JSON is only ever keyed raw, and a body the scanner takes, declared
 *     JSON, is not refused
 *   - a body not keyed raw gets the same kind and key once canonicalised (the key depends
 *     on the values read, never on their spelling)
 *   - the keys of a batch in one pass are the reference's, element for element (spans,
 *     signature span, keys), and when it takes the body, batch.c's scanner finds the same
 *     element spans; it never runs out of memory here
 */
#include "fuzz.h"

#include <string.h>

#include "../ref/cachekey_ref.h"
#include "predcache/batch.h"
#include "predcache/cachekey.h"

#define ROUTE "/v1/models/m:predict"
#define HEAD                                                                                       \
    "predcache-key-v2\nbackend tfs-a\nmethod POST\npath " ROUTE "\nquery v=1\nmedia json\n"        \
    "scope s\nvary x 1:a;\nnamespace default@3\n"

static void check_key(const struct pc_key_params *p, const char *key)
{
    const char *prefix = p->prefix ? p->prefix : "";
    size_t pl = strlen(prefix);
    FUZZ_CHECK(strlen(key) == pl + 4 + 64 + 1);
    FUZZ_CHECK(memcmp(key, prefix, pl) == 0 && memcmp(key + pl, "v2:{", 4) == 0);
    for (size_t i = pl + 4; i < pl + 4 + 64; i++)
        FUZZ_CHECK((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f'));
    FUZZ_CHECK(key[pl + 4 + 64] == '}');
}

/* Deepest nesting of brackets outside strings (a rough count, enough to skip deep texts). */
static int nesting(const char *s, size_t n)
{
    int d = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            max = ++d > max ? d : max;
        } else if (c == ']' || c == '}') {
            d--;
        }
    }
    return max;
}

/*
 * batch.c's scanner, an independent strict RFC 8259 reader: 1 valid JSON, 0 not. It says
 * "not JSON" as -1 whatever the text's top-level type is.
 */
static int rfc_json(const char *s, size_t n)
{
    struct pc_batch_req r;
    int rc = pc_batch_parse_request(s, n, &r);
    if (rc == 0)
        pc_batch_req_release(&r);
    return rc != -1;
}

/* derive, held to the reference; returns its code. */
static int derive(const struct pc_key_params *p, const char *body, size_t len, int is_json,
                  char key[PC_KEY_MAX], enum pc_key_kind *kind)
{
    char err[256], err2[256], key2[PC_KEY_MAX];
    memset(err, 'x', sizeof err);
    memset(err2, 'y', sizeof err2);
    enum pc_key_kind kind2 = (enum pc_key_kind) - 1;
    *kind = (enum pc_key_kind) - 1;
    int rc = pc_cachekey_derive(p, ROUTE, body, len, is_json, key, kind, err, sizeof err);
    int rc2 = pc_ref_cachekey_derive(p, ROUTE, body, len, is_json, key2, &kind2, err2, sizeof err2);
    if (rc != rc2 || (rc == 0 && (*kind != kind2 || strcmp(key, key2) != 0)))
        fprintf(stderr, "derive(json=%d): new rc=%d kind=%d, ref rc=%d kind=%d\n", is_json, rc,
                (int)*kind, rc2, (int)kind2);
    FUZZ_CHECK(rc == rc2);
    if (rc == 0) {
        check_key(p, key);
        FUZZ_CHECK(*kind == PC_KEY_FIELDS || *kind == PC_KEY_PATH || *kind == PC_KEY_RAW ||
                   *kind == PC_KEY_BODY);
        FUZZ_CHECK(*kind == kind2 && strcmp(key, key2) == 0);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        FUZZ_CHECK(strcmp(err, err2) == 0);
    }
    return rc;
}

/* pc_cachekey_body under HEAD, held to the reference. */
static void body_key(const struct pc_key_params *p, const char *body, size_t len, int is_json)
{
    char k1[PC_KEY_MAX], k2[PC_KEY_MAX];
    enum pc_key_kind kind1 = PC_KEY_RAW, kind2 = PC_KEY_RAW;
    int rc1 = pc_cachekey_body(p, HEAD, strlen(HEAD), body, len, is_json, k1, &kind1, NULL, 0);
    int rc2 = pc_ref_cachekey_body(p, HEAD, strlen(HEAD), body, len, is_json, k2, &kind2, NULL, 0);
    FUZZ_CHECK(rc1 == rc2);
    if (rc1 == 0)
        FUZZ_CHECK(kind1 == kind2 && strcmp(k1, k2) == 0);
}

/* Canonical form of s[0..n) appended after a marker; checks that a failure keeps it and
 * that the reference gives the same. */
static int canonical(const char *s, size_t n, struct pc_buf *out)
{
    static const char mark[] = "keep";
    struct pc_buf ref;
    pc_buf_init(out);
    pc_buf_init(&ref);
    FUZZ_CHECK(pc_buf_append(out, mark, 4) == 0 && pc_buf_append(&ref, mark, 4) == 0);
    int rc = pc_cachekey_canonical(s, n, out);
    FUZZ_CHECK(rc == pc_ref_cachekey_canonical(s, n, &ref));
    FUZZ_CHECK(out->len == ref.len && memcmp(out->data, ref.data, ref.len) == 0);
    pc_buf_release(&ref);
    FUZZ_CHECK(out->len >= 4 && memcmp(out->data, mark, 4) == 0);
    FUZZ_CHECK(out->data[out->len] == '\0');
    if (rc != 0)
        FUZZ_CHECK(out->len == 4);
    else
        FUZZ_CHECK(out->len > 4);
    return rc;
}

/* A batch in one pass: the reference's spans, signature and keys; batch.c's spans. */
static void check_instances(const struct pc_key_params *p, const char *body, size_t len)
{
    struct pc_span *s1 = NULL, *s2 = NULL, sig1 = {0, 0}, sig2 = {0, 0};
    char(*k1)[PC_KEY_MAX] = NULL, (*k2)[PC_KEY_MAX] = NULL;
    size_t n1 = 0, n2 = 0;
    int rc1 = pc_cachekey_instances(p, HEAD, strlen(HEAD), body, len, &s1, &n1, &sig1, &k1);
    int rc2 = pc_ref_cachekey_instances(p, HEAD, strlen(HEAD), body, len, &s2, &n2, &sig2, &k2);
    if (rc1 != rc2)
        fprintf(stderr, "instances: new rc=%d ref rc=%d\n", rc1, rc2);
    FUZZ_CHECK(rc1 == 0 || rc1 == 1);
    FUZZ_CHECK(rc1 == rc2);
    if (rc1 != 0)
        return;
    FUZZ_CHECK(n1 == n2 && n1 > 0);
    FUZZ_CHECK(sig1.off == sig2.off && sig1.len == sig2.len);
    struct pc_batch_req req;
    FUZZ_CHECK(pc_batch_parse_request(body, len, &req) == 0);
    FUZZ_CHECK(req.inst.n == n1);
    for (size_t i = 0; i < n1; i++) {
        FUZZ_CHECK(s1[i].off == s2[i].off && s1[i].len == s2[i].len);
        FUZZ_CHECK(s1[i].off == req.inst.elems[i].off && s1[i].len == req.inst.elems[i].len);
        check_key(p, k1[i]);
        FUZZ_CHECK(strcmp(k1[i], k2[i]) == 0);
    }
    pc_batch_req_release(&req);
    free(s1);
    free(s2);
    free(k1);
    free(k2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_json = data[0] & 1;
    const struct pc_key_params *p = &pc_ref_params[(data[0] >> 1) % pc_ref_n_params];
    size_t len = size - 1;
    char *body = fuzz_dup(data + 1, len);

    /* derive, declared and not */
    char key[PC_KEY_MAX], key2[PC_KEY_MAX];
    enum pc_key_kind kind, kind2;
    int rc = derive(p, body, len, is_json, key, &kind);
    if (!is_json) {
        FUZZ_CHECK(rc == 0);
    } else {
        int rc2 = derive(p, body, len, 0, key2, &kind2);
        FUZZ_CHECK(rc2 == 0);
        if (rc == 0) {
            FUZZ_CHECK(kind == kind2 && strcmp(key, key2) == 0);
        } else {
            FUZZ_CHECK(kind2 == PC_KEY_RAW);
            kind = kind2;
            memcpy(key, key2, sizeof key);
        }
    }
    body_key(p, body, len, is_json);

    /* json-c (strict) and the RFC 8259 scanner agree on what is JSON: a body a JSON model
     * server would refuse must not be read, and one it would take must not be refused.
     * (Both bound nesting at 64, counted differently: deep texts are left out.) */
    int rfc = len > 0 && nesting(body, len) <= 60 ? rfc_json(body, len) : -1;
    if (rfc == 1)
        FUZZ_CHECK(!is_json || rc == 0);
    if (rfc == 0)
        FUZZ_CHECK(kind == PC_KEY_RAW);

    /* canonical: the reference's, valid and idempotent */
    struct pc_buf c1, c2;
    if (canonical(body, len, &c1) == 0) {
        const char *text = c1.data + 4;
        size_t tlen = c1.len - 4;
        FUZZ_CHECK(memchr(text, '\0', tlen) == NULL);
        FUZZ_CHECK(rfc != 0);
        FUZZ_CHECK(rfc_json(text, tlen));
        FUZZ_CHECK(canonical(text, tlen, &c2) == 0);
        FUZZ_CHECK(c2.len == c1.len && memcmp(c2.data, c1.data, c1.len) == 0);
        pc_buf_release(&c2);

        /* the key of a body read as JSON depends on its values, not their spelling */
        if (kind != PC_KEY_RAW) {
            FUZZ_CHECK(derive(p, text, tlen, 1, key2, &kind2) == 0);
            FUZZ_CHECK(kind2 == kind);
            FUZZ_CHECK(strcmp(key, key2) == 0);
        }
    }
    pc_buf_release(&c1);

    check_instances(p, body, len);
    free(body);
    return 0;
}
