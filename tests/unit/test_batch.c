/* Unit tests of batch: spans, sub-requests, merge, instance values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/batch.h"

static char *span_str(const char *body, const struct pc_span *s)
{
    static char buf[4][256];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%.*s", (int)s->len, body + s->off);
    return b;
}

static void test_request_spans(void **state)
{
    (void)state;
    const char *body = " { \"signature_name\" : \"sig\", \"instances\" : [ 1 , \"a,]\" ,"
                       "{\"k\":[1,{\"x\":null}]}, -2.5e3 ,[true,false] ] , \"id\": 7 } ";
    struct pc_batch_req r;
    assert_int_equal(pc_batch_parse_request(body, strlen(body), &r), 0);
    assert_int_equal(r.inst.n, 5);
    assert_string_equal(span_str(body, &r.inst.elems[0]), "1");
    assert_string_equal(span_str(body, &r.inst.elems[1]), "\"a,]\"");
    assert_string_equal(span_str(body, &r.inst.elems[2]), "{\"k\":[1,{\"x\":null}]}");
    assert_string_equal(span_str(body, &r.inst.elems[3]), "-2.5e3");
    assert_string_equal(span_str(body, &r.inst.elems[4]), "[true,false]");
    assert_string_equal(span_str(body, &r.signature), "\"sig\"");
    pc_batch_req_release(&r);
}

static void test_request_not_a_batch(void **state)
{
    (void)state;
    static const char *const not_batch[] = {
        "[1,2]",
        "{\"inputs\": [1]}",
        "{\"instances\": []}",
        "{\"instances\": {\"a\": 1}}",
        "{\"instances\": [1], \"instances\": [2]}",
        "\"instances\"",
    };
    for (size_t i = 0; i < sizeof not_batch / sizeof not_batch[0]; i++) {
        struct pc_batch_req r;
        assert_int_equal(pc_batch_parse_request(not_batch[i], strlen(not_batch[i]), &r), 1);
    }
    static const char *const invalid[] = {
        "{\"instances\": [1,]}",
        "{\"instances\": [01]}",
        "{\"instances\": [1.]}",
        "{\"instances\": [\"\\x\"]}",
        "{\"instances\": [1]} x",
        "{\"instances\": [tru]}",
        "{\"instances\" [1]}",
        "{\"instances\": [1]",
        "",
        "{\"a\": \"\x01\", \"instances\": [1]}",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        struct pc_batch_req r;
        assert_int_equal(pc_batch_parse_request(invalid[i], strlen(invalid[i]), &r), -1);
    }
}

static void test_depth_is_bounded(void **state)
{
    (void)state;
    char body[1024];
    size_t n = 0;
    n += (size_t)sprintf(body, "{\"instances\": [");
    for (int i = 0; i < PC_BATCH_MAX_DEPTH + 2; i++)
        body[n++] = '[';
    for (int i = 0; i < PC_BATCH_MAX_DEPTH + 2; i++)
        body[n++] = ']';
    n += (size_t)sprintf(body + n, "]}");
    struct pc_batch_req r;
    assert_int_equal(pc_batch_parse_request(body, n, &r), -1);
}

static void test_subrequest_keeps_everything_else(void **state)
{
    (void)state;
    const char *body = "{\"id\": 1, \"instances\": [ \"a\", \"b\" ,\"c\",\"d\" ], \"z\": 2}";
    struct pc_batch_req r;
    assert_int_equal(pc_batch_parse_request(body, strlen(body), &r), 0);
    size_t idx[] = {1, 3};
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_batch_build_subrequest(body, strlen(body), &r, idx, 2, &out), 0);
    assert_string_equal(out.data, "{\"id\": 1, \"instances\": [ \"b\",\"d\" ], \"z\": 2}");
    size_t bad[] = {4};
    out.len = 0;
    assert_int_equal(pc_batch_build_subrequest(body, strlen(body), &r, bad, 1, &out), -1);
    pc_buf_release(&out);
    pc_batch_req_release(&r);
}

static void test_response_layout_and_merge(void **state)
{
    (void)state;
    const char *resp = "{\"predictions\": [[1, 2],  [3, 4]], \"model\": \"m\"}";
    struct pc_batch_array p;
    assert_int_equal(pc_batch_parse_response(resp, strlen(resp), &p), 0);
    assert_int_equal(p.n, 2);
    struct pc_batch_layout l;
    pc_batch_layout_of(resp, strlen(resp), &p, &l);
    assert_int_equal(l.prefix_len, strlen("{\"predictions\": ["));
    assert_int_equal(l.sep_len, 3); /* ",  " */
    assert_memory_equal(l.suffix, "], \"model\": \"m\"}", l.suffix_len);
    const char *preds[] = {"[3, 4]", "[1, 2]", "[3, 4]"};
    size_t lens[] = {6, 6, 6};
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_batch_merge(&l, preds, lens, 3, ",", &out), 0);
    assert_string_equal(out.data,
                        "{\"predictions\": [[3, 4],  [1, 2],  [3, 4]], \"model\": \"m\"}");
    pc_buf_release(&out);
    pc_batch_array_release(&p);
}

static void test_single_prediction_borrows_comma_style(void **state)
{
    (void)state;
    const char *resp = "{\"predictions\": [\"a,b\"], \"x\": 1}";
    struct pc_batch_array p;
    assert_int_equal(pc_batch_parse_response(resp, strlen(resp), &p), 0);
    struct pc_batch_layout l;
    pc_batch_layout_of(resp, strlen(resp), &p, &l);
    assert_int_equal(l.sep_len, 2); /* the comma inside the string does not count */
    assert_memory_equal(l.sep, ", ", 2);
    pc_batch_array_release(&p);

    const char *only = "{\"predictions\":[7]}";
    assert_int_equal(pc_batch_parse_response(only, strlen(only), &p), 0);
    pc_batch_layout_of(only, strlen(only), &p, &l);
    assert_int_equal(l.sep_len, 0); /* unknown: the merge uses its default */
    const char *preds[] = {"7", "8"};
    size_t lens[] = {1, 1};
    struct pc_buf out;
    pc_buf_init(&out);
    assert_int_equal(pc_batch_merge(&l, preds, lens, 2, ",", &out), 0);
    assert_string_equal(out.data, "{\"predictions\":[7,8]}");
    pc_buf_release(&out);
    pc_batch_array_release(&p);
}

static void test_response_without_predictions(void **state)
{
    (void)state;
    static const char *const bad[] = {"{\"results\": [1]}", "{\"predictions\": 1}", "[1]",
                                      "{\"predictions\": [1]", "oops"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pc_batch_array p;
        assert_int_equal(pc_batch_parse_response(bad[i], strlen(bad[i]), &p), -1);
        assert_null(p.elems);
    }
    struct pc_batch_array p;
    assert_int_equal(pc_batch_parse_response("{\"predictions\": []}", 19, &p), 0);
    assert_int_equal(p.n, 0);
    pc_batch_array_release(&p);
}

static void test_instance_value_round_trip(void **state)
{
    (void)state;
    struct pc_batch_layout l = {"{\"p\": [", 7, ", ", 2, "], \"v\": 1}", 10};
    struct pc_buf v;
    pc_buf_init(&v);
    const char pred[] = "[0.5,\n\"x\\u0000\"]";
    assert_int_equal(pc_batch_encode_instance(&l, pred, sizeof pred - 1, &v), 0);
    struct pc_batch_layout d;
    const char *p;
    size_t plen;
    assert_int_equal(pc_batch_decode_instance(v.data, v.len, &d, &p, &plen), 0);
    assert_int_equal(d.prefix_len, 7);
    assert_memory_equal(d.prefix, l.prefix, 7);
    assert_int_equal(d.sep_len, 2);
    assert_memory_equal(d.sep, ", ", 2);
    assert_int_equal(d.suffix_len, 10);
    assert_memory_equal(d.suffix, l.suffix, 10);
    assert_int_equal(plen, sizeof pred - 1);
    assert_memory_equal(p, pred, plen);

    /* Every truncation and a few corruptions are rejected, never read past the end. */
    for (size_t n = 0; n < v.len; n++) {
        if (n == v.len)
            continue;
        int rc = pc_batch_decode_instance(v.data, n, &d, &p, &plen);
        if (rc == 0)
            assert_true(p + plen <= v.data + n);
    }
    static const char *const bad[] = {"PI2\n1 0 0\nab", "PI1\n9 0 0\nab",  "PI1\n1 0\nab",
                                      "PI1\nx 0 0\nab", "PI1\n1 1 1\nabc", "PI1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pc_batch_decode_instance(bad[i], strlen(bad[i]), &d, &p, &plen), -1);
    pc_buf_release(&v);
}

/* Random splits and merges agree with a rebuild by hand (fixed seed, many rounds). */
static void test_random_subrequests(void **state)
{
    (void)state;
    static const char *const pool[] = {"1",       "\"s\"", "[1,[2]]",    "{\"a\":{\"b\":[]}}",
                                       "-0.5e-3", "null",  "\"q\\\"]\"", "true"};
    unsigned seed = 12345;
    for (int round = 0; round < 500; round++) {
        char body[2048];
        size_t n = 0, k = (size_t)(rand_r(&seed) % 12) + 1, pick[16];
        n += (size_t)sprintf(body + n, "{\"x\":0,\"instances\":[");
        for (size_t i = 0; i < k; i++) {
            pick[i] = (size_t)rand_r(&seed) % (sizeof pool / sizeof pool[0]);
            n += (size_t)sprintf(body + n, "%s%s", i ? ", " : "", pool[pick[i]]);
        }
        n += (size_t)sprintf(body + n, "],\"y\":1}");
        struct pc_batch_req r;
        assert_int_equal(pc_batch_parse_request(body, n, &r), 0);
        assert_int_equal(r.inst.n, k);
        size_t idx[16], m = 0;
        char expect[2048];
        size_t e = (size_t)sprintf(expect, "{\"x\":0,\"instances\":[");
        for (size_t i = 0; i < k; i++) {
            if (rand_r(&seed) % 2 == 0)
                continue;
            e += (size_t)sprintf(expect + e, "%s%s", m ? "," : "", pool[pick[i]]);
            idx[m++] = i;
        }
        if (m == 0)
            idx[m++] = 0, e += (size_t)sprintf(expect + e, "%s", pool[pick[0]]);
        e += (size_t)sprintf(expect + e, "],\"y\":1}");
        struct pc_buf out;
        pc_buf_init(&out);
        assert_int_equal(pc_batch_build_subrequest(body, n, &r, idx, m, &out), 0);
        assert_string_equal(out.data, expect);
        pc_buf_release(&out);
        pc_batch_req_release(&r);
    }
}

/* The count stops at the element past the bound and reads nothing after it. */
static void test_exceeds_stops_past_the_bound(void **state)
{
    (void)state;
    const char *five = "{\"instances\":[1,2,3,4,5]}";
    assert_int_equal(pc_batch_exceeds(five, strlen(five), 4), 1);
    assert_int_equal(pc_batch_exceeds(five, strlen(five), 5), 0);
    assert_int_equal(pc_batch_exceeds(five, strlen(five), 0), 1);
    /* Anything after the fifth element is never read. */
    const char *cut =
        "{\"signature_name\":\"s\", \"instances\" : [ [1], {\"a\":2}, \"x\", 4, 5 ,!!";
    assert_int_equal(pc_batch_exceeds(cut, strlen(cut), 4), 1);
    assert_int_equal(pc_batch_exceeds(cut, strlen(cut), 5), 0);
    /* The second member of that spelling counts too. */
    const char *two = "{\"instances\":[1],\"instances\":[1,2,3,4,5,6,7,8]}";
    assert_int_equal(pc_batch_exceeds(two, strlen(two), 7), 1);
    assert_int_equal(pc_batch_exceeds(two, strlen(two), 8), 0);
    static const char *const never[] = {
        "{\"\\u0069nstances\":[1,2,3,4,5,6,7,8,9]}",   /* another spelling: cachekey bounds it */
        "{\"a\":{\"instances\":[1,2,3,4,5,6,7,8,9]}}", /* not at the top */
        "{\"inputs\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14]}",
        "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]",
        "{\"instances\":\"1,2,3,4,5,6,7,8,9,10,11,12\"}",
        "{\"x\":[1,2,3,4,5,6,7,8,9,10,11],\"instances\":[1]}",
        "{\"instances\":[1,2,,3,4,5,6,7,8,9,10,11,12]}", /* invalid before the bound */
    };
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        assert_int_equal(pc_batch_exceeds(never[i], strlen(never[i]), 2), 0);
    /* A body shorter than 2 (max + 1) bytes is not read (it cannot hold more). */
    assert_int_equal(pc_batch_exceeds("{\"instances\":[1,2,3]}", 21, 10), 0);
}

/* Against the spans: for random batches, exceeds(max) is exactly "more than max
 * elements", for every max around the count. */
static void test_exceeds_agrees_with_the_spans(void **state)
{
    (void)state;
    static const char *const pool[] = {"0",    "-1.5e3", "\"a,]\"",  "[1,[2]]", "{\"k\":[1,2]}",
                                       "true", "null",   "\"\\\"\"", "{}",      "[]"};
    unsigned seed = 7;
    char body[8192];
    for (int round = 0; round < 2000; round++) {
        size_t k = (size_t)(rand_r(&seed) % 40), n = 0;
        const char *ws = rand_r(&seed) % 2 ? " " : "";
        n += (size_t)sprintf(body + n, "{%s\"signature_name\":\"s\",%s\"instances\"%s:%s[", ws, ws,
                             ws, ws);
        for (size_t i = 0; i < k; i++)
            n += (size_t)sprintf(body + n, "%s%s%s", i ? "," : "", ws,
                                 pool[rand_r(&seed) % (sizeof pool / sizeof pool[0])]);
        n += (size_t)sprintf(body + n, "]%s,\"id\":[1,2,3]}", ws);
        struct pc_batch_req r;
        int rc = pc_batch_parse_request(body, n, &r);
        assert_int_equal(rc, k == 0 ? 1 : 0);
        if (rc == 0) {
            assert_int_equal(r.inst.n, k);
            pc_batch_req_release(&r);
        }
        for (size_t max = k > 3 ? k - 3 : 0; max <= k + 3; max++)
            assert_int_equal(pc_batch_exceeds(body, n, max), k > max);
    }
}

static void pred_of(void *arg, size_t i, const char **pred, size_t *len)
{
    const char *const *preds = arg;
    *pred = preds[i];
    *len = strlen(preds[i]);
}

/* merge_fn writes what merge writes, the layout's separator or else the default. */
static void test_merge_fn_is_merge(void **state)
{
    (void)state;
    const char *const preds[] = {"[1]", "\"b\"", "{\"c\":3}"};
    const size_t lens[] = {3, 3, 7};
    for (int with_sep = 0; with_sep < 2; with_sep++) {
        struct pc_batch_layout l = {"{\"predictions\": [",   17,
                                    with_sep ? ",  " : NULL, with_sep ? 3u : 0u,
                                    "], \"m\": 1}",          10};
        struct pc_buf a, b;
        pc_buf_init(&a);
        pc_buf_init(&b);
        assert_int_equal(pc_batch_merge(&l, preds, lens, 3, ";", &a), 0);
        assert_int_equal(pc_batch_merge_fn(&l, pred_of, (void *)preds, 3, ";", &b), 0);
        assert_string_equal(a.data, b.data);
        assert_string_equal(b.data, with_sep
                                        ? "{\"predictions\": [[1],  \"b\",  {\"c\":3}], \"m\": 1}"
                                        : "{\"predictions\": [[1];\"b\";{\"c\":3}], \"m\": 1}");
        pc_buf_release(&a);
        pc_buf_release(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_spans),
        cmocka_unit_test(test_request_not_a_batch),
        cmocka_unit_test(test_depth_is_bounded),
        cmocka_unit_test(test_subrequest_keeps_everything_else),
        cmocka_unit_test(test_response_layout_and_merge),
        cmocka_unit_test(test_single_prediction_borrows_comma_style),
        cmocka_unit_test(test_response_without_predictions),
        cmocka_unit_test(test_instance_value_round_trip),
        cmocka_unit_test(test_random_subrequests),
        cmocka_unit_test(test_exceeds_stops_past_the_bound),
        cmocka_unit_test(test_exceeds_agrees_with_the_spans),
        cmocka_unit_test(test_merge_fn_is_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
