/*
 * fixed_server: the HTTP floor of scripts/bench. Answers every request with one fixed
 * JSON body, keep-alive, on libevent bufferevents (the same machinery as predcache's
 * http.c), and does nothing else: no routing, no key, no Redis. Driven by the same wrk
 * load as predcache, it shows the most an HTTP server on this machine can do.
 *
 *     usage: fixed_server PORT [BODY_BYTES [DELAY_US]]   (binds 127.0.0.1; 8192, 0)
 *
 * A request is read whole (head up to the blank line, then Content-Length bytes of body)
 * before it is answered; pipelined requests are answered in order. Chunked bodies get
 * 501 and a close. SIGTERM or SIGINT stops it.
 *
 * With DELAY_US, each answer goes out that long after its request was read (a precise
 * timer, one per connection, over the connection's queue of due times): the bench's
 * model server for the miss row, a model that takes a fixed time and costs next to no
 * CPU, so that what a miss through predcache adds is predcache's own. Its answer says
 * which request it answers: BODY_BYTES (at least MIN_DIGEST_BODY) of
 *     {"predictions":[[0.5,...]],"received":{"body_sha256":"<hex SHA-256 of the body>"}}
 * so that scripts/bench can check every answer of a miss run against its own request. A
 * GET is a TF Serving status request then: it is answered at once with version 1
 * AVAILABLE. Without DELAY_US (the floor) the answer is one fixed body, never hashed.
 *
 * gRPC: a connection that opens with the HTTP/2 client preface (h2c with prior knowledge,
 * as gRPC clients and h2load talk) is served by libnghttp2 instead, on the same port.
 * Every call, whatever its path, is read whole (its DATA up to END_STREAM) and answered
 * DELAY_US later (at once without it) with one gRPC message, a TF Serving PredictResponse
 * of about BODY_BYTES (at least MIN_GRPC_BODY) in the trailers' grpc-status 0:
 *     outputs "predictions": DT_FLOAT [1, K] of 0.5 (K to fill BODY_BYTES)
 *     model_spec: name "bench", version 1
 *     outputs "received": DT_STRING [1], the hex SHA-256 of the request message (the
 *             bytes after the 5-byte gRPC prefix)
 * so that scripts/bench checks the answers of its gRPC phases against their requests.
 * A call of tensorflow.serving.ModelService/GetModelStatus (predcache's version lookup for
 * calls that name no version) is answered at once: version 1 AVAILABLE.
 * One nghttp2 server session per connection, its own queue of due answers.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <nghttp2/nghttp2.h>
#include <openssl/sha.h>

#include "bench_loop.h"

#define MAX_HEAD 65536
#define MAX_BODY (64L * 1024 * 1024)
#define HEX_LEN (2 * SHA256_DIGEST_LENGTH)

/* One answer waiting for its time: when it is due, and the digest of its request (and,
 * for gRPC, the stream it answers). */
struct pending {
    struct timeval due;
    char hex[HEX_LEN];
    int32_t stream_id;
};

struct conn {
    struct bufferevent *bev;
    size_t need;     /* head + body bytes of the request being read; 0: head not seen */
    size_t head_len; /* bytes of head, blank line included */
    int is_get;      /* the request being read is a GET */
    int closing;     /* close once the output has drained */
    struct event *timer;
    struct pending *due; /* the pending answers, oldest first (a ring) */
    size_t n_due, cap_due, head_due;
    nghttp2_session *h2; /* an HTTP/2 (gRPC) connection */
};

/* One gRPC call of an HTTP/2 connection: the request's DATA, then the answer being sent. */
struct call {
    int status; /* a GetModelStatus call */
    unsigned char *req;
    size_t len, cap;
    unsigned char *ans; /* the gRPC frame of the answer */
    size_t ans_len, sent;
};

static void h2_flush(struct conn *c);
static void h2_answer(struct conn *c, int32_t stream_id, const char *hex);

static char *answer;
static size_t answer_len;
static long delay_us;

/* The delayed answer is digest_head, then the request's hex digest, then digest_tail. */
static const char digest_tail[] = "\"}}";
static char *digest_head;
static size_t digest_head_len, digest_body_len;
#define DIGEST_KEY ",\"received\":{\"body_sha256\":\""
#define DIGEST_REST (sizeof DIGEST_KEY - 1 + HEX_LEN + sizeof digest_tail - 1)
#define MIN_DIGEST_BODY (sizeof "{\"predictions\":[[0.5]]}" - 1 + DIGEST_REST)

static const char status_body[] =
    "{\"model_version_status\":[{\"version\":\"1\",\"state\":\"AVAILABLE\",\"status\":"
    "{\"error_code\":\"OK\",\"error_message\":\"\"}}]}";
static char status_answer[512];
static size_t status_answer_len;

static const char bad_request[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
static const char not_impl[] = "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n"
                               "Connection: close\r\n\r\n";

static void conn_free(struct conn *c)
{
    if (c == NULL)
        return;
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->h2 != NULL)
        nghttp2_session_del(c->h2); /* frees the calls (on_stream_close) */
    free(c->due);
    bufferevent_free(c->bev);
    free(c);
}

static void arm(struct conn *c, const struct timeval *now)
{
    struct timeval wait;
    evutil_timersub(&c->due[c->head_due].due, now, &wait);
    if (wait.tv_sec < 0)
        wait = (struct timeval){0, 0};
    evtimer_add(c->timer, &wait);
}

/* Answers every pending request that is due, then waits for the next one. */
static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    struct timeval now;
    evutil_gettimeofday(&now, NULL);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (c->n_due > 0 && !evutil_timercmp(&c->due[c->head_due].due, &now, >)) {
        struct pending *p = &c->due[c->head_due];
        if (c->h2 != NULL) {
            h2_answer(c, p->stream_id, p->hex);
        } else {
            evbuffer_add_reference(out, digest_head, digest_head_len, NULL, NULL);
            evbuffer_add(out, p->hex, HEX_LEN);
            evbuffer_add_reference(out, digest_tail, sizeof digest_tail - 1, NULL, NULL);
        }
        c->head_due = (c->head_due + 1) % c->cap_due;
        c->n_due--;
    }
    if (c->n_due > 0)
        arm(c, &now);
    if (c->h2 != NULL)
        h2_flush(c);
}

/* Queues the answer to a request whose body is body[0..len), due DELAY_US from now. 0 ok,
 * -1 no memory. */
static int answer_later(struct conn *c, const unsigned char *body, size_t len, int32_t stream_id)
{
    if (c->timer == NULL &&
        (c->timer = evtimer_new(bufferevent_get_base(c->bev), on_due, c)) == NULL)
        return -1;
    if (c->n_due == c->cap_due) {
        size_t cap = c->cap_due ? 2 * c->cap_due : 4;
        struct pending *d = malloc(cap * sizeof *d);
        if (d == NULL)
            return -1;
        for (size_t i = 0; i < c->n_due; i++)
            d[i] = c->due[(c->head_due + i) % c->cap_due];
        free(c->due);
        c->due = d;
        c->cap_due = cap;
        c->head_due = 0;
    }
    struct pending *p = &c->due[(c->head_due + c->n_due) % c->cap_due];
    p->stream_id = stream_id;
    unsigned char md[SHA256_DIGEST_LENGTH];
    static const char hexdigits[] = "0123456789abcdef";
    SHA256(body, len, md);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        p->hex[2 * i] = hexdigits[md[i] >> 4];
        p->hex[2 * i + 1] = hexdigits[md[i] & 15];
    }
    struct timeval now, delay = {delay_us / 1000000, delay_us % 1000000};
    evutil_gettimeofday(&now, NULL);
    evutil_timeradd(&now, &delay, &p->due);
    if (c->n_due++ == 0)
        arm(c, &now);
    return 0;
}

/* The value of header name in a NUL-terminated head, or NULL; borrows head. */
static const char *header_value(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            p += n + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            return p;
        }
    }
    return NULL;
}

/*
 * Reads the head of the next request once it is complete (c->need set); 0 also when it
 * is not complete yet (c->need still 0); -1 bad request; -2 chunked body.
 */
static int parse_head(struct conn *c, struct evbuffer *in)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return evbuffer_get_length(in) > MAX_HEAD ? -1 : 0;
    c->head_len = (size_t)end.pos + 4;
    if (c->head_len > MAX_HEAD)
        return -1;
    char head[MAX_HEAD + 1];
    evbuffer_copyout(in, head, c->head_len);
    head[c->head_len] = '\0';
    if (header_value(head, "Transfer-Encoding") != NULL)
        return -2;
    const char *cl = header_value(head, "Content-Length");
    long body = cl != NULL ? strtol(cl, NULL, 10) : 0;
    if (body < 0 || body > MAX_BODY)
        return -1;
    const char *conn = header_value(head, "Connection");
    if (conn != NULL && strncasecmp(conn, "close", 5) == 0)
        c->closing = 1;
    if (strstr(head, " HTTP/1.0\r\n") != NULL && (conn == NULL || strncasecmp(conn, "keep", 4)))
        c->closing = 1;
    c->need = c->head_len + (size_t)body;
    c->is_get = strncmp(head, "GET ", 4) == 0;
    return 0;
}

/* ------------------------------------------------------------------ gRPC (HTTP/2) */

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof preface - 1)

/* The gRPC answer: a 5-byte prefix and a PredictResponse whose last bytes are the request
 * message's hex digest (grpc_head, then the digest). */
static unsigned char *grpc_head;
static size_t grpc_head_len;
#define MIN_GRPC_BODY 160

static size_t put_varint(unsigned char *p, unsigned long long v)
{
    size_t n = 0;
    do {
        p[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            p[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

/* Appends tag, a varint length and the bytes; returns the new end. */
static unsigned char *put_len(unsigned char *p, unsigned tag, const void *data, size_t len)
{
    p += put_varint(p, tag << 3 | 2);
    p += put_varint(p, len);
    if (data != NULL)
        memcpy(p, data, len);
    return p + len;
}

/* The answer of about n bytes (message and prefix) up to its digest (see the top). */
static unsigned char *make_grpc_head(size_t n, size_t *len)
{
    unsigned char tensor[24], entry[64], spec[32], msg[256];
    unsigned char *t, *e, *m;
    size_t k = n > MIN_GRPC_BODY ? (n - MIN_GRPC_BODY) / 4 + 1 : 1; /* floats */
    unsigned char *out = malloc(4 * k + 512);
    if (out == NULL)
        return NULL;
    unsigned char *p = out + 5;
    /* outputs {"predictions": DT_FLOAT [1, k] 0.5 ...}, written inside out */
    unsigned char shape[16], dim[8], *s = shape, *d;
    d = dim + put_varint(dim, 1 << 3);
    d += put_varint(d, 1);
    s = put_len(s, 2, dim, (size_t)(d - dim));
    d = dim + put_varint(dim, 1 << 3);
    d += put_varint(d, k);
    s = put_len(s, 2, dim, (size_t)(d - dim));
    t = tensor + put_varint(tensor, 1 << 3);
    t += put_varint(t, 1); /* DT_FLOAT */
    t = put_len(t, 2, shape, (size_t)(s - shape));
    size_t floats = 4 * k, fl_hdr = 1 + put_varint(msg, floats);
    size_t tensor_len = (size_t)(t - tensor) + fl_hdr + floats;
    e = put_len(entry, 1, "predictions", 11);
    e += put_varint(e, 2 << 3 | 2);
    e += put_varint(e, tensor_len);
    p += put_varint(p, 1 << 3 | 2);
    p += put_varint(p, (size_t)(e - entry) + tensor_len);
    memcpy(p, entry, (size_t)(e - entry));
    p += e - entry;
    memcpy(p, tensor, (size_t)(t - tensor));
    p += t - tensor;
    p += put_varint(p, 5 << 3 | 2);
    p += put_varint(p, floats);
    for (size_t i = 0; i < k; i++, p += 4)
        memcpy(p, "\x00\x00\x00\x3f", 4); /* 0.5f, little-endian */
    /* model_spec {name "bench", version {value 1}} */
    unsigned char ver[4] = {1 << 3, 1};
    m = put_len(spec, 1, "bench", 5);
    m = put_len(m, 2, ver, 2);
    p = put_len(p, 2, spec, (size_t)(m - spec));
    /* outputs {"received": DT_STRING [1] "<hex>"}: the hex digest last */
    unsigned char one[2] = {1 << 3, 1};
    s = put_len(shape, 2, one, 2);
    t = tensor + put_varint(tensor, 1 << 3);
    t += put_varint(t, 7); /* DT_STRING */
    t = put_len(t, 2, shape, (size_t)(s - shape));
    tensor_len = (size_t)(t - tensor) + 2 + HEX_LEN; /* string_val: tag, length, hex */
    e = put_len(entry, 1, "received", 8);
    e += put_varint(e, 2 << 3 | 2);
    e += put_varint(e, tensor_len);
    p += put_varint(p, 1 << 3 | 2);
    p += put_varint(p, (size_t)(e - entry) + tensor_len);
    memcpy(p, entry, (size_t)(e - entry));
    p += e - entry;
    memcpy(p, tensor, (size_t)(t - tensor));
    p += t - tensor;
    *p++ = 8 << 3 | 2;
    *p++ = HEX_LEN;
    size_t msg_len = (size_t)(p - out) - 5 + HEX_LEN;
    out[0] = 0;
    out[1] = (unsigned char)(msg_len >> 24);
    out[2] = (unsigned char)(msg_len >> 16);
    out[3] = (unsigned char)(msg_len >> 8);
    out[4] = (unsigned char)msg_len;
    *len = (size_t)(p - out);
    return out;
}

static void hex_of(const unsigned char *data, size_t len, char *hex)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    static const char hexdigits[] = "0123456789abcdef";
    SHA256(data, len, md);
    for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        hex[2 * i] = hexdigits[md[i] >> 4];
        hex[2 * i + 1] = hexdigits[md[i] & 15];
    }
}

/* Sends what the session has to send. */
static void h2_flush(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n <= 0)
            break;
        evbuffer_add(out, data, (size_t)n);
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
        evbuffer_get_length(out) == 0)
        c->closing = 1;
}

static ssize_t answer_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *source, void *arg)
{
    (void)arg;
    struct call *k = source->ptr;
    size_t n = k->ans_len - k->sent;
    if (n > length)
        n = length;
    memcpy(buf, k->ans + k->sent, n);
    k->sent += n;
    if (k->sent == k->ans_len) {
        static const nghttp2_nv trailers[] = {
            {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE}};
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (nghttp2_submit_trailer(s, stream_id, trailers, 1) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* Answers the call on stream_id (if it is still open) with head and tail (a gRPC frame). */
static void h2_answer_bytes(struct conn *c, int32_t stream_id, const unsigned char *head,
                            size_t head_len, const char *tail, size_t tail_len)
{
    struct call *k = nghttp2_session_get_stream_user_data(c->h2, stream_id);
    if (k == NULL || k->ans != NULL)
        return; /* reset by the client meanwhile */
    k->ans = malloc(head_len + tail_len);
    if (k->ans == NULL) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    memcpy(k->ans, head, head_len);
    memcpy(k->ans + head_len, tail, tail_len);
    k->ans_len = head_len + tail_len;
    static const nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE}};
    nghttp2_data_provider prd = {.source.ptr = k, .read_callback = answer_read};
    nghttp2_submit_response(c->h2, stream_id, nv, 2, &prd);
}

/* Answers the call on stream_id with the PredictResponse naming the digest hex. */
static void h2_answer(struct conn *c, int32_t stream_id, const char *hex)
{
    h2_answer_bytes(c, stream_id, grpc_head, grpc_head_len, hex, HEX_LEN);
}

/* Marks a GetModelStatus call. */
static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    (void)flags;
    (void)arg;
    static const char status_path[] = "/tensorflow.serving.ModelService/GetModelStatus";
    struct call *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (k != NULL && nlen == 5 && memcmp(name, ":path", 5) == 0)
        k->status = vlen == sizeof status_path - 1 && memcmp(value, status_path, vlen) == 0;
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    (void)arg;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct call *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, k);
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *arg)
{
    (void)flags;
    (void)arg;
    struct call *k = nghttp2_session_get_stream_user_data(s, stream_id);
    if (k == NULL)
        return 0;
    if (k->len + len > (size_t)MAX_BODY)
        return nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_REFUSED_STREAM) ==
                       0
                   ? 0
                   : NGHTTP2_ERR_CALLBACK_FAILURE;
    if (k->len + len > k->cap) {
        size_t cap = k->cap ? k->cap : 16384;
        while (cap < k->len + len)
            cap *= 2;
        unsigned char *r = realloc(k->req, cap);
        if (r == NULL)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        k->req = r;
        k->cap = cap;
    }
    memcpy(k->req + k->len, data, len);
    k->len += len;
    return 0;
}

/* A call is complete at END_STREAM: its message digested, its answer due DELAY_US later. */
static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct conn *c = arg;
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct call *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (k == NULL)
        return 0;
    if (k->status) { /* GetModelStatusResponse: model_version_status {version 1, AVAILABLE} */
        static const unsigned char st[] = {0, 0, 0, 0, 6, 0x0a, 4, 0x08, 1, 0x10, 30};
        h2_answer_bytes(c, f->hd.stream_id, st, sizeof st, "", 0);
        return 0;
    }
    /* the message: after the 5-byte prefix, as long as the prefix says (or what came) */
    size_t off = k->len >= 5 ? 5 : k->len, len = k->len - off;
    if (k->len >= 5) {
        size_t said =
            (size_t)k->req[1] << 24 | (size_t)k->req[2] << 16 | (size_t)k->req[3] << 8 | k->req[4];
        if (said < len)
            len = said;
    }
    if (delay_us == 0) {
        char hex[HEX_LEN];
        hex_of(k->req + off, len, hex);
        h2_answer(c, f->hd.stream_id, hex);
        return 0;
    }
    return answer_later(c, k->req + off, len, f->hd.stream_id) == 0 ? 0
                                                                    : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t code, void *arg)
{
    (void)code;
    (void)arg;
    struct call *k = nghttp2_session_get_stream_user_data(s, stream_id);
    if (k != NULL) {
        nghttp2_session_set_stream_user_data(s, stream_id, NULL);
        free(k->req);
        free(k->ans);
        free(k);
    }
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks;

/* Makes c an HTTP/2 connection: the server session, its SETTINGS sent. 0 ok, -1 not. */
static int h2_start(struct conn *c)
{
    if (nghttp2_session_server_new(&c->h2, h2_callbacks, c) != 0) {
        c->h2 = NULL;
        return -1;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24) != 0)
        return -1;
    return 0;
}

/* Feeds what came to the session, then sends what it has. -1: close the connection. */
static int h2_read(struct conn *c, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)n);
    if (n > 0 && (data == NULL || nghttp2_session_mem_recv(c->h2, data, n) < 0))
        return -1;
    evbuffer_drain(in, n);
    h2_flush(c);
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);

    if (c->h2 == NULL && c->need == 0) { /* a new connection: HTTP/2's preface? */
        unsigned char first[PREFACE_LEN];
        size_t n = evbuffer_copyout(in, first, PREFACE_LEN) < 0 ? 0 : evbuffer_get_length(in);
        if (n > PREFACE_LEN)
            n = PREFACE_LEN;
        if (n > 0 && memcmp(first, preface, n) == 0) {
            if (n < PREFACE_LEN)
                return; /* more of it to come */
            if (h2_start(c) != 0) {
                conn_free(c);
                return;
            }
        }
    }
    if (c->h2 != NULL) {
        if (h2_read(c, in) != 0)
            conn_free(c);
        else if (c->closing && evbuffer_get_length(out) == 0)
            conn_free(c);
        return;
    }

    for (;;) {
        if (c->need == 0) {
            int rc = parse_head(c, in);
            if (rc < 0) {
                if (rc == -2)
                    evbuffer_add(out, not_impl, sizeof not_impl - 1);
                else
                    evbuffer_add(out, bad_request, sizeof bad_request - 1);
                c->closing = 1;
                bufferevent_disable(bev, EV_READ);
                return;
            }
            if (c->need == 0)
                return; /* head not complete yet */
        }
        if (evbuffer_get_length(in) < c->need)
            return;
        int queued = 0;
        if (delay_us > 0 && !c->is_get) {
            const unsigned char *req = evbuffer_pullup(in, (ev_ssize_t)c->need);
            queued =
                req == NULL ? -1 : answer_later(c, req + c->head_len, c->need - c->head_len, 0);
        }
        evbuffer_drain(in, c->need);
        c->need = 0;
        if (queued != 0) {
            conn_free(c);
            return;
        }
        if (delay_us > 0 && c->is_get)
            evbuffer_add_reference(out, status_answer, status_answer_len, NULL, NULL);
        else if (delay_us == 0)
            evbuffer_add_reference(out, answer, answer_len, NULL, NULL);
        if (c->closing) {
            bufferevent_disable(bev, EV_READ);
            return;
        }
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (c->closing)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    struct event_base *base = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* A JSON body of exactly n bytes (at least 32): {"predictions":[[0.5,0.5,...]]} padded. */
static char *make_body(size_t n)
{
    char *b = malloc(n + 1);
    if (b == NULL)
        return NULL;
    size_t len = (size_t)snprintf(b, n + 1, "{\"predictions\":[[0.5");
    while (len + 4 + 3 <= n) {
        memcpy(b + len, ",0.5", 4);
        len += 4;
    }
    memcpy(b + len, "]]}", 3);
    len += 3;
    while (len < n) /* pad with spaces: still the same JSON */
        b[len++] = ' ';
    b[len] = '\0';
    return b;
}

/*
 * The head of a delayed answer: status line and headers, then the start of a body of
 * n bytes (at least MIN_DIGEST_BODY) that the request's digest and digest_tail complete.
 */
static char *make_digest_head(size_t n, size_t *len)
{
    char *b = make_body(n - DIGEST_REST);
    if (b == NULL)
        return NULL;
    char *close = strrchr(b, '}'); /* {"predictions":[[...]]} padded: the object goes on */
    *close = ' ';
    size_t cap = n + 256;
    char *head = malloc(cap);
    if (head != NULL)
        *len = (size_t)snprintf(head, cap,
                                "HTTP/1.1 200 OK\r\nServer: fixed_server\r\n"
                                "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
                                "%s" DIGEST_KEY,
                                n, b);
    free(b);
    return head;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: fixed_server PORT [BODY_BYTES [DELAY_US]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long body_len = argc > 2 ? atol(argv[2]) : 8192;
    delay_us = argc > 3 ? atol(argv[3]) : 0;
    if (port <= 0 || port > 65535 || body_len < 32 || body_len > MAX_BODY || delay_us < 0 ||
        delay_us > 60000000) {
        fprintf(stderr, "fixed_server: bad PORT, BODY_BYTES (32..%ld) or DELAY_US\n", MAX_BODY);
        return 2;
    }

    int rc = 1;
    struct bench_loop l = {0};
    char *body = make_body((size_t)body_len);
    if (body == NULL)
        goto err;
    if (delay_us > 0) {
        digest_body_len = (size_t)body_len < MIN_DIGEST_BODY ? MIN_DIGEST_BODY : (size_t)body_len;
        digest_head = make_digest_head(digest_body_len, &digest_head_len);
        if (digest_head == NULL)
            goto err;
    }
    answer_len = (size_t)body_len + 128;
    answer = malloc(answer_len);
    if (answer == NULL)
        goto err;
    answer_len = (size_t)snprintf(answer, answer_len,
                                  "HTTP/1.1 200 OK\r\nServer: fixed_server\r\n"
                                  "Content-Type: application/json\r\nContent-Length: %ld\r\n\r\n%s",
                                  body_len, body);

    grpc_head = make_grpc_head((size_t)body_len, &grpc_head_len);
    if (grpc_head == NULL || nghttp2_session_callbacks_new(&h2_callbacks) != 0)
        goto err;
    nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, on_stream_close);

    status_answer_len = (size_t)snprintf(status_answer, sizeof status_answer,
                                         "HTTP/1.1 200 OK\r\nServer: fixed_server\r\n"
                                         "Content-Type: application/json\r\n"
                                         "Content-Length: %zu\r\n\r\n%s",
                                         sizeof status_body - 1, status_body);
    if (bench_loop_open(&l, "fixed_server", port, on_accept) != 0)
        goto err;
    if (delay_us > 0)
        fprintf(stderr,
                "fixed_server listening on 127.0.0.1:%d, %zu byte answers with the body's "
                "SHA-256 (gRPC: %zu), %ld us delay\n",
                port, digest_body_len, grpc_head_len + HEX_LEN, delay_us);
    else
        fprintf(stderr, "fixed_server listening on 127.0.0.1:%d, %ld byte answers (gRPC: %zu)\n",
                port, body_len, grpc_head_len + HEX_LEN);
    event_base_dispatch(l.base);
    rc = 0;

err:
    bench_loop_close(&l);
    if (h2_callbacks != NULL)
        nghttp2_session_callbacks_del(h2_callbacks);
    free(grpc_head);
    free(digest_head);
    free(answer);
    free(body);
    return rc;
}
