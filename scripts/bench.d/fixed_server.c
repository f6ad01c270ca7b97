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

#include <openssl/sha.h>

#define MAX_HEAD 65536
#define MAX_BODY (64L * 1024 * 1024)
#define HEX_LEN (2 * SHA256_DIGEST_LENGTH)

/* One answer waiting for its time: when it is due, and the digest of its request. */
struct pending {
    struct timeval due;
    char hex[HEX_LEN];
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
};

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
        evbuffer_add_reference(out, digest_head, digest_head_len, NULL, NULL);
        evbuffer_add(out, c->due[c->head_due].hex, HEX_LEN);
        evbuffer_add_reference(out, digest_tail, sizeof digest_tail - 1, NULL, NULL);
        c->head_due = (c->head_due + 1) % c->cap_due;
        c->n_due--;
    }
    if (c->n_due > 0)
        arm(c, &now);
}

/* Queues the answer to a request whose body is body[0..len), due DELAY_US from now. 0 ok,
 * -1 no memory. */
static int answer_later(struct conn *c, const unsigned char *body, size_t len)
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

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);

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
            queued = req == NULL ? -1 : answer_later(c, req + c->head_len, c->need - c->head_len);
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

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
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
    struct event_base *base = NULL;
    struct evconnlistener *listener = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
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

    status_answer_len = (size_t)snprintf(status_answer, sizeof status_answer,
                                         "HTTP/1.1 200 OK\r\nServer: fixed_server\r\n"
                                         "Content-Type: application/json\r\n"
                                         "Content-Length: %zu\r\n\r\n%s",
                                         sizeof status_body - 1, status_body);
    signal(SIGPIPE, SIG_IGN);
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        goto err;
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER); /* timerfd: microseconds */
    base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (base == NULL)
        goto err;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener =
        evconnlistener_new_bind(base, on_accept, base, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                                1024, (struct sockaddr *)&sin, sizeof sin);
    if (listener == NULL) {
        perror("fixed_server: bind");
        goto err;
    }
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    if (sigterm == NULL || sigint == NULL || event_add(sigterm, NULL) || event_add(sigint, NULL))
        goto err;
    if (delay_us > 0)
        fprintf(stderr,
                "fixed_server listening on 127.0.0.1:%d, %zu byte answers with the body's "
                "SHA-256, %ld us delay\n",
                port, digest_body_len, delay_us);
    else
        fprintf(stderr, "fixed_server listening on 127.0.0.1:%d, %ld byte answers\n", port,
                body_len);
    event_base_dispatch(base);
    rc = 0;

err:
    if (sigint != NULL)
        event_free(sigint);
    if (sigterm != NULL)
        event_free(sigterm);
    if (listener != NULL)
        evconnlistener_free(listener);
    if (base != NULL)
        event_base_free(base);
    free(digest_head);
    free(answer);
    free(body);
    return rc;
}
