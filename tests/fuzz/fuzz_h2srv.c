/*
 * fuzz_h2srv: the gRPC port's request decoding path on arbitrary bytes, read as what a
 * client sends once connected. One real h2srv connection (pc_h2_server_adopt_conn on one
 * end of a socketpair, on a real event_base run without blocking) takes them, so that
 * nghttp2's frame parser and HPACK decoder, h2srv's callbacks (streams, headers and their
 * bound, the body, its bound and the input budget, the hand-off, resets and closes) and a
 * handler run. The handler reads each request as the gRPC intake does (headers, method,
 * content type, grpc-timeout, the length-prefixed messages) and answers it with
 * pc_h2_reply: a message and trailers, a message alone, Trailers-Only, or a bare status;
 * at once (inside the session's callbacks), a few loop passes later, from its gone
 * callback, or only once the connection and the server were freed (the orphaned path);
 * and a gone callback may answer another request held (as a flight's leader would).
 *
 * Input: byte 0 and byte 1 are flags, the rest is the client's bytes, written in pieces
 * (cut as the seed says) with a loop pass between them; the loop then runs until nothing
 * moves (or a bound on passes is reached), and everything is freed.
 *   byte 0: bit 0  the input carries its own preface (nothing is put before it); else the
 *                  client preface goes first, and an empty SETTINGS frame unless bit 1
 *           bits 2-3 max_body_bytes, 4-5 max_header_bytes, 6-7 max_streams (tables below)
 *   byte 1: bits 0-1 the input budget's bound ([server] max_input_bytes, table below)
 *           bit 2  the server stops accepting (GOAWAY) once half the bytes are written
 *           bit 3  the client shuts its writing side once everything is written (EOF)
 *           bits 4-7 the seed of the pieces and of each answer's shape and timing
 * Invariants:
 *   - no crash, leak or undefined behaviour, whatever the bytes and the answers' timing
 *   - a request handed over is whole or over its bound: its body fits max_body_bytes (none
 *     when over), its header list fits max_header_bytes, header names are lowercase and
 *     not pseudo-headers, each one found by pc_h2_req_header; its client is alive then
 *   - gone is called at most once, only for a request not yet answered, and its client is
 *     no longer alive; once the server is freed every request still held has had it
 *   - a parsed gRPC message fits the body and says its own length; a grpc-timeout read is
 *     -1 or at least 0, and a positive one written out again reads back at least as long
 *   - what the server sends reads as HTTP/2 frames: SETTINGS first, only the frame types a
 *     server sends, each on the right stream, and nothing more of a stream's answer after
 *     it ended (END_STREAM) or was reset
 *   - once everything is freed, the input budget and the worker's gauge are back to 0
 */
#include "fuzz.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "predcache/budget.h"
#include "predcache/grpcwire.h"
#include "predcache/h2srv.h"
#include "predcache/log.h"

#define MAX_HELD 128     /* requests held at once; past it, answered at once */
#define MAX_PASSES 4096  /* loop passes per input */
#define WRITE_ALL_AT 512 /* from this pass on the rest of the input goes in one write */
#define QUIET_PASSES 3   /* passes with nothing moving before the run ends */

enum when { NOW, LATER, AT_GONE, AFTER_FREE };
enum shape { MESSAGE_TRAILERS, TRAILERS_ONLY, MESSAGE_ONLY, BARE };

/* ---- what the server sends ------------------------------------------------------------ */

#define MAX_ENDED 256 /* streams the reader remembers as ended */

/* Reads the server's bytes as frames, across reads: one frame header at a time. */
struct reader {
    uint8_t hd[9];
    size_t have;   /* bytes of hd read */
    size_t skip;   /* payload bytes still to pass over */
    size_t frames; /* frames read */
    uint32_t ended[MAX_ENDED];
    size_t n_ended;
};

static int ended(const struct reader *rd, uint32_t id)
{
    for (size_t i = 0; i < rd->n_ended; i++)
        if (rd->ended[i] == id)
            return 1;
    return 0;
}

/* One frame header of the server's: a frame type it may send, on the right stream, and no
 * HEADERS, DATA or CONTINUATION on a stream its answer has ended or it reset. */
static void frame_check(struct reader *rd)
{
    const uint8_t *h = rd->hd;
    uint8_t type = h[3], flags = h[4];
    uint32_t id = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
    FUZZ_CHECK(rd->frames > 0 || type == 4); /* the server's preface: SETTINGS */
    FUZZ_CHECK(type <= 9 && type != 5);      /* no PUSH_PROMISE, no unknown type */
    FUZZ_CHECK((id & 0x80000000u) == 0);
    if (type == 4 || type == 6 || type == 7) /* SETTINGS, PING, GOAWAY */
        FUZZ_CHECK(id == 0);
    if (type == 0 || type == 1 || type == 3 || type == 9) { /* DATA HEADERS RST CONTINUATION */
        FUZZ_CHECK(id != 0 && id % 2 == 1);                 /* a client's stream */
        if (type != 3)
            FUZZ_CHECK(!ended(rd, id));
        if ((type == 3 || ((type == 0 || type == 1) && (flags & 1))) && !ended(rd, id) &&
            rd->n_ended < MAX_ENDED)
            rd->ended[rd->n_ended++] = id;
    }
    rd->frames++;
}

static void reader_feed(struct reader *rd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (rd->skip > 0) {
            size_t k = n < rd->skip ? n : rd->skip;
            rd->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        rd->hd[rd->have++] = *p++;
        n--;
        if (rd->have == 9) {
            frame_check(rd);
            rd->skip = (size_t)rd->hd[0] << 16 | (size_t)rd->hd[1] << 8 | rd->hd[2];
            rd->have = 0;
        }
    }
}

struct run;

struct held {
    struct run *run;
    struct pc_h2_req *req; /* NULL once answered */
    enum when when;
    enum shape shape;
    int due;   /* LATER: the pass it is answered at */
    int chain; /* its gone callback also answers another held request (a flight's waiter) */
    int gone;
};

struct run {
    struct pc_h2_limits lim;
    uint64_t seed;
    int pass;
    size_t handled, answered;
    int64_t gauge; /* lim.input_bytes */
    struct held held[MAX_HELD];
    size_t n_held;
    struct reader out; /* the server's bytes */
};

static const size_t body_max[] = {64, 1024, 16384, 1 << 20};
static const size_t header_max[] = {128, 1024, 8192, 65536};
static const int streams_max[] = {1, 3, 16, 100};
static const size_t input_max[] = {0, 256, 8192, 1 << 20};

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\x00\x00\x00\x04\x00\x00\x00\x00\x00"; /* empty SETTINGS */
#define MAGIC_LEN 24
#define PREFACE_LEN (MAGIC_LEN + 9)

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);       /* as predcache runs: a write to a closed peer is an error */
    pc_log_set_level(PC_LOG_ERROR); /* h2srv's info lines, once per input, are noise here */
    return 0;
}

/* ---- the handler ------------------------------------------------------------------- */

/* Answers req as the input said, reading it again (it may be orphaned by now). */
static void answer(struct run *r, struct pc_h2_req *req, enum shape shape)
{
    size_t len;
    const uint8_t *body = pc_h2_req_body(req, &len);
    FUZZ_CHECK(body != NULL);
    if (pc_h2_req_over(req))
        FUZZ_CHECK(len == 0);

    /* The messages, as the intake reads them. */
    size_t off = 0, n_msg = 0, first_len = 0;
    const uint8_t *first = NULL;
    int framing = 1;
    while (off < len) {
        int compressed;
        const uint8_t *m;
        size_t mlen, used;
        framing = pc_grpc_frame_parse(body + off, len - off, r->lim.max_body_bytes, &compressed, &m,
                                      &mlen, &used);
        if (framing != 1)
            break;
        FUZZ_CHECK(used == mlen + PC_GRPC_PREFIX && used <= len - off);
        FUZZ_CHECK(m == body + off + PC_GRPC_PREFIX && (compressed == 0 || compressed == 1));
        if (n_msg++ == 0) {
            first = m;
            first_len = mlen;
        }
        off += used;
    }

    const char *ct = pc_h2_req_header(req, "content-type");
    int grpc = strcmp(pc_h2_req_method(req), "POST") == 0 && ct != NULL &&
               strncmp(ct, "application/grpc", 16) == 0;
    int code = PC_GRPC_OK;
    const char *gt = pc_h2_req_header(req, "grpc-timeout");
    if (pc_h2_req_over(req))
        code = PC_GRPC_RESOURCE_EXHAUSTED;
    else if (framing != 1 || n_msg != 1)
        code = PC_GRPC_INVALID_ARGUMENT;
    else if (gt != NULL && pc_grpc_timeout_parse(gt) < 0)
        code = PC_GRPC_INTERNAL;
    else if (gt != NULL && pc_grpc_timeout_parse(gt) == 0)
        code = PC_GRPC_DEADLINE_EXCEEDED;

    char status[8], msg[128];
    uint8_t prefix[PC_GRPC_PREFIX];
    snprintf(status, sizeof status, "%d", code);
    pc_grpc_message_encode(pc_h2_req_path(req), msg, sizeof msg);
    struct pc_header h[3], t[2];
    size_t nh = 0;
    h[nh++] = (struct pc_header){(char *)"content-type", (char *)"application/grpc"};
    const char *id = pc_h2_req_header(req, "x-request-id"); /* a client's value, sent back */
    if (id != NULL)
        h[nh++] = (struct pc_header){(char *)"x-request-id", (char *)id};
    t[0] = (struct pc_header){(char *)"grpc-status", status};
    t[1] = (struct pc_header){(char *)"grpc-message", msg};

    r->answered++;
    if (!grpc) { /* not gRPC: the protocol's answer is HTTP 415 */
        pc_h2_reply(req, 415, NULL, 0, NULL, 0, NULL, 0);
        return;
    }
    if (code != PC_GRPC_OK && shape != BARE)
        shape = TRAILERS_ONLY;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (shape == MESSAGE_TRAILERS || shape == MESSAGE_ONLY) { /* the first message, echoed */
        out_len = PC_GRPC_PREFIX + first_len;
        out = malloc(out_len);
        FUZZ_CHECK(out != NULL);
        pc_grpc_frame_prefix(prefix, 0, (uint32_t)first_len);
        memcpy(out, prefix, PC_GRPC_PREFIX);
        if (first_len > 0)
            memcpy(out + PC_GRPC_PREFIX, first, first_len);
    }
    switch (shape) {
    case MESSAGE_TRAILERS:
        pc_h2_reply(req, 200, h, nh, out, out_len, t, 1);
        break;
    case MESSAGE_ONLY:
        pc_h2_reply(req, 200, h, nh, out, out_len, NULL, 0);
        break;
    case TRAILERS_ONLY:
        pc_h2_reply(req, 200, h, nh, NULL, 0, t, 2);
        break;
    case BARE:
        pc_h2_reply(req, code == PC_GRPC_OK ? 200 : 400, NULL, 0, NULL, 0, NULL, 0);
        break;
    }
    free(out);
}

static void on_gone(void *arg)
{
    struct held *h = arg;
    FUZZ_CHECK(h->req != NULL && !h->gone);
    FUZZ_CHECK(!pc_h2_req_client_alive(h->req));
    h->gone = 1;
    struct run *r = h->run;
    if (h->when == AT_GONE) { /* as grpc_proxy does: CANCELLED, from the callback */
        answer(r, h->req, h->shape);
        h->req = NULL;
    }
    /* A leader whose client left may answer the calls that waited on it: another request,
     * of this connection or not, answered from inside this callback. */
    for (size_t i = 0; h->chain && i < r->n_held; i++) {
        struct held *o = &r->held[i];
        if (o != h && o->req != NULL && !o->gone) {
            answer(r, o->req, o->shape);
            o->req = NULL;
            break;
        }
    }
}

/* What the intake checks of a request handed over, whatever its answer. */
static void check_request(const struct run *r, struct pc_h2_req *req)
{
    FUZZ_CHECK(pc_h2_req_client_alive(req));
    FUZZ_CHECK(strlen(pc_h2_req_method(req)) < 16);
    FUZZ_CHECK(pc_h2_req_path(req) != NULL && pc_h2_req_client(req) != NULL);
    FUZZ_CHECK(pc_h2_req_start_us(req) > 0);
    size_t n, len, bytes = 0;
    const struct pc_header *h = pc_h2_req_headers(req, &n);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(h[i].name[0] != ':');
        for (const char *p = h[i].name; *p != '\0'; p++)
            FUZZ_CHECK(*p < 'A' || *p > 'Z');
        FUZZ_CHECK(pc_h2_req_header(req, h[i].name) != NULL);
        bytes += strlen(h[i].name) + strlen(h[i].value) + 32;
    }
    FUZZ_CHECK(bytes <= r->lim.max_header_bytes);
    pc_h2_req_body(req, &len);
    FUZZ_CHECK(len <= r->lim.max_body_bytes);
    if (pc_h2_req_over(req))
        FUZZ_CHECK(len == 0);
    const char *gt = pc_h2_req_header(req, "grpc-timeout");
    if (gt != NULL) {
        int64_t us = pc_grpc_timeout_parse(gt);
        FUZZ_CHECK(us >= -1); /* 0: the deadline has passed */
        if (us > 0) {
            char again[12];
            FUZZ_CHECK(pc_grpc_timeout_format(us, again) > 0);
            FUZZ_CHECK(pc_grpc_timeout_parse(again) >= us);
        }
    }
}

static void handle(struct pc_h2_req *req, void *arg)
{
    struct run *r = arg;
    r->handled++;
    check_request(r, req);
    /* The answer's timing and shape: the seed, the request's place and what it carried. */
    size_t len;
    pc_h2_req_body(req, &len);
    uint64_t x = mix(r->seed ^ mix(r->handled) ^ mix(len) ^ strlen(pc_h2_req_path(req)));
    enum when when = (enum when)(x & 3);
    enum shape shape = (enum shape)(x >> 2 & 3);
    if (when == NOW || r->n_held == MAX_HELD) {
        answer(r, req, shape);
        return;
    }
    struct held *h = &r->held[r->n_held++];
    *h = (struct held){.run = r,
                       .req = req,
                       .when = when,
                       .shape = shape,
                       .due = r->pass + 1 + (int)(x >> 4 & 7),
                       .chain = (x >> 7 & 3) == 0};
    pc_h2_req_on_gone(req, on_gone, h);
}

/* ---- the client and the loop ---------------------------------------------------------- */

static int held_due(const struct run *r)
{
    for (size_t i = 0; i < r->n_held; i++)
        if (r->held[i].req != NULL && r->held[i].when == LATER)
            return 1;
    return 0;
}

/* Bytes the server has not read yet. */
static int server_unread(struct pc_h2_server *srv, int fd)
{
    int n = 0;
    if (pc_h2_server_connections(srv) == 0 || ioctl(fd, FIONREAD, &n) != 0)
        return 0;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t f0 = data[0], f1 = data[1];
    size_t pre = f0 & 1 ? 0 : f0 & 2 ? MAGIC_LEN : PREFACE_LEN;
    size_t total = pre + size - 2;
    uint8_t *in = malloc(total ? total : 1);
    FUZZ_CHECK(in != NULL);
    memcpy(in, preface, pre);
    memcpy(in + pre, data + 2, size - 2);

    struct run *r = calloc(1, sizeof *r);
    FUZZ_CHECK(r != NULL);
    r->lim = (struct pc_h2_limits){
        .bind = PC_LISTEN_EXCLUSIVE,
        .max_body_bytes = body_max[f0 >> 2 & 3],
        .max_header_bytes = header_max[f0 >> 4 & 3],
        .max_streams = streams_max[f0 >> 6 & 3],
        .max_connections = 1,
        .idle_timeout_ms = 60000, /* never reached: the run does not wait */
        .input_bytes = &r->gauge,
    };
    r->seed = mix(f1 >> 4);
    pc_budget_input_set_limit(input_max[f1 & 3]);

    struct event_base *base = event_base_new();
    int sv[2];
    FUZZ_CHECK(base != NULL);
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    struct pc_h2_server *srv = pc_h2_server_new_unbound(base, &r->lim, handle, r);
    FUZZ_CHECK(srv != NULL);
    FUZZ_CHECK(pc_h2_server_adopt_conn(srv, sv[1], NULL) == 0);
    FUZZ_CHECK(pc_h2_server_adopt_conn(srv, -1, NULL) == -1); /* max_connections: 1 */

    uint64_t cut = r->seed;
    size_t off = 0;
    int writing = 1, stopped = 0, quiet = 0;
    uint8_t sink[16384];
    for (r->pass = 0; r->pass < MAX_PASSES; r->pass++) {
        int moved = 0;
        size_t handled = r->handled;
        if (writing && off < total) {
            cut = mix(cut);
            size_t left = total - off, piece = left;
            if (r->pass < WRITE_ALL_AT)
                piece = (cut & 3) == 0 ? (cut >> 8) % 8 + 1 : (cut >> 8) % 4096 + 1;
            ssize_t n =
                send(sv[0], in + off, piece < left ? piece : left, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                off += (size_t)n;
                moved = 1;
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                writing = 0; /* the server closed the connection */
            }
            if (off == total && (f1 & 8))
                shutdown(sv[0], SHUT_WR);
        }
        for (size_t i = 0; i < r->n_held; i++) {
            struct held *h = &r->held[i];
            if (h->req != NULL && h->when == LATER && h->due <= r->pass) {
                answer(r, h->req, h->shape);
                h->req = NULL;
                moved = 1;
            }
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        if ((f1 & 4) && !stopped && off >= total / 2) { /* after the loop read that half */
            pc_h2_server_stop_accepting(srv);
            stopped = 1;
            moved = 1;
        }
        ssize_t n;
        while ((n = recv(sv[0], sink, sizeof sink, MSG_DONTWAIT)) > 0) {
            reader_feed(&r->out, sink, (size_t)n);
            moved = 1;
        }
        if (r->handled != handled)
            moved = 1;
        int done = (off == total || !writing) && !held_due(r) && server_unread(srv, sv[1]) == 0;
        quiet = !moved && done ? quiet + 1 : 0;
        if (quiet == QUIET_PASSES)
            break;
    }

    /* Quiet: what waited for its gone callback (which did not come) is answered now, and
     * what waited for a later pass (the bound on passes was reached). */
    for (size_t i = 0; i < r->n_held; i++) {
        struct held *h = &r->held[i];
        if (h->req != NULL && (h->when == AT_GONE || h->when == LATER)) {
            answer(r, h->req, h->shape);
            h->req = NULL;
        }
    }
    pc_h2_server_free(srv);
    for (size_t i = 0; i < r->n_held; i++) { /* orphaned: their answers only free them */
        struct held *h = &r->held[i];
        if (h->req != NULL) {
            FUZZ_CHECK(h->gone && !pc_h2_req_client_alive(h->req));
            answer(r, h->req, h->shape);
            h->req = NULL;
        }
    }
    FUZZ_CHECK(r->answered == r->handled);
    close(sv[0]);
    event_base_free(base);
    FUZZ_CHECK(pc_budget_input() == 0);
    FUZZ_CHECK(r->gauge == 0);
    pc_budget_input_set_limit(0);
    free(r);
    free(in);
    return 0;
}
