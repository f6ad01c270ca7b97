/*
 * jsonedit: one pass of canon over the body finds the root members whose decoded name is
 * the one asked for (their name token, value span and the commas around them), then the
 * output is the body copied around those spans:
 *
 *     body --pc_canon_scan (member_at: name matches?  member_end: value span)--> matches
 *       |        not strict JSON, or not an object: 1, nothing written
 *       `--> copy body, and at each match: the new value instead of the old one
 *                                           or the member and one comma left out
 *            no match: the member inserted after the "{" (nothing to remove: the body)
 *
 * A name matches on its whole decoded text: canon shows names cut at a NUL (as json-c keeps
 * them), so one that matches cut is decoded again from its token to be sure it does not go
 * on past a "\u0000" (a model server reads "id\u0000x" as another member).
 */
#include "predcache/jsonedit.h"

#include <stdlib.h>
#include <string.h>

#include "predcache/canon.h"

/* One root member whose name matched: its span in the body, from the name's opening quote
 * to the end of its value, and whether a member that stays comes before it. */
struct match {
    size_t start, voff, vend;
    int kept_before;
};

struct scan {
    const char *body;
    const char *name;
    size_t name_len;
    struct pc_buf decoded; /* scratch: a candidate name decoded whole */
    struct match *m;
    size_t n, cap;
    size_t members;   /* root members seen */
    int kept;         /* a member that does not match has been seen */
    int cur;          /* the member being read matches */
    size_t cur_start; /* ... and its name token starts here */
    int oom;
};

static int on_member_at(void *arg, const char *nm, size_t nm_len, size_t raw_off, size_t raw_len)
{
    struct scan *x = arg;
    x->cur = 0;
    x->cur_start = raw_off;
    if (nm_len != x->name_len || memcmp(nm, x->name, nm_len) != 0)
        return 0;
    /* Equal up to a NUL: equal only when the decoded name ends there too. */
    x->decoded.len = 0;
    if (pc_buf_reserve(&x->decoded, raw_len) != 0) {
        x->oom = 1;
        return 0;
    }
    enum pc_canon_rc rc = pc_canon_decode_string(x->body + raw_off, raw_len, &x->decoded);
    x->cur = rc != PC_CANON_INVALID && x->decoded.len == x->name_len; /* INEXACT: U+FFFD */
    return 0;
}

static void on_member_end(void *arg, size_t off, size_t len, enum pc_canon_type type,
                          enum pc_canon_rc exact)
{
    (void)type;
    (void)exact;
    struct scan *x = arg;
    x->members++;
    if (!x->cur) {
        x->kept = 1;
        return;
    }
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 4;
        struct match *p = realloc(x->m, cap * sizeof *p);
        if (p == NULL) {
            x->oom = 1;
            return;
        }
        x->m = p;
        x->cap = cap;
    }
    x->m[x->n++] = (struct match){x->cur_start, off, off + len, x->kept};
    x->cur = 0;
}

/* Scans body for the root members named name. 0 read (x filled); 1 not a JSON object; -1
 * no memory. The caller releases x with scan_release either way. */
static int scan_members(const char *body, size_t len, const char *name, struct scan *x)
{
    memset(x, 0, sizeof *x);
    pc_buf_init(&x->decoded);
    if (body == NULL || name == NULL)
        return 1;
    x->body = body;
    x->name = name;
    x->name_len = strlen(name);
    struct pc_canon_hook hook = {NULL, on_member_end, x, on_member_at, NULL};
    struct pc_canon_info info;
    enum pc_canon_rc rc = pc_canon_scan(body, len, &hook, NULL, &info);
    if (rc == PC_CANON_INVALID || rc == PC_CANON_LENIENT)
        return 1;
    if (rc == PC_CANON_INEXACT || x->oom) /* nothing is written: only memory runs out */
        return -1;
    return info.root == PC_CANON_OBJECT ? 0 : 1;
}

static void scan_release(struct scan *x)
{
    pc_buf_release(&x->decoded);
    free(x->m);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Appends name as a JSON string: '"' and '\' escaped, control bytes as \u00XX, every other
 * byte as it is (so it decodes back to exactly name). */
static int put_name(struct pc_buf *out, const char *name)
{
    static const char hex[] = "0123456789abcdef";
    if (pc_buf_append_char(out, '"') != 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        int rc;
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = pc_buf_append(out, esc, 2);
        } else if (*p < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            rc = pc_buf_append(out, esc, 6);
        } else {
            rc = pc_buf_append_char(out, (char)*p);
        }
        if (rc != 0)
            return -1;
    }
    return pc_buf_append_char(out, '"');
}

/* The body with the matched members removed, each with one comma (see the header). */
static int put_removed(const struct scan *x, const char *body, size_t len, struct pc_buf *out)
{
    size_t at = 0;
    for (size_t i = 0; i < x->n; i++) {
        const struct match *m = &x->m[i];
        size_t from = m->start, to = m->vend;
        if (m->kept_before) { /* the comma before: a member precedes, so there is one */
            while (from > 0 && body[from - 1] != ',')
                from--;
            from--;
        } else { /* the comma after, when another member follows */
            size_t p = m->vend;
            while (p < len && is_ws(body[p]))
                p++;
            if (p < len && body[p] == ',')
                to = p + 1;
        }
        if (pc_buf_append(out, body + at, from - at) != 0)
            return -1;
        at = to;
    }
    return pc_buf_append(out, body + at, len - at);
}

int pc_jsonedit_set_member(const char *body, size_t len, const char *name, const char *value,
                           size_t value_len, struct pc_buf *out)
{
    struct scan x;
    int rc = scan_members(body, len, name, &x);
    if (rc != 0) {
        scan_release(&x);
        return rc;
    }
    size_t out0 = out->len;
    int err = pc_buf_reserve(out, len + value_len + 2 * x.name_len + 16);
    if (err == 0 && value == NULL) {
        err = put_removed(&x, body, len, out);
    } else if (err == 0 && x.n > 0) {
        size_t at = 0;
        for (size_t i = 0; i < x.n && err == 0; i++) {
            err = pc_buf_append(out, body + at, x.m[i].voff - at) ||
                  pc_buf_append(out, value, value_len);
            at = x.m[i].vend;
        }
        err = err || pc_buf_append(out, body + at, len - at);
    } else if (err == 0) {
        const char *brace = memchr(body, '{', len); /* the root object's: only ws before it */
        size_t in = (size_t)(brace - body) + 1;
        err = pc_buf_append(out, body, in) || put_name(out, name) || pc_buf_append_char(out, ':') ||
              pc_buf_append(out, value, value_len) ||
              (x.members > 0 && pc_buf_append_char(out, ',')) ||
              pc_buf_append(out, body + in, len - in);
    }
    scan_release(&x);
    if (err != 0) {
        out->len = out0;
        if (out->data != NULL)
            out->data[out0] = '\0';
        return -1;
    }
    return 0;
}

int pc_jsonedit_find_member(const char *body, size_t len, const char *name, size_t *off,
                            size_t *vlen)
{
    struct scan x;
    int rc = scan_members(body, len, name, &x);
    if (rc == 0 && x.n == 0)
        rc = 1;
    if (rc == 0) {
        *off = x.m[x.n - 1].voff;
        *vlen = x.m[x.n - 1].vend - x.m[x.n - 1].voff;
    }
    scan_release(&x);
    return rc;
}
