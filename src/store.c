/*
 * store: Redis over predcache's own transport on the worker's event_base. A bufferevent
 * carries the bytes; resp.h formats commands and hiredis only reads replies
 * (redisReader); which reply answers which command is decided here.
 *
 *     CLOSED --connect()--> CONNECTING --connected--> CONNECTED
 *       ^                      |  connect timer / refused              |
 *       |                      v                                       |
 *       +---- retry timer <-- (backoff 100 ms .. 2 s) <-- closed by Redis, command
 *                                                          timeout, desync
 *
 *   command -> pc_resp_command -> cmdq (in order) -> bufferevent -> Redis
 *   Redis -> bufferevent -> redisReader (bounded) -> reply -> fits the oldest command?
 *              yes: answered, shifted out of cmdq      no: desync, connection dropped
 *
 * Why not hiredis async: hiredis 0.14.1 asserts on replies it did not expect, and the
 * whole process aborts: a reply when no callback is queued asserts in
 * redisProcessCallbacks (`c->flags & REDIS_SUBSCRIBED || c->flags & REDIS_MONITORING`),
 * and on a subscribed connection an array that is not a pub/sub message (`*0`, an
 * array of integers, one element) asserts in __redisGetSubscribeCallback. A cache must
 * survive any bytes from its store, so the bytes stop here: every reply is checked
 * against the command it answers (its kind says which reply types are possible); one
 * that does not fit, one that answers nothing, an unreadable or oversized one is a
 * desync: counted, the commands waiting are failed (their requests bypass the cache),
 * and the connection is dropped and re-established with the backoff.
 *
 * TLS ([redis] tls = on): the bufferevent is an OpenSSL one over the same socket
 * (bufferevent_openssl, BUFFEREVENT_SSL_CONNECTING), made from one SSL_CTX per store
 * (tlsctx.h); CONNECTED comes after the handshake, and a failed handshake is logged with
 * its reason (the certificate check's, else OpenSSL's) and retried with the backoff.
 * AUTH takes the ACL user when [redis] username is set (AUTH user password).
 *
 * Timers: a connect timer and one per command. A command that times out is answered
 * PC_STORE_ERROR at once and the connection is dropped, so a stalled Redis cannot pile
 * up commands. Connections are dropped from a deferred event (reset_ev), never from
 * inside a bufferevent callback; until then the store counts as closed.
 */
#include "predcache/store.h"
#include "store_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include "predcache/buf.h"
#include "predcache/cmdq.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/loop.h"
#include "predcache/metrics.h"
#include "predcache/resp.h"
#include "predcache/tlsctx.h"

#define PC_STORE_BACKOFF_MIN_MS 100
#define PC_STORE_BACKOFF_MAX_MS 2000
/* What one reply may hold. A Redis string is at most 512 MB (proto-max-bulk-len); past
 * these a reply is not one Redis sends us, and reading on would only grow memory. */
#define PC_STORE_MAX_BULK_BYTES (512LL * 1024 * 1024)
#define PC_STORE_MAX_REPLY_BYTES ((uint64_t)1024 * 1024 * 1024)
#define PC_STORE_MAX_ELEMENTS ((size_t)1 << 24) /* every array of one reply, together */

static void store_connect(struct pc_store *st);
static void store_free_now(struct pc_store *st);
static void held_fail(struct pc_store *st);

static void set_state(struct pc_store *st, enum store_state s)
{
    static const char *const names[] = {"CLOSED", "CONNECTING", "CONNECTED"};
    if (st->state != s)
        pc_log(PC_LOG_DEBUG, "store: %s -> %s", names[st->state], names[s]);
    st->state = s;
    if (st->router != NULL) /* a cluster node: the router's gauges cover every node */
        pc_cluster_node_changed(st->router, st);
    else
        PC_METRIC_SET(st->m->redis_up, s == ST_CONNECTED);
}

static void schedule_retry(struct pc_store *st)
{
    set_state(st, ST_CLOSED);
    event_del(st->connect_timer);
    struct timeval tv = {st->backoff_ms / 1000, (st->backoff_ms % 1000) * 1000};
    event_add(st->retry_timer, &tv);
    st->backoff_ms *= 2;
    if (st->backoff_ms > PC_STORE_BACKOFF_MAX_MS)
        st->backoff_ms = PC_STORE_BACKOFF_MAX_MS;
}

static void pending_changed(struct pc_store *st)
{
    if (st->router != NULL)
        pc_cluster_node_changed(st->router, st);
    else
        PC_METRIC_SET(st->m->store_pending, (int64_t)(pc_cmdq_count(st->q) + st->n_held));
}

static void cmd_free(struct cmd *c)
{
    if (c->timer != NULL)
        event_free(c->timer);
    free(c->wire);
    free(c);
}

/* The connection is done for: no more reading, no new commands; reset_ev drops it on the
 * next loop turn (outside the bufferevent callback that may be running). */
static void store_break(struct pc_store *st)
{
    if (st->bev == NULL || st->broken)
        return;
    st->broken = 1;
    bufferevent_disable(st->bev, EV_READ);
    set_state(st, ST_CLOSED);
    event_active(st->reset_ev, EV_TIMEOUT, 0);
}

/* Answers the caller of cmd with the outcome of reply (NULL: failed). Once: the caller
 * claimed the right first (pc_cmdq_claim), or shifted the command out unanswered. */
static void store_break(struct pc_store *st);
static int is_str(const redisReply *r, const char *s, size_t len);

/* A sentinel's answer: the master's address, then the connection to it at once. */
static void sentinel_answer(struct pc_store *st, const redisReply *r)
{
    const char *who =
        st->sentinel_hosts[(st->sentinel_next + st->n_sentinels - 1) % (size_t)st->n_sentinels];
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        pc_log(PC_LOG_WARN, "store: sentinel %s does not know master '%s'%s%s", who,
               st->cfg->redis_sentinel_master,
               r != NULL && r->type == REDIS_REPLY_ERROR ? ": " : "",
               r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : "");
        store_break(st); /* the next sentinel, after the backoff */
        return;
    }
    char host[PC_CFG_STR];
    snprintf(host, sizeof host, "%.*s", (int)r->element[0]->len, r->element[0]->str);
    int port = atoi(r->element[1]->str);
    if (port <= 0 || port > 65535 || host[0] == '\0') {
        pc_log(PC_LOG_WARN, "store: sentinel %s named master '%s' as '%s:%s'", who,
               st->cfg->redis_sentinel_master, host, r->element[1]->str);
        store_break(st);
        return;
    }
    if (strcmp(host, st->host) != 0 || port != st->port)
        pc_log(PC_LOG_INFO, "store: sentinel %s: master '%s' is %s:%d", who,
               st->cfg->redis_sentinel_master, host, port);
    pc_strlcpy(st->host, host, sizeof st->host);
    st->port = port;
    st->have_master = 1;
    st->connect_now = 1;
    store_break(st); /* the sentinel's connection; the master's follows from reset_cb */
}

/* The first reply on a master's connection found through the sentinels. */
static void role_answer(struct pc_store *st, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && is_str(r->element[0], "master", 6)) {
        set_state(st, ST_CONNECTED);
        event_del(st->connect_timer);
        pc_log(PC_LOG_INFO, "store: connected to Redis master %s:%d", st->host, st->port);
        return;
    }
    pc_log(PC_LOG_WARN, "store: Redis %s:%d is not a master (ROLE %s); asking the sentinels",
           st->host, st->port,
           r != NULL && r->type == REDIS_REPLY_ARRAY ? r->element[0]->str : "failed");
    st->have_master = 0;
    store_break(st);
}

static void cmd_answer(struct cmd *c, redisReply *r)
{
    struct pc_store *st = c->st;
    if (st->router != NULL) {
        /* A cluster node: MOVED and ASK are the router's to follow; other replies go to the
         * caller, and the router remembers who answered (pc_store_out_of_step). */
        if (r != NULL && r->type == REDIS_REPLY_ERROR && c->wire != NULL &&
            pc_cluster_redirected(st->router, st, c, r->str, r->len))
            return;
        pc_cluster_answering(st->router, st);
    }
    /* Redis answers: a paused Redis that still accepts TCP does not. An error reply (a
     * refused AUTH, say) leads to a reconnect: it must not reset the backoff. */
    if (r != NULL && r->type != REDIS_REPLY_ERROR && c->kind != CMD_SENTINEL)
        st->backoff_ms = PC_STORE_BACKOFF_MIN_MS;
    /* The master the sentinels named was turned into a replica (a failover): ask again. */
    if (st->n_sentinels > 0 && r != NULL && r->type == REDIS_REPLY_ERROR &&
        strncmp(r->str, "READONLY", 8) == 0 && !st->broken) {
        pc_log(PC_LOG_WARN, "store: Redis %s:%d is a replica now (READONLY); asking the sentinels",
               st->host, st->port);
        st->have_master = 0;
        store_break(st);
    }
    double secs = (double)(pc_now_us() - c->start_us) / 1e6;
    switch (c->kind) {
    case CMD_GET:
        if (r != NULL && r->type == REDIS_REPLY_STRING) {
            PC_METRIC_INC(st->m->redis_get_ok);
            pc_hist_observe(&st->m->h_redis_get, secs);
            pc_timer_observe(&st->m->t_redis_get, secs);
            c->get_cb(PC_STORE_HIT, r->str, r->len, c->arg);
        } else if (r != NULL && r->type == REDIS_REPLY_NIL) {
            PC_METRIC_INC(st->m->redis_get_ok);
            pc_hist_observe(&st->m->h_redis_get, secs);
            pc_timer_observe(&st->m->t_redis_get, secs);
            c->get_cb(PC_STORE_MISS, NULL, 0, c->arg);
        } else {
            PC_METRIC_INC(st->m->redis_get_failed);
            /* An error reply (NOPERM for an ACL user without the rights, OOM, ...) says
             * why lookups fail: said once a second at most. */
            if (r != NULL && r->type == REDIS_REPLY_ERROR && time(NULL) != st->get_error_s) {
                st->get_error_s = time(NULL);
                pc_log(PC_LOG_WARN, "store: GET failed: %s", r->str);
            }
            c->get_cb(PC_STORE_ERROR, NULL, 0, c->arg);
        }
        break;
    case CMD_SET:
        if (r != NULL && r->type == REDIS_REPLY_STATUS) {
            PC_METRIC_INC(st->m->store_ok);
            pc_hist_observe(&st->m->h_redis_set, secs);
            pc_timer_observe(&st->m->t_redis_set, secs);
        } else {
            PC_METRIC_INC(st->m->store_failed);
            pc_log(PC_LOG_WARN, "store: SET failed: %s",
                   r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        }
        if (c->set_cb != NULL)
            c->set_cb(r != NULL && r->type == REDIS_REPLY_STATUS, c->arg);
        break;
    case CMD_PING:
        c->ping_cb(r != NULL && r->type == REDIS_REPLY_STATUS, c->arg);
        break;
    case CMD_GENERIC:
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            pc_log(PC_LOG_WARN, "store: Redis error: %s", r->str);
        if (c->cmd_cb != NULL) /* fire-and-forget commands have none */
            c->cmd_cb((const struct pc_reply *)r, c->arg);
        break;
    case CMD_SENTINEL:
        sentinel_answer(st, r);
        break;
    case CMD_ROLE:
        role_answer(st, r);
        break;
    case CMD_ASKING: /* a refused ASKING shows in the command after it */
        break;
    case CMD_SETUP:
    case CMD_SUBSCRIBE:
        if (r != NULL && r->type == REDIS_REPLY_ERROR) {
            pc_log(PC_LOG_ERROR, "store: Redis refused %s: %s",
                   c->kind == CMD_SETUP ? "AUTH/SELECT" : "SUBSCRIBE", r->str);
            store_break(st);
        } else if (r != NULL && c->kind == CMD_SUBSCRIBE) {
            st->subscribed = 1;
            st->subscribed_us = pc_now_us();
        }
        break;
    }
}

/* Fails every command still queued (the connection is gone), oldest first. Their
 * callbacks may send new commands: the store is closed by now, so those fail at once. */
static void fail_all(struct pc_store *st)
{
    struct cmd *c;
    int answered;
    while ((c = pc_cmdq_shift(st->q, &answered)) != NULL) {
        if (!answered)
            cmd_answer(c, NULL);
        cmd_free(c);
    }
    pending_changed(st);
}

/* Drops the connection, if any, and fails what waited on it. Never from inside a
 * bufferevent callback of that connection (on_read's pc_store_free aside). */
static void store_drop(struct pc_store *st)
{
    struct bufferevent *bev = st->bev;
    redisReader *reader = st->reader;
    st->bev = NULL;
    st->reader = NULL;
    st->out.len = 0; /* never written to another connection */
    st->broken = 0;
    st->subscribed = 0;
    st->subscribed_us = 0;
    if (bev != NULL && !st->asking && !st->watch && !st->connect_now && st->n_sentinels > 0)
        st->have_master = 0; /* it may have moved: the sentinels are asked again */
    set_state(st, ST_CLOSED);
    if (bev != NULL)
        bufferevent_free(bev);
    if (reader != NULL)
        redisReaderFree(reader);
    fail_all(st);
    held_fail(st);
}

/* ------------------------------------------------------------------ reading replies */

static const char *reply_type_name(const redisReply *r)
{
    static const char *const names[] = {"?",   "string", "array", "integer",
                                        "nil", "status", "error"};
    return r->type >= 1 && r->type <= 6 ? names[r->type] : "?";
}

static const char *cmd_kind_name(enum cmd_kind k)
{
    static const char *const names[] = {"GET",       "SET",      "PING", "AUTH/SELECT", "command",
                                        "SUBSCRIBE", "SENTINEL", "ROLE", "ASKING"};
    return names[k];
}

static int is_str(const redisReply *r, const char *s, size_t len)
{
    return r->type == REDIS_REPLY_STRING && r->len == len && memcmp(r->str, s, len) == 0;
}

/* A pub/sub array for our channel whose first element is kind ("message", "subscribe"). */
static int is_push(const struct pc_store *st, const redisReply *r, const char *kind, int last)
{
    return st->sub_channel != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
           is_str(r->element[0], kind, strlen(kind)) &&
           is_str(r->element[1], st->sub_channel, strlen(st->sub_channel)) &&
           r->element[2]->type == last;
}

/* 1 when r is a reply Redis can give to a command of kind k. */
static int reply_fits(const struct pc_store *st, enum cmd_kind k, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        return 1; /* any command may be refused */
    switch (k) {
    case CMD_GET:
        return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL;
    case CMD_SET: /* +OK, or nil when a condition (NX, XX) was not met */
        return r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_NIL;
    case CMD_PING:
    case CMD_SETUP:
    case CMD_ASKING:
        return r->type == REDIS_REPLY_STATUS;
    case CMD_SUBSCRIBE:
        return is_push(st, r, "subscribe", REDIS_REPLY_INTEGER);
    case CMD_GENERIC:
        return 1;
    case CMD_SENTINEL: /* [host, port], or nil for a master it does not know */
        return r->type == REDIS_REPLY_NIL || (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                                              r->element[0]->type == REDIS_REPLY_STRING &&
                                              r->element[1]->type == REDIS_REPLY_STRING);
    case CMD_ROLE:
        return r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
               r->element[0]->type == REDIS_REPLY_STRING;
    }
    return 0;
}

/* Counts a desync and drops the connection (see the top of the file). */
static void desync(struct pc_store *st, const char *what)
{
    st->desyncs++;
    PC_METRIC_INC(st->m->redis_desyncs);
    pc_log(PC_LOG_ERROR, "store: %s (Redis desync %zu); dropping the connection", what,
           st->desyncs);
    store_break(st);
}

void pc_store_out_of_step(struct pc_store *st, const char *what)
{
    if (st != NULL && st->cl != NULL) {
        pc_cluster_out_of_step(st, what);
        return;
    }
    if (st != NULL && st->bev != NULL && !st->broken)
        desync(st, what);
}

/* One whole reply: it answers the oldest command, or on a subscribed connection with no
 * command waiting it is a message. 0 handled; -1 a desync (the connection is broken). */
static int dispatch(struct pc_store *st, redisReply *r)
{
    char what[160];
    int answered;
    if (pc_cmdq_head(st->q) == 0) {
        if (st->subscribed && is_push(st, r, "message", REDIS_REPLY_STRING)) {
            st->sub_cb(r->element[2]->str, r->element[2]->len, st->sub_arg);
            return 0;
        }
        snprintf(what, sizeof what, "an unexpected %s reply when no command was waiting",
                 reply_type_name(r));
        desync(st, what);
        return -1;
    }
    struct cmd *c = pc_cmdq_shift(st->q, &answered);
    pending_changed(st);
    int fits = reply_fits(st, c->kind, r);
    if (!fits) {
        snprintf(what, sizeof what, "an unexpected %s reply to a %s", reply_type_name(r),
                 cmd_kind_name(c->kind));
        desync(st, what);
    }
    if (!answered)
        cmd_answer(c, fits ? r : NULL); /* else: answered at its timeout; reply dropped */
    cmd_free(c);
    return fits ? 0 : -1;
}

/* hiredis's createArray, within PC_STORE_MAX_ELEMENTS for one whole reply: the reader
 * allocates an array's element pointers as soon as it reads its length. */
static void *bounded_array(const redisReadTask *task, int elements)
{
    struct pc_store *st = task->privdata;
    if (elements < 0 || (size_t)elements > PC_STORE_MAX_ELEMENTS - st->reply_elems) {
        st->too_big = 1;
        return NULL; /* the reader fails ("Out of memory") */
    }
    st->reply_elems += (size_t)elements;
    return st->hiredis_array(task, elements);
}

/* The length of the bulk string the reader waits for, -1 when it waits for no bulk. The
 * reader consumes a bulk item only when all of it is there: until then it stands at the
 * digits after '$' (read.c, processBulkItem), which is where a huge length is seen before
 * its bytes are buffered. Saturates past PC_STORE_MAX_BULK_BYTES. */
static long long pending_bulk(const redisReader *r)
{
    if (r->ridx < 0 || r->ridx > 8 || r->rstack[r->ridx].type != REDIS_REPLY_STRING)
        return -1;
    long long n = -1;
    for (size_t i = r->pos; i < r->len && r->buf[i] >= '0' && r->buf[i] <= '9'; i++) {
        n = (n < 0 ? 0 : n) * 10 + (r->buf[i] - '0');
        if (n > PC_STORE_MAX_BULK_BYTES)
            break;
    }
    return n;
}

static int reader_new(struct pc_store *st)
{
    redisReader *r = redisReaderCreate();
    if (r == NULL)
        return -1;
    st->fns = *r->fn;
    st->hiredis_array = st->fns.createArray;
    st->fns.createArray = bounded_array;
    r->fn = &st->fns;
    r->privdata = st; /* reaches bounded_array as task->privdata */
    st->reader = r;
    st->fed = st->reply_from = 0;
    st->reply_elems = 0;
    st->too_big = 0;
    return 0;
}

/* Takes every whole reply out of the reader. 0 ok (maybe a reply still incomplete); -1
 * the connection broke (a desync: unreadable, oversized or unexpected reply). */
static int read_replies(struct pc_store *st)
{
    redisReader *r = st->reader;
    char what[200];
    while (!st->broken) {
        void *reply = NULL;
        if (redisReaderGetReply(r, &reply) != REDIS_OK) {
            snprintf(what, sizeof what, "an unreadable reply: %s",
                     st->too_big ? "arrays too large" : r->errstr);
            desync(st, what);
            return -1;
        }
        if (reply == NULL) {
            long long bulk = pending_bulk(r);
            if (bulk > PC_STORE_MAX_BULK_BYTES ||
                st->fed - st->reply_from > PC_STORE_MAX_REPLY_BYTES) {
                desync(st, "a reply larger than any Redis sends");
                return -1;
            }
            return 0;
        }
        st->reply_from = st->fed - (r->len - r->pos);
        st->reply_elems = 0;
        int rc = dispatch(st, reply);
        freeReplyObject(reply);
        if (rc != 0)
            return -1;
    }
    return -1;
}

/* The most a plain connection's read callback takes (bevread.h): a large reply at once. */
static size_t reply_read_limit(void *arg)
{
    (void)arg;
    return (size_t)1 << 20;
}

/* A plain connection's read event (bevread.h): arg is its bufferevent, whose callback
 * argument is the store. */
static void reply_read_event(evutil_socket_t fd, short what, void *arg)
{
    void *st;
    bufferevent_getcb(arg, NULL, NULL, NULL, &st);
    pc_bevread_read(&((struct pc_store *)st)->rd, fd, what);
}

/* The bufferevent's read callback; arg is the store, which owns the bufferevent: it never
 * frees it here (a drop is deferred to reset_ev). */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct pc_store *st = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    st->dispatching++;
    while (!st->broken && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        if (redisReaderFeed(st->reader, v.iov_base, v.iov_len) != REDIS_OK) {
            desync(st, "a reply that could not be buffered");
            break;
        }
        st->fed += v.iov_len;
        evbuffer_drain(in, v.iov_len);
        if (read_replies(st) != 0)
            break;
    }
    st->dispatching--;
    if (st->free_later && st->dispatching == 0)
        store_free_now(st); /* pc_store_free was called from a callback above */
}

/* ------------------------------------------------------------------ the connection */

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pc_store *st = arg;
    /* Broken: an error was met on this connection already (its drop waits in reset_ev).
     * A refused connect reports itself twice: the read (bevread) meets ECONNREFUSED first
     * and takes the socket's error with it, then libevent's connect check finds no error
     * left and says CONNECTED, which must not make a dead connection ready. */
    if (st->broken)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_priority_set(bev, PC_LOOP_FIRST); /* a TLS connection's events, made anew */
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (st->n_sentinels > 0 && !st->watch) /* a sentinel's answer, or the ROLE, decides */
            return;
        event_del(st->connect_timer);
        set_state(st, ST_CONNECTED); /* backoff resets on the first answered command */
        pc_log(PC_LOG_INFO, "store: connected to Redis %s:%d", st->host, st->port);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    const char *why =
        (what & BEV_EVENT_EOF) ? "closed by server" : evutil_socket_error_to_string(err);
    char tls_why[256];
    unsigned long ssl_err = st->tls_ctx != NULL ? bufferevent_get_openssl_error(bev) : 0;
    if (st->tls_ctx != NULL && st->state == ST_CONNECTING && (what & BEV_EVENT_ERROR) &&
        (ssl_err != 0 || err == 0)) {
        pc_tls_failure(bufferevent_openssl_get_ssl(bev), ssl_err, tls_why, sizeof tls_why);
        why = tls_why;
        pc_log(PC_LOG_WARN, "store: TLS handshake with %s failed: %s; retry in %d ms", st->peer,
               why, st->backoff_ms);
        store_break(st);
        return;
    }
    if (st->state == ST_CONNECTING)
        pc_log(PC_LOG_WARN, "store: cannot connect to %s: %s; retry in %d ms", st->peer, why,
               st->backoff_ms);
    else
        pc_log(PC_LOG_WARN, "store: lost Redis connection: %s", why);
    store_break(st);
}

/* The connect timer, owned by the store (arg); it drops the half-open connection. */
static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_store *st = arg;
    if (st->state != ST_CONNECTING)
        return;
    pc_log(PC_LOG_WARN, "store: Redis connect timed out; retry in %d ms", st->backoff_ms);
    store_drop(st);
    schedule_retry(st);
}

/* reset_ev, owned by the store (arg): the deferred drop, outside any bufferevent callback. */
static void reset_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_store *st = arg;
    if (st->bev == NULL)
        return;
    store_drop(st);
    if (st->connect_now) { /* a sentinel named the master: go there now */
        st->connect_now = 0;
        event_del(st->connect_timer);
        store_connect(st);
        return;
    }
    schedule_retry(st);
}

/* The backoff timer, owned by the store (arg). */
static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    store_connect(arg);
}

/* A command's timer; arg is the command, owned by the queue (st->q), which frees it. It is
 * answered once: here or by its reply, whichever claims it first (pc_cmdq_claim). */
static void cmd_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cmd *c = arg;
    struct pc_store *st = c->st;
    pc_log(PC_LOG_WARN, "store: Redis command timed out after %d ms; reconnecting", c->timeout_ms);
    if (pc_cmdq_claim(st->q, c->id))
        cmd_answer(c, NULL); /* now; it keeps its place in the queue until the drop */
    store_break(st);
}

/* Writes p[0..n) to the connection. A plain connection that is up and has nothing waiting
 * in its output gathers the commands in st->out, written in one send by out_cb: no write
 * event is added and removed, and no wait for the socket to be reported writable, as the
 * bufferevent's write would. A quiet loop (fewer than PC_STORE_AT_ONCE_BELOW callbacks
 * waiting) runs out_cb at the top priority, right after the callback that wrote: a
 * lookup goes out before the next request is read. A busy one runs it at the default,
 * after the callbacks waiting now: their commands go in the same send. The rest goes
 * through the bufferevent. 0 ok. */
static int wire_write(struct pc_store *st, const char *p, size_t n)
{
    if (st->out.len == 0 && (st->tls_ctx != NULL || st->state != ST_CONNECTED ||
                             evbuffer_get_length(bufferevent_get_output(st->bev)) > 0))
        return bufferevent_write(st->bev, p, n);
    if (st->out.len == 0) {
        int waiting = event_base_get_num_events(st->base, EVENT_BASE_COUNT_ACTIVE);
        event_priority_set(st->out_ev, waiting < PC_STORE_AT_ONCE_BELOW
                                           ? PC_LOOP_FIRST
                                           : pc_loop_priority(st->base, PC_LOOP_DEFAULT));
        event_active(st->out_ev, EV_TIMEOUT, 1);
    }
    return pc_buf_append(&st->out, p, n);
}

/* out_ev: the gathered commands, straight to the socket; what it does not take (or meets an
 * error on) goes through the bufferevent, which writes it when it can or meets the error
 * itself. */
static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_store *st = arg;
    const char *p = st->out.data;
    size_t n = st->out.len;
    if (n == 0 || st->bev == NULL || st->broken) {
        st->out.len = 0; /* the connection went: its commands are failed with it */
        return;
    }
    evutil_socket_t s = bufferevent_getfd(st->bev);
    ssize_t w = s >= 0 ? send(s, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;
    if (w > 0) {
        p += w;
        n -= (size_t)w;
    }
    if (n > 0 && bufferevent_write(st->bev, p, n) != 0)
        store_break(st);
    st->out.len = 0;
}

/* Sends one encoded command on the connection: c is owned by st->q from here on, and out
 * (n bytes, from pc_resp_command) is taken in every case. bounded: a SET of bytes,
 * counted against the budgets (the caller checked pc_cmdq_full). 0 ok, -1 failed (c freed;
 * its callback called with the failure only when answer_fail). */
static int cmd_send_wire(struct pc_store *st, struct cmd *c, int bounded, size_t bytes, char *out,
                         size_t n, int answer_fail)
{
    int queued = 0;
    c->st = st;
    c->start_us = pc_now_us();
    if (st->bev == NULL || st->broken)
        goto fail;
    c->timer = evtimer_new(st->base, cmd_timeout_cb, c);
    if (c->timer == NULL)
        goto fail;
    if (pc_cmdq_push(st->q, c, bounded, bytes, &c->id) != PC_CMDQ_OK)
        goto fail;
    queued = 1;
    if (wire_write(st, out, n) != 0)
        goto fail;
    c->bounded = bounded;
    c->bytes = bytes;
    if (st->router != NULL) { /* kept for a redirection */
        c->wire = out;
        c->wire_len = n;
    } else {
        free(out);
    }
    if (c->timeout_ms <= 0)
        c->timeout_ms = st->cfg->redis_timeout_ms;
    /* Timers count from the loop's cached time: after CPU-heavy work in this callback (a
     * large key derivation) that time is stale and the command would time out early. */
    event_base_update_cache_time(st->base);
    struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    pending_changed(st);
    return 0;
fail:
    if (queued)
        pc_cmdq_remove(st->q, c->id);
    free(out);
    if (answer_fail)
        cmd_answer(c, NULL);
    cmd_free(c);
    return -1;
}

/* ------------------------------------------------------------------ held writes */

/* Takes the held commands out, oldest first. */
static struct cmd *held_take(struct pc_store *st)
{
    struct cmd *list = st->held_head;
    st->held_head = st->held_tail = NULL;
    st->n_held = st->held_bounded = st->held_bytes = 0;
    pc_loop_later_disarm(&st->held_later);
    return list;
}

/* Sends every held command, in order (each failure answered as one). Their callbacks may
 * send or hold new commands: those come after. A connection that cannot take them fails
 * them all first, so that no callback's command goes out between two of them. */
static void held_flush(struct pc_store *st)
{
    if (st->held_head == NULL)
        return;
    if (st->bev == NULL || st->broken) {
        held_fail(st);
        return;
    }
    struct cmd *c = held_take(st);
    while (c != NULL) {
        struct cmd *next = c->held_next;
        char *out = c->wire;
        c->held_next = NULL;
        c->wire = NULL;
        (void)cmd_send_wire(st, c, c->bounded, c->bytes, out, c->wire_len, 1);
        c = next;
    }
    pending_changed(st);
}

/* Fails every held command (the connection went, or the store is freed), in order. */
static void held_fail(struct pc_store *st)
{
    struct cmd *c = held_take(st);
    while (c != NULL) {
        struct cmd *next = c->held_next;
        c->held_next = NULL;
        cmd_answer(c, NULL);
        cmd_free(c);
        c = next;
    }
    pending_changed(st);
}

/* held_later's: st is arg. */
static void held_cb(void *arg)
{
    held_flush(arg);
}

/* Keeps c (encoded: out, n bytes, taken) back behind the held ones. */
static void held_push(struct pc_store *st, struct cmd *c, int bounded, size_t bytes, char *out,
                      size_t n)
{
    c->st = st;
    c->wire = out;
    c->wire_len = n;
    c->bounded = bounded;
    c->bytes = bounded ? bytes : 0;
    c->held_next = NULL;
    if (st->held_tail != NULL) {
        st->held_tail->held_next = c;
    } else {
        st->held_head = c;
        pc_loop_later_arm(&st->held_later);
    }
    st->held_tail = c;
    st->n_held++;
    st->held_bounded += bounded ? 1 : 0;
    st->held_bytes += c->bytes;
    pending_changed(st);
}

void pc_store_hold(struct pc_store *st, int on)
{
    if (st != NULL && st->cl == NULL)
        st->hold += on ? 1 : -1;
}

size_t pc_store_held(const struct pc_store *st)
{
    return st != NULL ? st->n_held : 0;
}

size_t pc_store_gathered(const struct pc_store *st)
{
    return st != NULL ? st->out.len : 0;
}

/* Encodes and sends one command (cmd_send_wire), or holds it back (pc_store_hold): a
 * write while held, unless it is a lookup. Any other command goes out behind the held
 * ones, a lookup before them. */
static int cmd_send(struct pc_store *st, struct cmd *c, int bounded, size_t bytes, int argc,
                    const char **argv, const size_t *argvlen)
{
    char *out = NULL;
    long n = pc_resp_command(&out, argc, argv, argvlen);
    if (n < 0) {
        cmd_free(c);
        return -1;
    }
    if (st->hold > 0 && !c->may_pass && st->state == ST_CONNECTED && !st->broken &&
        (c->kind == CMD_SET || c->kind == CMD_PING || c->kind == CMD_GENERIC)) {
        held_push(st, c, bounded, bytes, out, (size_t)n);
        return 0;
    }
    if (!c->may_pass)
        held_flush(st);
    return cmd_send_wire(st, c, bounded, bytes, out, (size_t)n, 0);
}

int pc_store_resend(struct pc_store *node, struct cmd *c, int asking)
{
    /* A node just made (a promoted replica named by MOVED) is still connecting: the command
     * waits in its output behind AUTH, and fails with the connection if that fails. */
    if (node->bev == NULL || node->broken || c->wire == NULL)
        return -1;
    if (c->bounded && pc_cmdq_full(node->q, c->bytes))
        return -1;
    struct cmd *again = calloc(1, sizeof *again);
    if (again == NULL)
        return -1;
    if (asking) { /* ASK: this one command may go to the node importing the slot */
        struct cmd *a = calloc(1, sizeof *a);
        const char *argv[] = {"ASKING"};
        size_t lens[] = {6};
        if (a == NULL) {
            free(again);
            return -1;
        }
        a->kind = CMD_ASKING;
        if (cmd_send(node, a, 0, 0, 1, argv, lens) != 0) {
            free(again);
            return -1;
        }
    }
    again->kind = c->kind;
    again->get_cb = c->get_cb;
    again->ping_cb = c->ping_cb;
    again->cmd_cb = c->cmd_cb;
    again->set_cb = c->set_cb;
    again->arg = c->arg;
    again->timeout_ms = c->timeout_ms;
    again->redirects = c->redirects + 1;
    char *wire = c->wire;
    c->wire = NULL;
    if (cmd_send_wire(node, again, c->bounded, c->bytes, wire, c->wire_len, 0) != 0)
        return -1; /* an ASKING may have gone out alone: it only concerns the next command */
    return 0;
}

/* AUTH (user password, or password) when either is set. */
static void send_auth(struct pc_store *st, const char *user, const char *password)
{
    if (password[0] == '\0' && user[0] == '\0')
        return;
    struct cmd *c = calloc(1, sizeof *c);
    const char *argv[] = {"AUTH", user[0] != '\0' ? user : password, password};
    size_t lens[] = {4, strlen(argv[1]), strlen(password)};
    if (c != NULL) {
        c->kind = CMD_SETUP;
        cmd_send(st, c, 0, 0, user[0] != '\0' ? 3 : 2, argv, lens);
    }
}

/* On a sentinel's connection: its AUTH, then the question. */
static void send_sentinel_query(struct pc_store *st)
{
    const struct pc_config *cfg = st->cfg;
    send_auth(st, cfg->redis_sentinel_username, cfg->redis_sentinel_password);
    struct cmd *c = calloc(1, sizeof *c);
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", cfg->redis_sentinel_master};
    size_t lens[] = {8, 23, strlen(cfg->redis_sentinel_master)};
    if (c != NULL) {
        c->kind = CMD_SENTINEL;
        cmd_send(st, c, 0, 0, 3, argv, lens);
    }
}

/* Queues AUTH and SELECT first: they go out as soon as the connection is up (on a
 * master found through the sentinels, ROLE right after AUTH). A subscriber's SUBSCRIBE goes
 * last: Redis refuses SELECT on a subscribed connection. A sentinel's connection gets its
 * question only. */
static void send_setup(struct pc_store *st)
{
    const struct pc_config *cfg = st->cfg;
    if (st->asking) {
        send_sentinel_query(st);
        return;
    }
    if (st->watch) {
        send_auth(st, cfg->redis_sentinel_username, cfg->redis_sentinel_password);
        struct cmd *c = calloc(1, sizeof *c);
        const char *argv[] = {"SUBSCRIBE", st->sub_channel};
        size_t lens[] = {9, strlen(st->sub_channel)};
        if (c != NULL) {
            c->kind = CMD_SUBSCRIBE;
            cmd_send(st, c, 0, 0, 2, argv, lens);
        }
        return;
    }
    send_auth(st, cfg->redis_username, cfg->redis_password);
    if (st->n_sentinels > 0) { /* before anything else is let through: is it the master? */
        struct cmd *c = calloc(1, sizeof *c);
        const char *argv[] = {"ROLE"};
        size_t lens[] = {4};
        if (c != NULL) {
            c->kind = CMD_ROLE;
            cmd_send(st, c, 0, 0, 1, argv, lens);
        }
    }
    if (cfg->redis_db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", cfg->redis_db);
        struct cmd *c = calloc(1, sizeof *c);
        const char *argv[] = {"SELECT", db};
        size_t lens[] = {6, strlen(db)};
        if (c != NULL) {
            c->kind = CMD_SETUP;
            cmd_send(st, c, 0, 0, 2, argv, lens);
        }
    }
    if (st->sub_channel != NULL) {
        struct cmd *c = calloc(1, sizeof *c);
        const char *argv[] = {"SUBSCRIBE", st->sub_channel};
        size_t lens[] = {9, strlen(st->sub_channel)};
        if (c != NULL) {
            c->kind = CMD_SUBSCRIBE;
            cmd_send(st, c, 0, 0, 2, argv, lens);
        }
    }
}

/* The first address of host, IPv4 first as hiredis does (resolved synchronously, as
 * hiredis did). NULL with a message in err. */
static struct addrinfo *resolve(const char *host, int port_no, char *err, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", port_no);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        hints.ai_family = AF_INET6;
        rc = getaddrinfo(host, port, &hints, &ai);
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s", gai_strerror(rc));
        return NULL;
    }
    return ai;
}

static void store_connect(struct pc_store *st)
{
    char err[128] = "out of memory";
    PC_METRIC_INC(st->m->redis_reconnects);
    const char *host = st->host;
    int port = st->port;
    st->asking = st->n_sentinels > 0 && !st->have_master && !st->watch;
    if (st->asking || st->watch) { /* the sentinels in turn */
        size_t i = st->sentinel_next++ % (size_t)st->n_sentinels;
        host = st->sentinel_hosts[i];
        port = st->sentinel_ports[i];
    } else if (st->n_seeds > 0) { /* a cluster's subscriber: any node hears every PUBLISH */
        size_t i = st->seed_next++ % (size_t)st->n_seeds;
        host = st->seed_hosts[i];
        port = st->seed_ports[i];
    }
    snprintf(st->peer, sizeof st->peer, "%s %s:%d", st->asking || st->watch ? "sentinel" : "Redis",
             host, port);
    struct addrinfo *ai = resolve(host, port, err, sizeof err);
    struct bufferevent *bev = NULL;
    if (ai == NULL || reader_new(st) != 0)
        goto fail;
    if (st->tls_ctx != NULL) {
        SSL *ssl = pc_tls_client_ssl(st->tls_ctx, &st->tls, host);
        if (ssl == NULL) {
            snprintf(err, sizeof err, "cannot set up TLS for this connection");
            goto fail;
        }
        /* The bufferevent owns ssl from here, freed with it (BEV_OPT_CLOSE_ON_FREE). */
        bev = bufferevent_openssl_socket_new(st->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
            SSL_free(ssl);
            goto fail;
        }
        /* A Redis that closes without close_notify is a lost connection like any other. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else if ((bev = bufferevent_socket_new(st->base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        goto fail;
    }
    bufferevent_setcb(bev, on_read, NULL, on_event, st);
    if (bufferevent_socket_connect(bev, ai->ai_addr, (int)ai->ai_addrlen) != 0) {
        snprintf(err, sizeof err, "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    /* A plain connection's replies are read by a read of its own (bevread.h), up to 1 MB a
     * callback; after the connect, which makes the events anew. */
    if (st->tls_ctx == NULL &&
        pc_bevread_own(bev, &st->rd, reply_read_event, reply_read_limit, st) != 0) {
        snprintf(err, sizeof err, "cannot set up reading");
        goto fail;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    /* Replies at the top priority (store.h); after the connect, which makes the events. */
    bufferevent_priority_set(bev, PC_LOOP_FIRST);
    freeaddrinfo(ai);
    st->bev = bev;
    set_state(st, ST_CONNECTING);
    int ms = st->cfg->redis_timeout_ms < 1000 ? 1000 : st->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(st->connect_timer, &tv);
    send_setup(st);
    return;
fail:
    pc_log(PC_LOG_WARN, "store: cannot connect to %s: %s; retry in %d ms", st->peer, err,
           st->backoff_ms);
    if (ai != NULL)
        freeaddrinfo(ai);
    if (bev != NULL)
        bufferevent_free(bev);
    if (st->reader != NULL) {
        redisReaderFree(st->reader);
        st->reader = NULL;
    }
    schedule_retry(st);
}

/* ------------------------------------------------------------------ the API */

static int store_init(struct pc_store *st, struct event_base *base, const struct pc_config *cfg,
                      struct pc_metrics *metrics);

struct pc_store *pc_store_new(struct event_base *base, const struct pc_config *cfg,
                              struct pc_metrics *metrics)
{
    if (cfg->redis_cluster)
        return pc_cluster_new(base, cfg, metrics);
    struct pc_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    if (store_init(st, base, cfg, metrics) != 0) {
        free(st);
        return NULL;
    }
    return st;
}

/* Timers and the first connect. 0 ok; -1 with st's events freed (st itself is not). */
static int store_init(struct pc_store *st, struct event_base *base, const struct pc_config *cfg,
                      struct pc_metrics *metrics)
{
    st->base = base;
    st->cfg = cfg;
    st->m = metrics;
    st->backoff_ms = PC_STORE_BACKOFF_MIN_MS;
    st->q = pc_cmdq_new((size_t)cfg->redis_max_pending, cfg->redis_max_pending_bytes);
    st->connect_timer = evtimer_new(base, connect_timeout_cb, st);
    st->retry_timer = evtimer_new(base, retry_cb, st);
    st->reset_ev = event_new(base, -1, 0, reset_cb, st);
    int held_ok = pc_loop_later_init(&st->held_later, base, PC_STORE_HOLD_MS, held_cb, st) == 0;
    pc_buf_init(&st->out);
    /* Its priority is set at each use (wire_write); either way a busy loop never holds it
     * back (held_later waits for an idle turn; this must not). */
    st->out_ev = event_new(base, -1, 0, out_cb, st);
    if (st->host[0] == '\0') { /* a cluster node's address is set already */
        pc_strlcpy(st->host, cfg->redis_host, sizeof st->host);
        st->port = cfg->redis_port;
    }
    if (cfg->redis_cluster && st->sub_channel != NULL && st->router == NULL &&
        pc_store_seeds(cfg, &st->seed_hosts, &st->seed_ports, &st->n_seeds) != 0)
        st->n_seeds = -1;
    if (cfg->redis_sentinels[0] != '\0') {
        char why[256];
        st->sentinel_hosts = calloc(PC_ADDRESSES_MAX, sizeof *st->sentinel_hosts);
        st->sentinel_ports = calloc(PC_ADDRESSES_MAX, sizeof *st->sentinel_ports);
        st->n_sentinels =
            st->sentinel_hosts == NULL || st->sentinel_ports == NULL
                ? -1
                : pc_config_addresses(cfg->redis_sentinels, st->sentinel_hosts, st->sentinel_ports,
                                      PC_ADDRESSES_MAX, why, sizeof why);
    }
    if (cfg->redis_tls) {
        st->tls = (struct pc_tls_opts){cfg->redis_tls_ca_file, cfg->redis_tls_cert_file,
                                       cfg->redis_tls_key_file, cfg->redis_tls_server_name,
                                       cfg->redis_tls_verify};
        char err[512];
        if ((st->tls_ctx = pc_tls_client_ctx(&st->tls, err, sizeof err)) == NULL)
            pc_log(PC_LOG_ERROR, "store: [redis] %s", err);
    }
    if ((cfg->redis_tls && st->tls_ctx == NULL) || st->n_sentinels < 0 || st->n_seeds < 0 ||
        st->q == NULL || st->connect_timer == NULL || st->retry_timer == NULL ||
        st->reset_ev == NULL || !held_ok || st->out_ev == NULL) {
        pc_cmdq_free(st->q);
        if (st->out_ev)
            event_free(st->out_ev);
        pc_loop_later_free(&st->held_later);
        if (st->connect_timer)
            event_free(st->connect_timer);
        if (st->retry_timer)
            event_free(st->retry_timer);
        if (st->reset_ev)
            event_free(st->reset_ev);
        if (st->tls_ctx)
            SSL_CTX_free(st->tls_ctx);
        free(st->sentinel_hosts);
        free(st->sentinel_ports);
        free(st->seed_hosts);
        free(st->seed_ports);
        return -1;
    }
    store_connect(st);
    return 0;
}

/* A subscriber store on channel; watch: to the sentinels (pc_store_new_sentinel_watch). */
static struct pc_store *subscriber_new(struct event_base *base, const struct pc_config *cfg,
                                       struct pc_metrics *metrics, const char *channel, int watch,
                                       pc_store_message_cb cb, void *arg)
{
    struct pc_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    st->watch = watch;
    st->sub_channel = strdup(channel);
    st->sub_cb = cb;
    st->sub_arg = arg;
    if (st->sub_channel == NULL || store_init(st, base, cfg, metrics) != 0) {
        free(st->sub_channel);
        free(st);
        return NULL;
    }
    return st;
}

struct pc_store *pc_store_new_subscriber(struct event_base *base, const struct pc_config *cfg,
                                         struct pc_metrics *metrics, const char *channel,
                                         pc_store_message_cb cb, void *arg)
{
    return subscriber_new(base, cfg, metrics, channel, 0, cb, arg);
}

struct pc_store *pc_store_new_sentinel_watch(struct event_base *base, const struct pc_config *cfg,
                                             struct pc_metrics *metrics, pc_store_message_cb cb,
                                             void *arg)
{
    return subscriber_new(base, cfg, metrics, "+switch-master", 1, cb, arg);
}

struct pc_store *pc_store_node_new(struct event_base *base, const struct pc_config *cfg,
                                   struct pc_metrics *metrics, const char *host, int port,
                                   struct pc_store *router)
{
    struct pc_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
    pc_strlcpy(st->host, host, sizeof st->host);
    st->port = port;
    st->router = router;
    if (store_init(st, base, cfg, metrics) != 0) {
        free(st);
        return NULL;
    }
    return st;
}

int pc_store_seeds(const struct pc_config *cfg, char (**hosts)[PC_CFG_STR], int **ports, int *n)
{
    char why[256];
    *hosts = calloc(PC_ADDRESSES_MAX + 1, sizeof **hosts);
    *ports = calloc(PC_ADDRESSES_MAX + 1, sizeof **ports);
    if (*hosts == NULL || *ports == NULL)
        goto fail;
    pc_strlcpy((*hosts)[0], cfg->redis_host, PC_CFG_STR);
    (*ports)[0] = cfg->redis_port;
    int more = pc_config_addresses(cfg->redis_nodes, *hosts + 1, *ports + 1, PC_ADDRESSES_MAX, why,
                                   sizeof why);
    if (more < 0)
        goto fail;
    *n = 1 + more;
    return 0;
fail:
    free(*hosts);
    free(*ports);
    *hosts = NULL;
    *ports = NULL;
    return -1;
}

void pc_store_master_moved(struct pc_store *st, const char *host, int port)
{
    if (st == NULL || st->n_sentinels <= 0 || st->watch || st->cl != NULL)
        return;
    if (st->have_master && strcmp(st->host, host) == 0 && st->port == port)
        return;
    pc_log(PC_LOG_INFO, "store: sentinels switched master '%s' to %s:%d",
           st->cfg->redis_sentinel_master, host, port);
    pc_strlcpy(st->host, host, sizeof st->host);
    st->port = port;
    st->have_master = 1;
    if (st->bev != NULL && !st->broken) {
        st->connect_now = 1;
        store_break(st); /* the old connection; the new master's follows from reset_cb */
    } else if (st->bev == NULL) {
        event_del(st->retry_timer);
        store_connect(st);
    }
}

static void store_free_now(struct pc_store *st)
{
    store_drop(st);
    pc_cmdq_free(st->q);
    free(st->sub_channel);
    if (st->connect_timer)
        event_free(st->connect_timer);
    if (st->retry_timer)
        event_free(st->retry_timer);
    if (st->reset_ev)
        event_free(st->reset_ev);
    pc_loop_later_free(&st->held_later);
    if (st->out_ev)
        event_free(st->out_ev);
    pc_buf_release(&st->out);
    if (st->tls_ctx)
        SSL_CTX_free(st->tls_ctx);
    free(st->sentinel_hosts);
    free(st->sentinel_ports);
    free(st->seed_hosts);
    free(st->seed_ports);
    free(st);
}

void pc_store_free(struct pc_store *st)
{
    if (st == NULL)
        return;
    if (st->cl != NULL) {
        pc_cluster_free(st);
        return;
    }
    if (st->dispatching > 0) { /* from a callback of on_read: it frees st on its way out */
        store_break(st);
        st->free_later = 1;
        return;
    }
    store_free_now(st);
}

uint64_t pc_store_listening_us(const struct pc_store *st)
{
    return st != NULL && st->subscribed ? st->subscribed_us : 0;
}

int pc_store_ready(const struct pc_store *st)
{
    if (st->cl != NULL)
        return pc_cluster_ready(st);
    return st->state == ST_CONNECTED;
}

int pc_store_get(struct pc_store *st, const char *key, pc_store_get_cb cb, void *arg)
{
    if (st->cl != NULL)
        return pc_cluster_get(st, key, cb, arg);
    if (st->state != ST_CONNECTED) {
        PC_METRIC_INC(st->m->redis_get_failed);
        return -1;
    }
    struct cmd *c = calloc(1, sizeof *c);
    if (c == NULL) {
        PC_METRIC_INC(st->m->redis_get_failed);
        return -1;
    }
    c->kind = CMD_GET;
    c->get_cb = cb;
    c->arg = arg;
    c->may_pass = 1;
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    if (cmd_send(st, c, 0, 0, 2, argv, lens) != 0) {
        PC_METRIC_INC(st->m->redis_get_failed);
        return -1;
    }
    return 0;
}

int pc_store_set(struct pc_store *st, const char *key, const char *value, size_t len, int ttl_s)
{
    return pc_store_set_cb(st, key, value, len, ttl_s, NULL, NULL);
}

int pc_store_set_cb(struct pc_store *st, const char *key, const char *value, size_t len, int ttl_s,
                    pc_store_set_done_cb cb, void *arg)
{
    if (st->cl != NULL)
        return pc_cluster_set(st, key, value, len, ttl_s, cb, arg);
    struct cmd *c = NULL;
    if (pc_cmdq_full_after(st->q, st->held_bounded, st->held_bytes, len)) {
        /* Redis is behind: shed stores, do not grow without bound */
        PC_METRIC_INC(st->m->store_dropped);
        return -1;
    }
    if (st->state != ST_CONNECTED || (c = calloc(1, sizeof *c)) == NULL) {
        PC_METRIC_INC(st->m->store_failed);
        return -1;
    }
    c->kind = CMD_SET;
    c->set_cb = cb;
    c->arg = arg;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    const char *argv[] = {"SET", key, value, "EX", ttl};
    size_t lens[] = {3, strlen(key), len, 2, strlen(ttl)};
    if (cmd_send(st, c, 1, len, 5, argv, lens) != 0) {
        PC_METRIC_INC(st->m->store_failed);
        return -1;
    }
    return 0;
}

int pc_store_ping(struct pc_store *st, pc_store_ping_cb cb, void *arg)
{
    if (st->cl != NULL)
        return pc_cluster_ping(st, cb, arg);
    if (st->state != ST_CONNECTED)
        return -1;
    struct cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->kind = CMD_PING;
    c->ping_cb = cb;
    c->arg = arg;
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    return cmd_send(st, c, 0, 0, 1, argv, lens);
}

size_t pc_store_pending(const struct pc_store *st)
{
    if (st->cl != NULL)
        return pc_cluster_pending(st);
    return pc_cmdq_count(st->q) + st->n_held;
}

static int generic_send(struct pc_store *st, int may_pass, int timeout_ms, pc_store_cmd_cb cb,
                        void *arg, int argc, const char **argv, const size_t *lens)
{
    if (st->cl != NULL)
        return pc_cluster_command(st, timeout_ms, cb, arg, argc, argv, lens);
    if (st->state != ST_CONNECTED)
        return -1;
    struct cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->kind = CMD_GENERIC;
    c->cmd_cb = cb;
    c->arg = arg;
    c->timeout_ms = timeout_ms;
    c->may_pass = may_pass;
    return cmd_send(st, c, 0, 0, argc, argv, lens);
}

int pc_store_command(struct pc_store *st, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                     const char **argv, const size_t *lens)
{
    return generic_send(st, 0, timeout_ms, cb, arg, argc, argv, lens);
}

int pc_store_lookup(struct pc_store *st, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                    const char **argv, const size_t *lens)
{
    return generic_send(st, 1, timeout_ms, cb, arg, argc, argv, lens);
}

/* struct pc_reply is hiredis's redisReply seen through these accessors only. */
enum pc_reply_type pc_reply_type(const struct pc_reply *r)
{
    const redisReply *rr = (const redisReply *)r;
    switch (rr->type) {
    case REDIS_REPLY_STRING:
        return PC_REPLY_STRING;
    case REDIS_REPLY_ARRAY:
        return PC_REPLY_ARRAY;
    case REDIS_REPLY_INTEGER:
        return PC_REPLY_INTEGER;
    case REDIS_REPLY_NIL:
        return PC_REPLY_NIL;
    case REDIS_REPLY_STATUS:
        return PC_REPLY_STATUS;
    default:
        return PC_REPLY_ERROR;
    }
}

const char *pc_reply_str(const struct pc_reply *r, size_t *len)
{
    const redisReply *rr = (const redisReply *)r;
    int has = rr->type == REDIS_REPLY_STRING || rr->type == REDIS_REPLY_STATUS ||
              rr->type == REDIS_REPLY_ERROR;
    if (len != NULL)
        *len = has ? rr->len : 0;
    return has ? rr->str : NULL;
}

long long pc_reply_integer(const struct pc_reply *r)
{
    return ((const redisReply *)r)->integer;
}

size_t pc_reply_count(const struct pc_reply *r)
{
    const redisReply *rr = (const redisReply *)r;
    return rr->type == REDIS_REPLY_ARRAY ? rr->elements : 0;
}

const struct pc_reply *pc_reply_elem(const struct pc_reply *r, size_t i)
{
    const redisReply *rr = (const redisReply *)r;
    if (rr->type != REDIS_REPLY_ARRAY || i >= rr->elements)
        return NULL;
    return (const struct pc_reply *)rr->element[i];
}
