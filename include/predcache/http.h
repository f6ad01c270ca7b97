/*
 * http: predcache's HTTP/1.1 server on libevent bufferevents.
 * Owns listeners, client connections and their state machine (READ_HEAD -> READ_BODY ->
 * HANDLING -> WRITING -> READ_HEAD | CLOSED), feeding their bytes to the request reader
 * (h1parse: framing, limits, 414/431/400/413/417/501/505) and acting on what it read
 * (Expect: 100-continue, keep-alive, pipelining one request at a time), timeouts (idle,
 * read), the connection count and the JSON error answers for everything that fails before
 * a handler runs. Knows nothing of caching.
 */
#ifndef PREDCACHE_HTTP_H
#define PREDCACHE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/listen.h"

struct event_base;
struct pc_http_server;
struct pc_http_req;

struct pc_header {
    char *name;
    char *value;
};

/* A request refused by the HTTP layer itself (400, 408, 413, ...), for logs and counters. */
struct pc_http_failure {
    const char *id; /* the X-Request-Id it was answered with; "" none (see request_ids) */
    const char *client;
    const char *method; /* "-" when the request line was not read */
    const char *path;
    const char *query; /* NULL when the request line was not read */
    int status;
    double total_ms; /* since the request's first byte, or the connection's start */
};
typedef void (*pc_http_failure_cb)(const struct pc_http_failure *f, void *arg);

struct pc_http_limits {
    enum pc_listen_bind bind;      /* 0: PC_LISTEN_EXCLUSIVE */
    pc_http_failure_cb on_failure; /* NULL: none */
    void *on_failure_arg;
    size_t max_header_bytes;
    size_t max_body_bytes;
    int idle_timeout_ms; /* keep-alive idle and slow-client read/write timeout */
    int read_timeout_ms; /* a started request must be received whole within it; 0: none */
    int max_connections;
    /* NULL: not counted. Else one more (PC_METRIC_INC) for each answer the client's socket
     * did not take at once, finished later by the write event (slow or stalled readers). */
    uint64_t *answers_queued;
    /* NULL: not counted. Answers held to be written together with others (answers_held),
     * and the writes of the held answers together (answer_flushes): http.c, hold_answer. */
    uint64_t *answers_held;
    uint64_t *answer_flushes;
    /* The output budget (budget.h). Every server counts its connections' unsent answer bytes
     * in it; output_bytes (NULL: none) is this worker's gauge of them. */
    int64_t *output_bytes;
    /* 1: refuse an answer that no model server transfer handed over (a hit, say) and that
     * does not fit the budget (pc_budget_fits) with 503 and Retry-After; answers_shed counts
     * them. */
    int shed_over_budget;
    uint64_t *answers_shed;
    /* Connections closed because their client took nothing for idle_timeout_ms while an
     * answer waited for it (NULL: not counted). */
    uint64_t *clients_stalled;
    /* Connections refused with 503 at accept: past max_connections, or no file descriptor
     * left to serve them (NULL: not counted). */
    uint64_t *connections_refused;
    /* Times a connection stopped reading because the input budget was spent (NULL: not
     * counted). */
    uint64_t *input_pauses;
    int64_t *input_bytes; /* NULL: none. This worker's gauge of the input budget's figure */
    /* 1: every answer carries X-Request-Id (the client's when pc_log_request_id_ok says it
     * is sane, else a new one; any other a handler passes is dropped), and so does the
     * failure report. */
    int request_ids;
};

/*
 * Called once per complete request. The handler (or something it starts) must call
 * pc_http_reply exactly once for req; req stays valid until then, even when the client
 * has gone away (the reply is then dropped).
 */
typedef void (*pc_http_handler)(struct pc_http_req *req, void *arg);

/* Binds "host:port". Borrows base; NULL with a message in err on failure. */
struct pc_http_server *pc_http_server_new(struct event_base *base, const char *hostport,
                                          const struct pc_http_limits *limits,
                                          pc_http_handler handler, void *arg, char *err,
                                          size_t errlen);
/*
 * A server on fd, a socket that listens already and that the server owns from now on (a
 * reload: the duplicate of a running server's socket, so that the port never closes).
 * NULL with a message in err on failure (fd closed).
 */
struct pc_http_server *pc_http_server_adopt(struct event_base *base, int fd,
                                            const struct pc_http_limits *limits,
                                            pc_http_handler handler, void *arg, char *err,
                                            size_t errlen);
/* The listening socket (to be duplicated for the next workers), or -1 once not listening. */
int pc_http_server_listen_fd(const struct pc_http_server *srv);

/*
 * Hand-over (a reload): give(fd, peer, arg) receives a client connection's socket, which it
 * owns from then on, between two of its requests; peer is borrowed for the call.
 */
typedef void (*pc_http_give_fn)(int fd, const char *peer, void *arg);
/* Stops accepting (connections already queued on the socket are accepted and given) and
 * gives every connection away: idle ones now, the others once their answer is written. A
 * connection that cannot be given (its client closed its side) closes after its answer. */
void pc_http_server_hand_over(struct pc_http_server *srv, pc_http_give_fn give, void *arg);
/* Serves a connection handed over by another server (fd is this server's now); a server
 * that stops closes it, one that hands over itself gives it on at once. */
void pc_http_server_take(struct pc_http_server *srv, int fd, const char *peer);

/* Stops accepting; open connections finish their current request and close. */
void pc_http_server_stop_accepting(struct pc_http_server *srv);
/* Closes everything at once. Requests still owned by handlers stay valid until replied. */
void pc_http_server_free(struct pc_http_server *srv);
/* The port actually bound (useful with port 0). */
int pc_http_server_port(const struct pc_http_server *srv);
/* Connections whose answer is still being written out. */
size_t pc_http_server_writing(const struct pc_http_server *srv);
/* Open client connections. */
size_t pc_http_server_connections(const struct pc_http_server *srv);

/*
 * Decides, once, whether an answer of len bytes for req will be refused for the output
 * budget (503, Retry-After; see http.c), so that the caller can log and count what is
 * really sent; pc_http_reply then keeps this decision. 1: it will be refused.
 */
int pc_http_reply_refuses(struct pc_http_req *req, size_t len);

/* Request accessors; strings are borrowed from req. */
const char *pc_http_req_method(const struct pc_http_req *req);
const char *pc_http_req_path(const struct pc_http_req *req);   /* without the query */
const char *pc_http_req_query(const struct pc_http_req *req);  /* "" when none */
const char *pc_http_req_target(const struct pc_http_req *req); /* as sent: path?query */
const char *pc_http_req_client(const struct pc_http_req *req); /* peer address */
const char *pc_http_req_header(const struct pc_http_req *req, const char *name);
const struct pc_header *pc_http_req_headers(const struct pc_http_req *req, size_t *n);
const char *pc_http_req_body(const struct pc_http_req *req, size_t *len);
/* 1 while the client connection is still open. */
int pc_http_req_client_alive(const struct pc_http_req *req);
/* Monotonic arrival time in microseconds (pc_now_us clock). */
unsigned long long pc_http_req_start_us(const struct pc_http_req *req);
/* The request's id (X-Request-Id, see request_ids): "" when its server gives none. */
const char *pc_http_req_id(const struct pc_http_req *req);

/*
 * Answers req and gives it back to the server (req is invalid afterwards). headers may
 * be NULL; Content-Length, Connection, Date and Server are added here. Copies body.
 */
void pc_http_reply(struct pc_http_req *req, int status, const struct pc_header *headers,
                   size_t n_headers, const char *body, size_t len);
/* Answers {"error": msg} with the given status. */
void pc_http_reply_error(struct pc_http_req *req, int status, const char *msg);

/*
 * A streamed answer (a model server's text/event-stream passed on as it comes): the head
 * now, the body in chunks (HTTP/1.0: until the connection closes, which it does after any
 * stream). gone(arg): the client went away (once, from the loop): the caller stops its
 * source and ends the stream. drained(arg): the output that was full (stream_full said 1)
 * is under half the mark again. 0 started; -1 the client is gone already (end it).
 */
#define PC_HTTP_STREAM_MARK (256 * 1024) /* output a stream may hold before it waits */
typedef void (*pc_http_stream_fn)(void *arg);
int pc_http_stream_begin(struct pc_http_req *req, int status, const struct pc_header *headers,
                         size_t n_headers, pc_http_stream_fn gone, pc_http_stream_fn drained,
                         void *arg);
/* 1 when the client has more than PC_HTTP_STREAM_MARK bytes to read: wait for drained. */
int pc_http_stream_full(struct pc_http_req *req);
/* One chunk (copied). 0 ok; -1 the client is gone. */
int pc_http_stream_write(struct pc_http_req *req, const char *p, size_t n);
/* Ends the stream and gives req back (invalid afterwards): whole, the last chunk; else the
 * connection closes with the body cut short, which a client can tell. */
void pc_http_stream_end(struct pc_http_req *req, int whole);

/* Reason phrase of a status code. */
const char *pc_http_reason(int status);
/* 1 for hop-by-hop header names (Connection, Keep-Alive, Transfer-Encoding, ...). This and
 * the next are pure (defined in h1parse.c, which the response reader links too). */
int pc_http_is_hop_by_hop(const char *name);
/* 1 for a hop-by-hop name, or one that a Connection header among h[0..n) names
 * (RFC 9110 7.6.1): such headers end at this hop and are never passed on. */
int pc_http_is_hop_by_hop_in(const char *name, const struct pc_header *h, size_t n);
/* Drops the hop-by-hop headers of h[0..n) and those conn_value (a Connection header's
 * elements) names; the rest keep their order. Returns how many are left. Frees nothing:
 * the strings are their owner's (an arena's, buf.h). */
size_t pc_http_drop_connection_named(struct pc_header *h, size_t n, const char *conn_value);

#endif
