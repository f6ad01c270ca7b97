/*
 * h1resp: the HTTP/1.1 response reader (see h1resp.h).
 */
#include "predcache/h1resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "predcache/h1parse.h"

enum {
    S_STATUS,     /* the status line (empty lines before it are skipped) */
    S_FIELDS,     /* header field lines until the empty one */
    S_BODY,       /* left bytes of a Content-Length body */
    S_CLOSE,      /* the body runs until the connection closes */
    S_CHUNK_SIZE, /* chunk-size [; chunk-ext] */
    S_CHUNK_DATA, /* left bytes of the current chunk */
    S_CHUNK_END,  /* the empty line after a chunk's data */
    S_TRAILER,    /* trailer lines until the empty one */
    S_DONE,
    S_FAILED,
};

void pc_h1resp_init(struct pc_h1resp *r, int head_request)
{
    memset(r, 0, sizeof *r);
    r->head_request = head_request;
    r->length = -1;
    r->state = S_STATUS;
    pc_buf_init(&r->line);
    pc_buf_init(&r->conn);
}

/* An interim response's or a released reader's: their strings go with them, so a model
 * server's interim responses never add up. */
static void drop_headers(struct pc_h1resp *r)
{
    r->n_headers = 0;
    pc_arena_release(&r->text);
}

void pc_h1resp_release(struct pc_h1resp *r)
{
    drop_headers(r);
    free(r->headers);
    r->headers = NULL;
    r->cap = 0;
    pc_buf_release(&r->line);
    pc_buf_release(&r->conn);
}

struct pc_header *pc_h1resp_take_headers(struct pc_h1resp *r, size_t *n, struct pc_arena *text)
{
    struct pc_header *h = r->headers;
    *n = r->n_headers;
    *text = r->text;
    pc_arena_init(&r->text, NULL, 0);
    r->headers = NULL;
    r->n_headers = r->cap = 0;
    return h;
}

static enum pc_h1r_result fail(struct pc_h1resp *r, const char *why)
{
    snprintf(r->err, sizeof r->err, "model server response: %s", why);
    r->state = S_FAILED;
    r->keep_alive = 0;
    return PC_H1R_ERROR;
}

/* "HTTP/1.x SP 3DIGIT [SP reason]" */
static enum pc_h1r_result status_line(struct pc_h1resp *r, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9' || s[8] != ' ' ||
        s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
        (n > 12 && s[12] != ' '))
        return fail(r, "malformed status line");
    r->minor = s[7] - '0';
    r->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (r->status == 101)
        return fail(r, "101 Switching Protocols to a request that asked for none");
    r->state = S_FIELDS;
    return PC_H1R_MORE;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int keep_header(struct pc_h1resp *r, const char *name, size_t nl, const char *v, size_t vl)
{
    if (r->n_headers == PC_H1R_MAX_KEPT)
        return 0; /* a model server with hundreds of headers: the first ones are kept */
    if (r->n_headers == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct pc_header *h = realloc(r->headers, cap * sizeof *h);
        if (h == NULL)
            return -1;
        r->headers = h;
        r->cap = cap;
    }
    struct pc_header *h = &r->headers[r->n_headers];
    h->name = pc_arena_strndup(&r->text, name, nl);
    h->value = pc_arena_strndup(&r->text, v, vl);
    if (h->name == NULL || h->value == NULL)
        return -1;
    r->n_headers++;
    return 0;
}

/* Digits only, no overflow: 0 and *out, else -1. */
static int parse_length(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Content-Length: one value, or a list of one value repeated (RFC 9110 8.6). */
static enum pc_h1r_result content_length(struct pc_h1resp *r, const char *v, size_t n)
{
    const char *p = v, *end = v + n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end;
        const char *a = p, *b = e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        uint64_t x;
        if (parse_length(a, (size_t)(b - a), &x) != 0 || x > INT64_MAX)
            return fail(r, "malformed Content-Length");
        if (r->has_length && (uint64_t)r->length != x)
            return fail(r, "two different Content-Length values");
        r->has_length = 1;
        r->length = (int64_t)x;
        p = comma != NULL ? comma + 1 : end;
    }
    if (!r->has_length)
        return fail(r, "empty Content-Length");
    return PC_H1R_MORE;
}

/* The last element of a Transfer-Encoding list is chunked. */
static int chunked_last(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ','))
        n--;
    size_t i = n;
    while (i > 0 && v[i - 1] != ',' && v[i - 1] != ' ' && v[i - 1] != '\t')
        i--;
    return n - i == 7 && strncasecmp(v + i, "chunked", 7) == 0;
}

static enum pc_h1r_result field_line(struct pc_h1resp *r, const char *s, size_t n)
{
    if (s[0] == ' ' || s[0] == '\t')
        return fail(r, "obsolete line folding");
    const char *colon = memchr(s, ':', n);
    if (colon == NULL || colon == s)
        return fail(r, "malformed header field");
    size_t nl = (size_t)(colon - s);
    for (size_t i = 0; i < nl; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return fail(r, "malformed header field name");
    }
    const char *v = colon + 1, *end = s + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
    for (size_t i = 0; i < vl; i++) { /* a value goes on to the client: no CR, no NUL */
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(r, "control character in a header field");
    }
    if (r->status < 200)
        return PC_H1R_MORE; /* an interim response's fields are dropped with it */
    char name[32];
    int short_name = nl < sizeof name;
    if (short_name) {
        memcpy(name, s, nl);
        name[nl] = '\0';
    }
    if (short_name && strcasecmp(name, "content-length") == 0) {
        if (content_length(r, v, vl) != PC_H1R_MORE)
            return PC_H1R_ERROR;
        if (!r->head_request)
            return PC_H1R_MORE;
    } else if (short_name && strcasecmp(name, "transfer-encoding") == 0) {
        r->has_te = 1;
        r->chunked = vl > 0 && chunked_last(v, vl); /* the last line's last element */
    } else if (short_name && strcasecmp(name, "connection") == 0) {
        if ((r->conn.len > 0 && pc_buf_append_char(&r->conn, ',') != 0) ||
            pc_buf_append(&r->conn, v, vl) != 0)
            return fail(r, "out of memory");
    }
    if (short_name && pc_http_is_hop_by_hop(name))
        return PC_H1R_MORE;
    if (keep_header(r, s, nl, v, vl) != 0)
        return fail(r, "out of memory");
    return PC_H1R_MORE;
}

/* The empty line after the fields: an interim response starts over, a final one decides
 * its framing and which headers go on. */
static enum pc_h1r_result head_end(struct pc_h1resp *r)
{
    if (r->status < 200) {
        drop_headers(r);
        r->state = S_STATUS;
        return PC_H1R_MORE;
    }
    if (r->conn.len > 0) {
        r->conn_close = pc_h1parse_list_has(r->conn.data, "close");
        r->conn_keep = pc_h1parse_list_has(r->conn.data, "keep-alive");
        r->n_headers = pc_http_drop_connection_named(r->headers, r->n_headers, r->conn.data);
    }
    r->keep_alive = r->minor >= 1 ? !r->conn_close : r->conn_keep && !r->conn_close;
    if (r->head_request || r->status == 204 || r->status == 304) {
        r->state = S_DONE;
        r->length = -1; /* no body comes, whatever a length says */
    } else if (r->has_te) {
        /* Both, or a coding but chunked last: not a length to trust for another response. */
        r->keep_alive = 0;
        r->length = -1;
        r->state = r->chunked ? S_CHUNK_SIZE : S_CLOSE;
        r->until_close = !r->chunked;
    } else if (r->has_length) {
        r->left = (uint64_t)r->length;
        r->state = r->left > 0 ? S_BODY : S_DONE;
    } else {
        r->until_close = 1;
        r->keep_alive = 0;
        r->state = S_CLOSE;
    }
    return PC_H1R_HEAD;
}

static enum pc_h1r_result chunk_size_line(struct pc_h1resp *r, const char *s, size_t n)
{
    uint64_t x = 0;
    size_t i = 0;
    for (; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (x > (UINT64_MAX >> 4))
            return fail(r, "chunk size too large");
        x = (x << 4) | (uint64_t)d;
    }
    if (i == 0)
        return fail(r, "malformed chunk size");
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && s[i] != ';')
        return fail(r, "malformed chunk size");
    r->left = x;
    r->state = x > 0 ? S_CHUNK_DATA : S_TRAILER;
    return PC_H1R_MORE;
}

/* One whole line (without its LF, a CR before it dropped) in the state it belongs to. */
static enum pc_h1r_result line_done(struct pc_h1resp *r, const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '\r')
        n--;
    switch (r->state) {
    case S_STATUS:
        return n == 0 ? PC_H1R_MORE : status_line(r, s, n);
    case S_FIELDS:
        return n == 0 ? head_end(r) : field_line(r, s, n);
    case S_CHUNK_SIZE:
        return chunk_size_line(r, s, n);
    case S_CHUNK_END:
        if (n != 0)
            return fail(r, "chunk data longer than its size");
        r->state = S_CHUNK_SIZE;
        return PC_H1R_MORE;
    case S_TRAILER:
        if (n == 0)
            r->state = S_DONE;
        return PC_H1R_MORE;
    default:
        return fail(r, "internal state");
    }
}

/* The bound on the line the state reads. */
static size_t line_max(const struct pc_h1resp *r)
{
    return r->state == S_CHUNK_SIZE || r->state == S_CHUNK_END ? PC_H1R_MAX_LINE : PC_H1R_MAX_HEAD;
}

enum pc_h1r_result pc_h1resp_feed(struct pc_h1resp *r, const char *p, size_t n, size_t *used,
                                  const char **data, size_t *dlen)
{
    size_t i = 0;
    *data = NULL;
    *dlen = 0;
    for (;;) {
        enum pc_h1r_result res = PC_H1R_MORE;
        switch (r->state) {
        case S_DONE:
            *used = i;
            return PC_H1R_DONE;
        case S_FAILED:
            *used = i;
            return PC_H1R_ERROR;
        case S_BODY:
        case S_CHUNK_DATA:
        case S_CLOSE: {
            if (i == n) {
                *used = i;
                return PC_H1R_MORE;
            }
            size_t take = n - i;
            if (r->state != S_CLOSE && take > r->left)
                take = (size_t)r->left;
            *data = p + i;
            *dlen = take;
            *used = i + take;
            if (r->state != S_CLOSE) {
                r->left -= take;
                if (r->left == 0)
                    r->state = r->state == S_BODY ? S_DONE : S_CHUNK_END;
            }
            return PC_H1R_DATA;
        }
        default:
            break;
        }
        /* A line: S_STATUS, S_FIELDS, S_CHUNK_SIZE, S_CHUNK_END, S_TRAILER. */
        if (i == n) {
            *used = i;
            return PC_H1R_MORE;
        }
        r->got_bytes = 1;
        const char *nl = memchr(p + i, '\n', n - i);
        size_t take = nl != NULL ? (size_t)(nl - (p + i)) + 1 : n - i;
        int in_head = r->state == S_STATUS || r->state == S_FIELDS || r->state == S_TRAILER;
        if (in_head && (r->head_bytes += take) > PC_H1R_MAX_HEAD) {
            *used = i;
            return fail(r, "head too large");
        }
        if (r->line.len + take > line_max(r)) {
            *used = i;
            return fail(r, "line too long");
        }
        if (nl == NULL) {
            if (pc_buf_append(&r->line, p + i, take) != 0) {
                *used = i;
                return fail(r, "out of memory");
            }
            *used = n;
            return PC_H1R_MORE;
        }
        if (r->line.len > 0) {
            if (pc_buf_append(&r->line, p + i, take - 1) != 0) {
                *used = i;
                return fail(r, "out of memory");
            }
            res = line_done(r, r->line.data, r->line.len);
            r->line.len = 0;
        } else {
            res = line_done(r, p + i, take - 1);
        }
        i += take;
        if (res != PC_H1R_MORE) {
            *used = i;
            return res;
        }
    }
}

enum pc_h1r_result pc_h1resp_eof(struct pc_h1resp *r)
{
    if (r->state == S_CLOSE || r->state == S_DONE) {
        r->state = S_DONE;
        return PC_H1R_DONE;
    }
    if (r->state != S_FAILED)
        fail(r, r->got_bytes ? "the connection closed before the response ended"
                             : "the connection closed without a response");
    return PC_H1R_ERROR;
}
