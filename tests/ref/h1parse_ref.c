/*
 * h1parse_ref: one request read from a whole buffer, top to bottom (see the header).
 *
 * The rules, in the order they are applied:
 *   - A line ends at LF; one CR before the LF is not part of its text. The head (empty
 *     lines before the request line, the request line, the field lines and the empty
 *     line) may hold max_header_bytes bytes, terminators included; once the bytes sent for
 *     it are more, the answer is 414 while the request line is not complete, else 431.
 *   - A line with a NUL: 400.
 *   - Request line: exactly two spaces, a method of A-Z, a non-empty target, then exactly
 *     "HTTP/1.<digit>" (other "HTTP/..." 505, anything else 400). The target has no byte
 *     <= 0x20 or 0x7f; http:// and https:// targets keep what follows the authority (a
 *     '/' put in front when it does not start with one); then it must start with '/'.
 *   - Field line: not starting with SP or HTAB; a ':' after a name of tchars; at most 100
 *     (431); no control byte but HTAB in the value; OWS around the value dropped.
 *   - Framing, all lines of a name joined with ',' and read as one list: see h1parse.h.
 *   - Content-Length body: that many bytes. Chunked: hex size line [OWS] [';' ext without
 *     control bytes], at most 4096 bytes with its LF, then the data and an empty line; a
 *     size of 0 ends it; trailer lines are field lines within what is left of the head's
 *     limit (431 past it), up to an empty line. The body may hold max_body_bytes (413).
 */
#include "h1parse_ref.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INCOMPLETE PC_REF_H1_INCOMPLETE

static char *copy(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        abort();
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* The line starting at pos: its text length and its length with the terminator. 0 when no
 * LF follows pos. */
static int get_line(const char *in, size_t len, size_t pos, size_t *text, size_t *full)
{
    const char *lf = memchr(in + pos, '\n', len - pos);
    if (lf == NULL)
        return 0;
    *full = (size_t)(lf - (in + pos)) + 1;
    *text = *full - 1;
    if (*text > 0 && in[pos + *text - 1] == '\r')
        *text -= 1;
    return 1;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    const char *extra = "!#$%&'*+-.^_`|~";
    for (const char *p = extra; *p; p++) {
        if (c == (unsigned char)*p)
            return 1;
    }
    return 0;
}

static int is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int has_nul(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}

/* 0 when s[0..n) is a field line, with its name's length in *name_len; else 400. */
static int field_line(const char *s, size_t n, size_t *name_len)
{
    if (n > 0 && is_ows(s[0]))
        return 400;
    const char *colon = memchr(s, ':', n);
    if (colon == NULL || colon == s)
        return 400;
    for (const char *p = s; p < colon; p++) {
        if (!is_tchar((unsigned char)*p))
            return 400;
    }
    *name_len = (size_t)(colon - s);
    return 0;
}

static int value_has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (is_ctl((unsigned char)s[i]))
            return 1;
    }
    return 0;
}

/* Every value of the fields called name, joined with ','. NULL when there is none. */
static char *joined(const struct pc_ref_h1 *r, const char *name, size_t *count)
{
    char *out = NULL;
    size_t len = 0;
    *count = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, name) != 0)
            continue;
        size_t vl = strlen(r->headers[i].value);
        out = realloc(out, len + vl + 2);
        if (out == NULL)
            abort();
        if (*count > 0)
            out[len++] = ',';
        memcpy(out + len, r->headers[i].value, vl);
        len += vl;
        out[len] = '\0';
        (*count)++;
    }
    return out;
}

struct elem {
    const char *s;
    size_t n;
};

/* The list's elements, OWS trimmed, in order ("" is one empty element, "a," two); the
 * caller frees the array. */
static struct elem *split_list(const char *list, size_t *n)
{
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    struct elem *out = malloc(cap * sizeof *out);
    if (out == NULL)
        abort();
    *n = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p), *s = p;
        while (s < e && is_ows(*s))
            s++;
        while (e > s && is_ows(e[-1]))
            e--;
        out[*n].s = s;
        out[*n].n = (size_t)(e - s);
        (*n)++;
        if (comma == NULL)
            return out;
        p = comma + 1;
    }
}

static int elem_is(struct elem e, const char *token)
{
    return e.n == strlen(token) && strncasecmp(e.s, token, e.n) == 0;
}

static int request_line(struct pc_ref_h1 *r, const char *s, size_t n)
{
    size_t spaces = 0, sp1 = 0, sp2 = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            if (spaces == 0)
                sp1 = i;
            else if (spaces == 1)
                sp2 = i;
            spaces++;
        }
    }
    if (spaces != 2 || sp1 == 0 || sp2 == sp1 + 1)
        return 400;
    for (size_t i = 0; i < sp1; i++) {
        if (s[i] < 'A' || s[i] > 'Z')
            return 400;
    }
    const char *ver = s + sp2 + 1;
    size_t vl = n - sp2 - 1;
    if (!(vl == 8 && memcmp(ver, "HTTP/1.", 7) == 0 && ver[7] >= '0' && ver[7] <= '9'))
        return vl >= 5 && memcmp(ver, "HTTP/", 5) == 0 ? 505 : 400;
    r->minor = ver[7] - '0';
    const char *t = s + sp1 + 1;
    size_t tl = sp2 - sp1 - 1;
    for (size_t i = 0; i < tl; i++) {
        if ((unsigned char)t[i] <= 0x20 || t[i] == 0x7f)
            return 400;
    }
    size_t skip = 0;
    if (tl >= 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (tl >= 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    if (skip > 0) {
        size_t i = skip;
        while (i < tl && t[i] != '/' && t[i] != '?')
            i++;
        if (i < tl && t[i] == '/') {
            r->target = copy(t + i, tl - i);
        } else {
            r->target = malloc(tl - i + 2);
            if (r->target == NULL)
                abort();
            r->target[0] = '/';
            memcpy(r->target + 1, t + i, tl - i);
            r->target[tl - i + 1] = '\0';
        }
    } else {
        r->target = copy(t, tl);
    }
    r->method = copy(s, sp1);
    if (r->target[0] != '/')
        return 400;
    const char *q = strchr(r->target, '?');
    r->path = q ? copy(r->target, (size_t)(q - r->target)) : copy(r->target, strlen(r->target));
    r->query = q ? copy(q + 1, strlen(q + 1)) : copy("", 0);
    r->is_head = strcmp(r->method, "HEAD") == 0;
    r->keep_alive = r->minor >= 1;
    return 0;
}

static int add_field(struct pc_ref_h1 *r, const char *s, size_t n)
{
    size_t nl;
    if (field_line(s, n, &nl) != 0)
        return 400;
    if (r->n_headers == PC_H1_MAX_HEADERS)
        return 431;
    const char *v = s + nl + 1, *e = s + n;
    if (value_has_ctl(v, (size_t)(e - v)))
        return 400;
    while (v < e && is_ows(*v))
        v++;
    while (e > v && is_ows(e[-1]))
        e--;
    r->headers = realloc(r->headers, (r->n_headers + 1) * sizeof *r->headers);
    if (r->headers == NULL)
        abort();
    r->headers[r->n_headers].name = copy(s, nl);
    r->headers[r->n_headers].value = copy(v, (size_t)(e - v));
    r->n_headers++;
    return 0;
}

/* Reads Content-Length's single value: 0 ok, else 400. Values past 2^64-1 are 400. */
static int content_length(const char *v, uint64_t *out)
{
    size_t n = strlen(v);
    if (n == 0)
        return 400;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 400;
    }
    while (n > 1 && *v == '0') { /* leading zeros change nothing */
        v++;
        n--;
    }
    if (n > 20 || (n == 20 && strcmp(v, "18446744073709551615") > 0))
        return 400;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x * 10 + (uint64_t)(v[i] - '0');
    *out = x;
    return 0;
}

/* The head's framing and expectations (after the empty line). */
static int framing(struct pc_ref_h1 *r, const struct pc_h1_limits *lim, uint64_t *cl)
{
    size_t n_te, n_cl, n_conn, n_exp, n;
    char *te = joined(r, "Transfer-Encoding", &n_te);
    char *cls = joined(r, "Content-Length", &n_cl);
    char *conn = joined(r, "Connection", &n_conn);
    char *exp = joined(r, "Expect", &n_exp);
    size_t n_host;
    char *host = joined(r, "Host", &n_host);
    struct elem *el;
    int st = 0;
    if (n_te > 0) {
        el = split_list(te, &n);
        int empty = 0, chunked_seen = 0;
        for (size_t i = 0; i < n; i++) {
            empty |= el[i].n == 0;
            chunked_seen |= elem_is(el[i], "chunked");
        }
        int last_chunked = elem_is(el[n - 1], "chunked");
        if (r->minor == 0 || n_cl > 0 || empty)
            st = 400;
        else if (chunked_seen && !last_chunked)
            st = 400;
        else if (n == 1 && last_chunked)
            r->chunked = 1;
        else
            st = 501;
        free(el);
    } else if (n_cl > 0) {
        if (n_cl > 1)
            st = 400;
        else if ((st = content_length(cls, cl)) == 0 && *cl > lim->max_body_bytes)
            st = 413;
    }
    if (st == 0 && n_conn > 0) {
        el = split_list(conn, &n);
        int close = 0, keep = 0;
        for (size_t i = 0; i < n; i++) {
            close |= elem_is(el[i], "close");
            keep |= elem_is(el[i], "keep-alive");
        }
        if (close)
            r->keep_alive = 0;
        else if (keep && r->minor == 0)
            r->keep_alive = 1;
        free(el);
    }
    if (st == 0 && n_exp > 0) {
        r->expect_continue = 1;
        el = split_list(exp, &n);
        for (size_t i = 0; i < n; i++) {
            if (!elem_is(el[i], "100-continue"))
                st = 417;
        }
        free(el);
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one in 1.0, of host characters */
    if (st == 0 && (n_host > 1 || (n_host == 0 && r->minor >= 1)))
        st = 400;
    for (const char *c = host; st == 0 && n_host == 1 && *c; c++)
        if (!isalnum((unsigned char)*c) && strchr("-._~!$&'()*+,;=%:[]", *c) == NULL)
            st = 400;
    free(te);
    free(cls);
    free(conn);
    free(exp);
    free(host);
    return st;
}

static void body_add(struct pc_ref_h1 *r, const char *p, size_t n)
{
    r->body = realloc(r->body, r->body_len + n + 1);
    if (r->body == NULL)
        abort();
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
}

/* A chunk line (size, or the empty line after data): 0 with its lengths, INCOMPLETE, or
 * 400 when it is longer than PC_H1_MAX_CHUNK_LINE. */
static int chunk_line(const char *in, size_t len, size_t pos, size_t *text, size_t *full)
{
    if (!get_line(in, len, pos, text, full))
        return len - pos > PC_H1_MAX_CHUNK_LINE ? 400 : INCOMPLETE;
    return *full > PC_H1_MAX_CHUNK_LINE ? 400 : 0;
}

/* chunk-size [OWS] [";" ext]: 0 with the size, else 400. */
static int chunk_size(const char *s, size_t n, uint64_t *size)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && pc_hexval((unsigned char)s[i]) >= 0) {
        if (v >> 60 != 0)
            return 400; /* one more digit would not fit */
        v = v * 16 + (uint64_t)pc_hexval((unsigned char)s[i]);
        i++;
    }
    if (i == 0)
        return 400;
    while (i < n && is_ows(s[i]))
        i++;
    if (i < n && s[i] != ';')
        return 400;
    if (value_has_ctl(s + i, n - i))
        return 400;
    *size = v;
    return 0;
}

static int read_chunked(struct pc_ref_h1 *r, const char *in, size_t len, size_t pos, size_t head,
                        const struct pc_h1_limits *lim)
{
    size_t text, full;
    int st;
    for (;;) {
        if ((st = chunk_line(in, len, pos, &text, &full)) != 0)
            return st;
        uint64_t size;
        if (has_nul(in + pos, text) || chunk_size(in + pos, text, &size) != 0)
            return 400;
        pos += full;
        if (size > lim->max_body_bytes || r->body_len + size > lim->max_body_bytes)
            return 413;
        if (size == 0)
            break;
        if (len - pos < size)
            return INCOMPLETE;
        body_add(r, in + pos, (size_t)size);
        pos += (size_t)size;
        if ((st = chunk_line(in, len, pos, &text, &full)) != 0)
            return st;
        if (text != 0)
            return 400;
        pos += full;
    }
    for (;;) { /* trailers */
        if (!get_line(in, len, pos, &text, &full))
            return head + (len - pos) > lim->max_header_bytes ? 431 : INCOMPLETE;
        if (head + full > lim->max_header_bytes)
            return 431;
        head += full;
        if (has_nul(in + pos, text))
            return 400;
        if (text == 0)
            break;
        size_t nl;
        if (field_line(in + pos, text, &nl) != 0 || value_has_ctl(in + pos + nl + 1, text - nl - 1))
            return 400;
        pos += full;
    }
    r->consumed = pos + full;
    return 0;
}

static int read_request(struct pc_ref_h1 *r, const char *in, size_t len,
                        const struct pc_h1_limits *lim)
{
    size_t pos = 0, head = 0, text, full;
    for (;;) { /* empty lines, then the request line */
        if (!get_line(in, len, pos, &text, &full)) {
            r->started = pos < len;
            return head + (len - pos) > lim->max_header_bytes ? 414 : INCOMPLETE;
        }
        r->started = text > 0;
        if (head + full > lim->max_header_bytes)
            return 414;
        head += full;
        if (text > 0)
            break;
        pos += full;
    }
    if (has_nul(in + pos, text))
        return 400;
    int st = request_line(r, in + pos, text);
    if (st != 0)
        return st;
    pos += full;
    for (;;) { /* field lines */
        if (!get_line(in, len, pos, &text, &full))
            return head + (len - pos) > lim->max_header_bytes ? 431 : INCOMPLETE;
        if (head + full > lim->max_header_bytes)
            return 431;
        head += full;
        if (has_nul(in + pos, text))
            return 400;
        if (text == 0)
            break;
        if ((st = add_field(r, in + pos, text)) != 0)
            return st;
        pos += full;
    }
    pos += full;
    uint64_t cl = 0;
    if ((st = framing(r, lim, &cl)) != 0)
        return st;
    if (r->chunked)
        return read_chunked(r, in, len, pos, head, lim);
    if (len - pos < cl)
        return INCOMPLETE;
    body_add(r, in + pos, (size_t)cl);
    r->consumed = pos + (size_t)cl;
    return 0;
}

int pc_ref_h1_read(const char *in, size_t len, const struct pc_h1_limits *lim,
                   struct pc_ref_h1 *out)
{
    memset(out, 0, sizeof *out);
    out->status = read_request(out, in, len, lim);
    if (out->status != INCOMPLETE)
        out->started = 1;
    return out->status;
}

void pc_ref_h1_free(struct pc_ref_h1 *r)
{
    free(r->method);
    free(r->target);
    free(r->path);
    free(r->query);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}
