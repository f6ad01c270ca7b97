/*
 * h2up: predcache's HTTP/2 cleartext client (prior knowledge), for the gRPC model server,
 * on the worker's loop with libnghttp2. Owns its connection to one address (made when a
 * call needs it, made again after the server closed it or sent GOAWAY; calls wait while it
 * connects), the calls as streams, their deadlines and cancellation; and the reading of
 * a unary gRPC answer (its status, its one message).
 */
#ifndef PREDCACHE_H2UP_H
#define PREDCACHE_H2UP_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/http.h"

struct event_base;
struct pc_h2_client;
struct pc_h2_call;

enum pc_h2_error {
    PC_H2_OK = 0,   /* an answer (whatever its status) */
    PC_H2_CONNECT,  /* no connection to the server */
    PC_H2_TIMEOUT,  /* the call's deadline passed */
    PC_H2_RESET,    /* the server reset the stream or dropped the connection */
    PC_H2_PROTOCOL, /* the server broke HTTP/2, or no memory */
};

struct pc_h2_resp {
    enum pc_h2_error error;
    const char *error_text; /* set when error != PC_H2_OK */
    int status;             /* :status */
    const struct pc_header *headers;
    size_t n_headers;
    const uint8_t *body;
    size_t len;
    const struct pc_header *trailers;
    size_t n_trailers;
};
/* Everything in r is borrowed for the call. */
typedef void (*pc_h2_resp_fn)(const struct pc_h2_resp *r, void *arg);

/* For url "http://host:port" (resolved now). NULL with a message in err. */
struct pc_h2_client *pc_h2_client_new(struct event_base *base, const char *url,
                                      int connect_timeout_ms, char *err, size_t errlen);
/* Drops every call without its callback. */
void pc_h2_client_free(struct pc_h2_client *cl);
/* "host:port", for :authority and the logs. */
const char *pc_h2_client_authority(const struct pc_h2_client *cl);

/*
 * POSTs body to path with headers (regular ones; the pseudo-headers are added); cb(arg)
 * once, always from the loop, never from inside this call; timeout_ms > 0 bounds the call.
 * NULL when out of memory (cb is not called).
 */
struct pc_h2_call *pc_h2_client_call(struct pc_h2_client *cl, const char *path,
                                     const struct pc_header *headers, size_t n_headers,
                                     const uint8_t *body, size_t len, int timeout_ms,
                                     pc_h2_resp_fn cb, void *arg);
/* Cancels a call whose callback has not run (RST_STREAM CANCEL); its callback never runs. */
void pc_h2_call_cancel(struct pc_h2_call *call);
/* Every call fails now (PC_H2_RESET, from the loop) and the connections close: a drain's
 * deadline. NULL: nothing. */
void pc_h2_client_abort_all(struct pc_h2_client *cl);
/* The gRPC status of an answer: grpc-status of its trailers, else of its headers
 * (Trailers-Only), else the HTTP status's mapping; -1 when the call failed (r->error). */
int pc_h2_grpc_status(const struct pc_h2_resp *r);
/* 1 when r's body is exactly one uncompressed message, then in *msg and *len (pointing
 * into r); else 0. */
int pc_h2_grpc_message(const struct pc_h2_resp *r, const uint8_t **msg, size_t *len);
/* Calls in flight (0 for NULL). */
size_t pc_h2_client_active(const struct pc_h2_client *cl);

#endif
