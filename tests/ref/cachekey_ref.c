/*
 * cachekey_ref: the v1 key derivation as it was built on json-c 0.16, kept only as the
 * reference that tests/unit/test_canon.c and tests/fuzz/fuzz_canon.c hold src/cachekey.c
 * (src/canon.c) to: same keys, same kinds, same errors, for every input. Never linked into
 * predcache. The text below is the shipped implementation with its entry points renamed.
 *
 *     body --parse (json-c, strict, depth 64)--> object?
 *        |-- holds input fields --> canonical JSON of those fields    (PC_KEY_FIELDS)
 *        |-- holds only a string path field --> "path:" + path         (PC_KEY_PATH)
 *        `-- anything else, or not JSON --> raw body bytes             (PC_KEY_RAW)
 *     key = prefix "v1:" hex(SHA-256(namespace "\n" route "\n" input))
 *
 * Safety rule: two bodies may share a key only when the model would see the same input.
 * json-c cannot always tell values apart (integers beyond 64 bits saturate, lone UTF-16
 * surrogates become U+FFFD, a "\u0000" in a key truncates it), so when a body holds such a
 * value its JSON reading is refused and it is keyed by its raw bytes instead: a cache miss
 * is cheap, a wrong answer is not.
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
#define PC_KEY_VERSION "v1:"
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

int pc_ref_cachekey_canonical(const char *json, size_t len, struct pc_buf *out)
{
    struct json_object *root;
    if (has_non_json_lexeme(json, len) || parse_json(json, len, &root, NULL, 0) != 0)
        return -1;
    int rc = canon_append(root, out);
    json_object_put(root);
    return rc;
}

/*
 * A key holding "\u0000" is cut short at the NUL by json-c, so {"a\u0000b":..} would read
 * as {"a":..}. Such bodies are keyed raw; the scan is coarse (also hits string values) but
 * only ever costs cache sharing, never correctness.
 */
static int has_nul_escape(const char *body, size_t len)
{
    return memmem(body, len, "\\u0000", 6) != NULL;
}

/*
 * Builds the FIELDS input: {field: value} of the configured fields present in obj, in
 * canonical form. 1 when written to input, 0 when obj holds none of them, -1 when the
 * values are not exact (then the body is keyed raw).
 */
static int fields_input(const struct pc_key_params *p, struct json_object *obj,
                        struct pc_buf *input)
{
    struct json_object *sel = json_object_new_object();
    if (sel == NULL)
        return -1;
    int found = 0;
    for (size_t i = 0; i < p->n_input_fields; i++) {
        const char *name = p->input_fields[i];
        struct json_object *v;
        if (name == NULL || !json_object_object_get_ex(obj, name, &v))
            continue;
        /* sel takes a reference of its own; a name listed twice just replaces itself. */
        if (json_object_object_add(sel, name, json_object_get(v)) != 0) {
            json_object_put(v);
            found = -1;
            break;
        }
        found = 1;
    }
    if (found == 1 && canon_append(sel, input) != 0)
        found = -1;
    json_object_put(sel);
    return found;
}

/* Builds the PATH input: 1 when obj's path field is a string, else 0; -1 if not exact. */
static int path_input(const struct pc_key_params *p, struct json_object *obj, struct pc_buf *input)
{
    struct json_object *v;
    if (p->path_field == NULL || p->path_field[0] == '\0' ||
        !json_object_object_get_ex(obj, p->path_field, &v) ||
        !json_object_is_type(v, json_type_string))
        return 0;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (memmem(s, n, replacement_char, sizeof replacement_char - 1) != NULL)
        return -1;
    if (pc_buf_append(input, "path:", 5) != 0 || pc_buf_append(input, s, n) != 0)
        return -1;
    return 1;
}

/*
 * Chooses the input of the key material. On 0, *kind is set and, unless it is
 * PC_KEY_RAW, input holds the bytes (raw input is the borrowed body itself).
 * -1 only when body_is_json and the body is not JSON (reason in err).
 */
static int choose_input(const struct pc_key_params *p, const char *body, size_t len,
                        int body_is_json, struct pc_buf *input, enum pc_key_kind *kind, char *err,
                        size_t errlen)
{
    *kind = PC_KEY_RAW;
    /* A body that merely may be JSON is keyed raw when it is not: no reason to report. */
    struct json_object *root;
    if (parse_json(body, len, &root, body_is_json ? err : NULL, body_is_json ? errlen : 0) != 0)
        return body_is_json ? -1 : 0;
    if (json_object_is_type(root, json_type_object) && !has_nul_escape(body, len) &&
        !has_non_json_lexeme(body, len)) {
        int rc = fields_input(p, root, input);
        if (rc == 1)
            *kind = PC_KEY_FIELDS;
        else if (rc == 0 && path_input(p, root, input) == 1)
            *kind = PC_KEY_PATH;
    }
    json_object_put(root);
    if (*kind == PC_KEY_RAW) { /* drop any partial input; the raw body is used instead */
        input->len = 0;
        if (input->data != NULL)
            input->data[0] = '\0';
    }
    return 0;
}

/* hex(SHA-256(ns "\n" route "\n" input)) into hex[65]. Streams: the body is not copied. */
static int hash_material(const char *ns, const char *route, const char *input, size_t len,
                         char hex[2 * PC_SHA256_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, ns, strlen(ns)) == 1 && EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
             EVP_DigestUpdate(ctx, route, strlen(route)) == 1 &&
             EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
             (len == 0 || EVP_DigestUpdate(ctx, input, len) == 1) &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == PC_SHA256_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < PC_SHA256_LEN; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0x0f];
    }
    hex[2 * PC_SHA256_LEN] = '\0';
    return 0;
}

/*
 * Checks what the material format cannot carry: a "\n" in the namespace or route would
 * let two different (namespace, route) pairs produce the same material.
 */
static int check_params(const char *ns, const char *prefix, const char *route, char *err,
                        size_t errlen)
{
    if (route == NULL || strchr(route, '\n') != NULL || strchr(ns, '\n') != NULL) {
        set_err(err, errlen, "namespace and route must be set and hold no newline", NULL, 0);
        return -1;
    }
    if (strlen(prefix) + strlen(PC_KEY_VERSION) + 2 * PC_SHA256_LEN + 1 > PC_KEY_MAX) {
        set_err(err, errlen, "cache key prefix too long", NULL, 0);
        return -1;
    }
    return 0;
}

int pc_ref_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                           size_t len, int body_is_json, char out[PC_KEY_MAX],
                           enum pc_key_kind *kind, char *err, size_t errlen)
{
    const char *ns = p->namespace_ ? p->namespace_ : "";
    const char *prefix = p->prefix ? p->prefix : "";
    if (check_params(ns, prefix, route, err, errlen) != 0)
        return -1;
    if (body == NULL)
        len = 0;
    enum pc_key_kind k;
    struct pc_buf input;
    pc_buf_init(&input);
    if (choose_input(p, body, len, body_is_json, &input, &k, err, errlen) != 0) {
        pc_buf_release(&input);
        return -1;
    }
    char hex[2 * PC_SHA256_LEN + 1];
    int rc = k == PC_KEY_RAW ? hash_material(ns, route, body, len, hex)
                             : hash_material(ns, route, input.data, input.len, hex);
    pc_buf_release(&input);
    if (rc != 0) {
        set_err(err, errlen, "SHA-256 failed", NULL, 0);
        return -1;
    }
    snprintf(out, PC_KEY_MAX, "%s%s%s", prefix, PC_KEY_VERSION, hex);
    if (kind != NULL)
        *kind = k;
    return 0;
}

int pc_ref_cachekey_instance(const struct pc_key_params *p, const char *route,
                             const char *signature, size_t sig_len, const char *inst,
                             size_t inst_len, char out[PC_KEY_MAX], char *err, size_t errlen)
{
    const char *ns = p->namespace_ ? p->namespace_ : "";
    const char *prefix = p->prefix ? p->prefix : "";
    if (check_params(ns, prefix, route, err, errlen) != 0)
        return -1;
    if (memchr(signature, '\n', sig_len) != NULL || has_nul_escape(inst, inst_len)) {
        set_err(err, errlen, "instance cannot be keyed on its own", NULL, 0);
        return -1;
    }
    struct pc_buf input;
    pc_buf_init(&input);
    int rc = pc_buf_append_str(&input, "instance\n");
    rc |= pc_buf_append(&input, signature, sig_len);
    rc |= pc_buf_append_char(&input, '\n');
    if (rc != 0 || pc_ref_cachekey_canonical(inst, inst_len, &input) != 0) {
        pc_buf_release(&input);
        set_err(err, errlen, "instance cannot be keyed on its own", NULL, 0);
        return -1;
    }
    char hex[2 * PC_SHA256_LEN + 1];
    rc = hash_material(ns, route, input.data, input.len, hex);
    pc_buf_release(&input);
    if (rc != 0) {
        set_err(err, errlen, "SHA-256 failed", NULL, 0);
        return -1;
    }
    snprintf(out, PC_KEY_MAX, "%s%s%s", prefix, PC_KEY_VERSION, hex);
    return 0;
}
