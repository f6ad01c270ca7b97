/*
 * fuzz_canon: cachekey on canon (src/) against the json-c reference reading of
 * the v2 key (tests/ref/cachekey_ref.c), on arbitrary bodies: keys must be
 * byte-identical.
 *
 * Input: byte 0 holds flags (bit 0: body_is_json; bits 1-3: which of the
 * reference's parameter sets), the rest is the body. Invariants, new ==
 * reference for each of:
 *   - pc_cachekey_derive: return code, key, kind, and the error text of a
 * refused body
 *   - pc_cachekey_canonical: return code and output bytes (after a marker that
 * a failed call must leave alone)
 *   - pc_cachekey_instances: return code, spans and keys
 */
#include "fuzz.h"

#include <string.h>

#include "../ref/cachekey_ref.h"
#include "predcache/cachekey.h"

#define ROUTE "/v1/models/m:predict"

static void check_derive(const struct pc_key_params *p, const char *body, size_t len, int json)
{
    char k1[PC_KEY_MAX], k2[PC_KEY_MAX], e1[256], e2[256];
    enum pc_key_kind kind1 = (enum pc_key_kind) - 1, kind2 = (enum pc_key_kind) - 1;
    memset(e1, 0, sizeof e1);
    memset(e2, 0, sizeof e2);
    int rc1 = pc_cachekey_derive(p, ROUTE, body, len, json, k1, &kind1, e1, sizeof e1);
    int rc2 = pc_ref_cachekey_derive(p, ROUTE, body, len, json, k2, &kind2, e2, sizeof e2);
    if (rc1 != rc2 || strcmp(e1, e2) != 0 || (rc1 == 0 && (kind1 != kind2 || strcmp(k1, k2))))
        fprintf(stderr,
                "derive(json=%d): new rc=%d kind=%d err=\"%s\"\n"
                "                  ref rc=%d kind=%d err=\"%s\"\n",
                json, rc1, (int)kind1, e1, rc2, (int)kind2, e2);
    FUZZ_CHECK(rc1 == rc2);
    FUZZ_CHECK(strcmp(e1, e2) == 0);
    if (rc1 == 0) {
        FUZZ_CHECK(kind1 == kind2);
        FUZZ_CHECK(strcmp(k1, k2) == 0);
    }
}

static void check_canonical(const char *body, size_t len)
{
    struct pc_buf b1, b2;
    pc_buf_init(&b1);
    pc_buf_init(&b2);
    FUZZ_CHECK(pc_buf_append(&b1, "keep", 4) == 0 && pc_buf_append(&b2, "keep", 4) == 0);
    int rc1 = pc_cachekey_canonical(body, len, &b1);
    int rc2 = pc_ref_cachekey_canonical(body, len, &b2);
    if (rc1 != rc2 || b1.len != b2.len || memcmp(b1.data, b2.data, b1.len) != 0)
        fprintf(stderr, "canonical: new rc=%d \"%.*s\"\n           ref rc=%d \"%.*s\"\n", rc1,
                (int)(b1.len < 300 ? b1.len : 300), b1.data, rc2,
                (int)(b2.len < 300 ? b2.len : 300), b2.data);
    FUZZ_CHECK(rc1 == rc2);
    FUZZ_CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    FUZZ_CHECK(b1.data[b1.len] == '\0');
    pc_buf_release(&b1);
    pc_buf_release(&b2);
}

static void check_instances(const struct pc_key_params *p, const char *body, size_t len)
{
    static const char head[] = "predcache-key-v2\nbackend b\nmethod POST\npath /p\nquery \n"
                               "media json\nscope \nvary \nnamespace n\n";
    struct pc_span *s1 = NULL, *s2 = NULL, g1, g2;
    char(*k1)[PC_KEY_MAX] = NULL, (*k2)[PC_KEY_MAX] = NULL;
    size_t n1 = 0, n2 = 0;
    int rc1 = pc_cachekey_instances(p, head, sizeof head - 1, body, len, &s1, &n1, &g1, &k1);
    int rc2 = pc_ref_cachekey_instances(p, head, sizeof head - 1, body, len, &s2, &n2, &g2, &k2);
    if (rc1 != rc2)
        fprintf(stderr, "instances: new rc=%d ref rc=%d\n", rc1, rc2);
    FUZZ_CHECK(rc1 == rc2);
    if (rc1 != 0)
        return;
    FUZZ_CHECK(n1 == n2 && g1.off == g2.off && g1.len == g2.len);
    for (size_t i = 0; i < n1; i++)
        FUZZ_CHECK(s1[i].off == s2[i].off && s1[i].len == s2[i].len && !strcmp(k1[i], k2[i]));
    free(s1);
    free(s2);
    free(k1);
    free(k2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int json = data[0] & 1;
    const struct pc_key_params *p = &pc_ref_params[(data[0] >> 1) % pc_ref_n_params];
    size_t len = size - 1;
    char *body = fuzz_dup(data + 1, len);
    check_derive(p, body, len, json);
    check_canonical(body, len);
    check_instances(p, body, len);
    free(body);
    return 0;
}
