/* Unit tests of routes: globs and their analysis, longest match, model paths and status. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "predcache/routes.h"

#include <string.h>

static void test_glob_match(void **state)
{
    (void)state;
    assert_true(pc_glob_match("/v1/models/*:predict", "/v1/models/m:predict"));
    assert_true(pc_glob_match("/v1/models/*:predict", "/v1/models/m/versions/2:predict"));
    assert_true(pc_glob_match("/a*", "/a"));
    assert_true(pc_glob_match("*", ""));
    assert_false(pc_glob_match("/v1/models/*:predict", "/v1/models/m:classify"));
    assert_false(pc_glob_match("/a", "/ab"));
    assert_false(pc_glob_match("/a*b", "/ab/c"));
    assert_int_equal(pc_glob_literals("/v1/models/*:predict"), 19);
    assert_int_equal(pc_glob_literals("**"), 0);
}

static void test_glob_subset(void **state)
{
    (void)state;
    assert_true(pc_glob_subset("/a/b", "/a/*"));
    assert_true(pc_glob_subset("/a/*", "/a/*"));
    assert_true(pc_glob_subset("/a/x*y", "/a/*"));
    assert_true(pc_glob_subset("/a/*", "/*"));
    assert_true(pc_glob_subset("/p/**", "/p/*"));
    assert_true(pc_glob_subset("/p/*", "/p/**"));
    assert_false(pc_glob_subset("/a/*", "/a/b"));
    assert_false(pc_glob_subset("/a/*", "/a/x*"));
    assert_false(pc_glob_subset("/*", "/a/*"));
    assert_false(pc_glob_subset("/a*", "/a*b"));
}

static void test_glob_intersect(void **state)
{
    (void)state;
    assert_true(pc_glob_intersect("/v1/models/a*:predict", "/v1/models/*b:predict"));
    assert_true(pc_glob_intersect("/a*", "*b"));
    assert_true(pc_glob_intersect("/x", "/x"));
    assert_true(pc_glob_intersect("*", ""));
    assert_false(pc_glob_intersect("/v1/models/a*:predict", "/v1/models/b*:predict"));
    assert_false(pc_glob_intersect("/*:predict", "/*:classify"));
    assert_false(pc_glob_intersect("/x", "/y"));
    assert_false(pc_glob_intersect("/a*", "/b*"));
}

static void test_longest_match(void **state)
{
    (void)state;
    static struct pc_config c;
    char err[512];
    pc_config_defaults(&c);
    assert_int_equal(pc_config_set(&c, "route resnet", "match", "POST /v1/models/resnet*:predict",
                                   err, sizeof err),
                     0);
    assert_int_equal(
        pc_config_set(&c, "route anymeta", "match", "* /v1/models/*/metadata", err, sizeof err), 0);
    assert_int_equal(
        pc_config_set(&c, "route getmeta", "match", "GET /v1/models/*/metadata", err, sizeof err),
        0);
    assert_int_equal(pc_config_set(&c, "route getmeta", "cache", "off", err, sizeof err), 0);
    if (pc_config_validate(&c, err, sizeof err) != 0)
        fail_msg("%s", err);
    size_t n_default = c.n_routes;
    struct pc_route_view v;
    long id = pc_routes_match(&c, "POST", "/v1/models/resnet50:predict");
    assert_int_equal(id, (long)n_default); /* the section, not the default :predict route */
    assert_int_equal(pc_routes_get(&c, (size_t)id, &v), 0);
    assert_string_equal(v.name, "resnet");
    assert_true(v.section);
    id = pc_routes_match(&c, "POST", "/v1/models/bert:predict");
    assert_int_equal(pc_routes_get(&c, (size_t)id, &v), 0);
    assert_string_equal(v.name, "POST /v1/models/*:predict");
    assert_false(v.section);
    assert_int_equal(v.ttl_s, c.ttl_s);
    /* Same literals: the exact method wins over "*". */
    id = pc_routes_match(&c, "GET", "/v1/models/m/metadata");
    assert_int_equal(pc_routes_get(&c, (size_t)id, &v), 0);
    assert_string_equal(v.name, "getmeta");
    assert_false(v.cache);
    id = pc_routes_match(&c, "PUT", "/v1/models/m/metadata");
    assert_int_equal(pc_routes_get(&c, (size_t)id, &v), 0);
    assert_string_equal(v.name, "anymeta");
    assert_int_equal(pc_routes_match(&c, "GET", "/v1/models/m"), -1);
    assert_int_equal(pc_routes_match(&c, "GET", "/v1/models/m:predict"), -1);
    assert_int_equal(pc_routes_get(&c, pc_routes_count(&c), &v), -1);
}

static void assert_model(const char *path, enum pc_model_api api, const char *name,
                         const char *version, const char *label, const char *verb)
{
    struct pc_model_ref m;
    if (pc_model_of_path(path, &m) != 0)
        fail_msg("%s: not a model path", path);
    assert_int_equal(m.api, api);
    assert_string_equal(m.name, name);
    assert_string_equal(m.version, version);
    assert_string_equal(m.label, label);
    assert_string_equal(m.verb, verb);
}

static void test_model_paths(void **state)
{
    (void)state;
    assert_model("/v1/models/m:predict", PC_API_TFS_V1, "m", "", "", "predict");
    assert_model("/v1/models/m/versions/12:classify", PC_API_TFS_V1, "m", "12", "", "classify");
    assert_model("/v1/models/m/labels/stable:predict", PC_API_TFS_V1, "m", "", "stable", "predict");
    assert_model("/v2/models/bert/infer", PC_API_KSERVE_V2, "bert", "", "", "infer");
    assert_model("/v2/models/bert/versions/3/infer", PC_API_KSERVE_V2, "bert", "3", "", "infer");
    static const char *const bad[] = {
        "/predict",
        "/v1/models/:predict",
        "/v1/models/m",
        "/v1/models/m/x:predict",
        "/v1/models/m/versions/:predict",
        "/v1/models/m/versions/1/2:predict",
        "/v2/models/infer",
        "/v2/models/m/x/infer",
        "/v2/models//infer",
        "/v2/models/m/versions//infer",
        "/v1/models/m:",
    };
    struct pc_model_ref m;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_model_of_path(bad[i], &m) == 0)
            fail_msg("%s parsed as a model path", bad[i]);
        assert_int_equal(m.api, PC_API_NONE);
    }
}

static void test_versioned_and_status_paths(void **state)
{
    (void)state;
    struct pc_model_ref m;
    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_model_of_path("/v1/models/m/labels/canary:regress", &m), 0);
    assert_int_equal(pc_model_versioned_path(&m, "7", &b), 0);
    assert_string_equal(b.data, "/v1/models/m/versions/7:regress");
    b.len = 0;
    assert_int_equal(pc_model_status_path(&m, &b), 0);
    assert_string_equal(b.data, "/v1/models/m/labels/canary");
    b.len = 0;
    assert_int_equal(pc_model_of_path("/v2/models/bert/infer", &m), 0);
    assert_int_equal(pc_model_versioned_path(&m, "3", &b), 0);
    assert_string_equal(b.data, "/v2/models/bert/versions/3/infer");
    b.len = 0;
    assert_int_equal(pc_model_status_path(&m, &b), 0);
    assert_string_equal(b.data, "/v2/models/bert");
    pc_buf_release(&b);
}

static void assert_status(enum pc_model_api api, const char *body, const char *want)
{
    char out[64];
    int rc = pc_model_parse_status(api, body, strlen(body), out, sizeof out);
    if (want == NULL) {
        if (rc == 0)
            fail_msg("%s: parsed as version %s", body, out);
        return;
    }
    if (want[0] == '\0') { /* a model without versions */
        if (rc != 1)
            fail_msg("%s: %d, not 'no versions'", body, rc);
        return;
    }
    if (rc != 0)
        fail_msg("%s: no version", body);
    assert_string_equal(out, want);
}

static void test_status_answers(void **state)
{
    (void)state;
    enum pc_model_api v1 = PC_API_TFS_V1, v2 = PC_API_KSERVE_V2;
    assert_status(v1,
                  "{\"model_version_status\":[{\"version\":\"2\",\"state\":\"AVAILABLE\"},"
                  "{\"version\":\"10\",\"state\":\"AVAILABLE\"},"
                  "{\"version\":\"11\",\"state\":\"LOADING\"}]}",
                  "10");
    assert_status(v1, "{\"model_version_status\":[{\"version\":3,\"state\":\"AVAILABLE\"}]}", "3");
    assert_status(v1, "{\"model_version_status\":[{\"version\":\"1\",\"state\":\"END\"}]}", NULL);
    assert_status(v1, "{\"model_version_status\":[]}", NULL);
    assert_status(v1, "{\"model_version_status\":[{\"version\":\"a/b\",\"state\":\"AVAILABLE\"}]}",
                  NULL);
    assert_status(v1, "{\"versions\":[\"1\"]}", NULL); /* a v2 answer to a v1 question */
    assert_status(v1, "not json", NULL);
    assert_status(v1, "{\"model_version_status\":[{\"version\":\"1\",\"state\":\"AVAILABLE\"}]",
                  NULL);
    assert_status(v2, "{\"name\":\"bert\",\"versions\":[\"1\",\"3\",\"2\"]}", "3");
    assert_status(v2, "{\"name\":\"bert\",\"versions\":[]}", ""); /* MLServer */
    assert_status(v2, "{\"name\":\"bert\"}", "");
    assert_status(v2, "{\"name\":\"bert\",\"versions\":\"1\"}", NULL);
    assert_status(v2, "{\"name\":\"bert\",\"versions\":[{}]}", NULL);
    assert_status(v2, "[1,2]", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_match),     cmocka_unit_test(test_glob_subset),
        cmocka_unit_test(test_glob_intersect), cmocka_unit_test(test_longest_match),
        cmocka_unit_test(test_model_paths),    cmocka_unit_test(test_versioned_and_status_paths),
        cmocka_unit_test(test_status_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
