/*
 * fuzz_cachekey: pc_cachekey_derive, pc_cachekey_canonical and pc_cachekey_instance on
 * arbitrary bodies, with the shipped default parameters.
 *
 * Input: byte 0 holds flags (bit 0: body_is_json), the rest is the body.
 * Invariants:
 *   - derive never fails on a body not declared JSON; it fails on a declared one only when
 *     the body is not JSON, and then the same body undeclared is keyed raw; a body that
 *     parses gets the same key and kind whether declared or not
 *   - a key is prefix "v1:" and 64 lowercase hex digits; kind is one of the three
 *   - canonical output, when there is one, is itself canonical and canonicalising it again
 *     gives the same bytes (idempotence); a failed call leaves out as it was
 *   - canonical succeeds only on RFC 8259 JSON (batch.c's strict scanner is the oracle), a
 *     body that is not JSON is only ever keyed raw, and a body the scanner takes, declared
 *     JSON, is not refused
 *   - a body keyed by fields or path gets the same kind and key once canonicalised (the key
 *     depends on the values, never on their spelling)
 *   - an instance key exists exactly when the instance has a canonical form (and holds no
 *     "\u0000"), and has the key format
 *   - the keys of a whole batch in one pass (pc_cachekey_instances), when it takes the
 *     body, are those of batch.c's spans keyed one instance at a time, span for span; a
 *     body it calls certainly no batch, batch.c does not take either
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/batch.h"
#include "predcache/cachekey.h"

static const char *const fields[] = {"instances", "inputs", "image_data", "img_base64"};

static const struct pc_key_params params = {
    .namespace_ = "default",
    .prefix = "predcache:",
    .input_fields = fields,
    .n_input_fields = sizeof fields / sizeof fields[0],
    .path_field = "file_path",
};

#define ROUTE "/v1/models/m:predict"
#define PREFIX_V1 "predcache:v1:"

static void check_key(const char *key)
{
    size_t pl = strlen(PREFIX_V1);
    FUZZ_CHECK(strlen(key) == pl + 64);
    FUZZ_CHECK(memcmp(key, PREFIX_V1, pl) == 0);
    for (size_t i = pl; i < pl + 64; i++)
        FUZZ_CHECK((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f'));
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

static int derive(const char *body, size_t len, int is_json, char key[PC_KEY_MAX],
                  enum pc_key_kind *kind)
{
    char err[256];
    memset(err, 'x', sizeof err);
    *kind = (enum pc_key_kind) - 1;
    int rc = pc_cachekey_derive(&params, ROUTE, body, len, is_json, key, kind, err, sizeof err);
    if (rc == 0) {
        check_key(key);
        FUZZ_CHECK(*kind == PC_KEY_FIELDS || *kind == PC_KEY_PATH || *kind == PC_KEY_RAW);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    }
    return rc;
}

/* Canonical form of s[0..n) appended after a marker; checks that a failure keeps it. */
static int canonical(const char *s, size_t n, struct pc_buf *out)
{
    static const char mark[] = "keep";
    pc_buf_init(out);
    FUZZ_CHECK(pc_buf_append(out, mark, 4) == 0);
    int rc = pc_cachekey_canonical(s, n, out);
    FUZZ_CHECK(out->len >= 4 && memcmp(out->data, mark, 4) == 0);
    FUZZ_CHECK(out->data[out->len] == '\0');
    if (rc != 0)
        FUZZ_CHECK(out->len == 4);
    else
        FUZZ_CHECK(out->len > 4);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_json = data[0] & 1;
    size_t len = size - 1;
    char *body = fuzz_dup(data + 1, len);

    /* derive, declared and not */
    char key[PC_KEY_MAX], key2[PC_KEY_MAX];
    enum pc_key_kind kind, kind2;
    int rc = derive(body, len, is_json, key, &kind);
    if (!is_json) {
        FUZZ_CHECK(rc == 0);
    } else {
        int rc2 = derive(body, len, 0, key2, &kind2);
        FUZZ_CHECK(rc2 == 0);
        if (rc == 0) {
            FUZZ_CHECK(kind == kind2 && strcmp(key, key2) == 0);
        } else {
            FUZZ_CHECK(kind2 == PC_KEY_RAW);
            kind = kind2;
            memcpy(key, key2, sizeof key);
        }
    }

    /* json-c (strict) and the RFC 8259 scanner agree on what is JSON: a body a JSON model
     * server would refuse must not be read, and one it would take must not be refused.
     * (Both bound nesting at 64, counted differently: deep texts are left out.) */
    int rfc = len > 0 && nesting(body, len) <= 60 ? rfc_json(body, len) : -1;
    if (rfc == 1)
        FUZZ_CHECK(!is_json || rc == 0);
    if (rfc == 0)
        FUZZ_CHECK(kind == PC_KEY_RAW);

    /* canonical: valid and idempotent */
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

        /* the key of a fields or path body depends on its values, not their spelling */
        if (kind != PC_KEY_RAW) {
            FUZZ_CHECK(derive(text, tlen, 1, key2, &kind2) == 0);
            FUZZ_CHECK(kind2 == kind);
            FUZZ_CHECK(strcmp(key, key2) == 0);
        }
    }

    /* one instance of a batch, with a fixed signature */
    char err[128];
    int irc = pc_cachekey_instance(&params, ROUTE, "\"serving_default\"", 17, body, len, key2, err,
                                   sizeof err);
    if (irc == 0)
        check_key(key2);
    int exact = c1.len > 4 && memmem(body, len, "\\u0000", 6) == NULL;
    FUZZ_CHECK((irc == 0) == exact);
    pc_buf_release(&c1);

    /* a whole batch in one pass agrees with the spans keyed one by one */
    struct pc_span *spans = NULL, sig = {0, 0};
    char(*keys)[PC_KEY_MAX] = NULL;
    size_t n = 0;
    int brc = pc_cachekey_instances(&params, ROUTE, body, len, &spans, &n, &sig, &keys);
    FUZZ_CHECK(brc == 0 || brc == 1 || brc == 2);
    if (brc == 2) { /* certainly not a batch: batch.c agrees */
        struct pc_batch_req none;
        FUZZ_CHECK(pc_batch_parse_request(body, len, &none) != 0);
    }
    if (brc == 0) {
        struct pc_batch_req req;
        FUZZ_CHECK(pc_batch_parse_request(body, len, &req) == 0);
        FUZZ_CHECK(req.inst.n == n && req.signature.off == sig.off && req.signature.len == sig.len);
        for (size_t i = 0; i < n; i++) {
            const struct pc_span *e = &req.inst.elems[i];
            FUZZ_CHECK(spans[i].off == e->off && spans[i].len == e->len);
            FUZZ_CHECK(pc_cachekey_instance(&params, ROUTE, body + sig.off, sig.len, body + e->off,
                                            e->len, key2, err, sizeof err) == 0);
            FUZZ_CHECK(strcmp(keys[i], key2) == 0);
        }
        pc_batch_req_release(&req);
        free(spans);
        free(keys);
    }

    free(body);
    return 0;
}
