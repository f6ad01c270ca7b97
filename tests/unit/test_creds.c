/* Unit tests of creds: which headers are credentials, and scope vectors. Every expected
 * digest was computed outside predcache, with printf and sha256sum over the material the
 * header documents, e.g.
 *     printf 'authorization\n19:Bearer alice-secret\n' | sha256sum */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "predcache/creds.h"
#include "predcache/http.h"

#define H(n, v) ((struct pc_header){(char *)(n), (char *)(v)})
#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char no_extra[1][64] = {""};

/* pc_creds_scope that must succeed; returns a static copy of the scope. */
static const char *scope_of(const struct pc_header *h, size_t n, const char (*extra)[64],
                            size_t n_extra)
{
    static char out[PC_CREDS_SCOPE_LEN + 1];
    memset(out, 'x', sizeof out);
    assert_int_equal(pc_creds_scope(h, n, extra, n_extra, out), 0);
    return out;
}

static void test_is_credential(void **state)
{
    (void)state;
    static const char extra[2][64] = {"X-Api-Key", "x-tenant"};
    const char *yes[] = {"Authorization",
                         "authorization",
                         "AUTHORIZATION",
                         "Proxy-Authorization",
                         "proxy-authorization",
                         "Cookie",
                         "COOKIE",
                         "x-api-key",
                         "X-TENANT"};
    const char *no[] = {
        "Content-Type", "Set-Cookie",       "Cookie2",           "Authorization2", "X-Api", "",
        "Cookies",      "WWW-Authenticate", "Proxy-Authenticate"};
    for (size_t i = 0; i < N(yes); i++)
        assert_int_equal(pc_creds_is_credential(yes[i], extra, 2), 1);
    for (size_t i = 0; i < N(no); i++)
        assert_int_equal(pc_creds_is_credential(no[i], extra, 2), 0);
    /* extra names only count when configured */
    assert_int_equal(pc_creds_is_credential("X-Api-Key", extra, 0), 0);
    assert_int_equal(pc_creds_is_credential("x-tenant", extra, 1), 0);
    assert_int_equal(pc_creds_is_credential("Cookie", NULL, 0), 1);
    assert_int_equal(pc_creds_is_credential(NULL, extra, 2), 0);
}

static void test_present(void **state)
{
    (void)state;
    static const char extra[1][64] = {"X-Api-Key"};
    struct pc_header none[] = {H("Content-Type", "application/json"), H("Accept", "*/*")};
    struct pc_header cookie[] = {H("Content-Type", "application/json"), H("cookie", "")};
    struct pc_header key[] = {H("x-api-key", "k")};
    assert_int_equal(pc_creds_present(none, N(none), extra, 1), 0);
    assert_int_equal(pc_creds_present(none, 0, extra, 1), 0);
    assert_int_equal(pc_creds_present(cookie, N(cookie), no_extra, 0), 1);
    assert_int_equal(pc_creds_present(key, N(key), extra, 1), 1);
    assert_int_equal(pc_creds_present(key, N(key), extra, 0), 0);
}

static void test_no_credentials_no_scope(void **state)
{
    (void)state;
    struct pc_header h[] = {H("Content-Type", "application/json"), H("X-Api-Key", "k")};
    assert_string_equal(scope_of(h, N(h), no_extra, 0), "");
    assert_string_equal(scope_of(NULL, 0, no_extra, 0), "");
}

static void test_vectors(void **state)
{
    (void)state;
    /* printf 'authorization\n19:Bearer alice-secret\n' | sha256sum */
    struct pc_header a[] = {H("Content-Type", "application/json"),
                            H("Authorization", "Bearer alice-secret")};
    assert_string_equal(scope_of(a, N(a), no_extra, 0),
                        "86b3d812fc2105bbfd6dfc84e867e6fcf4598b57446ef80c1bb7716af070d7c0");
    /* printf 'authorization\n19:Bearer alice-secret\ncookie\n9:sid=abc12\n' | sha256sum;
     * the order is the names' order, not the request's */
    struct pc_header b[] = {H("Cookie", "sid=abc12"), H("X-Other", "1"),
                            H("authorization", "Bearer alice-secret")};
    assert_string_equal(scope_of(b, N(b), no_extra, 0),
                        "93c674131f5585cc9b2629a10045a63a25e2004a912b207e9a093ccbaa768f5d");
    /* printf 'authorization\n5:Basic\nproxy-authorization\n4:pxyz\ncookie\n3:c=3\n
     * x-api-key\n6:k-1234\nx-tenant\n2:t9\n' | sha256sum (one line): extra names in list
     * order, lowercased in the material whatever their case in the list or the request */
    static const char extra[2][64] = {"X-Api-Key", "X-Tenant"};
    struct pc_header f[] = {H("x-tenant", "t9"), H("COOKIE", "c=3"), H("X-API-KEY", "k-1234"),
                            H("Proxy-Authorization", "pxyz"), H("Authorization", "Basic")};
    assert_string_equal(scope_of(f, N(f), extra, 2),
                        "80b7703e9714cd69fe6eb9af59cc69ac7cd40b4f8d5a663bbb79fe3a6fb9a2f0");
    /* printf 'x-api-key\n6:k-1234\n' | sha256sum: an extra name alone */
    struct pc_header g[] = {H("X-Api-Key", "k-1234")};
    assert_string_equal(scope_of(g, N(g), extra, 2),
                        "1605e16af41b7d41d6fee1734bc5b63959dec6106915e70eaa127ffd225e0557");
}

static void test_multiple_values_keep_request_order(void **state)
{
    (void)state;
    /* printf 'cookie\n3:a=1\ncookie\n3:b=2\n' | sha256sum */
    struct pc_header ab[] = {H("Cookie", "a=1"), H("Content-Type", "x"), H("cookie", "b=2")};
    /* printf 'cookie\n3:b=2\ncookie\n3:a=1\n' | sha256sum */
    struct pc_header ba[] = {H("Cookie", "b=2"), H("Cookie", "a=1")};
    const char *sab = "dbc592dc2f9684029ab2d34321314f33e43e08fe2643c5588bb0be24d0f0049a";
    const char *sba = "023e87ff3ce7d74cec3e9f3037c60fc99234e52b1ff86dfcc326375e38896610";
    assert_string_equal(scope_of(ab, N(ab), no_extra, 0), sab);
    assert_string_equal(scope_of(ba, N(ba), no_extra, 0), sba);
}

static void test_empty_value_is_not_absent(void **state)
{
    (void)state;
    /* printf 'authorization\n0:\n' | sha256sum */
    struct pc_header a[] = {H("Authorization", "")};
    assert_string_equal(scope_of(a, N(a), no_extra, 0),
                        "49ad27a4da046548ae1f08d3d34ac0b3bb969709bfc7590f40d658e2a0d3bd17");
    /* printf 'cookie\n0:\n' | sha256sum: another name, another scope */
    struct pc_header c[] = {H("Cookie", "")};
    assert_string_equal(scope_of(c, N(c), no_extra, 0),
                        "df0469d2eec02f3ef93fa4442749d20f0df0f604aa5fdbdd1a6cc4099a5f0185");
}

static void test_names_listed_twice_count_once(void **state)
{
    (void)state;
    /* extra repeating a built-in name or itself changes nothing */
    static const char extra[4][64] = {"cookie", "X-Api-Key", "x-api-key", "AUTHORIZATION"};
    struct pc_header b[] = {H("Cookie", "sid=abc12"), H("Authorization", "Bearer alice-secret")};
    assert_string_equal(scope_of(b, N(b), extra, 4),
                        "93c674131f5585cc9b2629a10045a63a25e2004a912b207e9a093ccbaa768f5d");
    struct pc_header g[] = {H("x-api-key", "k-1234")};
    assert_string_equal(scope_of(g, N(g), extra, 4),
                        "1605e16af41b7d41d6fee1734bc5b63959dec6106915e70eaa127ffd225e0557");
}

static void test_scopes_differ_with_values_only(void **state)
{
    (void)state;
    char s1[PC_CREDS_SCOPE_LEN + 1], s2[PC_CREDS_SCOPE_LEN + 1];
    /* Framing: the same bytes split differently between names or values are other scopes. */
    struct pc_header x[] = {H("Cookie", "a=1\ncookie\n3:b=2")};
    struct pc_header y[] = {H("Cookie", "a=1"), H("Cookie", "b=2")};
    assert_int_equal(pc_creds_scope(x, 1, no_extra, 0, s1), 0);
    assert_int_equal(pc_creds_scope(y, 2, no_extra, 0, s2), 0);
    assert_string_not_equal(s1, s2);
    /* Other headers and header name case do not change a scope. */
    struct pc_header p[] = {H("AUTHORIZATION", "Bearer alice-secret"), H("Accept", "a")};
    struct pc_header q[] = {H("X-Request-Id", "7"), H("authorization", "Bearer alice-secret")};
    assert_int_equal(pc_creds_scope(p, 2, no_extra, 0, s1), 0);
    assert_int_equal(pc_creds_scope(q, 2, no_extra, 0, s2), 0);
    assert_string_equal(s1, s2);
    /* Values are compared exactly: case matters. */
    struct pc_header r[] = {H("Authorization", "bearer alice-secret")};
    assert_int_equal(pc_creds_scope(r, 1, no_extra, 0, s2), 0);
    assert_string_not_equal(s1, s2);
    /* Scopes are lowercase hex, 64 digits. */
    assert_int_equal(strlen(s2), PC_CREDS_SCOPE_LEN);
    assert_int_equal(strspn(s2, "0123456789abcdef"), PC_CREDS_SCOPE_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_credential),
        cmocka_unit_test(test_present),
        cmocka_unit_test(test_no_credentials_no_scope),
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_multiple_values_keep_request_order),
        cmocka_unit_test(test_empty_value_is_not_absent),
        cmocka_unit_test(test_names_listed_twice_count_once),
        cmocka_unit_test(test_scopes_differ_with_values_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
