/*
 * store_int: what the two halves of the store share: the connection (store.c) and the
 * Redis Cluster router (store_cluster.c). Not for other modules: they see store.h only.
 */
#ifndef PREDCACHE_STORE_INT_H
#define PREDCACHE_STORE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include "predcache/bevread.h"
#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/loop.h"
#include "predcache/store.h"
#include "predcache/tlsctx.h"

struct pc_cmdq;
struct pc_cluster;

enum store_state { ST_CLOSED, ST_CONNECTING, ST_CONNECTED };
enum cmd_kind {
    CMD_GET,
    CMD_SET,
    CMD_PING,
    CMD_SETUP,
    CMD_GENERIC,
    CMD_SUBSCRIBE,
    CMD_SENTINEL, /* SENTINEL get-master-addr-by-name, on a sentinel's connection */
    CMD_ROLE,     /* ROLE, first on a master's connection found through the sentinels */
    CMD_ASKING    /* ASKING, before a command sent on after an ASK redirection */
};

struct pc_store {
    struct event_base *base;
    const struct pc_config *cfg;
    struct pc_metrics *m;
    enum store_state state;
    struct bufferevent *bev; /* the connection; NULL when there is none */
    struct pc_bevread rd;    /* a plain connection's reads (bevread.h) */
    redisReader *reader;     /* its replies; with bev */
    /* The reader's object functions: hiredis's, with arrays bounded (bounded_array). */
    redisReplyObjectFunctions fns;
    void *(*hiredis_array)(const redisReadTask *, int);
    uint64_t fed;        /* bytes fed to reader on this connection */
    uint64_t reply_from; /* where in them the reply being read began */
    size_t reply_elems;  /* array elements allocated for it so far */
    int too_big;         /* bounded_array refused an array */
    int broken;          /* the connection is to be dropped (reset_ev): no more reading */
    int dispatching;     /* inside on_read: pc_store_free waits for it (free_later) */
    int free_later;
    struct event *connect_timer;
    struct event *retry_timer;
    struct event *reset_ev; /* drops the connection outside bufferevent callbacks */
    int backoff_ms;
    struct pc_cmdq *q; /* commands sent and not replied to, in order; SET budgets */
    /* Held writes (pc_store_hold): kept back in order, encoded, not yet in q or on the
     * wire; their count, and the bounded ones (SETs) and bytes counted in q's budgets. */
    int hold;
    struct cmd *held_head, *held_tail;
    size_t n_held, held_bounded, held_bytes;
    struct pc_loop_later held_later; /* sends them when the loop is idle, or
                                      * PC_STORE_HOLD_MS after the first */
    struct pc_buf out;               /* commands gathered, for a plain connection (wire_write) */
    struct event *out_ev;            /* writes them in one send; its priority: wire_write */
    size_t desyncs;                  /* replies that fit no command: the connection was dropped */
    char *sub_channel;      /* subscribed on every (re)connect when set: a subscriber store */
    int subscribed;         /* the SUBSCRIBE was confirmed on this connection */
    uint64_t subscribed_us; /* when (pc_now_us) */
    pc_store_message_cb sub_cb;
    void *sub_arg;
    SSL_CTX *tls_ctx; /* [redis] tls = on: the context of every connection; else NULL */
    /* Where the next connection goes: [redis] host and port, or the master the sentinels
     * named. With sentinels, a connection is first made to one of them (asking) until one
     * names the master (have_master), then to the master, which must say it is one (ROLE)
     * before the store takes commands; losing it, or a READONLY reply, asks again. */
    char host[PC_CFG_STR];
    int port;
    int n_sentinels;
    char (*sentinel_hosts)[PC_CFG_STR];
    int *sentinel_ports;
    size_t sentinel_next; /* the sentinel to ask next (they are asked in turn) */
    int asking;           /* this connection is to a sentinel */
    int watch;            /* a sentinel watcher: subscribed to the sentinels, no master */
    int have_master;
    int connect_now;            /* the drop in progress goes on to the master at once, no backoff */
    char peer[PC_CFG_STR + 32]; /* "Redis host:port" or "sentinel host:port": this connection */
    time_t get_error_s;         /* last GET error reply logged */
    struct pc_tls_opts tls;
    /* [redis] cluster = on. A router (cl set) has no connection of its own: it routes each
     * command to the connection of the master serving its key's slot (store_cluster.c). A
     * node (router set) is one of those connections: MOVED and ASK replies go back to the
     * router, and the command's encoded bytes are kept until it is answered (wire). A
     * subscriber of a cluster connects to the seed nodes in turn (seeds). */
    struct pc_cluster *cl;
    struct pc_store *router;
    int n_seeds;
    char (*seed_hosts)[PC_CFG_STR];
    int *seed_ports;
    size_t seed_next;
};

/* One command in flight. Owned by st->q from cmd_send until it is shifted out. */
struct cmd {
    struct pc_store *st;
    uint64_t id; /* in st->q */
    enum cmd_kind kind;
    pc_store_get_cb get_cb;
    pc_store_ping_cb ping_cb;
    pc_store_cmd_cb cmd_cb;
    pc_store_set_done_cb set_cb;
    void *arg;
    int timeout_ms;
    struct event *timer;
    uint64_t start_us;
    char *wire; /* on a cluster node: the command as sent, for a redirection; else NULL */
    size_t wire_len;
    int bounded; /* a SET counted against the budgets, of bytes */
    size_t bytes;
    int redirects; /* MOVED/ASK followed so far */
    int may_pass;  /* a lookup: it goes out before held writes (pc_store_hold) */
    struct cmd *held_next;
};

/* ---- store.c, for the router */

/* A connection to one cluster node host:port, routed to by router (borrowed). */
struct pc_store *pc_store_node_new(struct event_base *base, const struct pc_config *cfg,
                                   struct pc_metrics *metrics, const char *host, int port,
                                   struct pc_store *router);
/* The seed nodes of a cluster: [redis] host:port, then nodes (calloc'd arrays the caller
 * frees). 0 ok; -1 (nothing allocated). */
int pc_store_seeds(const struct pc_config *cfg, char (**hosts)[PC_CFG_STR], int **ports, int *n);
/* Sends c's command (its wire bytes) again on node (connected, or connecting: then it waits
 * behind the connection's setup), ASKING first when asking: a new command
 * there takes c's caller, wire and budget, and c is left for its owner to free unanswered.
 * 0 sent; -1 not sent: c is to be answered as it was. */
int pc_store_resend(struct pc_store *node, struct cmd *c, int asking);

/* ---- store_cluster.c, for the store */

/* A router for [redis] cluster = on, connecting to the seeds ([redis] host:port, nodes). */
struct pc_store *pc_cluster_new(struct event_base *base, const struct pc_config *cfg,
                                struct pc_metrics *metrics);
void pc_cluster_free(struct pc_store *router);
/* A node's state or pending count changed: the router's gauges follow. */
void pc_cluster_node_changed(struct pc_store *router, struct pc_store *node);
/* c, on node, was answered with the error err: 1 when it was a MOVED/ASK the router sent on
 * (c's caller will be answered from there), 0 when c is to be answered with err. */
int pc_cluster_redirected(struct pc_store *router, struct pc_store *node, struct cmd *c,
                          const char *err, size_t len);
/* node is handing a reply to a caller (pc_store_out_of_step on the router names it). */
void pc_cluster_answering(struct pc_store *router, struct pc_store *node);

int pc_cluster_ready(const struct pc_store *router);
size_t pc_cluster_pending(const struct pc_store *router);
int pc_cluster_get(struct pc_store *router, const char *key, pc_store_get_cb cb, void *arg);
int pc_cluster_set(struct pc_store *router, const char *key, const char *value, size_t len,
                   int ttl_s, pc_store_set_done_cb cb, void *arg);
int pc_cluster_ping(struct pc_store *router, pc_store_ping_cb cb, void *arg);
int pc_cluster_command(struct pc_store *router, int timeout_ms, pc_store_cmd_cb cb, void *arg,
                       int argc, const char **argv, const size_t *lens);
void pc_cluster_out_of_step(struct pc_store *router, const char *what);

#endif
