/*
 * fuzz_jsonedit: pc_jsonedit_set_member and pc_jsonedit_find_member on arbitrary bodies.
 *
 * Input: byte 0 holds flags (bits 0-1: 0 removes, else sets; bits 2-4: which name, 7 for
 * one taken from the input up to a NUL; bits 5-7: which value, 7 for one taken from the
 * input up to a NUL, used when it is strict JSON), the rest is the body.
 * Invariants:
 *   - only body[0..len) is read (an exact-size heap copy); out keeps what it held
 *   - 1 exactly when canon does not read the body as a strict JSON object, and then
 *     nothing is written
 *   - on 0: the output is strict JSON (pc_canon_json OK or INEXACT), an object, with the
 *     same text before its "{" and after its "}"; find_member on it gives the value (or 1
 *     after removal); every root member of another name keeps its name token and value
 *     text, in order; every member of the name has the value, and there is one (the first)
 *     when there was none; removing what is absent gives the body back
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/canon.h"
#include "predcache/jsonedit.h"

static const char *const names[7] = {"id", "", "a", "i\"d\\", "\xc3\xa9", "\x01\x1f", "id\x7f"};
static const char *const values[7] = {
    "\"req-2\"", "42", "null", "{\"id\":[1,\"}\"]}", "\"\"", " [ ] ", "\"\\u0000,}\"",
};

/* One root member: name token and value text, and whether its decoded name is the one. */
struct mem {
    size_t name_off, name_len, off, len;
    int match;
};

struct members {
    const char *s;
    const char *name;
    struct mem m[512];
    size_t n, total;
    struct mem cur;
};

static int m_at(void *arg, const char *nm, size_t nm_len, size_t raw_off, size_t raw_len)
{
    (void)nm;
    (void)nm_len;
    struct members *x = arg;
    struct pc_buf d;
    pc_buf_init(&d);
    enum pc_canon_rc rc = pc_canon_decode_string(x->s + raw_off, raw_len, &d);
    FUZZ_CHECK(rc != PC_CANON_INVALID);
    size_t want = strlen(x->name);
    x->cur.match = d.len == want && (want == 0 || memcmp(d.data, x->name, want) == 0);
    x->cur.name_off = raw_off;
    x->cur.name_len = raw_len;
    pc_buf_release(&d);
    return 0;
}

static void m_end(void *arg, size_t off, size_t len, enum pc_canon_type type,
                  enum pc_canon_rc exact)
{
    (void)type;
    (void)exact;
    struct members *x = arg;
    x->cur.off = off;
    x->cur.len = len;
    if (x->n < sizeof x->m / sizeof x->m[0])
        x->m[x->n++] = x->cur;
    x->total++;
}

/* The root members of a strict JSON object text (at most 512 kept: x->total counts all). */
static void members_of(const char *s, size_t len, const char *name, struct members *x)
{
    memset(x, 0, sizeof *x);
    x->s = s;
    x->name = name;
    struct pc_canon_hook hook = {NULL, m_end, x, m_at, NULL};
    struct pc_canon_info info;
    enum pc_canon_rc rc = pc_canon_scan(s, len, &hook, NULL, &info);
    FUZZ_CHECK(rc == PC_CANON_OK && info.root == PC_CANON_OBJECT);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The text before the root "{" and after the root "}". */
static void outer(const char *s, size_t len, size_t *open, size_t *close)
{
    size_t i = 0, j = len;
    while (i < len && is_ws(s[i]))
        i++;
    while (j > 0 && is_ws(s[j - 1]))
        j--;
    FUZZ_CHECK(i < len && s[i] == '{' && j > i && s[j - 1] == '}');
    *open = i;
    *close = j - 1;
}

static int strict(const char *s, size_t len, enum pc_canon_type *root)
{
    struct pc_canon_info info;
    enum pc_canon_rc rc = pc_canon_json(s, len, NULL, &info);
    *root = info.root;
    return rc == PC_CANON_OK || rc == PC_CANON_INEXACT;
}

static char *take_field(const uint8_t *data, size_t size, size_t *pos, size_t max)
{
    size_t n = 0;
    while (*pos + n < size && n < max && data[*pos + n] != 0)
        n++;
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data + *pos, n);
    s[n] = '\0';
    *pos += n;
    if (*pos < size)
        (*pos)++;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t pos = 1;
    int set = (data[0] & 3) != 0;
    int ni = (data[0] >> 2) & 7, vi = data[0] >> 5;
    char *own_name = ni == 7 ? take_field(data, size, &pos, 64) : NULL;
    char *own_value = set && vi == 7 ? take_field(data, size, &pos, 256) : NULL;
    const char *name = own_name ? own_name : names[ni];
    const char *value = NULL;
    enum pc_canon_type root;
    if (set)
        value =
            own_value && strict(own_value, strlen(own_value), &root) ? own_value : values[vi % 7];
    size_t value_len = value ? strlen(value) : 0;
    /* the value text as find_member shows it: without the whitespace around it */
    size_t v0 = 0, v1 = value_len;
    while (v0 < v1 && is_ws(value[v0]))
        v0++;
    while (v1 > v0 && is_ws(value[v1 - 1]))
        v1--;

    size_t len = size - pos;
    char *body = fuzz_dup(data + pos, len);
    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_buf_append(&out, "pre", 3) == 0);
    int rc = pc_jsonedit_set_member(body, len, name, value, value_len, &out);
    FUZZ_CHECK(rc == 0 || rc == 1);
    FUZZ_CHECK(memcmp(out.data, "pre", 3) == 0);
    int is_obj = strict(body, len, &root) && root == PC_CANON_OBJECT;
    FUZZ_CHECK((rc == 0) == is_obj);
    size_t off, vlen;
    if (rc == 1) {
        FUZZ_CHECK(out.len == 3);
        FUZZ_CHECK(pc_jsonedit_find_member(body, len, name, &off, &vlen) == 1);
        goto done;
    }
    const char *o = out.data + 3;
    size_t olen = out.len - 3;
    FUZZ_CHECK(strict(o, olen, &root) && root == PC_CANON_OBJECT);

    size_t bo, bc, oo, oc;
    outer(body, len, &bo, &bc);
    outer(o, olen, &oo, &oc);
    FUZZ_CHECK(bo == oo && memcmp(body, o, bo) == 0);
    FUZZ_CHECK(len - bc == olen - oc && memcmp(body + bc, o + oc, len - bc) == 0);

    int frc = pc_jsonedit_find_member(o, olen, name, &off, &vlen);
    if (value == NULL) {
        FUZZ_CHECK(frc == 1);
    } else {
        FUZZ_CHECK(frc == 0 && vlen == v1 - v0 && memcmp(o + off, value + v0, vlen) == 0);
    }

    static struct members in, res;
    members_of(body, len, name, &in);
    members_of(o, olen, name, &res);
    size_t in_match = 0, res_match = 0, j = 0;
    for (size_t i = 0; i < in.n; i++)
        in_match += in.m[i].match;
    for (size_t i = 0; i < res.n; i++) {
        const struct mem *r = &res.m[i];
        if (r->match) {
            res_match++;
            FUZZ_CHECK(r->len == v1 - v0 && memcmp(o + r->off, value + v0, r->len) == 0);
            continue;
        }
        while (j < in.n && in.m[j].match)
            j++;
        FUZZ_CHECK(j < in.n);
        const struct mem *b = &in.m[j++];
        FUZZ_CHECK(b->name_len == r->name_len &&
                   memcmp(body + b->name_off, o + r->name_off, b->name_len) == 0);
        FUZZ_CHECK(b->len == r->len && memcmp(body + b->off, o + r->off, b->len) == 0);
    }
    if (in.total == in.n && res.total == res.n) {
        while (j < in.n && in.m[j].match)
            j++;
        FUZZ_CHECK(j == in.n); /* no member of another name was lost */
        if (value == NULL)
            FUZZ_CHECK(res_match == 0);
        else if (in_match == 0)
            FUZZ_CHECK(res_match == 1 && res.m[0].match);
        else
            FUZZ_CHECK(res_match == in_match);
    }
    if (value == NULL && in_match == 0 && in.total == in.n)
        FUZZ_CHECK(olen == len && memcmp(o, body, len) == 0);

done:
    pc_buf_release(&out);
    free(body);
    free(own_name);
    free(own_value);
    return 0;
}
