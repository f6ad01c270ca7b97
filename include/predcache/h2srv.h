/*
 * h2srv: predcache's HTTP/2 cleartext (h2c, prior knowledge) server, for gRPC, on
 * libevent bufferevents and libnghttp2. Owns its listener, its connections (one nghttp2
 * server session each), their streams as requests, flow control, the idle timeout and the
 * graceful close (GOAWAY). Knows nothing of gRPC beyond what HTTP/2 carries: headers, a
 * body, trailers.
 */
#ifndef PREDCACHE_H2SRV_H
#define PREDCACHE_H2SRV_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/http.h"
#include "predcache/listen.h"

struct event_base;
struct pc_h2_server;
struct pc_h2_req;

struct pc_h2_limits {
    enum pc_listen_bind bind;
    size_t max_header_bytes; /* a stream's header list (names + values) */
    size_t max_body_bytes;   /* a stream's body: past it, the handler refuses it */
    int max_streams;         /* concurrent streams per connection (SETTINGS) */
    int max_connections;
    int idle_timeout_ms;  /* a connection with no stream open closes after it */
    int64_t *input_bytes; /* NULL: none. This worker's gauge of the input budget's figure */
};

/* Called once per request whose stream ended (headers and body whole). The handler must
 * call pc_h2_reply exactly once; req stays valid until then, even when the client resets
 * the stream or goes away (the reply is then dropped). */
typedef void (*pc_h2_handler)(struct pc_h2_req *req, void *arg);

/* Binds hostport. NULL with a message in err. */
struct pc_h2_server *pc_h2_server_new(struct event_base *base, const char *hostport,
                                      const struct pc_h2_limits *lim, pc_h2_handler handler,
                                      void *arg, char *err, size_t errlen);
/* On fd, a listening socket the server owns from now on (a reload). */
struct pc_h2_server *pc_h2_server_adopt(struct event_base *base, int fd,
                                        const struct pc_h2_limits *lim, pc_h2_handler handler,
                                        void *arg, char *err, size_t errlen);
/* A server without a listener: its connections are the sockets given to
 * pc_h2_server_adopt_conn (accepted elsewhere, or one end of a socketpair: the fuzz target
 * feeds a connection's bytes that way). NULL when out of memory. */
struct pc_h2_server *pc_h2_server_new_unbound(struct event_base *base,
                                              const struct pc_h2_limits *lim, pc_h2_handler handler,
                                              void *arg);
/* Takes fd, a connected non-blocking socket, as a client connection of srv's: what the
 * listener does with each socket it accepts. peer names the client (NULL: "unknown"). 0 ok;
 * -1 when srv is stopping, at max_connections or out of memory (fd is closed). */
int pc_h2_server_adopt_conn(struct pc_h2_server *srv, int fd, const struct sockaddr *peer);
int pc_h2_server_listen_fd(const struct pc_h2_server *srv);
int pc_h2_server_port(const struct pc_h2_server *srv);
/* Stops accepting; every connection gets a GOAWAY (its open streams finish, then it
 * closes). */
void pc_h2_server_stop_accepting(struct pc_h2_server *srv);
/* Open connections. */
size_t pc_h2_server_connections(const struct pc_h2_server *srv);
/* Closes everything at once; requests held by handlers stay valid until replied. */
void pc_h2_server_free(struct pc_h2_server *srv);

/* Request accessors (borrowed from req). Header names are lowercase. */
const char *pc_h2_req_method(const struct pc_h2_req *req);
const char *pc_h2_req_path(const struct pc_h2_req *req);
const char *pc_h2_req_client(const struct pc_h2_req *req);
const char *pc_h2_req_header(const struct pc_h2_req *req, const char *name);
/* The regular headers (no pseudo-headers), as received, in order. */
const struct pc_header *pc_h2_req_headers(const struct pc_h2_req *req, size_t *n);
const uint8_t *pc_h2_req_body(const struct pc_h2_req *req, size_t *len);
/* 1 when the body went past max_body_bytes or the process's input budget (it was dropped:
 * the handler refuses it). */
int pc_h2_req_over(const struct pc_h2_req *req);
uint64_t pc_h2_req_start_us(const struct pc_h2_req *req);
int pc_h2_req_client_alive(const struct pc_h2_req *req);
/* gone(arg) once, from the loop, when the client resets the stream or goes away before the
 * reply (a cancelled call): the caller may stop the work; it still replies. */
void pc_h2_req_on_gone(struct pc_h2_req *req, void (*gone)(void *arg), void *arg);

/*
 * Answers req and gives it back (invalid afterwards): a HEADERS frame with :status and
 * headers, the body (when body is not NULL) and the trailers (when n_trailers > 0) ending
 * the stream. With body NULL and trailers, one HEADERS frame carries headers and trailers
 * (gRPC's Trailers-Only). Everything is copied.
 */
void pc_h2_reply(struct pc_h2_req *req, int status, const struct pc_header *headers,
                 size_t n_headers, const uint8_t *body, size_t len,
                 const struct pc_header *trailers, size_t n_trailers);

#endif
