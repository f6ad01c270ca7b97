/*
 * store: Redis through hiredis async on the worker's event_base.
 *
 *     CLOSED --connect()--> CONNECTING --onConnect ok--> CONNECTED
 *       ^                      |  connect timer / onConnect error       |
 *       |                      v                                        |
 *       +---- retry timer <-- (backoff 100 ms .. 2 s) <-- onDisconnect, command timeout
 *
 * hiredis 0.14 has no timeouts of its own: the connect timer and one timer per command
 * are libevent timers here. A command that times out is answered PC_STORE_ERROR at once
 * and the whole connection is dropped (from a deferred event, never from inside a
 * hiredis callback), so a stalled Redis cannot pile up commands; hiredis then calls the
 * remaining callbacks with a NULL reply, which we have already answered or answer now.
 * To drop a context we own, ac->data is cleared first so its callbacks know it is gone.
 *
 * hiredis keeps the queue of callbacks; cmdq.c keeps ours beside it, in the same order:
 * the budgets, the pending count, and who was answered (a timed-out command keeps its
 * place until its reply). Each reply hiredis hands over must be for our oldest command;
 * one that is not is a desync: answered as a failure, counted, and the connection dropped.
 */
#include "predcache/store.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "predcache/buf.h"
#include "predcache/cmdq.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/metrics.h"

#define PC_STORE_BACKOFF_MIN_MS 100
#define PC_STORE_BACKOFF_MAX_MS 2000

enum store_state { ST_CLOSED, ST_CONNECTING, ST_CONNECTED };
enum cmd_kind { CMD_GET, CMD_SET, CMD_PING, CMD_SETUP, CMD_GENERIC, CMD_SUBSCRIBE };

struct pc_store {
    struct event_base *base;
    const struct pc_config *cfg;
    struct pc_metrics *m;
    redisAsyncContext *ac;
    enum store_state state;
    struct event *connect_timer;
    struct event *retry_timer;
    struct event *reset_ev; /* drops the connection outside hiredis callbacks */
    int backoff_ms;
    struct pc_cmdq *q; /* commands sent and not replied to, in order; SET budgets */
    size_t desyncs;    /* replies that were not for the oldest command */
    char *sub_channel; /* subscribed on every (re)connect when set: a subscriber store */
    pc_store_message_cb sub_cb;
    void *sub_arg;
};

/* One command in flight. Owned by hiredis (freed in cmd_reply_cb, which always runs). */
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
};

static void store_connect(struct pc_store *st);
static void fail_leftovers(struct pc_store *st);

static void set_state(struct pc_store *st, enum store_state s)
{
    static const char *const names[] = {"CLOSED", "CONNECTING", "CONNECTED"};
    if (st->state != s)
        pc_log(PC_LOG_DEBUG, "store: %s -> %s", names[st->state], names[s]);
    st->state = s;
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

/* Drops our context. Never call from inside a hiredis callback. The callbacks it runs may
 * send new commands (a failed lookup going on to the next step): they see a closed store
 * and fail at once, never the context being freed. */
static void store_drop(struct pc_store *st)
{
    redisAsyncContext *ac = st->ac;
    st->ac = NULL;
    set_state(st, ST_CLOSED);
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac); /* calls every pending callback with a NULL reply */
    }
    fail_leftovers(st);
}

static void pending_changed(struct pc_store *st)
{
    PC_METRIC_SET(st->m->store_pending, (int64_t)pc_cmdq_count(st->q));
}

/* Answers the caller of cmd with the outcome of reply (NULL: failed). Once: the caller
 * claims the right first (pc_cmdq_claim). */
static void cmd_answer(struct cmd *c, redisReply *r)
{
    struct pc_store *st = c->st;
    /* Redis answers: a paused Redis that still accepts TCP does not. An error reply (a
     * refused AUTH, say) leads to a reconnect: it must not reset the backoff. */
    if (r != NULL && r->type != REDIS_REPLY_ERROR)
        st->backoff_ms = PC_STORE_BACKOFF_MIN_MS;
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
    case CMD_SUBSCRIBE: /* never here: sub_reply_cb handles subscriptions */
        break;
    case CMD_SETUP:
        if (r != NULL && r->type == REDIS_REPLY_ERROR) {
            pc_log(PC_LOG_ERROR, "store: Redis refused AUTH/SELECT: %s", r->str);
            event_active(st->reset_ev, EV_TIMEOUT, 0);
        }
        break;
    }
}

/*
 * A subscription's callback runs for every message; hiredis calls it once more with a
 * NULL reply when the connection goes, and only then is the command freed.
 */
static void sub_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct cmd *c = priv;
    redisReply *r = reply;
    if (r == NULL) {
        free(c);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0 &&
        r->element[2]->type == REDIS_REPLY_STRING)
        c->st->sub_cb(r->element[2]->str, r->element[2]->len, c->st->sub_arg);
}

static void cmd_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    struct cmd *c = priv;
    struct pc_store *st = c->st;
    redisReply *r = reply;
    uint64_t head = pc_cmdq_head(st->q);
    if (head != c->id) { /* not ours to trust: fail it, and start over on a new connection */
        st->desyncs++;
        PC_METRIC_INC(st->m->redis_desyncs);
        pc_log(PC_LOG_ERROR,
               "store: a Redis reply came for command %llu while %llu was the oldest (desync "
               "%zu); dropping the connection",
               (unsigned long long)c->id, (unsigned long long)head, st->desyncs);
        r = NULL;
        event_active(st->reset_ev, EV_TIMEOUT, 0);
    }
    if (pc_cmdq_claim(st->q, c->id))
        cmd_answer(c, r); /* else: answered at its timeout; this late reply is dropped */
    pc_cmdq_remove(st->q, c->id);
    pending_changed(st);
    event_free(c->timer);
    free(c);
}

/* Commands hiredis has not called back once it let go of the context (it calls every one
 * first, so none should be): a desync. Each is failed and freed here. */
static void fail_leftovers(struct pc_store *st)
{
    struct cmd *c;
    int answered;
    while ((c = pc_cmdq_shift(st->q, &answered)) != NULL) {
        st->desyncs++;
        PC_METRIC_INC(st->m->redis_desyncs);
        pc_log(PC_LOG_ERROR, "store: Redis command %llu was never called back (desync %zu)",
               (unsigned long long)c->id, st->desyncs);
        if (!answered)
            cmd_answer(c, NULL);
        event_free(c->timer);
        free(c);
    }
    pending_changed(st);
}

static void cmd_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct cmd *c = arg;
    struct pc_store *st = c->st;
    pc_log(PC_LOG_WARN, "store: Redis command timed out after %d ms; reconnecting", c->timeout_ms);
    if (pc_cmdq_claim(st->q, c->id))
        cmd_answer(c, NULL); /* now; it keeps its place in the queue until its reply */
    event_active(st->reset_ev, EV_TIMEOUT, 0);
}

/* Sends one command; c is owned by hiredis from here on. bounded: a SET of bytes, counted
 * against the budgets (the caller checked pc_cmdq_full). 0 ok, -1 failed (c freed). */
static int cmd_send(struct pc_store *st, struct cmd *c, int bounded, size_t bytes, int argc,
                    const char **argv, const size_t *argvlen)
{
    c->st = st;
    c->start_us = pc_now_us();
    c->timer = st->ac != NULL ? evtimer_new(st->base, cmd_timeout_cb, c) : NULL;
    int queued = c->timer != NULL && pc_cmdq_push(st->q, c, bounded, bytes, &c->id) == PC_CMDQ_OK;
    if (!queued ||
        redisAsyncCommandArgv(st->ac, cmd_reply_cb, c, argc, argv, argvlen) != REDIS_OK) {
        if (queued)
            pc_cmdq_remove(st->q, c->id);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return -1;
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
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct pc_store *st = ac->data;
    if (st == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        pc_log(PC_LOG_WARN, "store: cannot connect to Redis %s:%d: %s; retry in %d ms",
               st->cfg->redis_host, st->cfg->redis_port, ac->errstr, st->backoff_ms);
        st->ac = NULL;
        schedule_retry(st);
        return;
    }
    event_del(st->connect_timer);
    set_state(st, ST_CONNECTED); /* backoff resets on the first answered command */
    pc_log(PC_LOG_INFO, "store: connected to Redis %s:%d", st->cfg->redis_host,
           st->cfg->redis_port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct pc_store *st = ac->data;
    if (st == NULL)
        return; /* we dropped it ourselves */
    pc_log(PC_LOG_WARN, "store: lost Redis connection: %s",
           ac->err ? ac->errstr : "closed by server");
    st->ac = NULL; /* hiredis frees it after this callback */
    schedule_retry(st);
    fail_leftovers(st); /* hiredis has called back every command before this */
}

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

static void reset_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_store *st = arg;
    if (st->ac == NULL)
        return;
    store_drop(st);
    schedule_retry(st);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    store_connect(arg);
}

/* Queues AUTH and SELECT behind the connect: hiredis sends them first once connected. A
 * subscriber's SUBSCRIBE goes last: on a subscribed connection Redis refuses SELECT, and
 * hiredis drops the connection on that error. */
static void send_setup(struct pc_store *st)
{
    const struct pc_config *cfg = st->cfg;
    if (cfg->redis_password[0] != '\0') {
        struct cmd *c = calloc(1, sizeof *c);
        const char *argv[] = {"AUTH", cfg->redis_password};
        size_t lens[] = {4, strlen(cfg->redis_password)};
        if (c != NULL) {
            c->kind = CMD_SETUP;
            cmd_send(st, c, 0, 0, 2, argv, lens);
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
        if (c != NULL) {
            c->st = st;
            c->kind = CMD_SUBSCRIBE;
            const char *argv[] = {"SUBSCRIBE", st->sub_channel};
            size_t lens[] = {9, strlen(st->sub_channel)};
            if (redisAsyncCommandArgv(st->ac, sub_reply_cb, c, 2, argv, lens) != REDIS_OK)
                free(c);
        }
    }
}

static void store_connect(struct pc_store *st)
{
    PC_METRIC_INC(st->m->redis_reconnects);
    redisAsyncContext *ac = redisAsyncConnect(st->cfg->redis_host, st->cfg->redis_port);
    if (ac == NULL || ac->err) {
        pc_log(PC_LOG_WARN, "store: cannot connect to Redis: %s",
               ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(st);
        return;
    }
    ac->data = st;
    if (redisLibeventAttach(ac, st->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        schedule_retry(st);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    st->ac = ac;
    set_state(st, ST_CONNECTING);
    int ms = st->cfg->redis_timeout_ms < 1000 ? 1000 : st->cfg->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(st->connect_timer, &tv);
    send_setup(st);
}

static int store_init(struct pc_store *st, struct event_base *base, const struct pc_config *cfg,
                      struct pc_metrics *metrics);

struct pc_store *pc_store_new(struct event_base *base, const struct pc_config *cfg,
                              struct pc_metrics *metrics)
{
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
    if (st->q == NULL || st->connect_timer == NULL || st->retry_timer == NULL ||
        st->reset_ev == NULL) {
        pc_cmdq_free(st->q);
        if (st->connect_timer)
            event_free(st->connect_timer);
        if (st->retry_timer)
            event_free(st->retry_timer);
        if (st->reset_ev)
            event_free(st->reset_ev);
        return -1;
    }
    store_connect(st);
    return 0;
}

struct pc_store *pc_store_new_subscriber(struct event_base *base, const struct pc_config *cfg,
                                         struct pc_metrics *metrics, const char *channel,
                                         pc_store_message_cb cb, void *arg)
{
    struct pc_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NULL;
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

void pc_store_free(struct pc_store *st)
{
    if (st == NULL)
        return;
    store_drop(st);
    pc_cmdq_free(st->q);
    free(st->sub_channel);
    if (st->connect_timer)
        event_free(st->connect_timer);
    if (st->retry_timer)
        event_free(st->retry_timer);
    if (st->reset_ev)
        event_free(st->reset_ev);
    free(st);
}

int pc_store_ready(const struct pc_store *st)
{
    return st->state == ST_CONNECTED;
}

int pc_store_get(struct pc_store *st, const char *key, pc_store_get_cb cb, void *arg)
{
    if (st->state != ST_CONNECTED) {
        PC_METRIC_INC(st->m->redis_get_failed);
        return -1;
    }
    struct cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->kind = CMD_GET;
    c->get_cb = cb;
    c->arg = arg;
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
    struct cmd *c = NULL;
    if (pc_cmdq_full(st->q, len)) { /* Redis is behind: shed stores, do not grow without bound */
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
    return pc_cmdq_count(st->q);
}

int pc_store_command(struct pc_store *st, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                     const char **argv, const size_t *lens)
{
    if (st->state != ST_CONNECTED)
        return -1;
    struct cmd *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -1;
    c->kind = CMD_GENERIC;
    c->cmd_cb = cb;
    c->arg = arg;
    c->timeout_ms = timeout_ms;
    return cmd_send(st, c, 0, 0, argc, argv, lens);
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
