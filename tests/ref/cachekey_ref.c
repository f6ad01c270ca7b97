/*
 * cachekey_ref: the v2 cache key read a second way, on json-c 0.16 (the parser the v1 key
 * was built on), kept only as the reference that tests/unit/test_canon.c and the fuzz
 * targets hold src/cachekey.c (src/canon.c) to: same keys, same kinds, same errors, for
 * every input. Never linked into predcache. The JSON reading (parse_json, canon_value) is
 * the shipped v1 code; the v2 material is built from cachekey.h's contract, without canon.
 *
 *     body --parse (json-c, strict, depth 64)--> object?   (names decoded, last one wins)
 *        |-- input fields present --> "fields\n" canonical(those fields)   (PC_KEY_FIELDS)
 *        |-- TF Serving's members, holding its input --> "tfs\n" canonical  (PC_KEY_BODY)
 *        |   (else, and for KServe and plain JSON, the whole body minus ignore fields:)
 *        |-- nothing but a string path field --> "path\n" its bytes        (PC_KEY_PATH)
 *        |-- the rest --> "json\n" canonical, any JSON value but for TF Serving
 *        `-- anything else, or not JSON --> "raw\n" the bytes              (PC_KEY_RAW)
 *     key = prefix "v2:{" hex(SHA-256(head form "\n" input)) "}"
 *
 * json-c 0.16's names, as observed and pinned in tests/unit/test_canon.c (test_json_c_names):
 * a member name is decoded ("instan\u0063es" is "instances") and kept as a C string, so it
 * is cut at a "\u0000"; a name given twice keeps the place of the first and the value of the
 * last (the object's entry is replaced, not added). Model servers differ there: Python's
 * json also keeps the last, rapidjson's FindMember (TF Serving's json_tensor.cc, Triton)
 * returns the first. pc_ref_names_twice() finds the bodies read two ways; PC_REF_TWICE_RAW
 * says whether the reference key gives them their bytes (1) or json-c's reading (0, what
 * src/cachekey.c does as this is written).
 *
 * Safety rule: two bodies may share a key only when the model would see the same input.
 * json-c cannot always tell values apart (integers beyond 64 bits saturate, lone UTF-16
 * surrogates become U+FFFD, a "\u0000" in a name cuts it), so a body holding such a value
 * where it is read is keyed by its raw bytes instead: a cache miss is cheap, a wrong answer
 * is not.
 */
#include "cachekey_ref.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#define PC_JSON_DEPTH 64
#define PC_KEY_VERSION "v2:{"
#define PC_KEY_HEAD "predcache-key-v2\n"
#define PC_SHA256_LEN 32

/* Bytes of U+FFFD, which json-c writes in place of a lone surrogate escape. */
static const char replacement_char[] = "\xEF\xBF\xBD";

static void set_err(char *err, size_t errlen, const char *msg, const char *detail, size_t off)
{
    if (err == NULL || errlen == 0)
        return;
    if (detail != NULL)
        snprintf(err, errlen, "%s: %s at offset %zu", msg, detail, off);
    else
        snprintf(err, errlen, "%s", msg);
}

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Parses exactly one JSON value filling s[0..len) (the text need not be NUL-terminated).
 * Strict mode so that texts a JSON model server would reject (comments, trailing commas)
 * do not share a key with valid ones. 0 ok with *root a new reference the caller puts
 * (NULL for the JSON null); -1 with the reason in err.
 */
static int parse_json(const char *s, size_t len, struct json_object **root, char *err,
                      size_t errlen)
{
    static const char what[] = "request body is not valid JSON";
    if (len == 0) {
        set_err(err, errlen, what, "empty body", 0);
        return -1;
    }
    if (len >= INT_MAX) { /* json-c takes an int length */
        set_err(err, errlen, what, "body too large to parse", 0);
        return -1;
    }
    struct json_tokener *tok = json_tokener_new_ex(PC_JSON_DEPTH);
    if (tok == NULL) {
        set_err(err, errlen, "out of memory", NULL, 0);
        return -1;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *v = json_tokener_parse_ex(tok, s, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (jerr == json_tokener_continue) {
        /* A number has no end mark of its own: a NUL tells json-c the input is over. */
        v = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        end = len;
    }
    json_tokener_free(tok);
    if (jerr != json_tokener_success) {
        json_object_put(v);
        set_err(err, errlen, what, json_tokener_error_desc(jerr), end);
        return -1;
    }
    for (size_t i = end; i < len; i++) {
        if (!is_json_space(s[i])) {
            json_object_put(v);
            set_err(err, errlen, what, "trailing data after the value", i);
            return -1;
        }
    }
    *root = v;
    return 0;
}

/* Appends s[0..n) as a JSON string: one fixed escaping, every other byte verbatim. */
static int canon_string(const char *s, size_t n, struct pc_buf *out)
{
    if (memmem(s, n, replacement_char, sizeof replacement_char - 1) != NULL)
        return -1; /* may stand for any lone surrogate: not exact */
    int rc = pc_buf_append_char(out, '"');
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            rc = pc_buf_append(out, "\\\"", 2);
            break;
        case '\\':
            rc = pc_buf_append(out, "\\\\", 2);
            break;
        case '\b':
            rc = pc_buf_append(out, "\\b", 2);
            break;
        case '\f':
            rc = pc_buf_append(out, "\\f", 2);
            break;
        case '\n':
            rc = pc_buf_append(out, "\\n", 2);
            break;
        case '\r':
            rc = pc_buf_append(out, "\\r", 2);
            break;
        case '\t':
            rc = pc_buf_append(out, "\\t", 2);
            break;
        default:
            if (c < 0x20)
                rc = pc_buf_printf(out, "\\u%04x", c);
            else
                rc = pc_buf_append_char(out, (char)c);
        }
    }
    return rc == 0 ? pc_buf_append_char(out, '"') : -1;
}

/* Largest exponent (either sign, written or canonical) accepted; beyond it a number is keyed
 * raw. */
#define PC_EXP_MAX 100000

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Writes u in decimal so that it ends just before end; returns where it starts. */
static char *u64_digits(uint64_t u, char *end)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return end;
}

/*
 * Whether the bare integer ["-"] d[0..k) (no exponent, no leading zero) is one json-c reads
 * saturated (at or beyond INT64_MIN, at or beyond UINT64_MAX), so that canon_int refuses it.
 * Its canonical form is refused whatever its spelling (18446744073709551615.0 too): the form
 * could not be read back, and such a value is never keyed exactly.
 */
static int int_saturates(int neg, const char *d, size_t k)
{
    const char *lim = neg ? "9223372036854775808" : "18446744073709551615";
    size_t ll = strlen(lim);
    return k > ll || (k == ll && memcmp(d, lim, ll) >= 0);
}

/*
 * Appends the canonical form of the JSON number text s[0..n). Purely lexical, so exact:
 * the value is D x 10^E with D the significant digits (leading and trailing zeros
 * stripped, each stripped trailing zero adding one to E), written ["-"] D ["e" E] with
 * the exponent only when E != 0, and every zero (-0, 0.0, 0e5) as "0". So 100, 100.0,
 * 1e2, 1.0E+2 and 10e1 are all "1e2", 1.5 is "15e-1", and two texts get the same form
 * exactly when they denote the same decimal value. O(n), no floating point, no allocation
 * beyond out. -1, out untouched, when s is not a number of the JSON grammar (json-c's
 * strict mode still takes "1.", "1.e5" and "-01.5"), its written exponent or the exponent
 * of its form exceeds PC_EXP_MAX, or its form is a bare integer json-c would read
 * saturated (int_saturates): every form given is itself accepted, unchanged.
 */
static int canon_number(const char *s, size_t n, struct pc_buf *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && s[i] == '-') {
        neg = 1;
        i++;
    }
    size_t int_start = i;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && is_digit(s[i]))
            i++;
    else
        return -1;
    size_t int_end = i, frac_start = i, frac_end = i;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == frac_start)
            return -1;
        frac_end = i;
    }
    int64_t exp = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int exp_neg = 0;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            exp_neg = s[i++] == '-';
        size_t exp_start = i;
        for (; i < n && is_digit(s[i]); i++) {
            exp = exp * 10 + (s[i] - '0');
            if (exp > PC_EXP_MAX)
                return -1;
        }
        if (i == exp_start)
            return -1;
        if (exp_neg)
            exp = -exp;
    }
    if (i != n)
        return -1;

    /* The digits are s[int_start..int_end) then s[frac_start..frac_end): find the first and
     * last nonzero one. A first one in the fraction means the integer part is all zeros. */
    size_t first = int_start;
    while (first < int_end && s[first] == '0')
        first++;
    if (first == int_end) {
        first = frac_start;
        while (first < frac_end && s[first] == '0')
            first++;
        if (first == frac_end)
            return pc_buf_append_char(out, '0'); /* any zero, -0 included */
    }
    size_t last = frac_end; /* one past the last nonzero digit */
    while (last > frac_start && s[last - 1] == '0')
        last--;
    int64_t trailing = (int64_t)(frac_end - last); /* stripped zeros, an E of their own */
    if (last == frac_start) {                      /* the fraction is all zeros */
        last = int_end;
        while (s[last - 1] == '0') /* stops: the integer part holds a nonzero digit */
            last--;
        trailing += (int64_t)(int_end - last);
    }
    int64_t e = exp - (int64_t)(frac_end - frac_start) + trailing;
    if (e > PC_EXP_MAX || e < -PC_EXP_MAX)
        return -1; /* the form must read back: its exponent is a written one too */

    /* Room for sign, digits, "e-" and a 20-digit exponent: one reserve, then plain stores. */
    if (pc_buf_reserve(out, n + 24) != 0)
        return -1;
    char *w = out->data + out->len;
    if (neg)
        *w++ = '-';
    char *digits = w;
    if (first < int_end) {
        size_t end = last < int_end ? last : int_end;
        memcpy(w, s + first, end - first);
        w += end - first;
        first = frac_start;
    }
    if (last > frac_start && last > first) {
        memcpy(w, s + first, last - first);
        w += last - first;
    }
    if (e == 0 && int_saturates(neg, digits, (size_t)(w - digits))) {
        out->data[out->len] = '\0'; /* out as it was */
        return -1;
    }
    if (e != 0) {
        *w++ = 'e';
        if (e < 0)
            *w++ = '-';
        char tmp[20];
        char *p = u64_digits(e < 0 ? (uint64_t)-e : (uint64_t)e, tmp + sizeof tmp);
        size_t k = (size_t)(tmp + sizeof tmp - p);
        memcpy(w, p, k);
        w += k;
    }
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/*
 * json-c keeps no text for integers and saturates those outside int64/uint64 to INT64_MIN
 * or UINT64_MAX, so those two values are ambiguous and refused; every other value is
 * written in decimal and given the same form as a double of that value (100 and 1e2 agree).
 */
static int canon_int(struct json_object *v, struct pc_buf *out)
{
    char tmp[24];
    char *end = tmp + sizeof tmp, *p;
    int64_t i = json_object_get_int64(v);
    if (i == INT64_MIN)
        return -1;
    if (i < INT64_MAX) {
        p = u64_digits(i < 0 ? (uint64_t)-i : (uint64_t)i, end);
        if (i < 0)
            *--p = '-';
    } else {
        uint64_t u = json_object_get_uint64(v);
        if (u == UINT64_MAX)
            return -1;
        p = u64_digits(u, end);
    }
    return canon_number(p, (size_t)(end - p), out);
}

/*
 * A parsed double keeps its exact source text as userdata (json_object_new_double_s(),
 * which json_tokener_parse_ex uses); that text is what is normalised, never the binary
 * value. NaN and Infinity carry no text and, like values that overflow (1e400), are
 * refused rather than given a spelling.
 */
static int canon_double(struct json_object *v, struct pc_buf *out)
{
    const char *text = json_object_get_userdata(v);
    if (text == NULL || !isfinite(json_object_get_double(v)))
        return -1;
    return canon_number(text, strlen(text), out);
}

static int canon_value(struct json_object *v, struct pc_buf *out, int depth);

struct member {
    const char *name;
    struct json_object *value;
};

static int member_cmp(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: bytewise order of the UTF-8 names. */
    return strcmp(((const struct member *)a)->name, ((const struct member *)b)->name);
}

/* Objects: members sorted by name. The member array is owned here; values are borrowed. */
static int canon_object(struct json_object *obj, struct pc_buf *out, int depth)
{
    size_t n = (size_t)json_object_object_length(obj);
    struct member *m = calloc(n ? n : 1, sizeof *m);
    if (m == NULL)
        return -1;
    size_t k = 0;
    struct json_object_iterator it = json_object_iter_begin(obj);
    struct json_object_iterator end = json_object_iter_end(obj);
    for (; !json_object_iter_equal(&it, &end) && k < n; json_object_iter_next(&it), k++) {
        m[k].name = json_object_iter_peek_name(&it);
        m[k].value = json_object_iter_peek_value(&it);
    }
    qsort(m, k, sizeof *m, member_cmp);
    int rc = pc_buf_append_char(out, '{');
    for (size_t i = 0; i < k && rc == 0; i++) {
        if (i > 0)
            rc = pc_buf_append_char(out, ',');
        if (rc == 0)
            rc = canon_string(m[i].name, strlen(m[i].name), out);
        if (rc == 0)
            rc = pc_buf_append_char(out, ':');
        if (rc == 0)
            rc = canon_value(m[i].value, out, depth + 1);
    }
    free(m);
    return rc == 0 ? pc_buf_append_char(out, '}') : -1;
}

static int canon_array(struct json_object *arr, struct pc_buf *out, int depth)
{
    size_t n = json_object_array_length(arr);
    int rc = pc_buf_append_char(out, '[');
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i > 0)
            rc = pc_buf_append_char(out, ',');
        if (rc == 0)
            rc = canon_value(json_object_array_get_idx(arr, i), out, depth + 1);
    }
    return rc == 0 ? pc_buf_append_char(out, ']') : -1;
}

/*
 * Appends the canonical form of v. -1 when v holds a value json-c cannot represent exactly
 * (see canon_int, canon_double, canon_string) or on out of memory; out may then hold a
 * partial form, which the caller discards. Recursion depth is bounded by the tokener's.
 */
static int canon_value(struct json_object *v, struct pc_buf *out, int depth)
{
    if (depth > PC_JSON_DEPTH + 1)
        return -1;
    switch (json_object_get_type(v)) {
    case json_type_null:
        return pc_buf_append(out, "null", 4);
    case json_type_boolean:
        return json_object_get_boolean(v) ? pc_buf_append(out, "true", 4)
                                          : pc_buf_append(out, "false", 5);
    case json_type_int:
        return canon_int(v, out);
    case json_type_double:
        return canon_double(v, out);
    case json_type_string:
        return canon_string(json_object_get_string(v), (size_t)json_object_get_string_len(v), out);
    case json_type_array:
        return canon_array(v, out, depth);
    case json_type_object:
        return canon_object(v, out, depth);
    }
    return -1;
}

/* Runs canon_value and, on failure, leaves out as it was before the call. */
static int canon_append(struct json_object *v, struct pc_buf *out)
{
    size_t start = out->len;
    if (canon_value(v, out, 0) == 0)
        return 0;
    out->len = start;
    if (out->data != NULL)
        out->data[start] = '\0';
    return -1;
}

/* Length of the JSON number (RFC 8259) that s[0..n) starts with; 0 when it starts with none. */
static size_t json_number_len(const char *s, size_t n)
{
    size_t i = 0, d;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && is_digit(s[i]))
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        d = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = i;
        while (i < n && is_digit(s[i]))
            i++;
        if (i == d)
            return 0;
    }
    return i;
}

static int is_number_char(char c)
{
    return is_digit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

static int is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * json-c's strict mode still takes texts that are not JSON and that a JSON model server
 * refuses: single-quoted member names, control characters written raw inside strings
 * ("a<TAB>b" read as "a\tb"), numbers off the grammar ("1.", "-01", "00"; json-c keeps no
 * text for integers), NaN and Infinity; and it drops what it does not keep (a member given
 * twice, fields outside the key) unchecked. Such a body must not share a key with a JSON
 * one (it could be answered from that one's entry): it is keyed raw. One pass over the
 * text; outside strings only JSON's own bytes may appear, numbers must follow the grammar
 * and words must be true, false or null, so on JSON it finds nothing.
 */
static int has_non_json_lexeme(const char *s, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_string) {
            if (c < 0x20)
                return 1;
            if (c == '"')
                in_string = 0;
            else if (c == '\\' && i + 1 < len && (unsigned char)s[++i] < 0x20)
                return 1;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '-' || is_digit((char)c)) {
            size_t n = 1;
            while (i + n < len && is_number_char(s[i + n]))
                n++;
            if (json_number_len(s + i, n) != n)
                return 1;
            i += n - 1;
        } else if (is_letter((char)c)) {
            size_t n = 1;
            while (i + n < len && is_letter(s[i + n]))
                n++;
            if (!(n == 4 && memcmp(s + i, "true", 4) == 0) &&
                !(n == 5 && memcmp(s + i, "false", 5) == 0) &&
                !(n == 4 && memcmp(s + i, "null", 4) == 0))
                return 1;
            i += n - 1;
        } else if (strchr("{}[]:, \t\n\r", c) == NULL || c == '\0') {
            return 1; /* a quote ', a comment, ... */
        }
    }
    return 0;
}

#ifndef PC_REF_TWICE_RAW
#define PC_REF_TWICE_RAW 1
#endif

static size_t skip_ws(const char *s, size_t n, size_t i);
static int twice_in(const char *s, size_t n, size_t i, int depth);

int pc_ref_cachekey_canonical(const char *json, size_t len, struct pc_buf *out)
{
    struct json_object *root;
    if (has_non_json_lexeme(json, len) || parse_json(json, len, &root, NULL, 0) != 0)
        return -1;
    /* an object giving a name twice is read two ways: no canonical form */
    int rc = PC_REF_TWICE_RAW && twice_in(json, len, skip_ws(json, len, 0), 0) != 0
                 ? -1
                 : canon_append(root, out);
    json_object_put(root);
    return rc;
}

/* Cuts out back to len, keeping it NUL-terminated. */
static void buf_cut(struct pc_buf *out, size_t len)
{
    out->len = len;
    if (out->data != NULL)
        out->data[len] = '\0';
}

/* A "\u0000" anywhere (coarse: string values too): such bodies are keyed raw. */
static int has_nul_escape(const char *body, size_t len)
{
    return memmem(body, len, "\\u0000", 6) != NULL;
}

/* ---- a scan of the text: names as written, value spans --------------------------------- */
/* Only run on texts json-c took strictly and has_non_json_lexeme passed: RFC 8259 JSON. */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && is_json_space(s[i]))
        i++;
    return i;
}

/* One past the closing quote of the string starting at s[i]. */
static size_t string_end(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

/* One past the end of the value starting at s[i]. */
static size_t value_end(const char *s, size_t n, size_t i)
{
    if (s[i] == '"')
        return string_end(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (c == '"')
                i = string_end(s, n, i) - 1;
            else if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i + 1;
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != ']' && s[i] != '}' && !is_json_space(s[i]))
        i++;
    return i;
}

struct mspan {
    struct pc_span name;  /* the name's token, quotes included */
    struct pc_span value; /* the value's text */
    char *decoded;        /* as json-c keeps it (cut at a NUL); NULL when not decoded */
};

static void mspans_free(struct mspan *m, size_t n)
{
    for (size_t i = 0; m != NULL && i < n; i++)
        free(m[i].decoded);
    free(m);
}

/* The name token s[0..len) as json-c keeps it: decoded, cut at a NUL. NULL: no memory. */
static char *decode_name(const char *s, size_t len)
{
    struct json_tokener *tok = json_tokener_new_ex(PC_JSON_DEPTH);
    if (tok == NULL)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *v = json_tokener_parse_ex(tok, s, (int)len);
    char *name = NULL;
    if (json_tokener_get_error(tok) == json_tokener_success &&
        json_object_is_type(v, json_type_string))
        name = strdup(json_object_get_string(v));
    json_object_put(v);
    json_tokener_free(tok);
    return name;
}

/* The members of the object at s[i] == '{', in text order, names decoded. 0 ok; -1 no
 * memory. */
static int object_members(const char *s, size_t n, size_t i, struct mspan **out, size_t *count)
{
    struct mspan *m = NULL;
    size_t k = 0, cap = 0;
    size_t j = skip_ws(s, n, i + 1);
    while (j < n && s[j] == '"') {
        if (k == cap) {
            cap = cap ? 2 * cap : 8;
            struct mspan *g = realloc(m, cap * sizeof *g);
            if (g == NULL) {
                mspans_free(m, k);
                return -1;
            }
            m = g;
        }
        size_t ne = string_end(s, n, j);
        size_t vs = skip_ws(s, n, skip_ws(s, n, ne) + 1); /* past the ':' */
        size_t ve = value_end(s, n, vs);
        m[k] = (struct mspan){{j, ne - j}, {vs, ve - vs}, decode_name(s + j, ne - j)};
        if (m[k++].decoded == NULL) {
            mspans_free(m, k);
            return -1;
        }
        j = skip_ws(s, n, ve);
        if (j < n && s[j] == ',')
            j = skip_ws(s, n, j + 1);
    }
    *out = m;
    *count = k;
    return 0;
}

/* The elements of the array at s[i] == '[': spans appended to *out (malloc'ed). */
static int array_elements(const char *s, size_t n, size_t i, struct pc_span **out, size_t *count)
{
    struct pc_span *e = NULL;
    size_t k = 0, cap = 0;
    size_t j = skip_ws(s, n, i + 1);
    while (j < n && s[j] != ']') {
        if (k == cap) {
            cap = cap ? 2 * cap : 8;
            struct pc_span *g = realloc(e, cap * sizeof *g);
            if (g == NULL) {
                free(e);
                return -1;
            }
            e = g;
        }
        size_t ve = value_end(s, n, j);
        e[k++] = (struct pc_span){j, ve - j};
        j = skip_ws(s, n, ve);
        if (j < n && s[j] == ',')
            j = skip_ws(s, n, j + 1);
    }
    *out = e;
    *count = k;
    return 0;
}

/* ---- what a family reads --------------------------------------------------------------- */

static int in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (list[i] != NULL && strcmp(list[i], name) == 0)
            return 1;
    }
    return 0;
}

static int is_tfs(const struct pc_key_params *p)
{
    return p->family == PC_FAMILY_TFS_PREDICT || p->family == PC_FAMILY_TFS_EXAMPLES;
}

/* TF Serving reads its three members, anything else the whole body minus ignore fields. */
static int family_reads(const struct pc_key_params *p, const char *name)
{
    static const char *const predict[] = {"signature_name", "instances", "inputs"};
    static const char *const examples[] = {"signature_name", "context", "examples"};
    if (p->family == PC_FAMILY_TFS_PREDICT)
        return in_list(name, predict, 3);
    if (p->family == PC_FAMILY_TFS_EXAMPLES)
        return in_list(name, examples, 3);
    return !in_list(name, p->ignore_fields, p->n_ignore_fields);
}

/* Which members of a root object a reading takes. */
enum sel {
    SEL_FAMILY, /* the family's: TF Serving's members, or the whole body minus ignore fields */
    SEL_FIELDS, /* the input fields (the unsafe alias) */
    SEL_WHOLE,  /* the whole body minus ignore fields, whatever the family */
};

static int has_member(struct json_object *root, const char *name)
{
    return json_object_object_get_ex(root, name, NULL);
}

/*
 * The reading of a root object: the input fields when one is present; else the family's,
 * except that a TF Serving body holding no input TF Serving reads (instances or inputs;
 * classify / regress: examples) is not TF Serving's to read, and is read whole.
 */
static enum sel reading_of(const struct pc_key_params *p, struct json_object *root)
{
    for (size_t i = 0; i < p->n_input_fields; i++) {
        if (p->input_fields[i] != NULL && has_member(root, p->input_fields[i]))
            return SEL_FIELDS;
    }
    if (p->family == PC_FAMILY_TFS_PREDICT)
        return has_member(root, "instances") || has_member(root, "inputs") ? SEL_FAMILY : SEL_WHOLE;
    if (p->family == PC_FAMILY_TFS_EXAMPLES)
        return has_member(root, "examples") ? SEL_FAMILY : SEL_WHOLE;
    return SEL_FAMILY;
}

/* skip: a name left out besides the reading's (the batch context leaves out "instances"). */
static int selected(const struct pc_key_params *p, enum sel mode, const char *skip,
                    const char *name)
{
    if (skip != NULL && strcmp(name, skip) == 0)
        return 0;
    if (mode == SEL_FIELDS)
        return in_list(name, p->input_fields, p->n_input_fields);
    if (mode == SEL_WHOLE)
        return !in_list(name, p->ignore_fields, p->n_ignore_fields);
    return family_reads(p, name);
}

struct pick {
    const char *name;
    struct json_object *value;
};

static int pick_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pick *)a)->name, ((const struct pick *)b)->name);
}

/*
 * The canonical object of root's members that selected() keeps (json-c has already kept
 * the last of each name). *count of them; *only the one when there is one. 0 ok, -1 when a
 * value has no exact form or no memory.
 */
static int canon_selection(const struct pc_key_params *p, enum sel mode, const char *skip,
                           struct json_object *root, struct pc_buf *out, size_t *count,
                           struct pick *only)
{
    size_t n = (size_t)json_object_object_length(root), k = 0;
    struct pick *m = calloc(n ? n : 1, sizeof *m);
    if (m == NULL)
        return -1;
    json_object_object_foreach(root, name, value)
    {
        if (k < n && selected(p, mode, skip, name))
            m[k++] = (struct pick){name, value};
    }
    qsort(m, k, sizeof *m, pick_cmp);
    int rc = pc_buf_append_char(out, '{');
    for (size_t i = 0; i < k && rc == 0; i++) {
        if (i > 0)
            rc = pc_buf_append_char(out, ',');
        if (rc == 0)
            rc = canon_string(m[i].name, strlen(m[i].name), out);
        if (rc == 0)
            rc = pc_buf_append_char(out, ':');
        if (rc == 0)
            rc = canon_value(m[i].value, out, 1);
    }
    if (rc == 0)
        rc = pc_buf_append_char(out, '}');
    *count = k;
    if (k == 1 && only != NULL)
        *only = m[0];
    free(m);
    return rc;
}

/* ---- names given twice ----------------------------------------------------------------- */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int twice_in(const char *s, size_t n, size_t i, int depth);

/*
 * 1 when the object at s[i] holds a name twice among the members kept (p NULL: all; else
 * those selected() keeps at the root), or a kept member's value does; -1 no memory.
 */
static int object_twice(const char *s, size_t n, size_t i, const struct pc_key_params *p,
                        enum sel mode, int depth)
{
    struct mspan *m;
    size_t k;
    if (depth > PC_JSON_DEPTH + 1 || object_members(s, n, i, &m, &k) != 0)
        return -1;
    char **names = malloc((k ? k : 1) * sizeof *names);
    int rc = names == NULL ? -1 : 0;
    size_t kept = 0;
    for (size_t j = 0; rc == 0 && j < k; j++) {
        if (p != NULL && !selected(p, mode, NULL, m[j].decoded))
            continue;
        names[kept++] = m[j].decoded;
        rc = twice_in(s, n, m[j].value.off, depth + 1);
    }
    if (rc == 0) {
        qsort(names, kept, sizeof *names, str_cmp);
        for (size_t j = 1; j < kept && rc == 0; j++)
            rc = strcmp(names[j - 1], names[j]) == 0;
    }
    free(names);
    mspans_free(m, k);
    return rc;
}

/* 1 when an object in the value at s[i] holds a name twice; -1 no memory. */
static int twice_in(const char *s, size_t n, size_t i, int depth)
{
    if (s[i] == '{')
        return object_twice(s, n, i, NULL, SEL_FAMILY, depth);
    if (s[i] != '[')
        return 0;
    struct pc_span *e;
    size_t k;
    if (array_elements(s, n, i, &e, &k) != 0)
        return -1;
    int rc = 0;
    for (size_t j = 0; j < k && rc == 0; j++)
        rc = twice_in(s, n, e[j].off, depth + 1);
    free(e);
    return rc;
}

/* The body parsed, when it has an exact JSON reading at all: 0 with *root, else -1. */
static int strict_root(const char *body, size_t len, struct json_object **root)
{
    if (body == NULL || len == 0 || has_nul_escape(body, len) || has_non_json_lexeme(body, len))
        return -1;
    return parse_json(body, len, root, NULL, 0);
}

/* names twice in the reading (mode) of a parsed body */
static int twice_parsed(const struct pc_key_params *p, const char *body, size_t len,
                        struct json_object *root, enum sel mode)
{
    size_t i = skip_ws(body, len, 0);
    if (!json_object_is_type(root, json_type_object))
        return is_tfs(p) ? 0 : twice_in(body, len, i, 0) != 0;
    return object_twice(body, len, i, p, mode, 0) != 0;
}

int pc_ref_names_twice(const struct pc_key_params *p, const char *body, size_t len)
{
    struct json_object *root;
    if (strict_root(body, len, &root) != 0)
        return 0;
    int rc = twice_parsed(p, body, len, root,
                          json_object_is_type(root, json_type_object) ? reading_of(p, root)
                                                                      : SEL_FAMILY);
    json_object_put(root);
    return rc;
}

/* ---- the first of a name: the text rapidjson's FindMember reads ------------------------- */

struct named {
    const char *name;
    size_t pos;
};

static int named_cmp(const void *a, const void *b)
{
    const struct named *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

/*
 * Appends the value at s[i] with every later member of a name given twice left out, at
 * every depth: the text a reader that takes the first of a name sees, in json-c's terms.
 * 0 ok, -1 no memory.
 */
static int first_wins(const char *s, size_t n, size_t i, struct pc_buf *out, int depth)
{
    if (depth > PC_JSON_DEPTH + 1)
        return -1;
    if (s[i] == '[') {
        struct pc_span *e;
        size_t k;
        if (array_elements(s, n, i, &e, &k) != 0)
            return -1;
        int rc = pc_buf_append_char(out, '[');
        for (size_t j = 0; j < k && rc == 0; j++) {
            if (j > 0)
                rc = pc_buf_append_char(out, ',');
            if (rc == 0)
                rc = first_wins(s, n, e[j].off, out, depth + 1);
        }
        free(e);
        return rc == 0 ? pc_buf_append_char(out, ']') : -1;
    }
    if (s[i] != '{')
        return pc_buf_append(out, s + i, value_end(s, n, i) - i);
    struct mspan *m;
    size_t k;
    if (object_members(s, n, i, &m, &k) != 0)
        return -1;
    struct named *byname = malloc((k ? k : 1) * sizeof *byname);
    char *dropped = calloc(k ? k : 1, 1);
    int rc = byname == NULL || dropped == NULL ? -1 : 0;
    for (size_t j = 0; rc == 0 && j < k; j++)
        byname[j] = (struct named){m[j].decoded, j};
    if (rc == 0)
        qsort(byname, k, sizeof *byname, named_cmp);
    for (size_t j = 1; rc == 0 && j < k; j++) {
        if (strcmp(byname[j - 1].name, byname[j].name) == 0)
            dropped[byname[j].pos] = 1; /* not the first of its name */
    }
    if (rc == 0)
        rc = pc_buf_append_char(out, '{');
    for (size_t j = 0, kept = 0; rc == 0 && j < k; j++) {
        if (dropped[j])
            continue;
        if (kept++ > 0)
            rc = pc_buf_append_char(out, ',');
        rc |= pc_buf_append(out, s + m[j].name.off, m[j].name.len);
        rc |= pc_buf_append_char(out, ':');
        if (rc == 0)
            rc = first_wins(s, n, m[j].value.off, out, depth + 1);
    }
    free(byname);
    free(dropped);
    mspans_free(m, k);
    return rc == 0 ? pc_buf_append_char(out, '}') : -1;
}

/* The body as first-wins readers see it (strict JSON bodies only). 0 ok, -1 no memory. */
static int first_wins_text(const char *body, size_t len, struct pc_buf *out)
{
    return first_wins(body, len, skip_ws(body, len, 0), out, 0);
}

/* ---- the material ---------------------------------------------------------------------- */

/* The JSON reading of a parsed body: form "\n" input appended to out. -1: keyed raw. */
static int json_input(const struct pc_key_params *p, struct json_object *root, struct pc_buf *out,
                      enum pc_key_kind *kind)
{
    if (!json_object_is_type(root, json_type_object)) {
        if (is_tfs(p))
            return -1;
        *kind = PC_KEY_BODY;
        return pc_buf_append_str(out, "json\n") == 0 ? canon_value(root, out, 0) : -1;
    }
    enum sel mode = reading_of(p, root);
    if (mode == SEL_FIELDS) {
        size_t n;
        *kind = PC_KEY_FIELDS;
        return pc_buf_append_str(out, "fields\n") == 0
                   ? canon_selection(p, mode, NULL, root, out, &n, NULL)
                   : -1;
    }
    int tfs = is_tfs(p) && mode == SEL_FAMILY;
    size_t start = out->len, n = 0;
    struct pick only = {NULL, NULL};
    int rc = pc_buf_append_str(out, tfs ? "tfs\n" : "json\n");
    if (rc == 0)
        rc = canon_selection(p, mode, NULL, root, out, &n, &only);
    const char *pf = p->path_field;
    /* the path form: a whole-body reading of nothing but a string path field */
    if (!tfs && n == 1 && pf != NULL && pf[0] != '\0' && strcmp(only.name, pf) == 0 &&
        json_object_is_type(only.value, json_type_string)) {
        /* the path form: the string's bytes, unless U+FFFD stands for a lone surrogate */
        const char *s = json_object_get_string(only.value);
        size_t sl = (size_t)json_object_get_string_len(only.value);
        buf_cut(out, start);
        *kind = PC_KEY_PATH;
        if (memmem(s, sl, replacement_char, sizeof replacement_char - 1) != NULL)
            return -1;
        return pc_buf_append_str(out, "path\n") == 0 ? pc_buf_append(out, s, sl) : -1;
    }
    *kind = PC_KEY_BODY;
    return rc;
}

int pc_ref_cachekey_material(const struct pc_key_params *p, const char *body, size_t len,
                             int body_is_json, struct pc_buf *out, enum pc_key_kind *kind,
                             char *err, size_t errlen)
{
    size_t start = out->len;
    if (body == NULL)
        len = 0;
    *kind = PC_KEY_RAW;
    struct json_object *root;
    /* A body that merely may be JSON is keyed raw when it is not: no reason to report. */
    if (parse_json(body, len, &root, body_is_json ? err : NULL, body_is_json ? errlen : 0) != 0) {
        if (body_is_json)
            return -1;
    } else {
        int rc = -1;
        if (!has_nul_escape(body, len) && !has_non_json_lexeme(body, len) &&
            !(PC_REF_TWICE_RAW && pc_ref_names_twice(p, body, len)))
            rc = json_input(p, root, out, kind);
        json_object_put(root);
        if (rc == 0)
            return 0;
    }
    buf_cut(out, start);
    *kind = PC_KEY_RAW;
    int rc = pc_buf_append_str(out, "raw\n");
    if (len > 0)
        rc |= pc_buf_append(out, body, len);
    return rc;
}

/* ---- keys ------------------------------------------------------------------------------ */

/* prefix "v2:{" hex(SHA-256(a b)) "}" into out. 0 ok, -1 on failure. */
static int make_key(const char *prefix, const char *a, size_t alen, const char *b, size_t blen,
                    char out[PC_KEY_MAX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             (alen == 0 || EVP_DigestUpdate(ctx, a, alen) == 1) &&
             (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == PC_SHA256_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    char hex[2 * PC_SHA256_LEN + 1];
    for (unsigned int i = 0; i < PC_SHA256_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(out, PC_KEY_MAX, "%s%s%s}", prefix, PC_KEY_VERSION, hex);
    return 0;
}

static int prefix_fits(const char *prefix)
{
    return strlen(prefix) + strlen(PC_KEY_VERSION) + 2 * PC_SHA256_LEN + 2 <= PC_KEY_MAX;
}

int pc_ref_cachekey_head(const struct pc_key_head *h, struct pc_buf *out)
{
    const char *const names[] = {"backend", "method", "path", "query", "media", "scope"};
    const char *const values[] = {h->backend, h->method, h->path, h->query, h->media, h->scope};
    const char *ns = h->ns != NULL ? h->ns : "";
    if (strchr(ns, '\n') != NULL)
        return -1;
    int rc = pc_buf_append_str(out, PC_KEY_HEAD);
    for (size_t i = 0; i < 6; i++) {
        const char *v = values[i] != NULL ? values[i] : "";
        if (strchr(v, '\n') != NULL)
            return -1;
        rc |= pc_buf_printf(out, "%s %s\n", names[i], v);
    }
    rc |= pc_buf_append_str(out, "vary ");
    if (h->vary_len > 0)
        rc |= pc_buf_append(out, h->vary, h->vary_len);
    rc |= pc_buf_printf(out, "\nnamespace %s\n", ns);
    return rc != 0 ? -1 : 0;
}

int pc_ref_cachekey_body(const struct pc_key_params *p, const char *head, size_t head_len,
                         const char *body, size_t len, int body_is_json, char out[PC_KEY_MAX],
                         enum pc_key_kind *kind, char *err, size_t errlen)
{
    const char *prefix = p->prefix ? p->prefix : "";
    if (!prefix_fits(prefix)) {
        set_err(err, errlen, "cache key prefix too long", NULL, 0);
        return -1;
    }
    struct pc_buf m;
    pc_buf_init(&m);
    enum pc_key_kind k;
    if (pc_ref_cachekey_material(p, body, len, body_is_json, &m, &k, err, errlen) != 0) {
        pc_buf_release(&m);
        return -1;
    }
    int rc = make_key(prefix, head, head_len, m.data, m.len, out);
    pc_buf_release(&m);
    if (rc != 0) {
        set_err(err, errlen, "SHA-256 failed", NULL, 0);
        return -1;
    }
    if (kind != NULL)
        *kind = k;
    return 0;
}

int pc_ref_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                           size_t len, int body_is_json, char out[PC_KEY_MAX],
                           enum pc_key_kind *kind, char *err, size_t errlen)
{
    struct pc_key_head h = {.path = route, .ns = p->namespace_};
    struct pc_buf head;
    pc_buf_init(&head);
    if (route == NULL || pc_ref_cachekey_head(&h, &head) != 0) {
        pc_buf_release(&head);
        set_err(err, errlen, "namespace and route must be set and hold no newline", NULL, 0);
        return -1;
    }
    int rc = pc_ref_cachekey_body(p, head.data, head.len, body, len, body_is_json, out, kind, err,
                                  errlen);
    pc_buf_release(&head);
    return rc;
}

int pc_ref_cachekey_herd(const char *prefix, const char (*keys)[PC_KEY_MAX], const size_t *pick,
                         size_t n, char out[PC_KEY_MAX])
{
    const char *pf = prefix != NULL ? prefix : "";
    if (!prefix_fits(pf))
        return -1;
    struct pc_buf m;
    pc_buf_init(&m);
    int rc = pc_buf_append_str(&m, "herd\n");
    for (size_t i = 0; i < n; i++)
        rc |= pc_buf_printf(&m, "%s\n", keys[pick[i]]);
    if (rc == 0)
        rc = make_key(pf, m.data, m.len, NULL, 0, out);
    pc_buf_release(&m);
    return rc;
}

/* ---- a batch's instances --------------------------------------------------------------- */

/*
 * The instances member of a root object: its value's span when exactly one member decodes
 * to "instances" and it is spelled so; *sig the value of the last member decoding to
 * "signature_name" (len 0: none). 0 found, 1 not, -1 no memory.
 */
static int instances_span(const char *body, size_t len, struct pc_span *val, struct pc_span *sig)
{
    struct mspan *m;
    size_t k, found = 0;
    if (object_members(body, len, skip_ws(body, len, 0), &m, &k) != 0)
        return -1;
    *sig = (struct pc_span){0, 0};
    for (size_t i = 0; i < k; i++) {
        if (strcmp(m[i].decoded, "instances") == 0) {
            found += m[i].name.len == 11 && memcmp(body + m[i].name.off, "\"instances\"", 11) == 0
                         ? 1
                         : 2;
            *val = m[i].value;
        } else if (strcmp(m[i].decoded, "signature_name") == 0) {
            *sig = m[i].value;
        }
    }
    mspans_free(m, k);
    return found == 1 ? 0 : 1;
}

/*
 * A batch read one element at a time: *n element spans and, for each, its reading
 * canonical(context) "\n" canonical(element) as a malloc'ed string (canonical JSON holds no
 * NUL). twice_raw: a body read two ways (pc_ref_names_twice) is no such batch. 0, 1 (not a
 * batch), -1 no memory.
 */
static int read_batch(const struct pc_key_params *p, const char *body, size_t len, int twice_raw,
                      struct pc_span **spans, struct pc_span *sig, char ***texts, size_t *n)
{
    struct json_object *root, *arr = NULL;
    if (len >= INT_MAX || strict_root(body, len, &root) != 0)
        return 1;
    struct pc_span val = {0, 0}, *e = NULL;
    size_t k = 0;
    struct pc_buf ctx;
    pc_buf_init(&ctx);
    char **t = NULL;
    int rc = json_object_is_type(root, json_type_object) ? instances_span(body, len, &val, sig) : 1;
    if (rc == 0 && twice_raw && twice_parsed(p, body, len, root, SEL_FAMILY))
        rc = 1;
    /* the elements are keyed one by one, whatever the family reads: none may give a name
     * twice either */
    if (rc == 0 && twice_raw && twice_in(body, len, val.off, 1) != 0)
        rc = 1;
    if (rc == 0 &&
        (!json_object_object_get_ex(root, "instances", &arr) ||
         !json_object_is_type(arr, json_type_array) || json_object_array_length(arr) == 0))
        rc = 1;
    if (rc == 0) { /* the context: what the family reads besides the batch */
        size_t unused;
        rc = canon_selection(p, SEL_FAMILY, "instances", root, &ctx, &unused, NULL) == 0 ? 0 : 1;
    }
    if (rc == 0)
        rc = array_elements(body, len, val.off, &e, &k);
    if (rc == 0 && k != json_object_array_length(arr))
        rc = -1; /* the scan and json-c disagree: the reference itself is wrong */
    if (rc == 0 && (t = calloc(k, sizeof *t)) == NULL)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < k; i++) {
        struct pc_buf m;
        pc_buf_init(&m);
        rc = pc_buf_append(&m, ctx.data, ctx.len) | pc_buf_append_char(&m, '\n');
        if (rc == 0 && canon_value(json_object_array_get_idx(arr, i), &m, 1) != 0)
            rc = 1;
        t[i] = pc_buf_steal(&m, NULL);
        if (rc == 0 && t[i] == NULL)
            rc = -1;
    }
    json_object_put(root);
    pc_buf_release(&ctx);
    if (rc != 0) {
        for (size_t i = 0; t != NULL && i < k; i++)
            free(t[i]);
        free(t);
        free(e);
        return rc;
    }
    *spans = e;
    *texts = t;
    *n = k;
    return 0;
}

static void texts_free(char **t, size_t n)
{
    for (size_t i = 0; t != NULL && i < n; i++)
        free(t[i]);
    free(t);
}

int pc_ref_cachekey_instances(const struct pc_key_params *p, const char *head, size_t head_len,
                              const char *body, size_t len, struct pc_span **spans, size_t *n,
                              struct pc_span *sig, char (**keys)[PC_KEY_MAX])
{
    const char *prefix = p->prefix ? p->prefix : "";
    if (!prefix_fits(prefix))
        return 1;
    char **t;
    size_t k;
    struct pc_span *e;
    int rc = read_batch(p, body, len, PC_REF_TWICE_RAW, &e, sig, &t, &k);
    if (rc != 0)
        return rc;
    char(*out)[PC_KEY_MAX] = malloc(k * sizeof *out);
    struct pc_buf m;
    pc_buf_init(&m);
    rc = out == NULL ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < k; i++) {
        m.len = 0;
        rc = pc_buf_append_str(&m, "instance\n") | pc_buf_append_str(&m, t[i]);
        if (rc == 0)
            rc = make_key(prefix, head, head_len, m.data, m.len, out[i]);
    }
    pc_buf_release(&m);
    texts_free(t, k);
    if (rc != 0) {
        free(out);
        free(e);
        return rc;
    }
    *spans = e;
    *n = k;
    *keys = out;
    return 0;
}

int pc_ref_instance_readings(const struct pc_key_params *p, const char *body, size_t len,
                             int last_wins, char ***readings, size_t *n)
{
    struct pc_span *e, sig;
    int rc = read_batch(p, body, len, 0, &e, &sig, readings, n);
    if (rc != 0)
        return rc;
    free(e);
    if (last_wins)
        return 0;
    /* the same readings for the readers that take the first of a name, or none */
    struct pc_buf text;
    pc_buf_init(&text);
    char **first = NULL;
    size_t k = 0;
    rc = first_wins_text(body, len, &text);
    if (rc == 0)
        rc = read_batch(p, text.data, text.len, 0, &e, &sig, &first, &k);
    if (rc == 0) {
        free(e);
        for (size_t i = 0; rc == 0 && i < k; i++)
            rc = k != *n || strcmp(first[i], (*readings)[i]) != 0;
        texts_free(first, k);
    }
    pc_buf_release(&text);
    if (rc != 0) {
        texts_free(*readings, *n);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

void pc_ref_readings_free(char **readings, size_t n)
{
    texts_free(readings, n);
}

/* ---- parameter sets -------------------------------------------------------------------- */

static const char *const json_noise[] = {"request_id"};
static const char *const kserve_noise[] = {"id"};
static const char *const odd_noise[] = {"", "x\"\n", NULL, "\xC3\xA9", "instances"};
static const char *const default_fields[] = {"instances", "inputs", "image_data", "img_base64"};
static const char *const dup_fields[] = {"b", "a", NULL, "b", "\xEF\xBF\xBD"};

const struct pc_key_params pc_ref_params[] = {
    {"default", "pc:", NULL, 0, "file_path", PC_FAMILY_TFS_PREDICT, NULL, 0, NULL, 0},
    {"default", "pc:", NULL, 0, "file_path", PC_FAMILY_TFS_EXAMPLES, NULL, 0, NULL, 0},
    {"default", "pc:", NULL, 0, "file_path", PC_FAMILY_KSERVE, kserve_noise, 1, NULL, 0},
    {"default", "pc:", NULL, 0, "file_path", PC_FAMILY_JSON, json_noise, 1, NULL, 0},
    {"ns", "", NULL, 0, "p", PC_FAMILY_JSON, NULL, 0, NULL, 0},
    {"", NULL, NULL, 0, "instances", PC_FAMILY_JSON, odd_noise, 5, NULL, 0},
    {"default", "pc:", default_fields, 4, "file_path", PC_FAMILY_TFS_PREDICT, NULL, 0, NULL, 0},
    {"default", "predcache:", dup_fields, 5, "a", PC_FAMILY_JSON, json_noise, 1, NULL, 0},
};
const size_t pc_ref_n_params = sizeof pc_ref_params / sizeof pc_ref_params[0];

/* ---- what the model server sees -------------------------------------------------------- */

/* json-c's reading of the body (the last of a name), tagged, appended to out. */
static int reading_last(const struct pc_key_params *p, const char *body, size_t len,
                        struct pc_buf *out)
{
    size_t start = out->len;
    struct json_object *root;
    if (strict_root(body, len, &root) == 0) {
        int rc;
        size_t n;
        if (!json_object_is_type(root, json_type_object)) {
            rc = is_tfs(p) ? -1 : pc_buf_append_str(out, "json\n") | canon_value(root, out, 0);
        } else {
            enum sel mode = reading_of(p, root);
            rc = pc_buf_append_str(out, mode == SEL_FIELDS ? "fields\n" : "json\n") |
                 canon_selection(p, mode, NULL, root, out, &n, NULL);
        }
        json_object_put(root);
        if (rc == 0)
            return 0;
    }
    buf_cut(out, start);
    int rc = pc_buf_append_str(out, "raw\n");
    if (len > 0)
        rc |= pc_buf_append(out, body, len);
    return rc;
}

int pc_ref_reading(const struct pc_key_params *p, const char *body, size_t len, int last_wins,
                   struct pc_buf *out)
{
    if (body == NULL)
        len = 0;
    size_t start = out->len;
    int rc = reading_last(p, body, len, out);
    if (rc != 0 || last_wins || memcmp(out->data + start, "raw\n", 4) == 0)
        return rc;
    /* the same reading for the readers that take the first of a name, or none */
    struct pc_buf text, first;
    pc_buf_init(&text);
    pc_buf_init(&first);
    rc = first_wins_text(body, len, &text);
    if (rc == 0)
        rc = reading_last(p, text.data, text.len, &first);
    if (rc == 0 &&
        (first.len != out->len - start || memcmp(first.data, out->data + start, first.len) != 0)) {
        buf_cut(out, start);
        rc = pc_buf_append_str(out, "raw\n") | pc_buf_append(out, body, len);
    }
    pc_buf_release(&text);
    pc_buf_release(&first);
    return rc;
}
