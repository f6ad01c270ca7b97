/*
 * fuzz_canon: cachekey on canon (src/) against the json-c implementation it replaced
 * (tests/ref/cachekey_ref.c), on arbitrary bodies. Keys must stay byte-identical: stored
 * entries are keyed v1 by the old code.
 *
 * Input: byte 0 holds flags (bit 0: body_is_json; bits 1-2: which of four key parameter
 * sets), the rest is the body.
 * Invariants, new == reference for each of:
 *   - pc_cachekey_derive: return code, key, kind, and the error text of a refused body
 *   - pc_cachekey_canonical: return code and output bytes (after a marker that a failed
 *     call must leave alone)
 *   - pc_cachekey_instance: return code and key
 */
#include "fuzz.h"

#include <string.h>

#include "../ref/cachekey_ref.h"
#include "predcache/cachekey.h"

static const char *const default_fields[] = {"instances", "inputs", "image_data", "img_base64"};
static const char *const dup_fields[] = {"b", "a", NULL, "b", "\xEF\xBF\xBD"};
static const char *const one_field[] = {"instances"};
static const char *const odd_fields[] = {"x\"y\\", "b\n", "\xC3\xA9", ""};

static const struct pc_key_params params[4] = {
    {"default", "predcache:", default_fields, 4, "file_path"},
    {"ns", "", dup_fields, 5, "p"},
    {"default", "pc:", one_field, 1, ""},
    {"", NULL, odd_fields, 4, "instances"},
};

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

static void check_instance(const struct pc_key_params *p, const char *body, size_t len)
{
    char k1[PC_KEY_MAX], k2[PC_KEY_MAX], e1[128], e2[128];
    int rc1 =
        pc_cachekey_instance(p, ROUTE, "\"serving_default\"", 17, body, len, k1, e1, sizeof e1);
    int rc2 =
        pc_ref_cachekey_instance(p, ROUTE, "\"serving_default\"", 17, body, len, k2, e2, sizeof e2);
    if (rc1 != rc2)
        fprintf(stderr, "instance: new rc=%d ref rc=%d\n", rc1, rc2);
    FUZZ_CHECK(rc1 == rc2);
    if (rc1 == 0)
        FUZZ_CHECK(strcmp(k1, k2) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int json = data[0] & 1;
    const struct pc_key_params *p = &params[(data[0] >> 1) & 3];
    size_t len = size - 1;
    char *body = fuzz_dup(data + 1, len);
    check_derive(p, body, len, json);
    check_canonical(body, len);
    check_instance(p, body, len);
    free(body);
    return 0;
}
