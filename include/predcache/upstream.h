/*
 * upstream: forwards requests to the model server, driven by the worker's event_base.
 * Owns every transfer in flight and its connections: predcache's own HTTP/1.1 client
 * (upstream_h1.c) for http:// to an address, the libcurl multi_socket API (the hiperfifo
 * pattern: the multi handle, its sockets' events and timer) for https://, host names and
 * [backend] http_client = curl. Connections are kept alive and reused. The only module
 * that includes curl.
 */
#ifndef PREDCACHE_UPSTREAM_H
#define PREDCACHE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"
#include "predcache/http.h"

struct event_base;
struct pc_config;
struct pc_backend_cfg;
struct pc_upstream;
struct pc_xfer;

enum pc_upstream_error {
    PC_UP_OK = 0,
    PC_UP_CONNECT,   /* could not connect / resolve: 502 */
    PC_UP_TIMEOUT,   /* connect or total timeout: 504 */
    PC_UP_TOO_LARGE, /* response over the configured maximum: 502 */
    PC_UP_PROTOCOL,  /* reset, garbage, truncated: 502 */
    PC_UP_SHUTDOWN,  /* failed by pc_upstream_abort_all: 503 */
    PC_UP_NO_FD,     /* no file descriptor left for its socket (EMFILE, ENFILE): 503 */
};

struct pc_upstream_resp {
    enum pc_upstream_error error;
    char errmsg[256];
    int status;
    struct pc_header *headers; /* end-to-end response headers, no hop-by-hop ones */
    size_t n_headers;
    struct pc_buf body;
    double total_ms;
};

/* resp is owned by the upstream and valid only until the callback returns. */
typedef void (*pc_upstream_cb)(const struct pc_upstream_resp *resp, void *arg);

/* The [backend] section's backend. Borrows base for its lifetime. NULL on failure. */
struct pc_upstream *pc_upstream_new(struct event_base *base, const struct pc_config *cfg);
/* Against one backend (a [backend NAME] section; copied). NULL on failure. */
struct pc_upstream *pc_upstream_new_backend(struct event_base *base,
                                            const struct pc_backend_cfg *be);
/* The [backend] settings against another base URL ("http://127.0.0.1:8080"), e.g.
 * predcache itself. Its transfers are outside the output budget (budget.h): the serving
 * side counts their answers already, and pausing them would stall that connection until
 * idle_timeout_ms closes it. */
struct pc_upstream *pc_upstream_new_for(struct event_base *base, const struct pc_config *cfg,
                                        const char *base_url);
/* Fails every transfer in flight (its callback runs once, with an error), then frees.
 * Accepts NULL. */
void pc_upstream_free(struct pc_upstream *up);

/*
 * Starts one transfer: method and target ("/path?query") against the backend base URL,
 * with the given end-to-end headers (hop-by-hop ones are dropped here) and body.
 * Borrows headers and body until the callback (it copies what it keeps). timeout_ms
 * bounds the whole transfer (0: the backend default). The callback is called exactly
 * once, never from inside pc_upstream_send. NULL when the transfer could not start.
 */
struct pc_xfer *pc_upstream_send(struct pc_upstream *up, const char *method, const char *target,
                                 const struct pc_header *headers, size_t n_headers,
                                 const char *body, size_t body_len, int timeout_ms,
                                 pc_upstream_cb cb, void *arg);

/*
 * A streamed transfer (a text/event-stream answer): its answer is handed over as it comes,
 * not whole. idle_ms bounds the silence between bytes (no bound on the whole); no size
 * bound. head runs once before the first data (or at the end of an empty answer) with the
 * status and end-to-end headers: 0 go on, -1 stop (the transfer is cancelled, end is not
 * called). data hands a chunk: 0 taken; 1 not taken, hold on (curl keeps it; the transfer
 * waits for pc_upstream_resume). end runs exactly once otherwise, after head when the
 * answer began (resp->error says whether it ended whole; resp->body is empty). None runs
 * from inside pc_upstream_stream, pc_upstream_resume or pc_upstream_cancel.
 */
struct pc_stream_ops {
    int (*head)(int status, const struct pc_header *headers, size_t n, void *arg);
    int (*data)(const char *p, size_t n, void *arg);
    void (*end)(const struct pc_upstream_resp *resp, void *arg);
};
struct pc_xfer *pc_upstream_stream(struct pc_upstream *up, const char *method, const char *target,
                                   const struct pc_header *headers, size_t n_headers,
                                   const char *body, size_t body_len, int idle_ms,
                                   const struct pc_stream_ops *ops, void *arg);
/* A held stream goes on (from the loop's next turn). */
void pc_upstream_resume(struct pc_xfer *x);
/* Stops a stream: no callback of it runs again. Not from inside one of x's callbacks. */
void pc_upstream_cancel(struct pc_xfer *x);

/* Fails every transfer in flight with PC_UP_SHUTDOWN; each callback runs once. */
void pc_upstream_abort_all(struct pc_upstream *up);

/* Transfers in flight. */
size_t pc_upstream_active(const struct pc_upstream *up);

/*
 * Where up counts its share of the output budget (budget.h): fields of the worker's
 * metrics shard, written only from up's thread; any may be NULL. Borrowed for up's life.
 * Whatever is set here, every transfer is held to the budget: past PC_BUDGET_SMALL
 * bytes of answer, one over it pauses (curl stops reading the model server's socket) and
 * resumes from up's event loop when answer bytes held for clients have gone down.
 */
struct pc_upstream_gauges {
    int64_t *buffered; /* answer bytes received by transfers in flight */
    int64_t *paused;   /* transfers paused */
    uint64_t *pauses;  /* counter: times a transfer paused */
};
void pc_upstream_set_gauges(struct pc_upstream *up, const struct pc_upstream_gauges *g);

/* Maps an upstream error to the HTTP status predcache answers with (502, 503, 504). */
int pc_upstream_error_status(enum pc_upstream_error e);

#endif
