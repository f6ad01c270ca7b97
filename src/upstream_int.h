/*
 * upstream_int: what upstream.c (the transfers, the output budget, libcurl) and
 * upstream_h1.c (predcache's own HTTP/1.1 client for plain http:// model servers) share.
 * Nothing else includes it.
 */
#ifndef PREDCACHE_UPSTREAM_INT_H
#define PREDCACHE_UPSTREAM_INT_H

#include <stdint.h>

#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "predcache/config.h"
#include "predcache/h1resp.h"
#include "predcache/list.h"
#include "predcache/upstream.h"

struct event;
struct pc_upconn;

struct pc_upstream {
    struct event_base *base;
    struct pc_backend_cfg be; /* url, timeouts and limits of this backend (a copy) */
    CURLM *multi;
    struct event *timer;
    struct event *resume; /* armed while transfers are paused (resume_cb) */
    struct event *done;   /* check_done from the loop, for transfers a kick ended */
    int in_curl;          /* inside a call into curl that may run its callbacks */
    struct pc_list xfers; /* every transfer in flight (struct pc_xfer), for pc_upstream_free */
    size_t active;
    size_t n_paused;
    int unbudgeted; /* pc_upstream_new_for: outside the output budget */
    struct pc_upstream_gauges g;
    char base_url[1024]; /* without a trailing '/' */

    /* The own client (upstream_h1.c): set when the URL is http:// to an address. */
    int own;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[300];      /* the Host header's value */
    char prefix[1024];   /* the base URL's path, without a trailing '/' */
    struct pc_list idle; /* kept-alive connections with no transfer (struct pc_upconn) */
    size_t n_idle;
};

struct pc_xfer {
    struct pc_upstream *up;
    CURL *easy; /* NULL on the own client */
    struct curl_slist *req_headers;
    pc_upstream_cb cb;
    void *arg;
    struct pc_upstream_resp resp;
    size_t headers_cap;
    struct pc_arena text; /* resp.headers' strings (no buffer of its own: it moves) */
    struct pc_buf conn;   /* the Connection header's tokens: headers it names end here */
    int too_large;
    int is_head;
    int paused;        /* over the output budget */
    int admitted;      /* its whole length is counted in the budget: it never pauses */
    curl_off_t length; /* the answer's Content-Length; -1: unknown; -2: not asked yet */
    size_t held;       /* answer bytes counted in the output budget */
    const struct pc_stream_ops *ops; /* a streamed transfer (pc_upstream_stream); else NULL */
    int head_done;                   /* ops->head ran */
    int held_by_client;              /* ops->data said hold on: paused until resume */
    int resume_wanted;               /* pc_upstream_resume asked: resume_cb lets it go */
    int cancelled;                   /* its head said stop: ends without a callback */
    int out_of_fds;                  /* no descriptor for its socket */
    int bad_header;                  /* curl: a header value held a control byte */
    char errbuf[CURL_ERROR_SIZE];
    struct pc_list link; /* in up->xfers */

    /* The own client's. */
    struct pc_upconn *c; /* the connection carrying it, until its answer is whole */
    struct pc_h1resp rd; /* the answer being read */
    struct pc_buf head;  /* the request's head */
    const char *body;    /* borrowed from the caller until the callback */
    size_t body_len;
    size_t sent;    /* bytes of head and body written */
    int timeout_ms; /* the whole transfer's bound (0: a stream, idle_ms instead) */
    int idle_ms;    /* a stream's longest silence */
    int retried;    /* sent again on a new connection after a kept one closed */
    int starting;   /* inside pc_upstream_send: a failure waits for the loop */
    int early;      /* failed inside pc_upstream_send: answered from the loop */
    uint64_t start_us;
    struct pc_buf pend; /* answer bytes read but not taken yet (paused, or held) */
    struct event *tmo;  /* the transfer's timer (connect, whole, silence; early) */
};

/* upstream.c */
void pc_up_set_paused(struct pc_xfer *x, int paused);
/* May x take n more bytes of answer now (the output budget)? */
int pc_up_budget_allows(struct pc_xfer *x, size_t n);
/* The answer bytes x keeps went up to its body's length: the budget counts them. */
void pc_up_count_body(struct pc_xfer *x);
/* Paused transfers look at the budget again in a while. */
void pc_up_arm_resume(struct pc_upstream *up);
/* resp is filled in: the callback runs once (stream: head if due, then end), x is freed. */
void pc_up_deliver(struct pc_xfer *x);
/* Goes to the model server: not hop-by-hop, not one the client owns (Host, Content-Length,
 * Expect), no underscore (see upstream.c). */
int pc_up_forwards_header(const char *name);

/* upstream_h1.c */
/* Sets up->own and its address when base_url is http:// to an IP address or localhost. */
void pc_uph1_setup(struct pc_upstream *up);
/* Starts x on a kept connection or a new one. 0 started (a failure to start is answered
 * from the loop), -1 no memory. */
int pc_uph1_start(struct pc_xfer *x, const char *method, const char *target,
                  const struct pc_header *headers, size_t n_headers);
/* A paused or held transfer takes its kept bytes and reads on. */
void pc_uph1_resume(struct pc_xfer *x);
/* x goes: its connection closes if x still has one, its reader and timer are freed. */
void pc_uph1_xfer_release(struct pc_xfer *x);
/* Closes the kept connections. */
void pc_uph1_close_idle(struct pc_upstream *up);

#endif
