/* verify: comparing a cached answer with a fresh one, and sampling hits (see the header). */
#include "predcache/verify.h"

#include <json.h>
#include <math.h>
#include <string.h>

#include "predcache/config.h"

/* Parses all of text[0..len) (whitespace may follow the value) into *out (NULL for the
 * JSON null). 0 ok; -1 when it is not one JSON value. */
static int parse_whole(const char *text, size_t len, struct json_object **out)
{
    *out = NULL;
    if (len > INT32_MAX)
        return -1;
    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        return -1;
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    size_t end = json_tokener_get_parse_end(tok);
    if (o == NULL && json_tokener_get_error(tok) == json_tokener_continue) {
        /* A top-level number or literal ends only at a terminator: give it the NUL. */
        o = json_tokener_parse_ex(tok, "", 1);
        end = len;
    }
    int ok = json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    for (; ok && end < len; end++) {
        char c = text[end];
        ok = c == ' ' || c == '\t' || c == '\n' || c == '\r';
    }
    if (!ok) {
        json_object_put(o);
        return -1;
    }
    *out = o;
    return 0;
}

#define EXACT_DOUBLE_INT 9007199254740992.0 /* 2^53: larger integers lose digits as doubles */

static int numbers_equal(struct json_object *a, struct json_object *b, double tol)
{
    if (json_object_is_type(a, json_type_int) && json_object_is_type(b, json_type_int)) {
        int64_t ia = json_object_get_int64(a), ib = json_object_get_int64(b);
        uint64_t ua = json_object_get_uint64(a), ub = json_object_get_uint64(b);
        if (ia == ib && ua == ub)
            return 1;
        if (fabs((double)ia) >= EXACT_DOUBLE_INT || fabs((double)ib) >= EXACT_DOUBLE_INT ||
            (double)ua >= EXACT_DOUBLE_INT || (double)ub >= EXACT_DOUBLE_INT)
            return 0; /* beyond what a double tells apart: only the same integer is equal */
    }
    double x = json_object_get_double(a), y = json_object_get_double(b);
    if (x == y)
        return 1;
    if (isnan(x) || isnan(y) || tol <= 0)
        return 0;
    double scale = fmax(1.0, fmax(fabs(x), fabs(y)));
    return fabs(x - y) <= tol * scale;
}

static int is_number(struct json_object *o)
{
    return json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double);
}

static int values_equal(struct json_object *a, struct json_object *b, double tol)
{
    if (a == NULL || b == NULL)
        return a == b; /* null */
    if (is_number(a) && is_number(b))
        return numbers_equal(a, b, tol);
    enum json_type t = json_object_get_type(a);
    if (t != json_object_get_type(b))
        return 0;
    switch (t) {
    case json_type_null:
        return 1;
    case json_type_boolean:
        return json_object_get_boolean(a) == json_object_get_boolean(b);
    case json_type_string: {
        int la = json_object_get_string_len(a), lb = json_object_get_string_len(b);
        return la == lb &&
               memcmp(json_object_get_string(a), json_object_get_string(b), (size_t)la) == 0;
    }
    case json_type_array: {
        size_t n = json_object_array_length(a);
        if (n != json_object_array_length(b))
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (!values_equal(json_object_array_get_idx(a, i), json_object_array_get_idx(b, i),
                              tol))
                return 0;
        }
        return 1;
    }
    case json_type_object: {
        /* json-c keeps one member per name (the last): equal counts and every member of a
         * found in b with an equal value mean the same set of names. */
        if (json_object_object_length(a) != json_object_object_length(b))
            return 0;
        struct json_object_iterator it = json_object_iter_begin(a);
        struct json_object_iterator end = json_object_iter_end(a);
        for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
            struct json_object *bv;
            if (!json_object_object_get_ex(b, json_object_iter_peek_name(&it), &bv) ||
                !values_equal(json_object_iter_peek_value(&it), bv, tol))
                return 0;
        }
        return 1;
    }
    default:
        return 0;
    }
}

int pc_verify_json_equal(const char *a, size_t a_len, const char *b, size_t b_len, double tolerance)
{
    struct json_object *ja, *jb = NULL;
    int rc = -1;
    if (parse_whole(a, a_len, &ja) == 0 && parse_whole(b, b_len, &jb) == 0)
        rc = values_equal(ja, jb, tolerance);
    json_object_put(ja);
    json_object_put(jb);
    return rc;
}

static int bytes_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

enum pc_verify_result pc_verify_compare(int compare, double tolerance, int a_status, const char *a,
                                        size_t a_len, int b_status, const char *b, size_t b_len)
{
    if (a_status != b_status)
        return PC_VERIFY_MISMATCH;
    if (bytes_equal(a, a_len, b, b_len))
        return PC_VERIFY_MATCH;
    if (compare != PC_VERIFY_JSON)
        return PC_VERIFY_MISMATCH;
    return pc_verify_json_equal(a, a_len, b, b_len, tolerance) == 1 ? PC_VERIFY_MATCH
                                                                    : PC_VERIFY_MISMATCH;
}

int pc_verify_sampled(uint64_t *state, double rate)
{
    if (!(rate > 0))
        return 0;
    if (rate >= 1)
        return 1;
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull; /* xorshift64*: never stuck at 0 */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    double u = (double)((x * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
    return u < rate;
}
