/*
 * h1parse: the HTTP/1.1 request reader (see the header for the rules it applies).
 *
 *     START --request line--> FIELDS --empty line: framing decided, PC_H1_HEAD-->
 *         BODY (Content-Length)                                   --> DONE
 *         CHUNK_SIZE -> CHUNK_DATA -> CHUNK_END -> CHUNK_SIZE ... -> TRAILER --> DONE
 *         DONE at once (no body)
 *     any state --refused--> FAILED
 *
 * Lines are assembled in r->line (so a line may arrive split anywhere) and bounded while
 * they grow: a client never makes the reader hold more than the limit of the line it is
 * in. Body bytes go straight to r->body.
 */
#include "predcache/h1parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static enum pc_h1_result fail(struct pc_h1req *r, int status, const char *why)
{
    r->state = PC_H1_S_FAILED;
    r->status = status;
    r->why = why;
    return PC_H1_ERROR;
}

void pc_h1parse_init(struct pc_h1req *r, const struct pc_h1_limits *lim)
{
    memset(r, 0, sizeof *r);
    pc_buf_init(&r->body);
    pc_buf_init(&r->line);
    r->lim = *lim;
    r->state = PC_H1_S_START;
    pc_arena_init(&r->text, r->text_first, sizeof r->text_first);
}

void pc_h1parse_release(struct pc_h1req *r)
{
    if (r == NULL)
        return;
    pc_arena_release(&r->text);
    pc_buf_release(&r->body);
    pc_buf_release(&r->line);
    memset(r, 0, sizeof *r);
}

int pc_h1parse_idle(const struct pc_h1req *r)
{
    return r->state == PC_H1_S_START && r->line.len == 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* A control byte other than HTAB: never part of a field value or a chunk extension. */
static int is_ctl(char c)
{
    return ((unsigned char)c < 0x20 && c != '\t') || c == 0x7f;
}

/* The next element of a comma-separated list, OWS trimmed (empty elements included: ""
 * is one empty element, "a," two). 0 when the list is exhausted; *p starts at the value. */
static int list_next(const char **p, const char **elem, size_t *len)
{
    if (*p == NULL)
        return 0;
    const char *s = *p, *comma = strchr(s, ',');
    const char *e = comma != NULL ? comma : s + strlen(s);
    while (s < e && is_ows(*s))
        s++;
    while (e > s && is_ows(e[-1]))
        e--;
    *elem = s;
    *len = (size_t)(e - s);
    *p = comma != NULL ? comma + 1 : NULL;
    return 1;
}

static int elem_is(const char *e, size_t n, const char *token)
{
    return n == strlen(token) && strncasecmp(e, token, n) == 0;
}

int pc_h1parse_list_has(const char *value, const char *token)
{
    const char *p = value, *e;
    size_t n;
    while (list_next(&p, &e, &n)) {
        if (elem_is(e, n, token))
            return 1;
    }
    return 0;
}

/* Declared in http.h; here, where the readers of both directions (h1resp) reach them
 * without the server. */
int pc_http_is_hop_by_hop(const char *name)
{
    switch (name[0] | 0x20) { /* each name below starts with one of these, in either case */
    case 'c':
    case 'k':
    case 'p':
    case 't':
    case 'u':
        break;
    default:
        return 0;
    }
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "transfer-encoding",
                                      "upgrade",
                                      "proxy-authenticate",
                                      "proxy-authorization"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
        if (pc_strcaseeq(name, hop[i]))
            return 1;
    }
    return 0;
}

int pc_http_is_hop_by_hop_in(const char *name, const struct pc_header *h, size_t n)
{
    if (pc_http_is_hop_by_hop(name))
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(h[i].name, "connection") && pc_h1parse_list_has(h[i].value, name))
            return 1;
    }
    return 0;
}

size_t pc_http_drop_connection_named(struct pc_header *h, size_t n, const char *conn_value)
{
    struct pc_header conn = {(char *)"Connection", (char *)conn_value};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pc_http_is_hop_by_hop_in(h[i].name, &conn, 1))
            h[k++] = h[i];
    }
    return k;
}

/* "METHOD SP target SP HTTP/1.x" (NUL-terminated, no NUL inside). */
static enum pc_h1_result parse_request_line(struct pc_h1req *r, const char *line)
{
    const char *sp1 = strchr(line, ' ');
    if (sp1 == NULL || sp1 == line)
        return fail(r, 400, "malformed request line");
    const char *sp2 = strchr(sp1 + 1, ' ');
    if (sp2 == NULL || sp2 == sp1 + 1 || strchr(sp2 + 1, ' ') != NULL)
        return fail(r, 400, "malformed request line");
    for (const char *p = line; p < sp1; p++) {
        if (*p < 'A' || *p > 'Z')
            return fail(r, 400, "malformed request method");
    }
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/1.", 7) != 0 || ver[7] < '0' || ver[7] > '9' || ver[8] != '\0') {
        if (strncmp(ver, "HTTP/", 5) == 0)
            return fail(r, 505, "HTTP version not supported");
        return fail(r, 400, "malformed HTTP version");
    }
    r->minor = ver[7] - '0';
    r->method = pc_arena_strndup(&r->text, line, (size_t)(sp1 - line));
    r->target = pc_arena_strndup(&r->text, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    if (r->method == NULL || r->target == NULL)
        return fail(r, 503, "out of memory");
    for (const char *p = r->target; *p; p++) { /* the authority too, before it is dropped */
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return fail(r, 400, "invalid character in request target");
    }
    if (strncasecmp(r->target, "http://", 7) == 0 || strncasecmp(r->target, "https://", 8) == 0) {
        /* absolute-form (RFC 9112 3.2.2): keep the path and query, drop the authority */
        const char *auth = strstr(r->target, "//") + 2;
        const char *path = auth + strcspn(auth, "/?");
        struct pc_buf t;
        pc_buf_init(&t);
        if ((*path != '/' && pc_buf_append_char(&t, '/') != 0) ||
            pc_buf_append_str(&t, path) != 0) {
            pc_buf_release(&t);
            return fail(r, 503, "out of memory");
        }
        r->target = pc_arena_strndup(&r->text, t.data, t.len);
        pc_buf_release(&t);
        if (r->target == NULL)
            return fail(r, 503, "out of memory");
    }
    if (r->target[0] != '/')
        return fail(r, 400, "request target must be an absolute path");
    const char *q = strchr(r->target, '?');
    r->path = q ? pc_arena_strndup(&r->text, r->target, (size_t)(q - r->target)) : r->target;
    r->query = q ? q + 1 : "";
    if (r->path == NULL) /* query points into target: no copy of its own */
        return fail(r, 503, "out of memory");
    r->is_head = strcmp(r->method, "HEAD") == 0;
    r->keep_alive = r->minor >= 1;
    r->state = PC_H1_S_FIELDS;
    return PC_H1_MORE;
}

/*
 * Checks one "Name: value" line (NUL-terminated, no NUL inside); *colon is where the name
 * ends. 0 when it is a field line; else the status, with *why.
 */
static int check_field(const char *line, const char **colon, const char **why)
{
    if (is_ows(line[0])) {
        *why = "obsolete header line folding";
        return 400;
    }
    const char *c = strchr(line, ':');
    if (c == NULL || c == line) {
        *why = "malformed header line";
        return 400;
    }
    for (const char *p = line; p < c; p++) {
        if (!is_tchar(*p)) {
            *why = "invalid character in header name";
            return 400;
        }
    }
    *colon = c;
    return 0;
}

/* A bare CR (or any control byte but HTAB) would reach the model server as a header
 * boundary of its own: header injection. */
static int value_ok(const char *v)
{
    for (; *v; v++) {
        if (is_ctl(*v))
            return 0;
    }
    return 1;
}

static enum pc_h1_result parse_header_line(struct pc_h1req *r, const char *line)
{
    const char *colon, *why;
    int st = check_field(line, &colon, &why);
    if (st != 0)
        return fail(r, st, why);
    if (r->n_headers >= PC_H1_MAX_HEADERS)
        return fail(r, 431, "too many header fields");
    const char *v = colon + 1;
    if (!value_ok(v))
        return fail(r, 400, "control character in header value");
    while (is_ows(*v))
        v++;
    size_t vl = strlen(v);
    while (vl > 0 && is_ows(v[vl - 1]))
        vl--;
    struct pc_header *h = &r->headers[r->n_headers];
    h->name = pc_arena_strndup(&r->text, line, (size_t)(colon - line));
    h->value = pc_arena_strndup(&r->text, v, vl);
    if (h->name == NULL || h->value == NULL) {
        h->name = h->value = NULL;
        return fail(r, 503, "out of memory");
    }
    r->n_headers++;
    return PC_H1_MORE;
}

/* Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): reg-name, IPv4 and IP-literal
 * characters, percent-encodings, and the port's colon and digits. */
#define HOST_CHARS                                                                                 \
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]"

/* Decides the body's framing once the head is complete (the rules: see the header). */
static enum pc_h1_result finish_head(struct pc_h1req *r)
{
    size_t n_te = 0, n_cl = 0, codings = 0;
    int te_empty = 0, chunked_any = 0, chunked_last = 0, conn_close = 0, conn_keep = 0;
    int expect_bad = 0, host_bad = 0;
    size_t n_host = 0;
    const char *cl = NULL, *p, *e;
    size_t n;
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *name = r->headers[i].name, *value = r->headers[i].value;
        if (pc_strcaseeq(name, "Transfer-Encoding")) {
            n_te++;
            for (p = value; list_next(&p, &e, &n);) {
                if (n == 0) {
                    te_empty = 1;
                    continue;
                }
                codings++;
                chunked_last = elem_is(e, n, "chunked");
                chunked_any |= chunked_last;
            }
        } else if (pc_strcaseeq(name, "Content-Length")) {
            n_cl++;
            cl = value;
        } else if (pc_strcaseeq(name, "Connection")) {
            conn_close |= pc_h1parse_list_has(value, "close");
            conn_keep |= pc_h1parse_list_has(value, "keep-alive");
        } else if (pc_strcaseeq(name, "Expect")) {
            r->expect_continue = 1;
            for (p = value; list_next(&p, &e, &n);)
                expect_bad |= !elem_is(e, n, "100-continue");
        } else if (pc_strcaseeq(name, "Host")) {
            n_host++;
            host_bad |= value[strspn(value, HOST_CHARS)] != '\0';
        }
    }
    if (n_te > 0) {
        /* Two readers of these must never disagree on where the body ends (smuggling). */
        if (r->minor == 0) /* RFC 9112 6.1: faulty framing */
            return fail(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (n_cl > 0) /* RFC 9112 6.3 lets chunked win; refusing is the strict choice */
            return fail(r, 400, "both Transfer-Encoding and Content-Length");
        if (te_empty || codings == 0)
            return fail(r, 400, "malformed Transfer-Encoding");
        if (chunked_any && !chunked_last) /* RFC 9112 6.3: length unknown */
            return fail(r, 400, "chunked is not the final transfer coding");
        if (codings > 1 || !chunked_last)
            return fail(r, 501, "unsupported Transfer-Encoding");
        r->chunked = 1;
    } else if (n_cl > 0) {
        if (n_cl > 1)
            return fail(r, 400, "Content-Length given more than once");
        uint64_t v = 0;
        if (*cl == '\0')
            return fail(r, 400, "invalid Content-Length");
        for (p = cl; *p; p++) {
            uint64_t d = (uint64_t)(*p - '0');
            if (*p < '0' || *p > '9' || v > (UINT64_MAX - d) / 10)
                return fail(r, 400, "invalid Content-Length"); /* past 2^64 - 1 too */
            v = v * 10 + d;
        }
        if (v > r->lim.max_body_bytes)
            return fail(r, 413, "request body too large");
        r->content_length = r->body_left = (size_t)v;
        if (v > 0 && pc_buf_reserve(&r->body, (size_t)v) != 0)
            return fail(r, 503, "out of memory");
    }
    if (conn_close)
        r->keep_alive = 0;
    else if (r->minor == 0 && conn_keep)
        r->keep_alive = 1;
    if (expect_bad)
        return fail(r, 417, "unsupported expectation");
    /* RFC 9112 3.2: an HTTP/1.1 request without Host, any with two, or an invalid one */
    if (n_host > 1)
        return fail(r, 400, "Host given more than once");
    if (n_host == 0 && r->minor >= 1)
        return fail(r, 400, "no Host header");
    if (host_bad)
        return fail(r, 400, "invalid Host header");
    r->state = r->chunked ? PC_H1_S_CHUNK_SIZE : r->body_left > 0 ? PC_H1_S_BODY : PC_H1_S_DONE;
    return PC_H1_HEAD;
}

/*
 * chunk-size = 1*HEXDIG [BWS ";" chunk-ext]: strtoull would also take signs, "0x" and
 * leading blanks, which a front proxy may read differently (request smuggling). The
 * extension is not read, but may hold no control byte (a bare CR). 0 ok.
 */
static int parse_chunk_size(const char *line, size_t *out)
{
    size_t v = 0;
    const char *p = line;
    for (; pc_hexval((unsigned char)*p) >= 0; p++) {
        if (v > (SIZE_MAX >> 4))
            return -1;
        v = (v << 4) | (size_t)pc_hexval((unsigned char)*p);
    }
    if (p == line)
        return -1;
    while (is_ows(*p))
        p++;
    if (*p != '\0' && *p != ';')
        return -1;
    if (!value_ok(p))
        return -1;
    *out = v;
    return 0;
}

/* One complete line in r->line (LF included). PC_H1_MORE to go on reading. */
static enum pc_h1_result take_line(struct pc_h1req *r)
{
    char *s = r->line.data;
    size_t total = r->line.len, n = total - 1; /* without the LF */
    if (n > 0 && s[n - 1] == '\r')
        n--;
    s[n] = '\0';
    int in_head = r->state == PC_H1_S_START || r->state == PC_H1_S_FIELDS;
    if (in_head || r->state == PC_H1_S_TRAILER)
        r->head_bytes += total;
    enum pc_h1_result res = PC_H1_MORE;
    if (memchr(s, '\0', n) != NULL) {
        res = in_head ? fail(r, 400, "NUL byte in request head")
                      : fail(r, 400, "malformed chunked body");
    } else if (r->state == PC_H1_S_START) {
        if (n > 0) /* empty lines before a request are allowed (RFC 9112 2.2) */
            res = parse_request_line(r, s);
    } else if (r->state == PC_H1_S_FIELDS) {
        res = n == 0 ? finish_head(r) : parse_header_line(r, s);
    } else if (r->state == PC_H1_S_CHUNK_SIZE) {
        size_t sz;
        if (parse_chunk_size(s, &sz) != 0)
            res = fail(r, 400, "malformed chunked body");
        else if (sz > r->lim.max_body_bytes || r->body.len + sz > r->lim.max_body_bytes)
            res = fail(r, 413, "request body too large");
        else if (sz == 0)
            r->state = PC_H1_S_TRAILER;
        else {
            r->body_left = sz;
            r->state = PC_H1_S_CHUNK_DATA;
        }
    } else if (r->state == PC_H1_S_CHUNK_END) {
        if (n != 0)
            res = fail(r, 400, "malformed chunked body");
        else
            r->state = PC_H1_S_CHUNK_SIZE;
    } else { /* PC_H1_S_TRAILER: well-formed fields, dropped, until the empty line */
        const char *colon, *why;
        int st;
        if (n == 0) {
            r->state = PC_H1_S_DONE;
            res = PC_H1_DONE;
        } else if ((st = check_field(s, &colon, &why)) != 0) {
            res = fail(r, st, why);
        } else if (!value_ok(colon + 1)) {
            res = fail(r, 400, "control character in trailer value");
        }
    }
    r->line.len = 0;
    r->line.data[0] = '\0';
    return res;
}

/* Over the limit of the line being read: the request line alone (414), the head (431),
 * the trailers (431), a chunk line (400). */
static enum pc_h1_result line_too_long(struct pc_h1req *r)
{
    switch (r->state) {
    case PC_H1_S_START:
        return fail(r, 414, "request line too long");
    case PC_H1_S_FIELDS:
        return fail(r, 431, "request header fields too large");
    case PC_H1_S_TRAILER:
        return fail(r, 431, "request trailer fields too large");
    default:
        return fail(r, 400, "malformed chunked body");
    }
}

static size_t line_limit(const struct pc_h1req *r)
{
    if (r->state == PC_H1_S_CHUNK_SIZE || r->state == PC_H1_S_CHUNK_END)
        return PC_H1_MAX_CHUNK_LINE;
    return r->lim.max_header_bytes > r->head_bytes ? r->lim.max_header_bytes - r->head_bytes : 0;
}

enum pc_h1_result pc_h1parse_feed(struct pc_h1req *r, const char *in, size_t len, size_t *used)
{
    size_t pos = 0;
    enum pc_h1_result res = PC_H1_MORE;
    for (;;) {
        if (r->state == PC_H1_S_DONE) {
            res = PC_H1_DONE;
            break;
        }
        if (r->state == PC_H1_S_FAILED) {
            res = PC_H1_ERROR;
            break;
        }
        if (r->state == PC_H1_S_BODY || r->state == PC_H1_S_CHUNK_DATA) {
            size_t take = len - pos < r->body_left ? len - pos : r->body_left;
            if (take > 0 && pc_buf_append(&r->body, in + pos, take) != 0) {
                res = fail(r, 503, "out of memory");
                break;
            }
            pos += take;
            r->body_left -= take;
            if (r->body_left > 0)
                break; /* everything given was body */
            r->state = r->state == PC_H1_S_BODY ? PC_H1_S_DONE : PC_H1_S_CHUNK_END;
            continue;
        }
        if (pos == len)
            break;
        const char *nl = memchr(in + pos, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - (in + pos)) + 1 : len - pos;
        size_t limit = line_limit(r); /* fixed while a line grows */
        if (r->line.len > limit || n > limit - r->line.len) {
            res = line_too_long(r);
            break;
        }
        if (pc_buf_append(&r->line, in + pos, n) != 0) {
            res = fail(r, 503, "out of memory");
            break;
        }
        pos += n;
        if (nl == NULL)
            break;
        res = take_line(r);
        if (res != PC_H1_MORE)
            break;
    }
    if (res == PC_H1_DONE)
        pc_buf_release(&r->line); /* the request may wait a while for its handler */
    *used = pos;
    return res;
}
