/*
 * fuzz_h1resp: the HTTP/1.1 response reader on arbitrary bytes, read as one model server
 * connection's input. The first byte picks whether the request was HEAD and whether the
 * connection closes after the input; the rest is read whole and again in pieces cut where a
 * hash of the input says (as a socket would deliver it). Invariants:
 *   - whole or in pieces, the reader reads the same: the same end (complete, refused with
 *     the same reason, or waiting for more), status, length, keep-alive, headers and body,
 *     and the same bytes consumed
 *   - it never consumes a byte past its response, and MORE consumes all it was given;
 *     body bytes are a span of the piece fed, and never more than Content-Length
 *   - what it keeps is safe to pass on to a client: header names are tchars and no
 *     hop-by-hop name, values hold no control byte but HTAB and no OWS at either end
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/h1resp.h"

struct reading {
    enum pc_h1r_result end;
    int status, keep_alive, heads;
    int64_t length;
    size_t used, body_len, n_headers;
    uint64_t body_hash, head_hash;
    char err[160];
};

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *d = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_header(const struct pc_header *h)
{
    FUZZ_CHECK(h->name[0] != '\0');
    for (const char *p = h->name; *p; p++)
        FUZZ_CHECK(is_tchar((unsigned char)*p));
    FUZZ_CHECK(!pc_http_is_hop_by_hop(h->name));
    size_t vl = strlen(h->value);
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)h->value[i];
        FUZZ_CHECK(!((c < 0x20 && c != '\t') || c == 0x7f));
    }
    if (vl > 0) {
        FUZZ_CHECK(h->value[0] != ' ' && h->value[0] != '\t');
        FUZZ_CHECK(h->value[vl - 1] != ' ' && h->value[vl - 1] != '\t');
    }
}

static void read_it(const uint8_t *d, size_t n, int head_req, int eof, uint64_t seed,
                    struct reading *g)
{
    memset(g, 0, sizeof *g);
    g->body_hash = g->head_hash = 1469598103934665603ull;
    struct pc_h1resp r;
    pc_h1resp_init(&r, head_req);
    size_t pos = 0;
    enum pc_h1r_result res = PC_H1R_MORE;
    while (res != PC_H1R_DONE && res != PC_H1R_ERROR) {
        size_t take = n - pos;
        if (seed != 0 && take > 0) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            take = (seed & 3) == 0 ? 1 : (size_t)(seed >> 8) % (take < 64 ? take : 64) + 1;
            if (take > n - pos)
                take = n - pos;
        }
        char *p = fuzz_dup(d + pos, take);
        size_t off = 0;
        for (;;) {
            size_t used = 0, dl = 0;
            const char *data = NULL;
            res = pc_h1resp_feed(&r, p + off, take - off, &used, &data, &dl);
            FUZZ_CHECK(used <= take - off);
            if (res == PC_H1R_DATA) {
                FUZZ_CHECK(data >= p + off && data + dl == p + off + used && dl > 0);
                g->body_hash = mix(g->body_hash, data, dl);
                g->body_len += dl;
            }
            off += used;
            if (res == PC_H1R_HEAD) {
                g->heads++;
                g->status = r.status;
                g->keep_alive = r.keep_alive;
                g->length = r.length;
                FUZZ_CHECK(r.status >= 200 && r.status <= 599);
                size_t nh = 0;
                struct pc_arena text;
                struct pc_header *h = pc_h1resp_take_headers(&r, &nh, &text);
                FUZZ_CHECK(nh <= PC_H1R_MAX_KEPT);
                for (size_t i = 0; i < nh; i++) {
                    check_header(&h[i]);
                    g->head_hash = mix(g->head_hash, h[i].name, strlen(h[i].name) + 1);
                    g->head_hash = mix(g->head_hash, h[i].value, strlen(h[i].value) + 1);
                }
                free(h);
                pc_arena_release(&text);
                g->n_headers += nh;
                continue;
            }
            if (res != PC_H1R_DATA)
                break;
        }
        free(p);
        pos += off;
        if (res == PC_H1R_MORE) {
            FUZZ_CHECK(off == take);
            if (pos == n) {
                if (eof)
                    res = pc_h1resp_eof(&r);
                break;
            }
        }
    }
    if (g->length >= 0 && res == PC_H1R_DONE)
        FUZZ_CHECK(g->body_len == (size_t)g->length);
    if (g->length >= 0)
        FUZZ_CHECK(g->body_len <= (size_t)g->length);
    FUZZ_CHECK(g->heads <= 1);
    g->end = res;
    g->used = pos;
    snprintf(g->err, sizeof g->err, "%s", r.err);
    pc_h1resp_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int head_req = data[0] & 1, eof = (data[0] >> 1) & 1;
    data++;
    size--;
    struct reading whole, cut;
    read_it(data, size, head_req, eof, 0, &whole);
    read_it(data, size, head_req, eof, mix(1469598103934665603ull, data, size) | 1, &cut);
    FUZZ_CHECK(whole.end == cut.end);
    FUZZ_CHECK(whole.status == cut.status && whole.keep_alive == cut.keep_alive);
    FUZZ_CHECK(whole.heads == cut.heads && whole.length == cut.length);
    FUZZ_CHECK(whole.n_headers == cut.n_headers && whole.head_hash == cut.head_hash);
    FUZZ_CHECK(whole.body_len == cut.body_len && whole.body_hash == cut.body_hash);
    FUZZ_CHECK(strcmp(whole.err, cut.err) == 0);
    if (whole.end != PC_H1R_ERROR)
        FUZZ_CHECK(whole.used == cut.used);
    return 0;
}
