/*
 * h2io: the HTTP/2 ends' shared pieces (see the header).
 */
#include "predcache/h2io.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

int pc_h2_headers_add(struct pc_h2_headers *l, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    if (l->n == l->cap) {
        size_t c = l->cap ? 2 * l->cap : 16;
        struct pc_header *p = realloc(l->h, c * sizeof *p);
        if (p == NULL)
            return -1;
        l->h = p;
        l->cap = c;
    }
    char *n = strndup(name, nlen), *v = strndup(value, vlen);
    if (n == NULL || v == NULL) {
        free(n);
        free(v);
        return -1;
    }
    l->h[l->n].name = n;
    l->h[l->n++].value = v;
    return 0;
}

void pc_h2_headers_free(struct pc_h2_headers *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->h[i].name);
        free(l->h[i].value);
    }
    free(l->h);
    memset(l, 0, sizeof *l);
}

size_t pc_h2_nv(nghttp2_nv *nv, size_t at, size_t max, const struct pc_header *h, size_t n)
{
    for (size_t i = 0; i < n && at < max; i++)
        nv[at++] = (nghttp2_nv){(uint8_t *)h[i].name, (uint8_t *)h[i].value, strlen(h[i].name),
                                strlen(h[i].value), NGHTTP2_NV_FLAG_NONE};
    return at;
}

size_t pc_h2_copy_out(const uint8_t *src, size_t len, size_t *off, uint8_t *buf, size_t length,
                      uint32_t *flags)
{
    size_t n = len - *off;
    if (n > length)
        n = length;
    memcpy(buf, src + *off, n);
    *off += n;
    if (*off == len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return n;
}

const char *pc_h2_recv(nghttp2_session *ng, struct bufferevent *bev, const int *stop)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    while (evbuffer_get_length(in) > 0 && !*stop) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(ng, v.iov_base, v.iov_len);
        if (n < 0)
            return nghttp2_strerror((int)n);
        evbuffer_drain(in, (size_t)n);
    }
    return NULL;
}

const char *pc_h2_send(nghttp2_session *ng, struct bufferevent *bev, size_t high)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    while (evbuffer_get_length(out) < high) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(ng, &data);
        if (n < 0)
            return nghttp2_strerror((int)n);
        if (n == 0)
            break;
        if (bufferevent_write(bev, data, (size_t)n) != 0)
            return "out of memory";
    }
    return NULL;
}
