/*
 * Unit tests of canon and of the v2 key read through it. Every vector is checked two ways:
 * against a fixed expectation, and against the reference reading on json-c 0.16
 * (tests/ref/cachekey_ref.c, built without canon): same keys, kinds, errors, canonical
 * forms and batch keys, for every family and a few ignore / input_fields settings. The
 * quirks pinned here were found by fuzz_canon / fuzz_cachekey or by reading json-c 0.16's
 * tokener.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../ref/cachekey_ref.h"
#include "predcache/cachekey.h"
#include "predcache/canon.h"

static const char *const json_noise[] = {"request_id"};

/* TF Serving :predict, the family most routes read. */
static const struct pc_key_params params = {
    .namespace_ = "default",
    .prefix = "pc:",
    .path_field = "file_path",
    .family = PC_FAMILY_TFS_PREDICT,
};

static const struct pc_key_params json_params = {
    .namespace_ = "default",
    .prefix = "pc:",
    .path_field = "file_path",
    .family = PC_FAMILY_JSON,
    .ignore_fields = json_noise,
    .n_ignore_fields = 1,
};

#define ROUTE "/v1/models/m:predict"
#define HEAD                                                                                       \
    "predcache-key-v2\nbackend b\nmethod POST\npath " ROUTE "\nquery v=1\nmedia json\nscope s\n"   \
    "vary x 1:a;\nnamespace default\n"

/* derive, body (under HEAD), canonical and instances agree with the reference on s[0..len),
 * declared or not. */
static void same_as_ref_p(const struct pc_key_params *p, const char *s, size_t len)
{
    for (int json = 0; json <= 1; json++) {
        char k1[PC_KEY_MAX] = "", k2[PC_KEY_MAX] = "", e1[256] = "", e2[256] = "";
        enum pc_key_kind kind1 = PC_KEY_RAW, kind2 = PC_KEY_RAW;
        int rc1 = pc_cachekey_derive(p, ROUTE, s, len, json, k1, &kind1, e1, sizeof e1);
        int rc2 = pc_ref_cachekey_derive(p, ROUTE, s, len, json, k2, &kind2, e2, sizeof e2);
        if (rc1 != rc2 || kind1 != kind2 || strcmp(k1, k2) != 0)
            print_error("family %d json %d: %.*s\n", (int)p->family, json, (int)len, s);
        assert_int_equal(rc1, rc2);
        assert_string_equal(e1, e2);
        assert_int_equal(kind1, kind2);
        assert_string_equal(k1, k2);
        rc1 = pc_cachekey_body(p, HEAD, strlen(HEAD), s, len, json, k1, &kind1, e1, sizeof e1);
        rc2 = pc_ref_cachekey_body(p, HEAD, strlen(HEAD), s, len, json, k2, &kind2, e2, sizeof e2);
        assert_int_equal(rc1, rc2);
        assert_int_equal(kind1, kind2);
        assert_string_equal(k1, k2);
    }
    struct pc_buf b1, b2;
    pc_buf_init(&b1);
    pc_buf_init(&b2);
    assert_int_equal(pc_buf_append_str(&b1, "keep"), 0);
    assert_int_equal(pc_buf_append_str(&b2, "keep"), 0);
    assert_int_equal(pc_cachekey_canonical(s, len, &b1), pc_ref_cachekey_canonical(s, len, &b2));
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    pc_buf_release(&b1);
    pc_buf_release(&b2);

    struct pc_span *s1 = NULL, *s2 = NULL, sig1 = {0, 0}, sig2 = {0, 0};
    char(*k1)[PC_KEY_MAX] = NULL, (*k2)[PC_KEY_MAX] = NULL;
    size_t n1 = 0, n2 = 0;
    int rc1 = pc_cachekey_instances(p, HEAD, strlen(HEAD), s, len, &s1, &n1, &sig1, &k1);
    int rc2 = pc_ref_cachekey_instances(p, HEAD, strlen(HEAD), s, len, &s2, &n2, &sig2, &k2);
    if (rc1 != rc2)
        print_error("instances, family %d: %.*s\n", (int)p->family, (int)len, s);
    assert_int_equal(rc1, rc2);
    if (rc1 == 0) {
        assert_int_equal(n1, n2);
        assert_int_equal(sig1.off, sig2.off);
        assert_int_equal(sig1.len, sig2.len);
        for (size_t i = 0; i < n1; i++) {
            assert_int_equal(s1[i].off, s2[i].off);
            assert_int_equal(s1[i].len, s2[i].len);
            assert_string_equal(k1[i], k2[i]);
        }
        free(s1);
        free(s2);
        free(k1);
        free(k2);
    }
}

/* ... under every parameter set. */
static void same_as_ref_len(const char *s, size_t len)
{
    for (size_t i = 0; i < pc_ref_n_params; i++)
        same_as_ref_p(&pc_ref_params[i], s, len);
}

static void same_as_ref(const char *s)
{
    same_as_ref_len(s, strlen(s));
}

/* Canonical form of s (asserting the reference agrees); NULL when there is none. */
static char *canonical(const char *s, size_t len)
{
    same_as_ref_len(s, len);
    struct pc_buf b;
    pc_buf_init(&b);
    if (pc_cachekey_canonical(s, len, &b) != 0) {
        pc_buf_release(&b);
        return NULL;
    }
    return pc_buf_steal(&b, NULL);
}

static void assert_canonical(const char *s, const char *want)
{
    char *got = canonical(s, strlen(s));
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void assert_no_canonical(const char *s)
{
    assert_null(canonical(s, strlen(s)));
}

/* The error text of s[0..len) declared JSON (asserting the reference agrees). */
static void assert_refused(const char *s, size_t len, const char *want)
{
    same_as_ref_len(s, len);
    char k[PC_KEY_MAX], err[256] = "";
    assert_int_equal(pc_cachekey_derive(&params, ROUTE, s, len, 1, k, NULL, err, sizeof err), -1);
    assert_string_equal(err, want);
}

static enum pc_key_kind kind_of_p(const struct pc_key_params *p, const char *s)
{
    same_as_ref(s);
    char k[PC_KEY_MAX];
    enum pc_key_kind kind;
    assert_int_equal(pc_cachekey_derive(p, ROUTE, s, strlen(s), 1, k, &kind, NULL, 0), 0);
    return kind;
}

static enum pc_key_kind kind_of(const char *s)
{
    return kind_of_p(&params, s);
}

#define BAD "request body is not valid JSON: "

/* json-c's reasons and offsets, including its reading of the end as one NUL byte. */
static void test_refusal_texts(void **state)
{
    (void)state;
    assert_refused("", 0, BAD "empty body at offset 0");
    assert_refused("{\"a\":1} x", 9, BAD "unexpected character at offset 8");
    assert_refused("[1,2", 4, BAD "unexpected end of data at offset 4");
    assert_refused("[1,]", 4, BAD "unexpected character at offset 3");
    assert_refused("{\"a\":1,}", 8, BAD "unexpected character at offset 7");
    assert_refused("[1 2]", 5, BAD "array value separator ',' expected at offset 3");
    assert_refused("{\"a\" 1}", 7, BAD "object property name separator ':' expected at offset 5");
    assert_refused("{\"a\":1 \"b\"}", 11, BAD "object value separator ',' expected at offset 7");
    assert_refused("{a:1}", 5, BAD "quoted object property name expected at offset 1");
    assert_refused("[tru]", 5, BAD "boolean expected at offset 4");
    assert_refused("[True]", 6, BAD "boolean expected at offset 1");
    assert_refused("[nul]", 5, BAD "null expected at offset 4");
    assert_refused("[\"\\x\"]", 6, BAD "invalid string sequence at offset 3");
    assert_refused("[\"\\u12g4\"]", 10, BAD "invalid string sequence at offset 6");
    assert_refused("['a']", 5, BAD "unexpected character at offset 1");
    assert_refused("[infinity]", 10, BAD "unexpected character at offset 1");
    assert_refused("[-infinity]", 11, BAD "unexpected character at offset 2");
    /* numbers: inside a container the byte after one is checked first, then its text */
    assert_refused("[1.2.3]", 7, BAD "number expected at offset 4");
    assert_refused("[1e]", 4, BAD "number expected at offset 3");
    assert_refused("[01]", 4, BAD "number expected at offset 3");
    assert_refused("[1x]", 4, BAD "number expected at offset 2");
    assert_refused("[1/]", 4, BAD "array value separator ',' expected at offset 2");
    /* at the top a number may end the text: refused there, it is the end of data */
    assert_refused("01", 2, BAD "unexpected end of data at offset 2");
    assert_refused("01 ", 3, BAD "number expected at offset 2");
    assert_refused("-", 1, BAD "unexpected end of data at offset 1");
    assert_refused("1x", 2, BAD "unexpected character at offset 1");
    /* a NUL: end of data where it stands (one past it inside a string), or after the value
     * the trailing data cachekey refuses */
    assert_refused("[1,\0]", 5, BAD "unexpected end of data at offset 3");
    assert_refused("[\"a\0\"]", 6, BAD "unexpected end of data at offset 4");
    assert_refused("{\"a\0\":1}", 8, BAD "unexpected end of data at offset 4");
    assert_refused("[1] \0", 5, BAD "trailing data after the value at offset 4");
    assert_refused("7\0", 2, BAD "trailing data after the value at offset 1");
    assert_refused("7.\0", 3, BAD "trailing data after the value at offset 2");
    assert_refused("-\0", 2, BAD "unexpected end of data at offset 1");
    /* depth: the root is at 0, and a container at 63 must be empty */
    char deep[200];
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    same_as_ref_len(deep, 128); /* 64 levels, innermost empty: read */
    deep[64] = '1';
    memset(deep + 65, ']', 64);
    assert_refused(deep, 129, BAD "nesting too deep at offset 64");
    assert_refused(deep, 64, BAD "unexpected end of data at offset 64");
}

/* What json-c reads though strict JSON does not: read (not a 400), but keyed raw. */
static void test_leniencies_read_raw(void **state)
{
    (void)state;
    const char *lenient[] = {
        "{\"instances\":[1.]}",        "{\"instances\":[1.e5]}",     "{\"instances\":[-.5]}",
        "{\"instances\":[-01]}",       "{\"instances\":[00]}",       "{\"instances\":[-00.5]}",
        "{\"instances\":[NaN]}",       "{\"instances\":[Infinity]}", "{\"instances\":[-Infinity]}",
        "{'instances':[1]}",           "{\"instances\":[\"a\tb\"]}", "{\"x\":1.,\"instances\":[1]}",
        "{\"instances\":[1],'a\"':2}",
    };
    for (size_t i = 0; i < sizeof lenient / sizeof lenient[0]; i++) {
        assert_int_equal(kind_of(lenient[i]), PC_KEY_RAW);
        assert_no_canonical(lenient[i]);
    }
    assert_canonical("-0", "0");
    assert_canonical("[0,-0,0.0,-0e0]", "[0,0,0,0]");
}

/* json-c tests a decoded surrogate pair's low 16 bits again: U+1D800..U+1DBFF wait for a
 * low half as a high surrogate would, U+1DC00.. become U+FFFD (and so are never exact). */
static void test_surrogate_quirks(void **state)
{
    (void)state;
    assert_canonical("\"\\ud800\\udc00\"", "\"\xF0\x90\x80\x80\"");
    assert_canonical("\"\\ud83d\\ude00\"", "\"\xF0\x9F\x98\x80\"");
    assert_no_canonical("\"\\ud836\\udc00\""); /* U+1D800 */
    assert_no_canonical("\"\\ud837\\udc00\""); /* U+1DC00 */
    assert_no_canonical("\"\\ud836\\udc00x\"");
    /* ... and U+1D800 then a low half decodes to U+10000, as \ud800\udc00 does */
    assert_canonical("\"\\ud836\\udc00\\udc00\"", "\"\xF0\x90\x80\x80\"");
    assert_no_canonical("\"\\ud800\"");
    assert_no_canonical("\"\\udc00\"");
    assert_no_canonical("\"\\ud800\\n\"");
    assert_no_canonical("\"\\ud800\\ud800\\udc00\"");
    assert_no_canonical("\"\\ufffd\"");
    assert_no_canonical("\"\xEF\xBF\xBD\"");
    assert_canonical("\"\xEF\xBF\xBC\xBD\"", "\"\xEF\xBF\xBC\xBD\"");
    assert_canonical("[\"\\u00e9\",\"\\uFFFF\",\"\\u0800\"]",
                     "[\"\xC3\xA9\",\"\xEF\xBF\xBF\",\"\xE0\xA0\x80\"]");
    same_as_ref("{\"instances\":[\"\\ud836\\udc00\"]}");
    same_as_ref("{\"file_path\":\"/\\ud836\\udc00\\udc00\"}");
}

static void test_string_escaping(void **state)
{
    (void)state;
    /* '/' and DEL are kept, control characters escaped, bytes passed through */
    assert_canonical("\"a\\/b\\u007f\\u0000\\u001F\\b\\f\\n\\r\\t\\\"\\\\\xFF\"",
                     "\"a/b\x7f\\u0000\\u001f\\b\\f\\n\\r\\t\\\"\\\\\xFF\"");
    assert_canonical("{\"\\u0041\\/\":\"'\"}", "{\"A/\":\"'\"}");
    /* a NUL decoded into a string value stays; in a name it cuts the name */
    assert_canonical("[\"a\\u0000b\"]", "[\"a\\u0000b\"]");
    assert_canonical("{\"b\\u0000zz\":1,\"a\":2}", "{\"a\":2,\"b\":1}");
    assert_canonical("{\"a\\u0000\\ud800\":1}", "{\"a\":1}");
    assert_no_canonical("{\"a\\u0000x\":1,\"a\\u0000y\":2}"); /* "a" twice */
}

/* Members: sorted bytewise; the last of a name wins, and what it replaces is never
 * looked at again (an inexact value there does not matter). */
static void test_members(void **state)
{
    (void)state;
    assert_no_canonical("{\"a\":1e400,\"a\":2}"); /* a name twice: read two ways */
    assert_no_canonical("{\"a\":2,\"a\":1e400}");
    assert_no_canonical("{\"b\":{\"y\":1,\"x\":[{\"d\":1,\"c\":2}]},\"a\":0,\"b\":[3]}");
    assert_no_canonical("{\"b\":1,\"a\":2,\"b\":3,\"a\":4,\"c\":5}");
    assert_no_canonical("{\"\":1,\"\\u0000\":2}"); /* "" twice */
    assert_canonical("{\"ab\":1,\"a\":2,\"a\\u00ff\":3,\"B\":4}",
                     "{\"B\":4,\"a\":2,\"ab\":1,\"a\xC3\xBF\":3}");
    assert_no_canonical("{\"\\ud800\":1}");
    assert_no_canonical("{\"\\ud800\":1,\"\\udc00\":2}");
}

/* Numbers json-c holds no exact value for: saturated integers, doubles strtod makes
 * infinite (from 2^1024 - 2^970 up, a tie rounding to infinity), exponents past 100000. */
static void test_number_limits(void **state)
{
    (void)state;
    assert_canonical("[1.7976931348623157e308,-1.7976931348623158e308]",
                     "[17976931348623157e292,-17976931348623158e292]");
    assert_no_canonical("[1.7976931348623159e308]");
    assert_canonical("[1.797693134862315807937289714053034150799341327e308]",
                     "[1797693134862315807937289714053034150799341327e263]");
    assert_no_canonical("[1.797693134862315807937289714053034150799341328e308]");
    /* 2^1024 - 2^970 itself, and the largest decimal below it with one more digit */
    assert_no_canonical(
        "[17976931348623158079372897140530341507993413271003782693617377898044496"
        "829276475094664901797758720709633028641669288791094655554785194040263065748867"
        "150582068190890200070838367627385484581771153176447573027006985557136695962284"
        "291481986083493647529271907416844436551070434271155969950809304288017790417449"
        "7792.0]");
    assert_canonical(
        "[17976931348623158079372897140530341507993413271003782693617377898044496"
        "829276475094664901797758720709633028641669288791094655554785194040263065748867"
        "150582068190890200070838367627385484581771153176447573027006985557136695962284"
        "291481986083493647529271907416844436551070434271155969950809304288017790417449"
        "7791.9]",
        "[17976931348623158079372897140530341507993413271003782693617377898044496"
        "829276475094664901797758720709633028641669288791094655554785194040263065748867"
        "150582068190890200070838367627385484581771153176447573027006985557136695962284"
        "291481986083493647529271907416844436551070434271155969950809304288017790417449"
        "77919e-1]");
    assert_no_canonical("[1e309]");
    assert_canonical("[1e308,1e-400]", "[1e308,1e-400]");
    assert_no_canonical("[100000000000000000000]");
    assert_canonical("[100000000000000000000.0]", "[1e20]");
    assert_no_canonical("[18446744073709551615]");
    assert_canonical("[18446744073709551614]", "[18446744073709551614]");
    assert_no_canonical("[-9223372036854775808]");
    assert_canonical("[-9223372036854775807]", "[-9223372036854775807]");
    assert_no_canonical("[1e100000]"); /* inf */
    assert_canonical("[1e-100000,0e100000]", "[1e-100000,0]");
    assert_no_canonical("[10e99999]");
    assert_no_canonical("[1e100001]");
}

/* Bodies with several members read, or one given twice, under the input fields alias too. */
static void test_members_read(void **state)
{
    (void)state;
    same_as_ref("{\"instances\":[1],\"inputs\":{\"b\":1,\"a\":2}}");
    same_as_ref("{\"inputs\":[2],\"instances\":[1],\"image_data\":\"x\"}");
    same_as_ref("{\"instances\":[1],\"instances\":[2]}");
    same_as_ref("{\"instances\":[1e400],\"instances\":[2]}");
    same_as_ref("{\"instances\":[2],\"instances\":[1e400]}");
    same_as_ref("{\"instances\":[1],\"inputs\":1e400}");
    same_as_ref("{\"instances\":[1],\"file_path\":\"/x\"}");
    same_as_ref("{\"file_path\":\"/x\",\"file_path\":7}");
    same_as_ref("{\"file_path\":7,\"file_path\":\"/x\\u00e9\"}");
    same_as_ref("{\"inst\\u0061nces\":[1]}");
    same_as_ref("{\"file_path\":\"\"}");
    assert_int_equal(kind_of_p(&json_params, "{\"file_path\":\"\",\"request_id\":7}"), PC_KEY_PATH);
    assert_int_equal(kind_of_p(&json_params, "{\"file_path\":\"\",\"id\":7}"), PC_KEY_BODY);
    static const char *const odd[] = {"b", "a", NULL, "b", "\xEF\xBF\xBD", "x\"\n"};
    struct pc_key_params p = params;
    p.input_fields = odd;
    p.n_input_fields = 6;
    p.path_field = "p";
    const char *bodies[] = {
        "{\"b\":1}",
        "{\"a\":1,\"b\":2}",
        "{\"b\":2,\"a\":1,\"b\":3}",
        "{\"\xEF\xBF\xBD\":1}",
        "{\"x\\\"\\n\":[1]}",
        "{\"p\":\"/y\"}",
        "{\"a\":1,\"\\ufffd\":2}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        p.family = PC_FAMILY_TFS_PREDICT;
        same_as_ref_p(&p, bodies[i], strlen(bodies[i]));
        p.family = PC_FAMILY_JSON;
        same_as_ref_p(&p, bodies[i], strlen(bodies[i]));
    }
}

/* A large body under TF Serving's reading and plain JSON's (every family is slow here). */
static void same_as_ref_big(const char *s, size_t len)
{
    same_as_ref_p(&pc_ref_params[0], s, len);
    same_as_ref_p(&pc_ref_params[3], s, len);
}

/* Large bodies stream through SHA-256 in chunks, inside and outside objects. */
static void test_large_bodies(void **state)
{
    (void)state;
    size_t cap = 1 << 21;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "{\"instances\":[[");
    for (int i = 0; n < cap - 64; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s0.%06d", i ? "," : "", (i * 7919) % 1000000);
    n += (size_t)snprintf(b + n, cap - n, "]]}");
    same_as_ref_big(b, n);
    char k[PC_KEY_MAX];
    enum pc_key_kind kind;
    assert_int_equal(pc_cachekey_derive(&params, ROUTE, b, n, 1, k, &kind, NULL, 0), 0);
    assert_int_equal(kind, PC_KEY_BODY);

    n = (size_t)snprintf(b, cap, "{\"instances\":[{\"b64\":\"");
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (; n < cap - 64; n++)
        b[n] = b64[n % 64];
    n += (size_t)snprintf(b + n, cap - n, "\",\"a\":[1]}]}");
    same_as_ref_big(b, n);
    b[n - 10] = 'x'; /* "a" -> "x": the members are already in order */
    same_as_ref_big(b, n);
    free(b);
}

struct chunks {
    struct pc_buf all;
    size_t calls;
};

static int collect(void *arg, const void *p, size_t n)
{
    struct chunks *c = arg;
    c->calls++;
    return pc_buf_append(&c->all, p, n);
}

/* The API itself: chunked output equals buffered output; the hook sees root members. */
static void test_api(void **state)
{
    (void)state;
    size_t cap = 200000, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[n++] = '[';
    while (n < cap - 16)
        n += (size_t)snprintf(s + n, cap - n, "{\"b\":%zu,\"a\":1.50},", n);
    s[n - 1] = ']';
    struct pc_buf whole;
    pc_buf_init(&whole);
    struct pc_canon_out to_buf = {&whole, NULL, NULL};
    assert_int_equal(pc_canon_json(s, n, &to_buf, NULL), PC_CANON_OK);
    struct chunks c = {{NULL, 0, 0}, 0};
    struct pc_canon_out to_fn = {NULL, collect, &c};
    assert_int_equal(pc_canon_json(s, n, &to_fn, NULL), PC_CANON_OK);
    assert_true(c.calls > 1);
    assert_int_equal(c.all.len, whole.len);
    assert_memory_equal(c.all.data, whole.data, whole.len);
    assert_memory_equal(whole.data, "[{\"a\":15e-1,\"b\":1},", 19);
    pc_buf_release(&c.all);
    pc_buf_release(&whole);
    free(s);

    struct pc_canon_info info;
    assert_int_equal(pc_canon_json("[1,", 3, NULL, &info), PC_CANON_INVALID);
    assert_string_equal(info.error, "unexpected end of data");
    assert_int_equal(info.error_off, 3);
    assert_int_equal(pc_canon_json("[1.]", 4, NULL, &info), PC_CANON_LENIENT);
    assert_int_equal(pc_canon_json("[1e400]", 7, NULL, &info), PC_CANON_INEXACT);
    assert_int_equal(pc_canon_json(" {} ", 4, NULL, &info), PC_CANON_OK);
    assert_int_equal(info.root, PC_CANON_OBJECT);

    struct pc_buf d;
    pc_buf_init(&d);
    assert_int_equal(pc_canon_decode_string("\"a\\n\\u00e9\"", 11, &d), PC_CANON_OK);
    assert_string_equal(d.data, "a\n\xC3\xA9");
    assert_int_equal(pc_canon_decode_string("\"\\udc00\"", 8, &d), PC_CANON_INEXACT);
    assert_int_equal(pc_canon_decode_string("\"a\" ", 4, &d), PC_CANON_INVALID);
    struct pc_buf e;
    pc_buf_init(&e);
    assert_int_equal(pc_canon_decode_string("\"\"", 2, &e), PC_CANON_OK);
    assert_int_equal(e.len, 0);
    pc_buf_release(&e);
    d.len = 0;
    assert_int_equal(pc_canon_put_string(&d, "q\"\x01", 3), PC_CANON_OK);
    assert_string_equal(d.data, "\"q\\\"\\u0001\"");
    assert_int_equal(pc_canon_put_string(&d, "\xEF\xBF\xBD", 3), PC_CANON_INEXACT);
    assert_string_equal(d.data, "\"q\\\"\\u0001\"");
    pc_buf_release(&d);
}

/* ---- json-c's member names, which the reference and the key both follow ------------- */

static struct json_object *jc_parse(const char *s)
{
    struct json_tokener *tok = json_tokener_new_ex(64);
    assert_non_null(tok);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *v = json_tokener_parse_ex(tok, s, (int)strlen(s));
    assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
    json_tokener_free(tok);
    return v;
}

/*
 * json-c 0.16: names are decoded; a name given twice keeps the first one's place and the
 * last one's value; a name is a C string, cut at a "\u0000" (so it may then meet another).
 */
static void test_json_c_names(void **state)
{
    (void)state;
    struct json_object *o = jc_parse("{\"instances\":[10],\"instan\\u0063es\":[20]}"), *v;
    assert_int_equal(json_object_object_length(o), 1);
    assert_true(json_object_object_get_ex(o, "instances", &v));
    assert_int_equal(json_object_get_int(json_object_array_get_idx(v, 0)), 20);
    json_object_put(o);

    o = jc_parse("{\"a\":1,\"b\":2,\"a\":3}");
    struct json_object_iterator it = json_object_iter_begin(o), end = json_object_iter_end(o);
    assert_string_equal(json_object_iter_peek_name(&it), "a");
    assert_int_equal(json_object_get_int(json_object_iter_peek_value(&it)), 3);
    json_object_iter_next(&it);
    assert_string_equal(json_object_iter_peek_name(&it), "b");
    json_object_iter_next(&it);
    assert_true(json_object_iter_equal(&it, &end));
    json_object_put(o);

    o = jc_parse("{\"a\\u0000b\":1,\"a\":2}");
    assert_int_equal(json_object_object_length(o), 1);
    assert_true(json_object_object_get_ex(o, "a", &v));
    assert_int_equal(json_object_get_int(v), 2);
    json_object_put(o);

    o = jc_parse("{\"\\u0041\\/\":1}");
    assert_true(json_object_object_get_ex(o, "A/", NULL));
    json_object_put(o);
}

/* The bodies servers read two ways (first or last of a name), as the reference finds them. */
static void test_ref_names_twice(void **state)
{
    (void)state;
    static const struct {
        const struct pc_key_params *p;
        const char *body;
        int twice;
    } cases[] = {
        {&pc_ref_params[0], "{\"instances\":[1],\"instances\":[2]}", 1},
        {&pc_ref_params[0], "{\"instances\":[1],\"instan\\u0063es\":[2]}", 1},
        {&pc_ref_params[0], "{\"signature_name\":\"a\",\"instances\":[1],\"signature_name\":\"b\"}",
         1},
        {&pc_ref_params[0], "{\"x\":1,\"x\":2,\"instances\":[1]}", 0},
        {&pc_ref_params[0], "{\"x\":{\"a\":1,\"a\":2},\"instances\":[1]}", 0},
        {&pc_ref_params[0], "{\"instances\":[{\"a\":1,\"a\":2}]}", 1},
        {&pc_ref_params[0], "{\"instances\":[{\"a\":1,\"b\":{\"c\":[{\"d\":1,\"\\u0064\":2}]}}]}",
         1},
        {&pc_ref_params[0], "[{\"a\":1,\"a\":2}]", 0},
        {&pc_ref_params[1], "{\"examples\":[{}],\"context\":{},\"context\":{}}", 1},
        {&pc_ref_params[2], "{\"id\":\"1\",\"id\":\"2\",\"inputs\":[]}", 0},
        {&pc_ref_params[2], "{\"inputs\":[{\"data\":[1],\"data\":[2]}]}", 1},
        {&pc_ref_params[3], "{\"request_id\":1,\"request_id\":2}", 0},
        {&pc_ref_params[3], "{\"q\":1,\"\\u0071\":2}", 1},
        {&pc_ref_params[3], "[{\"a\":1,\"a\":2}]", 1},
        {&pc_ref_params[3], "{\"a\":1,\"b\":2,\"c\":{\"a\":1,\"b\":2}}", 0},
        {&pc_ref_params[3], "{\"a\":1,\"a\":2", 0},   /* not JSON */
        {&pc_ref_params[3], "{\"a\":1.,\"a\":2}", 0}, /* not strict JSON: raw anyway */
        {&pc_ref_params[6], "{\"inputs\":[1],\"inputs\":[2],\"x\":1}", 1},
        {&pc_ref_params[6], "{\"inputs\":[1],\"x\":1,\"x\":2}", 0}, /* the fields are read */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = pc_ref_names_twice(cases[i].p, cases[i].body, strlen(cases[i].body));
        if (got != cases[i].twice)
            print_error("%s\n", cases[i].body);
        assert_int_equal(got, cases[i].twice);
    }
}

static void assert_reading(const struct pc_key_params *p, const char *body, int last_wins,
                           const char *want)
{
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_ref_reading(p, body, strlen(body), last_wins, &b), 0);
    assert_string_equal(b.data, want);
    pc_buf_release(&b);
}

/* What the reference says the model server sees. */
static void test_ref_reading(void **state)
{
    (void)state;
    const struct pc_key_params *tfs = &pc_ref_params[0], *json = &pc_ref_params[3];
    assert_reading(tfs, "{\"x\":1,\"instances\":[1.0],\"signature_name\":\"s\"}", 0,
                   "json\n{\"instances\":[1],\"signature_name\":\"s\"}");
    assert_reading(tfs, "[1]", 0, "raw\n[1]");
    assert_reading(tfs, "{\"instances\":[1.]}", 0, "raw\n{\"instances\":[1.]}");
    assert_reading(tfs, "{\"instances\":[1],\"instances\":[2]}", 0,
                   "raw\n{\"instances\":[1],\"instances\":[2]}");
    assert_reading(tfs, "{\"instances\":[1],\"instances\":[2]}", 1, "json\n{\"instances\":[2]}");
    /* a name given twice with one value: every server reads it alike */
    assert_reading(tfs, "{\"instances\":[1],\"instan\\u0063es\":[1.0]}", 0,
                   "json\n{\"instances\":[1]}");
    assert_reading(tfs, "{\"x\":{\"a\":1,\"a\":2},\"instances\":[1]}", 0,
                   "json\n{\"instances\":[1]}");
    assert_reading(tfs, "{\"instances\":[{\"a\":1,\"a\":2}]}", 0,
                   "raw\n{\"instances\":[{\"a\":1,\"a\":2}]}");
    assert_reading(&pc_ref_params[2],
                   "{\"inputs\":[{\"data\":[1],\"data\":[1e0]}],\"id\":1,\"id\":2}", 0,
                   "json\n{\"inputs\":[{\"data\":[1]}]}");
    assert_reading(json, "{\"file_path\":\"a\\/b\",\"request_id\":1}", 0,
                   "json\n{\"file_path\":\"a/b\"}");
    assert_reading(json, "[1, 2.0]", 0, "json\n[1,2]");
    assert_reading(json, "path:x", 0, "raw\npath:x");
    assert_reading(&pc_ref_params[6], "{\"inputs\":[1],\"signature_name\":\"s\"}", 0,
                   "fields\n{\"inputs\":[1]}");

    char **r;
    size_t n;
    const char *batch = "{\"signature_name\":\"s\",\"instances\":[{\"b\":1,\"a\":2.0},3],\"x\":1}";
    assert_int_equal(pc_ref_instance_readings(tfs, batch, strlen(batch), 0, &r, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(r[0], "{\"signature_name\":\"s\"}\n{\"a\":2,\"b\":1}");
    assert_string_equal(r[1], "{\"signature_name\":\"s\"}\n3");
    pc_ref_readings_free(r, n);
    batch = "{\"signature_name\":\"s\",\"signature_name\":\"t\",\"instances\":[3]}";
    assert_int_equal(pc_ref_instance_readings(tfs, batch, strlen(batch), 0, &r, &n), 1);
    batch = "{\"signature_name\":\"s\",\"instances\":[3],\"signature_name\":\"s\"}";
    assert_int_equal(pc_ref_instance_readings(tfs, batch, strlen(batch), 0, &r, &n), 0);
    assert_string_equal(r[0], "{\"signature_name\":\"s\"}\n3");
    pc_ref_readings_free(r, n);
    batch = "{\"signature_name\":\"t\",\"signature_name\":\"s\",\"instances\":[3]}";
    assert_int_equal(pc_ref_instance_readings(tfs, batch, strlen(batch), 0, &r, &n), 1);
    assert_int_equal(pc_ref_instance_readings(tfs, batch, strlen(batch), 1, &r, &n), 0);
    assert_string_equal(r[0], "{\"signature_name\":\"s\"}\n3"); /* json-c: the last */
    pc_ref_readings_free(r, n);
}

/* The head and the herd key, built the reference's way. */
static void test_head_and_herd(void **state)
{
    (void)state;
    const struct pc_key_head heads[] = {
        {"b", "POST", "/v1/models/m:predict", "x=1", "json", "s", "n@2", "a 1:x;b -;", 10},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0},
        {"", "GET", "/", "", "text/plain", "", "", "a 3:\n\n\n;", 9},
        {"b\n", "POST", "/", "", "", "", "n", NULL, 0},
        {"b", "POST", "/", "", "", "", "n\n", NULL, 0},
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        struct pc_buf a, b;
        pc_buf_init(&a);
        pc_buf_init(&b);
        int rc = pc_cachekey_head(&heads[i], &a);
        assert_int_equal(rc, pc_ref_cachekey_head(&heads[i], &b));
        if (rc == 0) {
            assert_int_equal(a.len, b.len);
            assert_memory_equal(a.data, b.data, a.len);
        }
        pc_buf_release(&a);
        pc_buf_release(&b);
    }
    static const char keys[3][PC_KEY_MAX] = {"pc:v2:{a}", "pc:v2:{b}", "x"};
    static const size_t pick[] = {2, 0, 0, 1};
    const char *prefixes[] = {"pc:", "", NULL};
    for (size_t i = 0; i < 3; i++) {
        for (size_t n = 0; n <= 4; n++) {
            char a[PC_KEY_MAX], b[PC_KEY_MAX];
            assert_int_equal(pc_cachekey_herd(prefixes[i], keys, pick, n, a), 0);
            assert_int_equal(pc_ref_cachekey_herd(prefixes[i], keys, pick, n, b), 0);
            assert_string_equal(a, b);
        }
    }
}

/* ---- bodies made at random and the committed seeds, every family -------------------- */

static unsigned next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* One random value, nested up to depth. */
static void random_value(struct pc_buf *b, unsigned *seed, int depth)
{
    static const char *const scalars[] = {"1",
                                          "-0",
                                          "0.10",
                                          "1e5",
                                          "1.5E-3",
                                          "100",
                                          "1e400",
                                          "1.",
                                          "01",
                                          "NaN",
                                          "\"\"",
                                          "\"a\\\"b\"",
                                          "\"\\u00e9\"",
                                          "\"\\ud800\"",
                                          "\"in/X.jpg\"",
                                          "\"a\\/b\"",
                                          "true",
                                          "null",
                                          "18446744073709551616",
                                          "\"\\u0000\"",
                                          "\"a\tb\"",
                                          "-12.500e+2",
                                          "\"s\""};
    static const char *const names[] = {"\"instances\"",
                                        "\"instan\\u0063es\"",
                                        "\"inputs\"",
                                        "\"signature_name\"",
                                        "\"context\"",
                                        "\"examples\"",
                                        "\"request_id\"",
                                        "\"id\"",
                                        "\"file_path\"",
                                        "\"p\"",
                                        "\"a\"",
                                        "\"b\"",
                                        "\"\\u0061\"",
                                        "\"\"",
                                        "'q'",
                                        "\"x\\\"\\n\"",
                                        "\"\\u00e9\""};
    unsigned r = next(seed) % 10;
    if (depth <= 0 || r < 5) {
        pc_buf_append_str(b, scalars[next(seed) % (sizeof scalars / sizeof scalars[0])]);
    } else if (r < 7) {
        pc_buf_append_char(b, '[');
        for (unsigned i = 0, k = next(seed) % 4; i < k; i++) {
            if (i > 0)
                pc_buf_append_str(b, next(seed) % 2 ? "," : " , ");
            random_value(b, seed, depth - 1);
        }
        pc_buf_append_char(b, ']');
    } else {
        pc_buf_append_char(b, '{');
        for (unsigned i = 0, k = next(seed) % 5; i < k; i++) {
            if (i > 0)
                pc_buf_append_char(b, ',');
            pc_buf_append_str(b, names[next(seed) % (sizeof names / sizeof names[0])]);
            pc_buf_append_str(b, next(seed) % 2 ? ":" : " :\n");
            random_value(b, seed, depth - 1);
        }
        pc_buf_append_char(b, '}');
    }
}

static void test_random_bodies(void **state)
{
    (void)state;
    unsigned seed = 4242;
    struct pc_buf b;
    pc_buf_init(&b);
    for (int round = 0; round < 4000; round++) {
        b.len = 0;
        if (next(&seed) % 8 != 0) { /* mostly objects, the bodies keys are made of */
            pc_buf_append_char(&b, '{');
            for (unsigned i = 0, k = next(&seed) % 5; i < k; i++) {
                if (i > 0)
                    pc_buf_append_char(&b, ',');
                static const char *const top[] = {"\"instances\"",
                                                  "\"instan\\u0063es\"",
                                                  "\"signature_name\"",
                                                  "\"inputs\"",
                                                  "\"examples\"",
                                                  "\"context\"",
                                                  "\"request_id\"",
                                                  "\"id\"",
                                                  "\"file_path\"",
                                                  "\"p\"",
                                                  "\"a\"",
                                                  "\"x\""};
                pc_buf_append_str(&b, top[next(&seed) % (sizeof top / sizeof top[0])]);
                pc_buf_append_char(&b, ':');
                random_value(&b, &seed, 3);
            }
            pc_buf_append_char(&b, '}');
        } else {
            random_value(&b, &seed, 3);
        }
        same_as_ref_len(b.data, b.len);
        if (round % 3 == 0 && b.len > 0) { /* one byte changed */
            b.data[next(&seed) % b.len] = "{}[]\",:0a\\ e-'"[next(&seed) % 15];
            same_as_ref_len(b.data, b.len);
        }
    }
    pc_buf_release(&b);
}

/* The fuzz targets' committed seeds (their first byte is flags: read with and without). */
static void test_corpus_bodies(void **state)
{
    (void)state;
    static const char *const dirs[] = {"tests/fuzz/corpus/cachekey", "tests/fuzz/corpus/keypairs",
                                       "tests/fuzz/corpus/canon"};
    size_t files = 0;
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        DIR *dir = opendir(dirs[d]);
        if (dir == NULL)
            continue;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
            FILE *f = fopen(path, "rb");
            assert_non_null(f);
            char buf[70000];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            same_as_ref_len(buf, n);
            if (n > 0)
                same_as_ref_len(buf + 1, n - 1);
            files++;
        }
        closedir(dir);
    }
    assert_true(files >= 10); /* run from the top of the tree, as make unit does */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusal_texts),
        cmocka_unit_test(test_leniencies_read_raw),
        cmocka_unit_test(test_surrogate_quirks),
        cmocka_unit_test(test_string_escaping),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_number_limits),
        cmocka_unit_test(test_members_read),
        cmocka_unit_test(test_large_bodies),
        cmocka_unit_test(test_api),
        cmocka_unit_test(test_json_c_names),
        cmocka_unit_test(test_ref_names_twice),
        cmocka_unit_test(test_ref_reading),
        cmocka_unit_test(test_head_and_herd),
        cmocka_unit_test(test_random_bodies),
        cmocka_unit_test(test_corpus_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
