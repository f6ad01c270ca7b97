/*
 * Unit tests of jsonedit: vectors for rewriting, inserting, removing and finding a root
 * member (escaped names, duplicates, whitespace, nested members left alone, non-objects),
 * and a property test held against json-c's reading of the input and the output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <json.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/canon.h"
#include "predcache/jsonedit.h"

/* set_member(body, name, value) appended after a prefix: asserts rc, and the text when 0. */
static void check_set(const char *body, const char *name, const char *value, int want_rc,
                      const char *want)
{
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_buf_append_str(&out, "pre:"), 0);
    char *copy = malloc(strlen(body) + 1); /* exact size: ASan sees any over-read */
    assert_non_null(copy);
    memcpy(copy, body, strlen(body) + 1);
    int rc =
        pc_jsonedit_set_member(copy, strlen(body), name, value, value ? strlen(value) : 0, &out);
    if (rc != want_rc)
        fail_msg("set_member(%s, %s, %s) = %d, want %d", body, name, value ? value : "NULL", rc,
                 want_rc);
    if (rc == 0) {
        if (strcmp(out.data + 4, want) != 0)
            fail_msg("set_member(%s, %s, %s) = '%s', want '%s'", body, name, value ? value : "NULL",
                     out.data + 4, want);
        assert_int_equal(out.len, 4 + strlen(want));
    } else {
        assert_string_equal(out.data, "pre:");
        assert_int_equal(out.len, 4);
    }
    free(copy);
    pc_buf_release(&out);
}

#define SET(body, value, want) check_set(body, "id", value, 0, want)
#define DEL(body, want) check_set(body, "id", NULL, 0, want)

/* find_member(body, name): want NULL for "absent" (1), else the value text. */
static void check_find(const char *body, const char *name, const char *want)
{
    size_t off = 99, vlen = 99;
    int rc = pc_jsonedit_find_member(body, strlen(body), name, &off, &vlen);
    if (want == NULL) {
        assert_int_equal(rc, 1);
        assert_int_equal(off, 99);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(vlen, strlen(want));
    assert_memory_equal(body + off, want, vlen);
}

static void test_rewrite(void **state)
{
    (void)state;
    SET("{\"a\":1,\"id\":\"x\",\"b\":2}", "\"new\"", "{\"a\":1,\"id\":\"new\",\"b\":2}");
    SET("{\"id\":\"x\"}", "\"req-7\"", "{\"id\":\"req-7\"}");
    SET("{\"id\":null}", "{\"x\":[1,2]}", "{\"id\":{\"x\":[1,2]}}");
    SET("{\"id\":{\"x\":[1,{\"id\":2}]},\"b\":1}", "3", "{\"id\":3,\"b\":1}");
    /* whitespace everywhere is kept */
    SET(" \t{ \"id\" :\n \"x\" , \"b\" : 2 }\r\n ", "\"n\"",
        " \t{ \"id\" :\n \"n\" , \"b\" : 2 }\r\n ");
    /* escaped names are matched decoded, and their token kept */
    SET("{\"i\\u0064\":\"x\"}", "\"n\"", "{\"i\\u0064\":\"n\"}");
    SET("{\"\\u0069\\u0064\":1,\"a\":2}", "\"n\"", "{\"\\u0069\\u0064\":\"n\",\"a\":2}");
    SET("{\"\\u0069d\":1}", "2", "{\"\\u0069d\":2}");
    /* every root duplicate; nested ones are not the request's */
    SET("{\"id\":1,\"a\":{\"id\":2},\"id\":3}", "\"n\"",
        "{\"id\":\"n\",\"a\":{\"id\":2},\"id\":\"n\"}");
    SET("{\"id\":1,\"i\\u0064\":2}", "0", "{\"id\":0,\"i\\u0064\":0}");
    /* names that are not "id" */
    SET("{\"ID\":1}", "\"n\"", "{\"id\":\"n\",\"ID\":1}");
    SET("{\"id \":1}", "\"n\"", "{\"id\":\"n\",\"id \":1}");
    SET("{\"i\":1}", "\"n\"", "{\"id\":\"n\",\"i\":1}");
    SET("{\"idx\":1}", "\"n\"", "{\"id\":\"n\",\"idx\":1}");
    SET("{\"id\\u0000\":1}", "\"n\"", "{\"id\":\"n\",\"id\\u0000\":1}");
    SET("{\"id\\u0000x\":1}", "\"n\"", "{\"id\":\"n\",\"id\\u0000x\":1}");
    /* a value given with whitespace is written as given */
    SET("{\"id\":1}", " 2 ", "{\"id\": 2 }");
}

static void test_insert(void **state)
{
    (void)state;
    SET("{}", "\"n\"", "{\"id\":\"n\"}");
    SET(" { } ", "\"n\"", " {\"id\":\"n\" } ");
    SET("{\"a\":1}", "\"n\"", "{\"id\":\"n\",\"a\":1}");
    SET("{ \"a\" : 1 }", "\"n\"", "{\"id\":\"n\", \"a\" : 1 }");
    SET("{\"p\":{\"id\":1},\"q\":[{\"id\":2}]}", "\"n\"",
        "{\"id\":\"n\",\"p\":{\"id\":1},\"q\":[{\"id\":2}]}");
    /* the name is written as a JSON string that decodes to it */
    check_set("{\"a\":1}", "q\"b\\\x01\x1f\xc3\xa9/", "true", 0,
              "{\"q\\\"b\\\\\\u0001\\u001f\xc3\xa9/\":true,\"a\":1}");
    check_set("{}", "", "1", 0, "{\"\":1}");
    check_set("{\"\":0}", "", "1", 0, "{\"\":1}");
    check_set("{\"\":0}", "", NULL, 0, "{}");
}

static void test_remove(void **state)
{
    (void)state;
    DEL("{\"a\":1, \"id\":\"x\", \"b\":2}", "{\"a\":1, \"b\":2}");
    DEL("{\"id\":\"x\"}", "{}");
    DEL("{\"a\":1,\"id\":2}", "{\"a\":1}");
    DEL("{\"id\":2,\"a\":1}", "{\"a\":1}");
    DEL("{\"id\":2, \"a\":1}", "{ \"a\":1}");
    DEL("{ \"id\" : 2 , \"a\":1}", "{  \"a\":1}");
    DEL("{\"a\":1 , \"id\" : 2 }", "{\"a\":1  }");
    DEL(" {\n  \"id\": \"x\"\n} ", " {\n  \n} ");
    /* duplicates: every one goes, one comma each */
    DEL("{\"id\":1,\"id\":2}", "{}");
    DEL("{\"id\":1,\"id\":2,\"b\":3}", "{\"b\":3}");
    DEL("{\"a\":1,\"id\":1,\"id\":2}", "{\"a\":1}");
    DEL("{\"id\":1,\"a\":1,\"id\":2,\"b\":2,\"id\":3}", "{\"a\":1,\"b\":2}");
    DEL("{\"id\":1 , \"a\":1 , \"id\":2 }", "{ \"a\":1  }");
    DEL("{\"i\\u0064\":1,\"a\":[\",\"],\"id\":{\"id\":1}}", "{\"a\":[\",\"]}");
    /* nested ones stay; absent: the body as it is */
    DEL("{\"id\":1,\"a\":{\"id\":2}}", "{\"a\":{\"id\":2}}");
    DEL("{\"a\":{\"id\":2}}", "{\"a\":{\"id\":2}}");
    DEL(" {} ", " {} ");
    DEL("{\"ID\":1,\"id\\u0000\":2}", "{\"ID\":1,\"id\\u0000\":2}");
}

static void test_not_objects(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "",
        " ",
        "[]",
        "[{\"id\":1}]",
        "\"id\"",
        "1",
        "null",
        "true",
        "{",
        "{\"id\":1",
        "{\"id\":1,}",
        "{\"id\" 1}",
        "{id:1}",
        "{'id':1}",         /* json-c reads it; strict JSON does not */
        "{\"id\":NaN}",     /* lenient too */
        "{\"id\":01}",      /* a number off the grammar */
        "{\"id\":1.}",      /* ... */
        "{\"a\":\"\x01\"}", /* raw control character in a string */
        "{\"id\":1}x",
        "{\"id\":1}{}",
        "/*c*/{\"id\":1}",
        "{\"id\":1}//c",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        check_set(bodies[i], "id", "1", 1, NULL);
        check_set(bodies[i], "id", NULL, 1, NULL);
        check_find(bodies[i], "id", NULL);
    }
    /* a NUL inside the text, after it or in a string */
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_jsonedit_set_member("{\"id\":1}\0", 9, "id", "2", 1, &out), 1);
    assert_int_equal(pc_jsonedit_set_member("{\"id\":\"\0\"}", 9, "id", "2", 1, &out), 1);
    assert_int_equal(pc_jsonedit_set_member(NULL, 0, "id", "2", 1, &out), 1);
    assert_int_equal(pc_jsonedit_set_member("{}", 2, NULL, "2", 1, &out), 1);
    assert_int_equal(out.len, 0);
    pc_buf_release(&out);
}

static void test_find(void **state)
{
    (void)state;
    check_find("{\"id\":\"x\"}", "id", "\"x\"");
    check_find("{ \"id\" :\n \"x\" \n}", "id", "\"x\"");
    check_find("{\"id\":1,\"a\":2,\"id\":{\"b\":[1]}}", "id", "{\"b\":[1]}"); /* the last */
    check_find("{\"id\":1,\"i\\u0064\":2}", "id", "2");
    check_find("{\"a\":{\"id\":1}}", "id", NULL);
    check_find("{\"id\\u0000\":1}", "id", NULL);
    check_find("{}", "id", NULL);
    check_find("{\"id\":1}", "a", NULL);
    check_find("{\"\":1}", "", "1");
    check_find("{\"a\\\"b\":true}", "a\"b", "true");
    check_find("{\"\\u00e9\":-1.5e3}", "\xc3\xa9", "-1.5e3");
    check_find("{\"\\ud83d\\ude00\":[]}", "\xf0\x9f\x98\x80", "[]");
    size_t off = 0, vlen = 0;
    assert_int_equal(pc_jsonedit_find_member("{\"id\":12}", 9, "id", &off, &vlen), 0);
    assert_int_equal(off, 6);
    assert_int_equal(vlen, 2);
}

/* A KServe v2 request, its id replaced for the cached answer's replay. */
static void test_kserve(void **state)
{
    (void)state;
    const char *answer = "{\"model_name\":\"m\",\"id\":\"first-client\",\"outputs\":[{\"name\":"
                         "\"y\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[0.5]}]}";
    SET(answer, "\"second\"",
        "{\"model_name\":\"m\",\"id\":\"second\",\"outputs\":[{\"name\":\"y\",\"shape\":[1],"
        "\"datatype\":\"FP32\",\"data\":[0.5]}]}");
    DEL(answer, "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"y\",\"shape\":[1],\"datatype\":"
                "\"FP32\",\"data\":[0.5]}]}");
}

/* ---- property test: random objects, checked against json-c ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void put_ws(struct pc_buf *b)
{
    static const char *const ws[] = {"", "", "", " ", "\n  ", "\t", "\r\n"};
    assert_int_equal(pc_buf_append_str(b, ws[rnd(7)]), 0);
}

/* The names a member gets: several spell "id" (none holds a NUL: json-c would cut it). */
static const char *const names[] = {
    "\"id\"",  "\"i\\u0064\"", "\"\\u0069\\u0064\"", "\"a\"", "\"b\"", "\"ID\"", "\"i d\"",
    "\"idx\"", "\"\"",         "\"\\\"id\\\"\"",
};

static void put_value(struct pc_buf *b, int depth)
{
    static const char *const scalars[] = {
        "1", "-0.5e3", "\"id\"", "\"x,}\"", "null", "true", "false", "\"\\u0000\"", "[]", "{}",
    };
    uint32_t k = depth > 2 ? 0 : rnd(4);
    if (k <= 1) {
        assert_int_equal(pc_buf_append_str(b, scalars[rnd(10)]), 0);
    } else if (k == 2) {
        assert_int_equal(pc_buf_append_char(b, '['), 0);
        uint32_t n = rnd(3);
        for (uint32_t i = 0; i < n; i++) {
            if (i > 0)
                assert_int_equal(pc_buf_append_char(b, ','), 0);
            put_ws(b);
            put_value(b, depth + 1);
            put_ws(b);
        }
        assert_int_equal(pc_buf_append_char(b, ']'), 0);
    } else {
        assert_int_equal(pc_buf_append_char(b, '{'), 0);
        uint32_t n = rnd(4);
        for (uint32_t i = 0; i < n; i++) {
            if (i > 0)
                assert_int_equal(pc_buf_append_char(b, ','), 0);
            put_ws(b);
            assert_int_equal(pc_buf_append_str(b, names[rnd(10)]), 0);
            put_ws(b);
            assert_int_equal(pc_buf_append_char(b, ':'), 0);
            put_ws(b);
            put_value(b, depth + 1);
            put_ws(b);
        }
        assert_int_equal(pc_buf_append_char(b, '}'), 0);
    }
}

/* json-c's strict reading of s[0..len), s[len] being a NUL (fed too: it ends a number). */
static struct json_object *parse(const char *s, size_t len)
{
    struct json_tokener *t = json_tokener_new();
    assert_non_null(t);
    json_tokener_set_flags(t, JSON_TOKENER_STRICT);
    assert_int_equal(s[len], '\0');
    struct json_object *o = json_tokener_parse_ex(t, s, (int)len + 1);
    int ok = json_tokener_get_error(t) == json_tokener_success && o != NULL;
    json_tokener_free(t);
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void test_property(void **state)
{
    (void)state;
    static const char *const values[] = {"\"req-2\"", "42", "{\"id\":[1,\"}\"]}", "\"\"", "null"};
    for (int iter = 0; iter < 20000; iter++) {
        struct pc_buf in;
        pc_buf_init(&in);
        put_ws(&in);
        assert_int_equal(pc_buf_append_char(&in, '{'), 0);
        uint32_t n = rnd(6);
        for (uint32_t i = 0; i < n; i++) {
            if (i > 0)
                assert_int_equal(pc_buf_append_char(&in, ','), 0);
            put_ws(&in);
            assert_int_equal(pc_buf_append_str(&in, names[rnd(10)]), 0);
            put_ws(&in);
            assert_int_equal(pc_buf_append_char(&in, ':'), 0);
            put_ws(&in);
            put_value(&in, 1);
            put_ws(&in);
        }
        assert_int_equal(pc_buf_append_char(&in, '}'), 0);
        put_ws(&in);

        const char *value = rnd(3) == 0 ? NULL : values[rnd(5)];
        struct pc_buf out;
        pc_buf_init(&out);
        assert_int_equal(
            pc_jsonedit_set_member(in.data, in.len, "id", value, value ? strlen(value) : 0, &out),
            0);
        /* json-c reads the output as the input with "id" set or removed */
        struct json_object *want = parse(in.data, in.len);
        assert_non_null(want);
        if (value != NULL)
            json_object_object_add(want, "id", parse(value, strlen(value)));
        else
            json_object_object_del(want, "id");
        struct json_object *got = parse(out.data, out.len);
        if (got == NULL || !json_object_equal(want, got))
            fail_msg("in '%s' value %s: out '%s'", in.data, value ? value : "NULL", out.data);
        json_object_put(want);
        json_object_put(got);
        /* strict JSON (a name the input gave twice makes it INEXACT, never INVALID) */
        enum pc_canon_rc crc = pc_canon_json(out.data, out.len, NULL, NULL);
        assert_true(crc == PC_CANON_OK || crc == PC_CANON_INEXACT);

        size_t off, vlen;
        int rc = pc_jsonedit_find_member(out.data, out.len, "id", &off, &vlen);
        if (value == NULL) {
            assert_int_equal(rc, 1);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(vlen, strlen(value));
            assert_memory_equal(out.data + off, value, vlen);
        }
        /* nothing to remove: the body as it was */
        if (value == NULL && pc_jsonedit_find_member(in.data, in.len, "id", &off, &vlen) == 1)
            assert_string_equal(out.data, in.data);
        pc_buf_release(&out);
        pc_buf_release(&in);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite),  cmocka_unit_test(test_insert),
        cmocka_unit_test(test_remove),   cmocka_unit_test(test_not_objects),
        cmocka_unit_test(test_find),     cmocka_unit_test(test_kserve),
        cmocka_unit_test(test_property),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
