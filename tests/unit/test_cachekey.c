/* Unit tests of cachekey: fixed vectors pin the v1 format; the rest pin the equivalences. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/cachekey.h"

static const char *const default_fields[] = {"instances", "inputs", "image_data", "img_base64"};

static const struct pc_key_params default_params = {
    .namespace_ = "default",
    .prefix = "pc:",
    .input_fields = default_fields,
    .n_input_fields = 4,
    .path_field = "file_path",
};

#define ROUTE "/v1/models/m:predict"

/* Derives with params p and asserts success; returns the kind. */
static enum pc_key_kind derive_p(const struct pc_key_params *p, const char *route, const char *body,
                                 int is_json, char out[PC_KEY_MAX])
{
    enum pc_key_kind kind = (enum pc_key_kind) - 1;
    char err[256] = "";
    int rc = pc_cachekey_derive(p, route, body, strlen(body), is_json, out, &kind, err, sizeof err);
    if (rc != 0)
        print_error("derive failed: %s\n", err);
    assert_int_equal(rc, 0);
    return kind;
}

static enum pc_key_kind derive(const char *body, char out[PC_KEY_MAX])
{
    return derive_p(&default_params, ROUTE, body, 1, out);
}

static void assert_same_key(const char *a, const char *b)
{
    char ka[PC_KEY_MAX], kb[PC_KEY_MAX];
    derive(a, ka);
    derive(b, kb);
    assert_string_equal(ka, kb);
}

static void assert_other_key(const char *a, const char *b)
{
    char ka[PC_KEY_MAX], kb[PC_KEY_MAX];
    derive(a, ka);
    derive(b, kb);
    assert_string_not_equal(ka, kb);
}

/* Asserts the canonical form of json[0..len): the text is read by length, not to a NUL. */
static void assert_canonical_len(const char *json, size_t len, const char *want)
{
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_cachekey_canonical(json, len, &b), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, want);
    assert_int_equal(b.len, strlen(want));
    pc_buf_release(&b);
}

static void assert_canonical(const char *json, const char *want)
{
    assert_canonical_len(json, strlen(json), want);
}

static void assert_not_canonical(const char *json)
{
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_buf_append_str(&b, "keep"), 0);
    assert_int_equal(pc_cachekey_canonical(json, strlen(json), &b), -1);
    assert_string_equal(b.data, "keep"); /* a failed call leaves out as it was */
    assert_int_equal(b.len, 4);
    pc_buf_release(&b);
}

/* Vectors: printf 'default\n/v1/models/m:predict\n<input>' | sha256sum */
static void test_vector_fields(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    /* input {"instances":[1,2]} */
    assert_int_equal(derive("{\"request_id\": \"r-1\", \"instances\": [1, 2]}", k), PC_KEY_FIELDS);
    assert_string_equal(k,
                        "pc:v1:379b2ff898736886cfb706b1d6c71cca3230ee9992f6b506e59536566e626368");
}

static void test_vector_numbers(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    /* input {"instances":[15e-1,1e2,0]} */
    assert_int_equal(derive("{\"instances\": [1.50, 100, -0.0], \"request_id\": \"r-2\"}", k),
                     PC_KEY_FIELDS);
    assert_string_equal(k,
                        "pc:v1:b51d6fb2685026205e2b24b8416c45426dc7e1c8dda255f4ea6f76bc8215ae4d");
}

static void test_vector_path(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    /* input path:/data/a.jpg */
    assert_int_equal(derive("{\"file_path\":\"/data/a.jpg\"}", k), PC_KEY_PATH);
    assert_string_equal(k,
                        "pc:v1:9955502897c6162f9ac73d1c058c95714d7091b73461139cd51cb2b23533b25f");
}

static void test_vector_raw(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    /* input hello world */
    assert_int_equal(derive_p(&default_params, ROUTE, "hello world", 0, k), PC_KEY_RAW);
    assert_string_equal(k,
                        "pc:v1:8e197b2771d02fc727fa9e366c470d3100fffd0867dcaa91f65109331352de40");
    /* empty input, body not declared JSON */
    assert_int_equal(derive_p(&default_params, ROUTE, "", 0, k), PC_KEY_RAW);
    assert_string_equal(k,
                        "pc:v1:37478f67168fc2d141f4a72ba369dc29d45f3dabde64ea46c774d9f1d1d95ff0");
}

static void test_key_shape(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    derive("{\"instances\":[3]}", k);
    assert_int_equal(strlen(k), 3 + 3 + 64);
    assert_memory_equal(k, "pc:v1:", 6);
    for (size_t i = 6; i < strlen(k); i++)
        assert_non_null(strchr("0123456789abcdef", k[i]));

    struct pc_key_params p = default_params;
    p.prefix = "";
    derive_p(&p, ROUTE, "{\"instances\":[3]}", 1, k);
    assert_int_equal(strlen(k), 3 + 64);
    assert_memory_equal(k, "v1:", 3);
    p.prefix = NULL;
    derive_p(&p, ROUTE, "{\"instances\":[3]}", 1, k);
    assert_memory_equal(k, "v1:", 3);
}

static void test_prefix_limit(void **state)
{
    (void)state;
    char prefix[300], k[PC_KEY_MAX], err[128] = "";
    size_t fit = PC_KEY_MAX - 1 - 3 - 64;
    memset(prefix, 'p', fit);
    prefix[fit] = '\0';
    struct pc_key_params p = default_params;
    p.prefix = prefix;
    derive_p(&p, ROUTE, "x", 0, k);
    assert_int_equal(strlen(k), PC_KEY_MAX - 1);

    prefix[fit] = 'p';
    prefix[fit + 1] = '\0';
    assert_int_equal(pc_cachekey_derive(&p, ROUTE, "x", 1, 0, k, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "prefix"));
}

static void test_newline_in_route_or_namespace(void **state)
{
    (void)state;
    char k[PC_KEY_MAX], err[128] = "";
    assert_int_equal(
        pc_cachekey_derive(&default_params, "/a\nb", "x", 1, 0, k, NULL, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    struct pc_key_params p = default_params;
    p.namespace_ = "ns\n";
    assert_int_equal(pc_cachekey_derive(&p, ROUTE, "x", 1, 0, k, NULL, NULL, 0), -1);
    assert_int_equal(pc_cachekey_derive(&default_params, NULL, "x", 1, 0, k, NULL, NULL, 0), -1);
}

static void test_order_and_whitespace(void **state)
{
    (void)state;
    assert_same_key("{\"instances\":[{\"b\":1,\"a\":2}],\"inputs\":3}",
                    " {\n \"inputs\" : 3 ,\t\"instances\" : [ { \"a\" : 2 , \"b\" : 1 } ] }\r\n");
}

static void test_noise_fields(void **state)
{
    (void)state;
    assert_same_key("{\"instances\":[1,2],\"request_id\":\"a\",\"timestamp\":1700000000}",
                    "{\"timestamp\":1800000000,\"instances\":[1,2],\"request_id\":\"b\"}");
    assert_same_key("{\"instances\":[1,2]}", "{\"instances\":[1,2],\"request_id\":\"zzz\"}");
    assert_other_key("{\"instances\":[1,2]}", "{\"instances\":[2,1]}");
    assert_other_key("{\"instances\":[1,2]}", "{\"inputs\":[1,2]}");
}

static void test_routes_never_share(void **state)
{
    (void)state;
    const char *routes[] = {
        "/v1/models/m:predict",  "/v1/models/n:predict",     "/v1/models/m/versions/2:predict",
        "/v1/models/m:classify", "/v1/models/m:predict?x=1", "/v1/models/m:predict?x=2"};
    size_t n = sizeof routes / sizeof routes[0];
    char keys[6][PC_KEY_MAX];
    for (size_t i = 0; i < n; i++)
        derive_p(&default_params, routes[i], "{\"instances\":[1]}", 1, keys[i]);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(keys[i], keys[j]);
}

static void test_namespace_changes_key(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    struct pc_key_params p = default_params;
    derive_p(&p, ROUTE, "{\"instances\":[1]}", 1, a);
    p.namespace_ = "staging";
    derive_p(&p, ROUTE, "{\"instances\":[1]}", 1, b);
    assert_string_not_equal(a, b);
}

static void test_path_fallback(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    assert_int_equal(derive("{\"file_path\":\"/x/1.jpg\",\"request_id\":1}", a), PC_KEY_PATH);
    assert_int_equal(derive("{\"request_id\":2,\"file_path\":\"/x/1.jpg\",\"ts\":9}", b),
                     PC_KEY_PATH);
    assert_string_equal(a, b);
    assert_other_key("{\"file_path\":\"/x/1.jpg\"}", "{\"file_path\":\"/x/2.jpg\"}");
}

static void test_path_not_string_or_disabled(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"file_path\":7}", k), PC_KEY_RAW);
    assert_int_equal(derive("{\"file_path\":null}", k), PC_KEY_RAW);
    assert_int_equal(derive("{\"other\":\"/x\"}", k), PC_KEY_RAW);
    struct pc_key_params p = default_params;
    p.path_field = "";
    assert_int_equal(derive_p(&p, ROUTE, "{\"file_path\":\"/x\"}", 1, k), PC_KEY_RAW);
    p.path_field = NULL;
    assert_int_equal(derive_p(&p, ROUTE, "{\"file_path\":\"/x\"}", 1, k), PC_KEY_RAW);
}

static void test_fields_win_over_path(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    assert_int_equal(derive("{\"file_path\":\"/x/1.jpg\",\"instances\":[5]}", a), PC_KEY_FIELDS);
    assert_int_equal(derive("{\"instances\":[5]}", b), PC_KEY_FIELDS);
    assert_string_equal(a, b);
}

static void test_field_present_as_null(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"inputs\":null,\"file_path\":\"/x\"}", k), PC_KEY_FIELDS);
}

static void test_duplicate_configured_field(void **state)
{
    (void)state;
    static const char *const dup[] = {"instances", "instances"};
    struct pc_key_params p = default_params;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    derive_p(&p, ROUTE, "{\"instances\":[1]}", 1, a);
    p.input_fields = dup;
    p.n_input_fields = 2;
    assert_int_equal(derive_p(&p, ROUTE, "{\"instances\":[1]}", 1, b), PC_KEY_FIELDS);
    assert_string_equal(a, b);
}

static void test_raw_bodies(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    assert_int_equal(derive_p(&default_params, ROUTE, "\x89PNG\r\n", 0, a), PC_KEY_RAW);
    assert_int_equal(derive_p(&default_params, ROUTE, "\x89PNG\r\n.", 0, b), PC_KEY_RAW);
    assert_string_not_equal(a, b);
    /* A raw body with a NUL inside: every byte counts. */
    enum pc_key_kind kind;
    assert_int_equal(pc_cachekey_derive(&default_params, ROUTE, "ab\0c", 4, 0, a, &kind, NULL, 0),
                     0);
    assert_int_equal(pc_cachekey_derive(&default_params, ROUTE, "ab\0d", 4, 0, b, &kind, NULL, 0),
                     0);
    assert_int_equal(kind, PC_KEY_RAW);
    assert_string_not_equal(a, b);
    /* NULL body with length 0 is an empty body. */
    assert_int_equal(pc_cachekey_derive(&default_params, ROUTE, NULL, 0, 0, b, &kind, NULL, 0), 0);
    derive_p(&default_params, ROUTE, "", 0, a);
    assert_string_equal(a, b);
}

static void test_invalid_json_declared(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"instances\":", "hello",   "",   "{\"a\":1} x", "{\"a\":1}{\"b\":2}", "[1,]",
        "{\"a\":'b'}",     "/*c*/{}", "01", "{\"a\":1}\0"};
    char k[PC_KEY_MAX];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        size_t len = strlen(bad[i]) + (i == 9); /* the last one carries its NUL */
        enum pc_key_kind kind = PC_KEY_FIELDS;
        assert_int_equal(
            pc_cachekey_derive(&default_params, ROUTE, bad[i], len, 1, k, &kind, err, sizeof err),
            -1);
        assert_non_null(strstr(err, "JSON"));
        assert_int_equal(
            pc_cachekey_derive(&default_params, ROUTE, bad[i], len, 0, k, &kind, err, sizeof err),
            0);
        assert_int_equal(kind, PC_KEY_RAW);
    }
    char err[256] = "";
    pc_cachekey_derive(&default_params, ROUTE, "{\"a\":1} x", 9, 1, k, NULL, err, sizeof err);
    assert_non_null(strstr(err, "at offset 8"));
    /* A NULL or empty err buffer is allowed. */
    assert_int_equal(pc_cachekey_derive(&default_params, ROUTE, "{", 1, 1, k, NULL, NULL, 0), -1);
}

static void test_json_not_object_is_raw(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    assert_int_equal(derive("[{\"instances\":[1]}]", a), PC_KEY_RAW);
    assert_int_equal(derive_p(&default_params, ROUTE, "[{\"instances\":[1]}]", 0, b), PC_KEY_RAW);
    assert_string_equal(a, b);
    assert_int_equal(derive("\"instances\"", a), PC_KEY_RAW);
    assert_int_equal(derive("42", a), PC_KEY_RAW);
    assert_int_equal(derive("null", a), PC_KEY_RAW);
    /* Raw means raw: whitespace in a non-object body does change the key. */
    assert_other_key("[1,2]", "[1, 2]");
}

static void test_length_delimited(void **state)
{
    (void)state;
    char a[PC_KEY_MAX], b[PC_KEY_MAX];
    const char *buf = "{\"instances\":[12]}garbage";
    assert_int_equal(pc_cachekey_derive(&default_params, ROUTE, buf, 18, 1, a, NULL, NULL, 0), 0);
    derive("{\"instances\":[12]}", b);
    assert_string_equal(a, b);
    /* A number that ends where the length ends is complete: "1234" cut at 2 is 12. */
    assert_canonical_len("1234", 2, "12");
    assert_canonical_len("1.5e3", 3, "15e-1");
}

/* Numbers: ["-"] D ["e" E], D the significant digits, E only when nonzero; zero is "0". */
static void test_numbers(void **state)
{
    (void)state;
    assert_canonical("[1.0,1,1e0,10e-1,1E0,0.1e1,1.000e+0,100e-2]", "[1,1,1,1,1,1,1,1]");
    assert_canonical("[100,1e2,100.0,1.0E+2,10e1,1e+002,0.001e5]", "[1e2,1e2,1e2,1e2,1e2,1e2,1e2]");
    assert_canonical("[12,12.0,1.2e1,120e-1]", "[12,12,12,12]");
    assert_canonical("[-0.0,-0,0.0,0e5,-0e-5,0.000E+10,0]", "[0,0,0,0,0,0,0]");
    assert_canonical("[1.5,0.001,0.00120,-2.25,3.14159]", "[15e-1,1e-3,12e-4,-225e-2,314159e-5]");
    assert_canonical("[0.1,0.10000000000000002,0.10000000000000001]",
                     "[1e-1,10000000000000002e-17,10000000000000001e-17]");
    /* Exponents: sign, "+", leading zeros. */
    assert_canonical("[1E+0002,1e-0002,5e-0,5E+0,2.50e+00,-7e-007]", "[1e2,1e-2,5,5,25e-1,-7e-7]");
    assert_canonical("[1.5e300,1e-7,1e16,1.5e-300]", "[15e299,1e-7,1e16,15e-301]");
    /* Exact text, not the double it reads as. */
    assert_canonical("9007199254740993.0", "9007199254740993");
    assert_canonical("123456789012345678901234567890.5", "1234567890123456789012345678905e-1");
    /* Integers are exact across the whole int64 and uint64 ranges, and agree with doubles. */
    assert_canonical("[9007199254740993,-9223372036854775807]",
                     "[9007199254740993,-9223372036854775807]");
    assert_canonical("[9223372036854775807,9223372036854775808,18446744073709551614]",
                     "[9223372036854775807,9223372036854775808,18446744073709551614]");
    assert_canonical("[1000000000000000000,-9223372036854775800,18446744073709551610]",
                     "[1e18,-92233720368547758e2,1844674407370955161e1]");
    assert_canonical("[10000000000000000000,1e19,10000000000000000000.0,-1700000000,-17e8]",
                     "[1e19,1e19,1e19,-17e8,-17e8]");
    assert_same_key("{\"instances\":[1.0,2,100]}", "{\"instances\":[1,2e0,1e2]}");
    assert_same_key("{\"instances\":[-0]}", "{\"instances\":[0.0e0]}");
    assert_other_key("{\"instances\":[0.1]}", "{\"instances\":[0.10000000000000002]}");
    /* Same double, different decimals: a lost hit at worst, never a shared key. */
    assert_other_key("{\"instances\":[0.1]}", "{\"instances\":[0.10000000000000001]}");
    assert_other_key("{\"instances\":[1]}", "{\"instances\":[1.0000000000000000001]}");
    assert_other_key("{\"instances\":[1.5]}", "{\"instances\":[15]}");
    assert_other_key("{\"instances\":[9223372036854775807]}",
                     "{\"instances\":[9223372036854775808]}");
}

static void test_canonical_documents(void **state)
{
    (void)state;
    assert_canonical("{\"b\":1.50,\"a\":[1e2,-0.0]}", "{\"a\":[1e2,0],\"b\":15e-1}");
    assert_canonical("{\"instances\":[[0.000,0.001,0.010,0.999,1.000]]}",
                     "{\"instances\":[[0,1e-3,1e-2,999e-3,1]]}");
    assert_canonical("[{\"x\": -12.50e1, \"s\": \"1.50\"}, 3]", "[{\"s\":\"1.50\",\"x\":-125},3]");
}

/*
 * Spellings of one value N x 10^X: the digits of N with leading and trailing zeros added,
 * the point at every place JSON allows ("0." in front included), the exponent adjusted to
 * match and written both as "E+0dd" and as "e-d". All must give the one canonical form.
 */
static void test_number_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *n;
        int x;
        const char *want;
    } cases[] = {
        {"1", 0, "1"},
        {"15", -1, "15e-1"},
        {"-42", 3, "-42e3"},
        {"7", -9, "7e-9"},
        {"123456789", 4, "123456789e4"},
        {"-5", 0, "-5"},
        {"101", -2, "101e-2"},
        {"9007199254740993", 0, "9007199254740993"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *n = cases[c].n;
        const char *sign = n[0] == '-' ? "-" : "";
        n += n[0] == '-';
        for (int lead = 0; lead <= 2; lead++) {
            for (int trail = 0; trail <= 3; trail++) {
                char z[64];
                int len = snprintf(z, sizeof z, "%.*s%s%.*s", lead, "000", n, trail, "000");
                for (int point = 0; point <= len; point++) {
                    if (point > 1 && z[0] == '0')
                        continue; /* a leading zero is JSON only as the whole integer part */
                    char text[128];
                    int w = cases[c].x - trail + (len - point); /* the written exponent */
                    if (point == 0)
                        snprintf(text, sizeof text, "%s0.%sE%+04d", sign, z, w);
                    else if (point == len)
                        snprintf(text, sizeof text, "%s%sE%+04d", sign, z, w);
                    else
                        snprintf(text, sizeof text, "%s%.*s.%sE%+04d", sign, point, z, z + point,
                                 w);
                    assert_canonical(text, cases[c].want);
                    char *e = strchr(text, 'E');
                    snprintf(e, (size_t)(text + sizeof text - e), "e%d", w);
                    assert_canonical(text, cases[c].want);
                }
            }
        }
    }
}

/* json-c saturates these: refusing them keeps distinct bodies on distinct keys. */
static void test_unrepresentable_numbers(void **state)
{
    (void)state;
    assert_not_canonical("18446744073709551616");
    assert_not_canonical("[-9223372036854775809]");
    assert_not_canonical("{\"a\":NaN}");
    assert_not_canonical("[Infinity]");
    assert_not_canonical("[-Infinity]");
    assert_not_canonical("1e400");
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"instances\":[18446744073709551616]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[18446744073709551616]}",
                     "{\"instances\":[99999999999999999999]}");
    assert_other_key("{\"instances\":[1e400]}", "{\"instances\":[1e500]}");
}

/*
 * Found by fuzz_cachekey: a fraction whose form is a bare integer json-c saturates gave a
 * canonical form that was itself refused (18446744073709551615.0 -> "18446744073709551615",
 * which reads back as UINT64_MAX). Refused like the integer; one less still has its form.
 */
static void test_saturating_integer_forms(void **state)
{
    (void)state;
    assert_not_canonical("18446744073709551615.0");
    assert_not_canonical("[1844674407370955161.5e1]");
    assert_not_canonical("[-9223372036854775808.0]");
    assert_not_canonical("[-92233720368547758080e-1]");
    assert_not_canonical("[123456789012345678901.0]");
    assert_canonical("[18446744073709551614.0,-9223372036854775807.0]",
                     "[18446744073709551614,-9223372036854775807]");
    assert_canonical("[18446744073709551614,-9223372036854775807]",
                     "[18446744073709551614,-9223372036854775807]");
    assert_canonical("[18446744073709551620.0,1e19]", "[1844674407370955162e1,1e19]");
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"instances\":[18446744073709551615.0]}", k), PC_KEY_RAW);
}

/*
 * Exponents beyond 100000 either way, written or canonical, are refused, even where the
 * value is 0. The canonical bound was found by fuzz_cachekey: 0.5e-100000 had the form
 * 5e-100001, which was itself refused (a form must canonicalise to itself).
 */
static void test_exponent_bound(void **state)
{
    (void)state;
    assert_canonical("[0e100000,1e-100000,0.1e-99999]", "[0,1e-100000,1e-100000]");
    assert_not_canonical("[0.5e-100000]");
    assert_not_canonical("[2.51e-100000]");
    assert_not_canonical("[1000e99998]");
    assert_not_canonical("0e100001");
    assert_not_canonical("[1e-100001]");
    assert_not_canonical("[1e-0000000000000000000000000000000100001]");
    assert_canonical("1e-00000000000000000000000000000000000000001", "1e-1");
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"instances\":[1e-100001]}", k), PC_KEY_RAW);
}

/* json-c's strict mode still reads these; a JSON model server would not: keyed raw. */
static void test_non_json_numbers_are_raw(void **state)
{
    (void)state;
    assert_not_canonical("[1.]");
    assert_not_canonical("[1.e5]");
    assert_not_canonical("[-01.5]");
    assert_not_canonical("[00.5]");
    assert_not_canonical("[00e1]");
    char k[PC_KEY_MAX];
    assert_int_equal(derive("{\"instances\":[1.]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[1.]}", "{\"instances\":[1]}");
    assert_other_key("{\"instances\":[-01.5]}", "{\"instances\":[-1.5]}");
}

static void test_strings(void **state)
{
    (void)state;
    assert_canonical("\"\\u00e9\"", "\"\xC3\xA9\"");
    assert_canonical("\"\xC3\xA9\"", "\"\xC3\xA9\"");
    assert_canonical("\"a\\/b\"", "\"a/b\"");
    assert_canonical("\"\\ud83d\\ude00\"", "\"\xF0\x9F\x98\x80\"");
    assert_canonical("\"q\\\"b\\\\\"", "\"q\\\"b\\\\\"");
    assert_canonical("\"\\b\\f\\n\\r\\t\\u0001\\u001F\\u007f\"",
                     "\"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\"");
    assert_canonical("\"a\\u0000b\"", "\"a\\u0000b\"");
    assert_canonical("\"\xFF\xFE\"", "\"\xFF\xFE\""); /* bytes pass through */
    assert_same_key("{\"instances\":[\"caf\\u00e9\"]}", "{\"instances\":[\"caf\xC3\xA9\"]}");
    assert_same_key("{\"instances\":[\"a\\/b\"]}", "{\"instances\":[\"a/b\"]}");
}

/* Lone surrogates all decode to U+FFFD and a "\u0000" cuts a key short: keyed raw. */
static void test_lossy_strings_are_raw(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    assert_not_canonical("\"\\ud800\"");
    assert_int_equal(derive("{\"instances\":[\"\\ud800\"]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[\"\\ud800\"]}", "{\"instances\":[\"\\udc00\"]}");
    assert_int_equal(derive("{\"instances\":[1],\"a\\u0000b\":2}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\\u0000x\":[1]}", "{\"instances\":[1]}");
    assert_int_equal(derive("{\"file_path\":\"/\\udfff\"}", k), PC_KEY_RAW);
}

/*
 * Found by fuzz_cachekey against batch.c's strict scanner: json-c's strict mode takes control
 * characters written raw inside strings (["\r"]), integers with leading zeros ([-090], [00]),
 * single-quoted member names, NaN and Infinity, and drops duplicate members and fields
 * outside the key unchecked, so bodies a JSON model server refuses shared a key with JSON
 * ones. Keyed raw now.
 */
static void test_non_json_lexemes_are_raw(void **state)
{
    (void)state;
    char k[PC_KEY_MAX];
    assert_not_canonical("[\"\r\"]");
    assert_not_canonical("{\"a\tb\":1}");
    assert_not_canonical("[\"x\x01\"]");
    assert_not_canonical("[\"\\\n\"]"); /* a backslash, then a raw newline */
    assert_canonical("[\"\\r\",\n\t\"\\t\"]", "[\"\\r\",\"\\t\"]");
    assert_int_equal(derive("{\"instances\":[\"a\tb\"]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[\"a\tb\"]}", "{\"instances\":[\"a\\tb\"]}");
    assert_int_equal(derive("{\"file_path\":\"/x\ny\"}", k), PC_KEY_RAW);
    assert_int_equal(derive("{\"instances\":[\"a\\tb\"],\n\"x\":1}", k), PC_KEY_FIELDS);

    assert_not_canonical("[-090]");
    assert_not_canonical("[00]");
    assert_not_canonical("-00");
    assert_not_canonical("{\"a\":[1,-01]}");
    assert_canonical("[0,-0,10,-10,1e05,1E-005,-0.05,0e0,\"007\",-7]",
                     "[0,0,1e1,-1e1,1e5,1e-5,-5e-2,0,\"007\",-7]");
    assert_int_equal(derive("{\"instances\":[-090]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[-090]}", "{\"instances\":[-90]}");
    assert_other_key("{\"instances\":[00]}", "{\"instances\":[0]}");

    /* json-c takes single-quoted member names */
    assert_not_canonical("{'a':1}");
    assert_int_equal(derive("{'instances': [1]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\": [1], '': 2}", "{\"instances\": [1]}");
    assert_other_key("{\"instances\": [1], '1': 2}", "{\"instances\": [1]}");

    /* json-c drops a member given twice and fields outside the key unchecked */
    assert_not_canonical("{\"inputs\":{\"a\":[20.]},\"inputs\":\"1\"}");
    assert_int_equal(derive("{\"instances\":[1],\"x\":1.}", k), PC_KEY_RAW);
    assert_int_equal(derive("{\"instances\":[1.],\"instances\":[1]}", k), PC_KEY_RAW);
    assert_other_key("{\"instances\":[1],\"x\":NaN}", "{\"instances\":[1]}");
    assert_other_key("{\"instances\":[1],\"x\":-Infinity}", "{\"instances\":[1]}");
    assert_other_key("{\"instances\":[1],\"x\":\"a\tb\"}", "{\"instances\":[1]}");
    assert_same_key("{\"instances\":[1],\"x\":[true,false,null,-0.5e-07,\"NaN\"]}",
                    "{\"instances\":[1]}");
}

static void test_nested_sorted(void **state)
{
    (void)state;
    assert_canonical("{\"b\":{\"d\":1,\"c\":{\"f\":1,\"e\":[{\"z\":1,\"y\":2}]}},\"a\":[]}",
                     "{\"a\":[],\"b\":{\"c\":{\"e\":[{\"y\":2,\"z\":1}],\"f\":1},\"d\":1}}");
    /* Bytewise order of the UTF-8 names: 'B' < '_' < 'a' < 0xC3. */
    assert_canonical("{\"\xC3\xA9\":1,\"a\":2,\"_\":3,\"B\":4}",
                     "{\"B\":4,\"_\":3,\"a\":2,\"\xC3\xA9\":1}");
    assert_canonical(" { } ", "{}");
    assert_canonical("[true,false,null,\"\",[],{}]", "[true,false,null,\"\",[],{}]");
    assert_canonical("{\"a\":1,\"a\":2}", "{\"a\":2}");
    assert_canonical("null", "null"); /* json-c reads null as a NULL object */
    assert_canonical(" 7 ", "7");
}

/* Builds {"instances": [[...[1]...]]} with depth levels of nesting in all. */
static char *nested_body(int depth)
{
    size_t cap = 32 + 2 * (size_t)depth;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t n = (size_t)snprintf(s, cap, "{\"instances\":");
    for (int i = 0; i < depth - 1; i++)
        s[n++] = '[';
    s[n++] = '1';
    for (int i = 0; i < depth - 1; i++)
        s[n++] = ']';
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

static void test_deep_nesting(void **state)
{
    (void)state;
    char k[PC_KEY_MAX], err[256] = "";
    char *ok = nested_body(63); /* the deepest a depth-64 json-c tokener accepts */
    assert_int_equal(derive(ok, k), PC_KEY_FIELDS);
    free(ok);
    char *deep = nested_body(100);
    assert_int_equal(
        pc_cachekey_derive(&default_params, ROUTE, deep, strlen(deep), 1, k, NULL, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "JSON"));
    assert_int_equal(derive_p(&default_params, ROUTE, deep, 0, k), PC_KEY_RAW);
    free(deep);
}

static void test_canonical_rejects_non_json(void **state)
{
    (void)state;
    assert_not_canonical("");
    assert_not_canonical("{");
    assert_not_canonical("[1] [2]");
    assert_not_canonical("tru");
    char *deep = nested_body(64);
    assert_not_canonical(deep);
    free(deep);
}

static void test_kind_names(void **state)
{
    (void)state;
    assert_string_equal(pc_cachekey_kind_name(PC_KEY_FIELDS), "fields");
    assert_string_equal(pc_cachekey_kind_name(PC_KEY_PATH), "path");
    assert_string_equal(pc_cachekey_kind_name(PC_KEY_RAW), "raw");
}

/* ---- every instance in one pass: the same as the spans and one key per instance ------ */

/*
 * pc_cachekey_instances against the longer way (pc_batch_parse_request, then
 * pc_cachekey_instance per element). Returns what the one pass said; when it keyed the
 * batch, the longer way must give the same spans, signature and keys.
 */
static int same_as_longer_way(const char *body, size_t len)
{
    const struct pc_key_params *p = &default_params;
    const char *route = "/v1/models/m:predict";
    struct pc_span *spans = NULL, sig = {0, 0};
    char(*keys)[PC_KEY_MAX] = NULL;
    size_t n = 0;
    int rc = pc_cachekey_instances(p, route, body, len, &spans, &n, &sig, &keys);
    assert_true(rc == 0 || rc == 1 || rc == 2);
    struct pc_batch_req req;
    int longer = pc_batch_parse_request(body, len, &req);
    if (rc == 2) /* certainly not a batch: the longer way agrees */
        assert_int_not_equal(longer, 0);
    int all_keyed = longer == 0;
    for (size_t i = 0; longer == 0 && i < req.inst.n; i++) {
        char key[PC_KEY_MAX], err[128];
        const struct pc_span *e = &req.inst.elems[i];
        if (pc_cachekey_instance(p, route, body + req.signature.off, req.signature.len,
                                 body + e->off, e->len, key, err, sizeof err) != 0) {
            all_keyed = 0;
            break;
        }
        if (rc == 0) {
            assert_int_equal(spans[i].off, e->off);
            assert_int_equal(spans[i].len, e->len);
            assert_string_equal(keys[i], key);
        }
    }
    if (rc == 0) {
        assert_int_equal(longer, 0);
        assert_true(all_keyed);
        assert_int_equal(n, req.inst.n);
        assert_int_equal(sig.off, req.signature.off);
        assert_int_equal(sig.len, req.signature.len);
        free(spans);
        free(keys);
    }
    if (longer == 0)
        pc_batch_req_release(&req);
    return rc;
}

static int same_str(const char *body)
{
    return same_as_longer_way(body, strlen(body));
}

static void test_instances_in_one_pass(void **state)
{
    (void)state;
    /* The usual bodies: keyed in one pass. */
    assert_int_equal(same_str("{\"instances\":[[1,2.50,-3e2],[1,2.5,-300]]}"), 0);
    assert_int_equal(
        same_str(" {\"signature_name\" : \"s\", \"instances\": [ {\"b\":1,\"a\":[\"x\"]}, "
                 "\"str\\u00e9\", null, true, 0.0, {\"b64\":\"QUJD\"} ] } "),
        0);
    assert_int_equal(same_str("{\"instances\":[1],\"signature_name\":1,\"signature_name\":[2]}"),
                     0);
    assert_int_equal(same_str("{\"instances\":[[[[[[1]]]]]],\"x\":{\"instances\":[2,2]}}"), 0);
    assert_int_equal(same_str("{\"instances\":[1e400000, 2]}"), 1); /* inexact: longer way */
    /* Anything else is left to the longer way, which decides. */
    const char *others[] = {
        "{\"instances\":[]}",
        "{\"instances\":{}}",
        "{\"instances\":[1],\"instances\":[2]}",
        "{\"instan\\u0063es\":[1]}",
        "{\"instances\":[\"a\\u0000b\"]}",
        "{\"instances\":[1],\"signature_name\":[1,\n2]}", /* a newline in its text */
        "[{\"instances\":[1]}]",
        "{\"instances\":[1,]}",
        "{'instances':[1]}",
        "{\"instances\":[01]}",
        "{\"instances\":[NaN]}",
        "{\"instances\":[\"\\ud800\"]}",
        "{\"instances\":[1]} x",
        "{\"inputs\":[1]}",
        "",
        "{\"instances\":[18446744073709551616]}", /* saturated: inexact */
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_true(same_str(others[i]) != 0);
    /* Read whole and no batch: said at once, without the longer way. */
    assert_int_equal(same_str("{\"inputs\":[1],\"instances_\":[2]}"), 2);
    assert_int_equal(same_str("[1,2]"), 2);
    assert_int_equal(same_str("{\"instan\\u0063es\":[1]}"), 2);
    assert_int_equal(same_str("{\"instances\":[1],\"instances\":[2]}"), 1);
    char nul[] = "{\"instances\":[1,\"a\0b\"]}";
    assert_int_equal(same_as_longer_way(nul, sizeof nul - 1), 1);
}

/* Random batches built from pieces that exercise every value kind, and random bytes flipped
 * in them: whatever the one pass keys, the longer way keys the same. */
static void test_instances_in_one_pass_random(void **state)
{
    (void)state;
    static const char *const pieces[] = {"1",
                                         "-0",
                                         "0.10",
                                         "1e5",
                                         "1.5E-3",
                                         "123456789012345678901234567890",
                                         "\"\"",
                                         "\"a\\\"b\"",
                                         "\"\\u00e9\\ud83d\\ude00\"",
                                         "true",
                                         "false",
                                         "null",
                                         "[]",
                                         "{}",
                                         "[1,[2,[3]]]",
                                         "{\"z\":1,\"a\":{\"y\":[true]}}",
                                         "{\"a\":1,\"a\":2}",
                                         "\"\\/\\b\\f\\n\\r\\t\"",
                                         "{\"b64\":\"QUJDRA==\"}",
                                         "-12.500e+2"};
    size_t np = sizeof pieces / sizeof pieces[0];
    unsigned seed = 12345;
    char body[4096];
    int keyed = 0;
    for (int round = 0; round < 3000; round++) {
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        int sig_first = (seed >> 16) & 1, with_sig = (seed >> 17) & 1;
        len += (size_t)snprintf(body + len, sizeof body - len, "{");
        if (with_sig && sig_first)
            len += (size_t)snprintf(body + len, sizeof body - len, "\"signature_name\":\"s%d\",",
                                    round % 3);
        len += (size_t)snprintf(body + len, sizeof body - len, "\"instances\":[");
        int k = 1 + (int)((seed >> 8) % 6);
        for (int j = 0; j < k; j++) {
            seed = seed * 1103515245u + 12345u;
            len += (size_t)snprintf(body + len, sizeof body - len, "%s%s", j ? ", " : "",
                                    pieces[(seed >> 16) % np]);
        }
        len += (size_t)snprintf(body + len, sizeof body - len, "]");
        if (with_sig && !sig_first)
            len += (size_t)snprintf(body + len, sizeof body - len, ",\"signature_name\":[%d]",
                                    round % 3);
        len += (size_t)snprintf(body + len, sizeof body - len, "}");
        keyed += same_as_longer_way(body, len) == 0;
        seed = seed * 1103515245u + 12345u;
        if (round % 2 == 1) { /* one byte changed: often invalid, sometimes another batch */
            body[(seed >> 8) % len] = "{}[]\",:0a\\ e-"[(seed >> 20) % 14];
            same_as_longer_way(body, len);
        }
    }
    assert_true(keyed > 1000); /* the one pass takes the usual batches */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_fields),
        cmocka_unit_test(test_vector_numbers),
        cmocka_unit_test(test_vector_path),
        cmocka_unit_test(test_vector_raw),
        cmocka_unit_test(test_key_shape),
        cmocka_unit_test(test_prefix_limit),
        cmocka_unit_test(test_newline_in_route_or_namespace),
        cmocka_unit_test(test_order_and_whitespace),
        cmocka_unit_test(test_noise_fields),
        cmocka_unit_test(test_routes_never_share),
        cmocka_unit_test(test_namespace_changes_key),
        cmocka_unit_test(test_path_fallback),
        cmocka_unit_test(test_path_not_string_or_disabled),
        cmocka_unit_test(test_fields_win_over_path),
        cmocka_unit_test(test_field_present_as_null),
        cmocka_unit_test(test_duplicate_configured_field),
        cmocka_unit_test(test_raw_bodies),
        cmocka_unit_test(test_invalid_json_declared),
        cmocka_unit_test(test_json_not_object_is_raw),
        cmocka_unit_test(test_length_delimited),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_canonical_documents),
        cmocka_unit_test(test_number_spellings),
        cmocka_unit_test(test_unrepresentable_numbers),
        cmocka_unit_test(test_saturating_integer_forms),
        cmocka_unit_test(test_exponent_bound),
        cmocka_unit_test(test_non_json_numbers_are_raw),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_lossy_strings_are_raw),
        cmocka_unit_test(test_non_json_lexemes_are_raw),
        cmocka_unit_test(test_nested_sorted),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_canonical_rejects_non_json),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_instances_in_one_pass),
        cmocka_unit_test(test_instances_in_one_pass_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
