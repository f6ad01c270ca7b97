/*
 * batch: spans, sub-requests, merges and instance values for per-instance caching.
 *
 * The scanner below accepts exactly the JSON grammar of RFC 8259 (strict strings with
 * their escapes, numbers, literals, nesting bounded by PC_BATCH_MAX_DEPTH) and records
 * byte offsets instead of building objects, so spliced bodies keep the sender's bytes.
 */
#include "predcache/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- scanner ----------------------------------------------------------------------- */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* s[i] == '"'. Returns the index after the closing quote, or 0 on a malformed string. */
static size_t scan_string(const char *s, size_t i, size_t n)
{
    i++;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (i + 1 >= n)
                return 0;
            char e = s[i + 1];
            if (e == 'u') {
                if (i + 5 >= n || !is_hex(s[i + 2]) || !is_hex(s[i + 3]) || !is_hex(s[i + 4]) ||
                    !is_hex(s[i + 5]))
                    return 0;
                i += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return 0;
            i += 2;
            continue;
        }
        i++;
    }
    return 0;
}

static size_t scan_digits(const char *s, size_t i, size_t n)
{
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* Returns the index after the number, or 0 when s[i..] is not a JSON number. */
static size_t scan_number(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (s[i] == '0')
        i++;
    else if (s[i] >= '1' && s[i] <= '9')
        i = scan_digits(s, i, n);
    else
        return 0;
    if (i < n && s[i] == '.') {
        size_t j = scan_digits(s, i + 1, n);
        if (j == i + 1)
            return 0;
        i = j;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t j = scan_digits(s, i, n);
        if (j == i)
            return 0;
        i = j;
    }
    return i;
}

static size_t scan_value(const char *s, size_t i, size_t n, int depth);

/* s[i] is '[' or '{'. Returns the index after the closing bracket, or 0. When elems is
 * given (arrays only), records each element's span. */
static size_t scan_container(const char *s, size_t i, size_t n, int depth,
                             struct pc_batch_array *elems)
{
    char close = s[i] == '[' ? ']' : '}';
    int object = close == '}';
    if (depth >= PC_BATCH_MAX_DEPTH)
        return 0;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == close)
        return i + 1;
    for (;;) {
        if (object) {
            if (i >= n || s[i] != '"' || (i = scan_string(s, i, n)) == 0)
                return 0;
            i = skip_ws(s, i, n);
            if (i >= n || s[i] != ':')
                return 0;
            i = skip_ws(s, i + 1, n);
        }
        size_t start = i;
        if ((i = scan_value(s, i, n, depth + 1)) == 0)
            return 0;
        if (elems != NULL) {
            if (elems->n == elems->cap) {
                size_t cap = elems->cap ? elems->cap * 2 : 16;
                struct pc_span *e = realloc(elems->elems, cap * sizeof *e);
                if (e == NULL)
                    return 0;
                elems->elems = e;
                elems->cap = cap;
            }
            elems->elems[elems->n++] = (struct pc_span){start, i - start};
        }
        i = skip_ws(s, i, n);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, i + 1, n);
            continue;
        }
        if (i < n && s[i] == close)
            return i + 1;
        return 0;
    }
}

static size_t scan_value(const char *s, size_t i, size_t n, int depth)
{
    if (i >= n)
        return 0;
    switch (s[i]) {
    case '{':
    case '[':
        return scan_container(s, i, n, depth, NULL);
    case '"':
        return scan_string(s, i, n);
    case 't':
        return n - i >= 4 && memcmp(s + i, "true", 4) == 0 ? i + 4 : 0;
    case 'f':
        return n - i >= 5 && memcmp(s + i, "false", 5) == 0 ? i + 5 : 0;
    case 'n':
        return n - i >= 4 && memcmp(s + i, "null", 4) == 0 ? i + 4 : 0;
    default:
        return scan_number(s, i, n);
    }
}

/*
 * Walks the members of a top-level object. For the member named `array_key` (unescaped
 * spelling only) whose value is an array, records its elements in arr; for `string_key`,
 * records the value's span. 0 ok; 1 not an object, or the key is missing, given twice or
 * not an array; -1 not valid JSON.
 */
static int scan_top(const char *s, size_t n, const char *array_key, struct pc_batch_array *arr,
                    const char *string_key, struct pc_span *str)
{
    size_t i = skip_ws(s, 0, n);
    if (i >= n)
        return -1;
    if (s[i] != '{') { /* valid JSON of another kind is "not a batch", not an error */
        size_t j = scan_value(s, i, n, 0);
        return j != 0 && skip_ws(s, j, n) == n ? 1 : -1;
    }
    int found = 0, twice = 0;
    size_t akl = strlen(array_key), skl = string_key ? strlen(string_key) : 0;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            size_t ks = i;
            if (i >= n || s[i] != '"' || (i = scan_string(s, i, n)) == 0)
                return -1;
            size_t klen = i - ks - 2;
            const char *key = s + ks + 1;
            i = skip_ws(s, i, n);
            if (i >= n || s[i] != ':')
                return -1;
            i = skip_ws(s, i + 1, n);
            size_t vs = i;
            if (klen == akl && memcmp(key, array_key, akl) == 0) {
                twice |= found;
                found = 1;
                if (i < n && s[i] == '[') {
                    arr->n = 0;
                    i = scan_container(s, i, n, 1, arr);
                } else {
                    found = -1; /* present but not an array */
                    i = scan_value(s, i, n, 1);
                }
            } else {
                i = scan_value(s, i, n, 1);
                if (i != 0 && string_key != NULL && klen == skl &&
                    memcmp(key, string_key, skl) == 0)
                    *str = (struct pc_span){vs, i - vs};
            }
            if (i == 0)
                return -1;
            i = skip_ws(s, i, n);
            if (i < n && s[i] == ',') {
                i = skip_ws(s, i + 1, n);
                continue;
            }
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            return -1;
        }
    }
    if (skip_ws(s, i, n) != n)
        return -1;
    return found == 1 && !twice ? 0 : 1;
}

/* s[i] == '['. Counts its elements up to max + 1, keeping nothing: the index after the
 * array, or after the element past max (*over set); 0 when not valid JSON up to there. */
static size_t count_array(const char *s, size_t i, size_t n, size_t max, int *over)
{
    size_t k = 0;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == ']')
        return i + 1;
    for (;;) {
        if ((i = scan_value(s, i, n, 2)) == 0)
            return 0;
        if (++k > max) {
            *over = 1;
            return i;
        }
        i = skip_ws(s, i, n);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, i + 1, n);
            continue;
        }
        return i < n && s[i] == ']' ? i + 1 : 0;
    }
}

int pc_batch_exceeds(const char *s, size_t n, size_t max)
{
    return pc_batch_exceeds_at(s, n, "instances", max);
}

int pc_batch_exceeds_at(const char *s, size_t n, const char *member, size_t max)
{
    size_t ml = strlen(member);
    /* k elements take 2k + 1 bytes at least ('[', k values, k - 1 commas, ']'), and the
     * object around them 14 more: a shorter body cannot hold more than max. */
    if (n / 2 <= max)
        return 0;
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '{')
        return 0;
    i = skip_ws(s, i + 1, n);
    for (;;) {
        size_t ks = i;
        if (i >= n || s[i] != '"' || (i = scan_string(s, i, n)) == 0)
            return 0;
        int inst = i - ks == ml + 2 && memcmp(s + ks + 1, member, ml) == 0;
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != ':')
            return 0;
        i = skip_ws(s, i + 1, n);
        int over = 0;
        i = inst && i < n && s[i] == '[' ? count_array(s, i, n, max, &over)
                                         : scan_value(s, i, n, 1);
        if (over)
            return 1;
        if (i == 0)
            return 0;
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != ',')
            return 0;
        i = skip_ws(s, i + 1, n);
    }
}

/* ---- requests and responses -------------------------------------------------------- */

void pc_batch_array_release(struct pc_batch_array *a)
{
    if (a == NULL)
        return;
    free(a->elems);
    memset(a, 0, sizeof *a);
}

void pc_batch_req_release(struct pc_batch_req *r)
{
    if (r == NULL)
        return;
    pc_batch_array_release(&r->inst);
    memset(r, 0, sizeof *r);
}

int pc_batch_parse_request(const char *body, size_t len, struct pc_batch_req *out)
{
    return pc_batch_parse_request_at(body, len, "instances", out);
}

int pc_batch_parse_request_at(const char *body, size_t len, const char *member,
                              struct pc_batch_req *out)
{
    memset(out, 0, sizeof *out);
    int rc = scan_top(body, len, member, &out->inst, "signature_name", &out->signature);
    if (rc == 0 && out->inst.n == 0)
        rc = 1;
    if (rc != 0)
        pc_batch_req_release(out);
    return rc;
}

int pc_batch_parse_response(const char *body, size_t len, struct pc_batch_array *out)
{
    return pc_batch_parse_response_at(body, len, "predictions", out);
}

/* A body that is one array: its elements into arr. 0 ok, -1 anything else. */
static int scan_root_array(const char *s, size_t n, struct pc_batch_array *arr)
{
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '[')
        return -1;
    i = scan_container(s, i, n, 0, arr);
    return i != 0 && skip_ws(s, i, n) == n ? 0 : -1;
}

int pc_batch_parse_response_at(const char *body, size_t len, const char *member,
                               struct pc_batch_array *out)
{
    memset(out, 0, sizeof *out);
    int rc = member[0] == '\0' ? scan_root_array(body, len, out)
                               : scan_top(body, len, member, out, NULL, NULL);
    if (rc != 0) {
        pc_batch_array_release(out);
        return -1;
    }
    return 0;
}

int pc_batch_build_subrequest(const char *body, size_t len, const struct pc_batch_req *req,
                              const size_t *idx, size_t k, struct pc_buf *out)
{
    const struct pc_batch_array *a = &req->inst;
    size_t first = a->elems[0].off;
    size_t last_end = a->elems[a->n - 1].off + a->elems[a->n - 1].len;
    int rc = pc_buf_append(out, body, first);
    for (size_t j = 0; j < k; j++) {
        if (idx[j] >= a->n)
            return -1;
        if (j > 0)
            rc |= pc_buf_append_char(out, ',');
        rc |= pc_buf_append(out, body + a->elems[idx[j]].off, a->elems[idx[j]].len);
    }
    rc |= pc_buf_append(out, body + last_end, len - last_end);
    return rc ? -1 : 0;
}

/* A separator as the sender writes one: ',' and the spaces or tabs after it. */
static size_t sep_at(const char *s, size_t i, size_t n)
{
    size_t j = i + 1;
    while (j < n && (s[j] == ' ' || s[j] == '\t'))
        j++;
    return j - i;
}

void pc_batch_layout_of(const char *body, size_t len, const struct pc_batch_array *preds,
                        struct pc_batch_layout *out)
{
    const struct pc_span *first = &preds->elems[0], *last = &preds->elems[preds->n - 1];
    size_t end = last->off + last->len;
    out->prefix = body;
    out->prefix_len = first->off;
    out->suffix = body + end;
    out->suffix_len = len - end;
    out->sep = NULL;
    out->sep_len = 0;
    if (preds->n >= 2) {
        size_t a = first->off + first->len;
        out->sep = body + a;
        out->sep_len = preds->elems[1].off - a;
        return;
    }
    /* One prediction: borrow the style of the first comma outside strings. */
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '"') {
            size_t j = scan_string(body, i, len);
            if (j == 0)
                return;
            i = j - 1;
        } else if (body[i] == ',') {
            out->sep = body + i;
            out->sep_len = sep_at(body, i, len);
            return;
        }
    }
}

int pc_batch_merge_fn(const struct pc_batch_layout *layout, pc_batch_pred_fn pred, void *arg,
                      size_t n, const char *default_sep, struct pc_buf *out)
{
    const char *sep = layout->sep_len > 0 ? layout->sep : default_sep;
    size_t sep_len = layout->sep_len > 0 ? layout->sep_len : strlen(default_sep);
    int rc = pc_buf_append(out, layout->prefix, layout->prefix_len);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *p;
        size_t len;
        pred(arg, i, &p, &len);
        if (i > 0)
            rc |= pc_buf_append(out, sep, sep_len);
        rc |= pc_buf_append(out, p, len);
    }
    rc |= pc_buf_append(out, layout->suffix, layout->suffix_len);
    return rc ? -1 : 0;
}

struct arrays {
    const char *const *preds;
    const size_t *lens;
};

static void pred_of_arrays(void *arg, size_t i, const char **pred, size_t *len)
{
    const struct arrays *a = arg;
    *pred = a->preds[i];
    *len = a->lens[i];
}

int pc_batch_merge(const struct pc_batch_layout *layout, const char *const *preds,
                   const size_t *pred_len, size_t n, const char *default_sep, struct pc_buf *out)
{
    struct arrays a = {preds, pred_len};
    return pc_batch_merge_fn(layout, pred_of_arrays, &a, n, default_sep, out);
}

/* ---- instance values --------------------------------------------------------------- */

int pc_batch_encode_instance(const struct pc_batch_layout *layout, const char *pred,
                             size_t pred_len, struct pc_buf *out)
{
    char num[PC_U64_TEXT];
    int rc = pc_buf_append(out, "PI1\n", 4);
    rc |= pc_buf_append(out, num, pc_u64_text(layout->prefix_len, num));
    rc |= pc_buf_append_char(out, ' ');
    rc |= pc_buf_append(out, num, pc_u64_text(layout->sep_len, num));
    rc |= pc_buf_append_char(out, ' ');
    rc |= pc_buf_append(out, num, pc_u64_text(layout->suffix_len, num));
    rc |= pc_buf_append_char(out, '\n');
    rc |= pc_buf_append(out, layout->prefix, layout->prefix_len);
    rc |= pc_buf_append(out, layout->sep, layout->sep_len);
    rc |= pc_buf_append(out, layout->suffix, layout->suffix_len);
    rc |= pc_buf_append(out, pred, pred_len);
    return rc ? -1 : 0;
}

/* Reads a decimal size terminated by `end`. 0 ok. */
static int read_size(const char *s, size_t n, size_t *i, char end, size_t *out)
{
    size_t v = 0, start = *i;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9' && *i - start < 12)
        v = v * 10 + (size_t)(s[(*i)++] - '0');
    if (*i == start || *i >= n || s[*i] != end)
        return -1;
    (*i)++;
    *out = v;
    return 0;
}

int pc_batch_decode_instance(const char *data, size_t len, struct pc_batch_layout *layout,
                             const char **pred, size_t *pred_len)
{
    size_t i = 4, a, b, c;
    if (len < 4 || memcmp(data, "PI1\n", 4) != 0 || read_size(data, len, &i, ' ', &a) != 0 ||
        read_size(data, len, &i, ' ', &b) != 0 || read_size(data, len, &i, '\n', &c) != 0)
        return -1;
    size_t rest = len - i;
    if (a > rest || b > rest - a || c > rest - a - b)
        return -1;
    layout->prefix = data + i;
    layout->prefix_len = a;
    layout->sep = data + i + a;
    layout->sep_len = b;
    layout->suffix = data + i + a + b;
    layout->suffix_len = c;
    *pred = data + i + a + b + c;
    *pred_len = rest - a - b - c;
    return *pred_len > 0 ? 0 : -1;
}
