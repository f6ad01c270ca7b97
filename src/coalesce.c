/*
 * coalesce: the miss machinery every flow shares (see coalesce.h).
 */
#include "coalesce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "predcache/config.h"
#include "predcache/envelope.h"
#include "predcache/log.h"
#include "predcache/peers.h"
#include "predcache/purges.h"
#include "predcache/metrics.h"
#include "predcache/store.h"
#include "answer.h"
#include "done.h"

/*
 * A lock release that got no reply (the connection dropped, or Redis was not there) would
 * leave the lock held until it expires, and the other processes' requests waiting for it
 * waiting as long (lock_timeout_ms): it is sent again once Redis is back. Each release
 * carries its herd key; the worker keeps at most PC_UNLOCKS_MAX of them, each until its
 * lock would have expired anyway.
 */
#define PC_UNLOCKS_MAX 4096
#define PC_UNLOCK_RETRY_MS 50

/*
 * A release sent while the lock cannot have expired yet (less than half of
 * lock_timeout_ms since the script that took it was sent: Redis started its PX no earlier)
 * needs no owner check: the lock is still this worker's. It is two plain DELs, the lock's
 * and its waiters' mark's, sent with the answer's SET, and a PUBLISH one round trip later
 * only when the mark was there. Redis runs each DEL alone: a waiter's lock script runs
 * before the first (it marked: the second DEL finds the mark) or after it (it finds the
 * value, or takes the lock). Later, or sent again, the release is the script, which
 * deletes the lock only when it is still ours.
 */
#define PC_UNLOCK_PLAIN_DIV 2

static void unlock_send(struct pc_unlock *u);
static void coalesce_release(struct pc_preq *p);

/* The key p coalesces on: a batch's sub-request has its own, else the per-body key. */
const char *pc_coalesce_key(const struct pc_preq *p)
{
    return p->herd[0] != '\0' ? p->herd : p->key;
}

struct flight_store {
    struct pc_worker *w;
    char key[PC_KEY_MAX];
};

/* The leader's SET is answered: from now on Redis answers this key, so the entry goes. arg
 * is the flight_store, freed here (the request itself is long gone). */
static void on_flight_stored(int ok, void *arg)
{
    (void)ok;
    struct flight_store *fs = arg;
    struct pc_flight *f = pc_flights_find(fs->w->flights, fs->key);
    if (f != NULL && f->done)
        pc_flights_finish(fs->w->flights, f);
    free(fs);
}

/* The leader is gone without an answer to share: its waiters get an error, not silence:
 * the one the leader got (a refusal, say), else 502. */
static void flight_fail(struct pc_preq *p)
{
    struct pc_flight *f = p->flight;
    for (size_t i = 0; i < f->n_waiters; i++) {
        struct pc_preq *q = f->waiters[i];
        if (p->err_status != 0)
            pc_proxy_answer_error(q, p->err_status, p->err_msg);
        else
            pc_proxy_answer_error(q, 502, "the model server request this one waited for failed");
        pc_preq_free(q);
    }
    f->n_waiters = 0;
    pc_flights_finish(p->w->flights, f);
    p->flight = NULL;
}

/* Ends the leader's flight at once (an error, nothing to store). */
static void flight_drop(struct pc_preq *p)
{
    if (p->flight != NULL)
        pc_flights_finish(p->w->flights, p->flight);
    p->flight = NULL;
}

void pc_proxy_flight_drop(struct pc_preq *p)
{
    flight_drop(p);
}

struct pc_preq **pc_proxy_flight_release(struct pc_preq *p, size_t *n)
{
    struct pc_flight *f = p->flight;
    struct pc_preq **out = NULL;
    *n = 0;
    if (f == NULL)
        return NULL;
    if (f->n_waiters > 0 && (out = malloc(f->n_waiters * sizeof *out)) != NULL) {
        memcpy(out, f->waiters, f->n_waiters * sizeof *out);
        *n = f->n_waiters;
        f->n_waiters = 0;
    }
    if (out == NULL && f->n_waiters > 0) { /* no memory: they get an error, not silence */
        flight_fail(p);
        return NULL;
    }
    flight_drop(p);
    return out;
}

/*
 * Keeps the leader's answer in its flight while its SET is on the way: a request whose
 * GET was sent before the SET would still miss, and is answered from here instead.
 * Returns the argument for on_flight_stored, which ends the flight; NULL when there is
 * no flight (or no memory: then it has ended now).
 */
static struct flight_store *flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    struct pc_flight *f = p->flight;
    if (f == NULL)
        return NULL;
    struct flight_store *fs = calloc(1, sizeof *fs);
    struct pc_envelope env;
    pc_answer_envelope(p->w, r, &env);
    struct pc_buf val;
    pc_buf_init(&val);
    if (fs == NULL || pc_envelope_encode(&env, &val) != 0 || (f->ctype = strdup("")) == NULL) {
        pc_buf_release(&val);
        free(fs);
        flight_drop(p);
        return NULL;
    }
    f->body_len = val.len;
    f->body = pc_buf_steal(&val, NULL);
    f->status = r->status;
    f->done = 1;
    f->leader = NULL;
    fs->w = p->w;
    pc_strlcpy(fs->key, pc_coalesce_key(p), sizeof fs->key);
    p->flight = NULL;
    return fs;
}

void *pc_proxy_flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    return flight_keep(p, r);
}

void pc_proxy_flight_stored(int ok, void *arg)
{
    on_flight_stored(ok, arg);
}

/* One round trip: the value if it landed meanwhile, else the lock if it is free, else a
 * mark that someone waits (KEYS[3]): only then does the holder announce its answer. */
static const char lock_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v then return {1, v} end "
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end "
    "redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) "
    "return {3}";

/* The lock released (when still ours), and the answer announced when someone waits: a
 * miss nobody waited for wakes no process's subscriber. */
static const char unlock_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end "
    "if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end "
    "return 1";

/* The lock of a herd key (an entry's key, or a batch's herd key), and its waiters' mark
 * (the same hash tag: one slot in a cluster). */
static void lock_key_of(const char *herd, char *out, size_t len)
{
    snprintf(out, len, "%s:lock", herd);
}

static void wait_key_of(const char *herd, char *out, size_t len)
{
    snprintf(out, len, "%s:wait", herd);
}

/* This worker's name in locks (process and worker): a lock is only released by its holder,
 * and the workers of one process are as separate as two processes. */
static const char *lock_owner(const struct pc_worker *w, char *buf, size_t len)
{
    snprintf(buf, len, "%ld.%zu", w->pid, w->id);
    return buf;
}

struct pc_unlock {
    struct pc_worker *w;
    struct pc_unlock *next;
    uint64_t until_us;
    uint64_t plain_until_us; /* the plain DELs may be sent before this (PC_UNLOCK_PLAIN_DIV) */
    char herd[PC_KEY_MAX];
};

/* The worker's retry timer (w->unlock_timer, owned by the worker, arg): it takes the list
 * and hands each release to unlock_send, which owns it from there. */
static void unlock_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_worker *w = arg;
    if (!pc_store_ready(w->store)) {
        struct timeval tv = {0, PC_UNLOCK_RETRY_MS * 1000};
        evtimer_add(w->unlock_timer, &tv);
        return;
    }
    struct pc_unlock *list = w->unlocks;
    w->unlocks = NULL;
    w->n_unlocks = 0;
    while (list != NULL) {
        struct pc_unlock *u = list;
        list = u->next;
        u->next = NULL;
        unlock_send(u); /* may come back on the list */
    }
}

/* Keeps u for a later attempt, or frees it when its lock has expired or the list is full. */
static void unlock_later(struct pc_unlock *u)
{
    struct pc_worker *w = u->w;
    if (w->closing || pc_now_us() >= u->until_us || w->n_unlocks >= PC_UNLOCKS_MAX ||
        (w->unlock_timer == NULL &&
         (w->unlock_timer = evtimer_new(w->base, unlock_retry_cb, w)) == NULL)) {
        free(u);
        return;
    }
    u->next = w->unlocks;
    w->unlocks = u;
    w->n_unlocks++;
    if (!evtimer_pending(w->unlock_timer, NULL)) {
        struct timeval tv = {0, PC_UNLOCK_RETRY_MS * 1000};
        evtimer_add(w->unlock_timer, &tv);
    }
}

/* The release's reply (or NULL: none came); arg is the release, owned by this call from
 * here: freed, or kept on the worker's list. */
static void on_unlock_reply(const struct pc_reply *r, void *arg)
{
    struct pc_unlock *u = arg;
    if (r == NULL)
        unlock_later(u); /* no reply: it may not have run */
    else
        free(u);
}

/* The reply to the plain release's second DEL (the mark's), or NULL: none came, and the
 * first may or may not have run: the script is sent instead, later. arg is the release,
 * owned by this call from here: freed, or kept on the worker's list (unlock_later). */
static void on_unlock_plain_reply(const struct pc_reply *r, void *arg)
{
    struct pc_unlock *u = arg;
    if (r == NULL) {
        u->plain_until_us = 0;
        unlock_later(u);
        return;
    }
    /* The mark was there: the announcement, fire and forget as the script's PUBLISH (a
     * waiter that misses it waits out its own timer). */
    if (pc_reply_type(r) == PC_REPLY_INTEGER && pc_reply_integer(r) == 1)
        (void)pc_done_publish(u->w, u->herd);
    free(u);
}

static void unlock_send(struct pc_unlock *u)
{
    struct pc_worker *w = u->w;
    char lk[PC_KEY_MAX + 8], wk[PC_KEY_MAX + 8], owner[32], chan[PC_CHANNEL_MAX];
    lock_key_of(u->herd, lk, sizeof lk);
    wait_key_of(u->herd, wk, sizeof wk);
    if (pc_now_us() < u->plain_until_us) {
        const char *del_lock[] = {"DEL", lk}, *del_mark[] = {"DEL", wk};
        size_t lock_lens[] = {3, strlen(lk)}, mark_lens[] = {3, strlen(wk)};
        u->plain_until_us = 0; /* sent once: again, it is the script */
        if (pc_store_command(w->store, 0, NULL, NULL, 2, del_lock, lock_lens) != 0 ||
            pc_store_command(w->store, 0, on_unlock_plain_reply, u, 2, del_mark, mark_lens) != 0)
            unlock_later(u);
        return;
    }
    lock_owner(w, owner, sizeof owner);
    pc_done_channel(w->cfg, chan, sizeof chan);
    const char *argv[] = {"EVAL", unlock_script, "2", lk, wk, owner, chan, u->herd};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    if (pc_store_command(w->store, 0, on_unlock_reply, u, 8, argv, lens) != 0)
        unlock_later(u);
}

void pc_proxy_unlocks_free(struct pc_worker *w)
{
    while (w->unlocks != NULL) {
        struct pc_unlock *u = w->unlocks;
        w->unlocks = u->next;
        free(u);
    }
    w->n_unlocks = 0;
    if (w->unlock_timer != NULL) {
        event_free(w->unlock_timer);
        w->unlock_timer = NULL;
    }
}

void pc_lock_release(struct pc_worker *w, const char *key, uint64_t asked_us)
{
    struct pc_unlock *u = malloc(sizeof *u);
    if (u == NULL)
        return; /* the lock expires by itself */
    u->w = w;
    u->next = NULL;
    u->until_us = pc_now_us() + (uint64_t)w->cfg->lock_timeout_ms * 1000;
    u->plain_until_us = asked_us + (uint64_t)w->cfg->lock_timeout_ms * 1000 / PC_UNLOCK_PLAIN_DIV;
    pc_strlcpy(u->herd, key, sizeof u->herd);
    unlock_send(u);
}

/* ---- a leader's side of the lock (lock.h) ------------------------------------------ */

void pc_lockwait_stop(struct pc_lockwait *lw)
{
    if (lw->timer != NULL) {
        event_free(lw->timer);
        lw->timer = NULL;
    }
}

/* The wait ended: the owner looks again (lw is the owner's: not touched after). */
static void lockwait_resume(struct pc_lockwait *lw)
{
    pc_lockwait_stop(lw);
    lw->relook(lw->owner);
}

/* The wait ran out; arg is the lock side of the owner its timer held until now. */
static void on_lockwait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_lockwait *lw = arg;
    PC_METRIC_INC(lw->w->metrics.lock_timeouts);
    lockwait_resume(lw);
}

int pc_lockwait_ask(struct pc_lockwait *lw, const char *key, pc_lock_cb cb, void *arg)
{
    lw->notified = 0;
    lw->asking = 1;
    lw->asked_us = pc_now_us();
    if (pc_lock_ask(lw->w, key, cb, arg) == 0)
        return 0;
    lw->asking = 0;
    return -1;
}

int pc_lockwait_answer(struct pc_lockwait *lw, enum pc_lock what, long ms)
{
    lw->asking = 0;
    if (what == PC_LOCK_TAKEN)
        lw->held = 1;
    if (what != PC_LOCK_HELD || ms <= 0)
        return 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    lw->timer = evtimer_new(lw->w->base, on_lockwait_timeout, lw);
    if (lw->timer == NULL || evtimer_add(lw->timer, &tv) != 0) {
        pc_lockwait_stop(lw);
        return 0;
    }
    PC_METRIC_INC(lw->w->metrics.lock_waits);
    if (lw->notified) /* the holder is done already: no wait */
        lockwait_resume(lw);
    return 1;
}

void pc_lockwait_wake(struct pc_lockwait *lw)
{
    if (lw->timer != NULL)
        lockwait_resume(lw);
    else if (lw->asking)
        lw->notified = 1; /* the announcement overtook the lock script's answer */
}

/* ---- the data port's flows ---------------------------------------------------------- */

/* What the request undoes when it is freed (its release hook, preq.h). */
static void coalesce_release(struct pc_preq *p)
{
    pc_coalesce_unlock(p); /* after any SET of the answer: same connection, same order */
    pc_lockwait_stop(&p->lock);
    if (p->flight != NULL)
        flight_fail(p); /* a leader that never reached the model server */
}

/* The per-body flow: GET again; a batch: one MGET again. */
static void flow_relook(void *owner)
{
    struct pc_preq *p = owner;
    p->flow->relook(p);
}

void pc_proxy_on_answered(struct pc_worker *w, const char *key)
{
    struct pc_flight *f = pc_flights_find(w->flights, key);
    struct pc_preq *leader = f != NULL && !f->done ? f->leader : NULL;
    if (leader != NULL && leader->lock.w != NULL)
        pc_lockwait_wake(&leader->lock);
}

struct lock_ask {
    pc_lock_cb cb;
    void *arg;
};

int pc_lock_refused(const struct pc_reply *r)
{
    if (r == NULL || pc_reply_type(r) != PC_REPLY_ERROR)
        return 0;
    static __thread time_t said_s; /* as a GET's error: once a second per worker thread */
    size_t n = 0;
    const char *e = pc_reply_str(r, &n);
    if (time(NULL) != said_s) {
        said_s = time(NULL);
        pc_log(PC_LOG_WARN, "store: lock script failed: %.*s", (int)n, e != NULL ? e : "");
    }
    return 1;
}

/* The lock script's reply (NULL: none came), told to the asker as what it says. */
static void on_lock_script(const struct pc_reply *r, void *arg)
{
    struct lock_ask a = *(struct lock_ask *)arg;
    free(arg);
    int refused = pc_lock_refused(r);
    const struct pc_reply *tag = r != NULL ? pc_reply_elem(r, 0) : NULL;
    long long what =
        tag != NULL && pc_reply_type(tag) == PC_REPLY_INTEGER ? pc_reply_integer(tag) : 0;
    size_t len = 0;
    const char *data = what == 1 ? pc_reply_str(pc_reply_elem(r, 1), &len) : NULL;
    if (what == 1 && data == NULL)
        what = 0;
    a.cb(what == 1   ? PC_LOCK_FOUND
         : what == 2 ? PC_LOCK_TAKEN
         : what == 3 ? PC_LOCK_HELD
         : refused   ? PC_LOCK_REFUSED
                     : PC_LOCK_UNKNOWN,
         data, len, a.arg);
}

int pc_lock_ask(struct pc_worker *w, const char *key, pc_lock_cb cb, void *arg)
{
    struct lock_ask *a = malloc(sizeof *a);
    if (a == NULL)
        return -1;
    a->cb = cb;
    a->arg = arg;
    char lk[PC_KEY_MAX + 8], wk[PC_KEY_MAX + 8], owner[32], ttl[16];
    lock_key_of(key, lk, sizeof lk);
    wait_key_of(key, wk, sizeof wk);
    snprintf(ttl, sizeof ttl, "%d", w->cfg->lock_timeout_ms);
    const char *argv[] = {"EVAL", lock_script, "3", key, lk, wk, lock_owner(w, owner, sizeof owner),
                          ttl};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    if (pc_store_lookup(w->store, 0, on_lock_script, a, 8, argv, lens) != 0) {
        free(a);
        return -1;
    }
    return 0;
}

long pc_lock_wait_ms(const struct pc_worker *w, uint64_t start_us)
{
    long left_ms = w->cfg->request_timeout_ms - (long)((pc_now_us() - start_us) / 1000);
    return w->cfg->lock_timeout_ms < left_ms ? w->cfg->lock_timeout_ms : left_ms;
}

/* What the lock script said; arg is the leader, held by the script until now: answered
 * (found), waiting (its timer holds it), or sent to the model server. */
static void on_lock_reply(enum pc_lock what, const char *data, size_t len, void *arg)
{
    struct pc_preq *p = arg;
    PC_PREQ_CHECK(p);
    if (what == PC_LOCK_FOUND && p->flow->found != NULL && p->flow->found(p, data, len))
        return; /* the value landed since our GET */
    /* Another process is fetching it: wait for its announcement, no longer than the
     * request may still wait (past its deadline it gets a 504). */
    if (pc_lockwait_answer(&p->lock, what, pc_lock_wait_ms(p->w, pc_http_req_start_us(p->req))))
        return;
    p->flow->send(p, RES_MISS); /* lock taken by us, or Redis could not say: call the model */
}

/* p's side of the lock, released with p (its release hook). */
static void lock_side(struct pc_preq *p)
{
    p->release = coalesce_release;
    p->lock.w = p->w;
    p->lock.relook = flow_relook;
    p->lock.owner = p;
}

void pc_coalesce_prepare(struct pc_preq *p, const char *key, char *lock, char *wait, char *owner)
{
    lock_side(p);
    p->lock.asked_us = pc_now_us(); /* the lookup that may take it is sent now */
    lock_key_of(key, lock, PC_KEY_MAX + 8);
    wait_key_of(key, wait, PC_KEY_MAX + 8);
    lock_owner(p->w, owner, 32);
}

int pc_coalesce_lookup(struct pc_preq *p, pc_lock_cb cb)
{
    lock_side(p);
    return pc_lockwait_ask(&p->lock, pc_coalesce_key(p), cb, p);
}

void pc_lockwait_unlock(struct pc_lockwait *lw, const char *key)
{
    if (lw->held) {
        lw->held = 0;
        pc_lock_release(lw->w, key, lw->asked_us);
    }
}

void pc_coalesce_unlock(struct pc_preq *p)
{
    pc_lockwait_unlock(&p->lock, pc_coalesce_key(p));
}

void pc_coalesce_said(struct pc_preq *p, const struct pc_flow *flow, enum pc_lock what)
{
    p->flow = flow; /* its lock side is pc_coalesce_prepare's */
    on_lock_reply(what, NULL, 0, p);
}

/* A batch's herd key holds no value: the script's GET finds nothing and it goes on to the
 * lock. */
void pc_coalesce_lock(struct pc_preq *p, const struct pc_flow *flow)
{
    p->flow = flow;
    if (p->batch == NULL)
        p->result = RES_MISS;
    lock_side(p);
    if (pc_lockwait_ask(&p->lock, pc_coalesce_key(p), on_lock_reply, p) != 0) {
        p->reason = PC_REASON_REDIS_UNAVAILABLE;
        p->flow->send(p, RES_BYPASS);
    }
}

int pc_lock_wanted(struct pc_worker *w, int count)
{
    const struct pc_config *cfg = w->cfg;
    if (cfg->lock_timeout_ms <= 0)
        return 0;
    if (cfg->lock_mode == PC_LOCKMODE_ALWAYS)
        return 1;
    int alone = pc_peers_alone(w->peers, pc_store_listening_us(w->subscriber), pc_now_us());
    PC_METRIC_SET(w->metrics.lock_alone, alone);
    if (!alone)
        return 1;
    if (count)
        PC_METRIC_INC(w->metrics.lock_skipped);
    return 0;
}

int pc_proxy_lock_batch(struct pc_preq *p, const struct pc_flow *flow, enum pc_cache_result result)
{
    if (p->flight == NULL || (result != RES_MISS && result != RES_PARTIAL) ||
        !pc_lock_wanted(p->w, 1))
        return 0;
    p->result = result;
    pc_coalesce_lock(p, flow);
    return 1;
}

enum pc_join pc_proxy_join(struct pc_preq *p, struct pc_flight **done)
{
    struct pc_worker *w = p->w;
    p->release = coalesce_release;
    const char *key = pc_coalesce_key(p);
    struct pc_flight *f = pc_flights_find(w->flights, key);
    *done = NULL;
    /* A purge of its entry since that call's request came: its answer may be what the
     * purge removed. p goes alone (answers.c keeps that answer out of the cache). */
    if (f != NULL && (p->items_purged != NULL ? p->items_purged(p, f->begun_us)
                                              : pc_purges_since(w->purges, p->key, f->begun_us)))
        return PC_JOIN_LEAD;
    if (f != NULL && f->done) {
        *done = f;
        return PC_JOIN_DONE;
    }
    if (f != NULL && pc_flight_join(f, p) == 0) {
        p->result = RES_COALESCED;
        return PC_JOIN_WAIT;
    }
    if (f == NULL && (p->flight = pc_flights_start(w->flights, key, p)) != NULL)
        p->flight->begun_us = p->begun_us; /* (NULL: just go alone) */
    return PC_JOIN_LEAD;
}
