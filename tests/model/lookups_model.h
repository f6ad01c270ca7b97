/*
 * lookups_model: pc_lookups against a reference model, one operation at a time (see
 * model.h).
 *
 * The model is the header's contract written out plainly: an array indexed by id, each
 * with have / failed / fetching / invalid / refetch, fetched_ms, the value of its last good
 * fetch, and its waiters in order; a full table drops, before a new id, every entry older
 * than the period that is not fetching and that no waiter waits for or is being called
 * on. No hash chains: what it says is there is there.
 *
 * Both sides write what happens into an event log (entry made or refused, fetch started or
 * refused, waiter called, entry dropped, each call's answer and the value served); after
 * every operation the two logs must be equal, and so must the entry counts. Waiters carry
 * an action run from inside their callback (look up another id, waiting or not; forget
 * one; move the clock), so the callbacks re-enter the table the way proxy.c does. Each
 * waiter must be called exactly once: a second call fails at once.
 *
 * The bytes: the first picks the bound (1 to 16), the period (0, 3, 40, 1000 ms) and
 * whether failures are remembered; then each operation is a kind and its arguments. Ids
 * are a few plain ones and a few that share a hash chain.
 */
#ifndef PREDCACHE_TEST_LOOKUPS_MODEL_H
#define PREDCACHE_TEST_LOOKUPS_MODEL_H

#include "model.h"

#include <string.h>

#include "predcache/lookups.h"

#define LKM_PLAIN 8
#define LKM_COLLIDE 4
#define LKM_IDS (LKM_PLAIN + LKM_COLLIDE)
#define LKM_ID_MAX 16

static const size_t lkm_bounds[8] = {1, 2, 3, 4, 6, 8, 12, 16};
static const int64_t lkm_periods[4] = {0, 3, 40, 1000};

enum lkm_ev {
    LKM_GET = 1, /* a: id, b: answer, c: value served (SERVE) or 1/0 has data */
    LKM_INIT,    /* a: id, b: refused */
    LKM_FETCH,   /* a: id, b: started 0 / refused -1 */
    LKM_WAKE,    /* a: waiter, b: id of the block it is shown */
    LKM_DROP,    /* a: id */
    LKM_DONE,    /* a: id, b: answer */
    LKM_FORGET,  /* a: id */
    LKM_TICK,    /* a: ms */
};

struct lkm_event {
    int type;
    long a, b, c;
};

struct lkm_log {
    struct lkm_event *ev;
    size_t n, cap; /* one step's events (a step may wake thousands of waiters) */
};

static void lkm_log(struct lkm_log *l, int type, long a, long b, long c)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        struct lkm_event *ev = realloc(l->ev, cap * sizeof *ev);
        MODEL_CHECK(ev != NULL);
        l->ev = ev;
        l->cap = cap;
    }
    l->ev[l->n++] = (struct lkm_event){type, a, b, c};
}

/* A waiter's action, run from inside its callback. */
struct lkm_waiter {
    unsigned action;
    int called;
};

/* What the two sides share: the ids, the clock, the source's state. */
struct lkm_world {
    char ids[LKM_IDS][LKM_ID_MAX];
    int64_t now_ms;
    int refuse; /* the source refuses to start fetches */
    size_t max;
    int64_t period;
    int remember;
};

/* ---- the reference model -------------------------------------------------------------- */

struct lkm_ent {
    int present, have, failed, fetching, invalid, refetch, delivering;
    int64_t fetched_ms;
    long value;
    size_t *waiters; /* serials, in order */
    size_t n_waiters;
};

struct lkm_model {
    struct lkm_world *w;
    struct lkm_ent e[LKM_IDS];
    size_t count;
    struct lkm_waiter *waiters;
    size_t n_waiters_total;
    struct lkm_log log;
};

/* ---- the real table, driven the way versions.c and generations.c drive it ------------- */

struct lkm_block {
    unsigned k;
};

struct lkm_seed {
    unsigned k;
    int refuse;
};

struct lkm_real {
    struct lkm_world *w;
    struct pc_lookups *t;
    void *block[LKM_IDS];  /* the entry's block while it exists */
    long value[LKM_IDS];   /* what the owner keeps in the block: the last good fetch */
    int fetching[LKM_IDS]; /* as the fetch function saw it */
    struct lkm_waiter *waiters;
    size_t n_waiters_total;
    struct lkm_log log;
};

static void lkm_real_run(struct lkm_real *r, unsigned action);
static void lkm_model_run(struct lkm_model *m, unsigned action);

static size_t lkm_new_waiter(struct lkm_waiter **ws, size_t *n, unsigned action)
{
    if (*n % 64 == 0) {
        struct lkm_waiter *nw = realloc(*ws, (*n + 64) * sizeof *nw);
        MODEL_CHECK(nw != NULL);
        *ws = nw;
    }
    (*ws)[*n] = (struct lkm_waiter){action, 0};
    return (*n)++;
}

/* A waiter made from inside a callback acts too, by its serial: chains stay reproducible. */
static unsigned lkm_nested_action(size_t serial)
{
    return (unsigned)((serial * 37 + 11) & 0xFF);
}

enum lkm_act { LKM_ACT_NONE, LKM_ACT_WAIT, LKM_ACT_PEEK, LKM_ACT_FORGET, LKM_ACT_TICK };

/* What a waiter does from inside its callback, read the same way on both sides: the low
 * three bits pick the act (half of them none), the rest the id or the clock step. */
static enum lkm_act lkm_decode(unsigned action, const struct lkm_world *w, unsigned *k, int64_t *d)
{
    static const enum lkm_act acts[8] = {LKM_ACT_NONE, LKM_ACT_NONE, LKM_ACT_NONE,   LKM_ACT_NONE,
                                         LKM_ACT_WAIT, LKM_ACT_PEEK, LKM_ACT_FORGET, LKM_ACT_TICK};
    *k = (action >> 3) % LKM_IDS;
    *d = (action >> 3) % 4 == 3 ? w->period + 1 : (action >> 3) % 4;
    return acts[action & 7];
}

static void lkm_tick(struct lkm_world *w, struct lkm_log *log, int64_t d)
{
    w->now_ms += d;
    lkm_log(log, LKM_TICK, (long)d, 0, 0);
}

static int lkm_init(void *owner, const char *id, void *data, const void *seed)
{
    struct lkm_real *r = owner;
    const struct lkm_seed *s = seed;
    MODEL_CHECK(strcmp(id, r->w->ids[s->k]) == 0);
    lkm_log(&r->log, LKM_INIT, s->k, s->refuse, 0);
    if (s->refuse)
        return -1;
    ((struct lkm_block *)data)->k = s->k;
    r->block[s->k] = data;
    return 0;
}

static int lkm_fetch(void *owner, const char *id, void *data)
{
    struct lkm_real *r = owner;
    unsigned k = ((struct lkm_block *)data)->k;
    MODEL_CHECK(strcmp(id, r->w->ids[k]) == 0 && r->block[k] == data);
    MODEL_CHECK(!r->fetching[k]); /* never two fetches of one entry */
    lkm_log(&r->log, LKM_FETCH, k, r->w->refuse ? -1 : 0, 0);
    if (r->w->refuse)
        return -1;
    r->fetching[k] = 1;
    return 0;
}

static void lkm_waiter_fn(void) {}

static void lkm_wake(void *owner, void *data, pc_lookups_fn fn, void *arg)
{
    struct lkm_real *r = owner;
    size_t serial = (size_t)(uintptr_t)arg;
    unsigned k = ((struct lkm_block *)data)->k;
    MODEL_CHECK(fn == lkm_waiter_fn && serial < r->n_waiters_total);
    MODEL_CHECK(r->block[k] == data);
    MODEL_CHECK(!r->waiters[serial].called); /* exactly once */
    r->waiters[serial].called = 1;
    lkm_log(&r->log, LKM_WAKE, (long)serial, k, 0);
    lkm_real_run(r, r->waiters[serial].action);
}

static void lkm_drop(void *owner, void *data)
{
    struct lkm_real *r = owner;
    unsigned k = ((struct lkm_block *)data)->k;
    MODEL_CHECK(r->block[k] == data && !r->fetching[k]);
    r->block[k] = NULL;
    r->value[k] = 0;
    lkm_log(&r->log, LKM_DROP, k, 0, 0);
}

static void lkm_real_get(struct lkm_real *r, unsigned k, int wait, unsigned action, int refuse)
{
    struct lkm_seed s = {k, refuse};
    void *data = NULL;
    size_t serial = r->n_waiters_total;
    enum pc_lookup a = pc_lookups_get(r->t, r->w->ids[k], &s, wait ? lkm_waiter_fn : NULL,
                                      (void *)(uintptr_t)serial, &data);
    if (a == PC_LOOKUP_WAIT)
        MODEL_CHECK(lkm_new_waiter(&r->waiters, &r->n_waiters_total, action) == serial);
    MODEL_CHECK(data == NULL ||
                (data == r->block[k] && strcmp(pc_lookups_id(data), r->w->ids[k]) == 0));
    lkm_log(&r->log, LKM_GET, k, a, a == PC_LOOKUP_SERVE ? r->value[k] : data != NULL);
}

static void lkm_real_run(struct lkm_real *r, unsigned action)
{
    unsigned k;
    int64_t d;
    switch (lkm_decode(action, r->w, &k, &d)) {
    case LKM_ACT_WAIT:
        lkm_real_get(r, k, 1, lkm_nested_action(r->n_waiters_total), 0);
        break;
    case LKM_ACT_PEEK:
        lkm_real_get(r, k, 0, 0, 0);
        break;
    case LKM_ACT_FORGET:
        pc_lookups_forget(r->t, r->w->ids[k]);
        lkm_log(&r->log, LKM_FORGET, k, 0, 0);
        break;
    case LKM_ACT_TICK:
        lkm_tick(r->w, &r->log, d);
        break;
    case LKM_ACT_NONE:
        break;
    }
}

static void lkm_real_done(struct lkm_real *r, unsigned k, int ok, long value)
{
    void *data = r->block[k];
    MODEL_CHECK(data != NULL);
    if (r->fetching[k] && ok)
        r->value[k] = value; /* the owner puts the new value in before it reports */
    r->fetching[k] = 0;
    int rc = pc_lookups_done(r->t, data, ok);
    lkm_log(&r->log, LKM_DONE, k, rc, 0);
}

static int64_t lkm_now(void *arg)
{
    return ((const struct lkm_world *)arg)->now_ms;
}

/* ---- the model's operations ----------------------------------------------------------- */

static void lkm_model_drop(struct lkm_model *m, unsigned k)
{
    struct lkm_ent *e = &m->e[k];
    free(e->waiters);
    memset(e, 0, sizeof *e);
    m->count--;
    lkm_log(&m->log, LKM_DROP, k, 0, 0);
}

static int lkm_model_fetch(struct lkm_model *m, unsigned k)
{
    lkm_log(&m->log, LKM_FETCH, k, m->w->refuse ? -1 : 0, 0);
    if (m->w->refuse)
        return -1;
    m->e[k].fetching = 1;
    return 0;
}

static void lkm_model_get(struct lkm_model *m, unsigned k, int wait, unsigned action, int refuse)
{
    struct lkm_ent *e = &m->e[k];
    if (!e->present) {
        if (m->count >= m->w->max) {
            for (unsigned i = 0; i < LKM_IDS; i++) {
                struct lkm_ent *o = &m->e[i];
                if (o->present && !o->fetching && o->n_waiters == 0 && !o->delivering &&
                    m->w->now_ms - o->fetched_ms > m->w->period)
                    lkm_model_drop(m, i);
            }
        }
        if (m->count >= m->w->max) {
            lkm_log(&m->log, LKM_GET, k, PC_LOOKUP_NONE, 0);
            return;
        }
        lkm_log(&m->log, LKM_INIT, k, refuse, 0);
        if (refuse) {
            lkm_log(&m->log, LKM_GET, k, PC_LOOKUP_NONE, 0);
            return;
        }
        e->present = 1;
        m->count++;
    }
    int fresh = m->w->now_ms - e->fetched_ms <= m->w->period;
    int answer;
    if (e->have && !e->failed && !e->invalid) {
        if (!fresh && !e->fetching)
            lkm_model_fetch(m, k);
        answer = PC_LOOKUP_SERVE;
    } else if (e->have && e->failed && !e->invalid && fresh) {
        answer = PC_LOOKUP_NONE;
    } else if (!e->fetching && lkm_model_fetch(m, k) != 0) {
        answer = PC_LOOKUP_NONE;
    } else if (!wait) {
        answer = PC_LOOKUP_NONE;
    } else {
        size_t serial = lkm_new_waiter(&m->waiters, &m->n_waiters_total, action);
        size_t *nw = realloc(e->waiters, (e->n_waiters + 1) * sizeof *nw);
        MODEL_CHECK(nw != NULL);
        e->waiters = nw;
        e->waiters[e->n_waiters++] = serial;
        answer = PC_LOOKUP_WAIT;
    }
    lkm_log(&m->log, LKM_GET, k, answer, answer == PC_LOOKUP_SERVE ? e->value : 1);
}

static void lkm_model_forget(struct lkm_model *m, unsigned k)
{
    if (m->e[k].present) {
        m->e[k].invalid = 1;
        if (m->e[k].fetching)
            m->e[k].refetch = 1;
    }
    lkm_log(&m->log, LKM_FORGET, k, 0, 0);
}

static void lkm_model_run(struct lkm_model *m, unsigned action)
{
    unsigned k;
    int64_t d;
    switch (lkm_decode(action, m->w, &k, &d)) {
    case LKM_ACT_WAIT:
        lkm_model_get(m, k, 1, lkm_nested_action(m->n_waiters_total), 0);
        break;
    case LKM_ACT_PEEK:
        lkm_model_get(m, k, 0, 0, 0);
        break;
    case LKM_ACT_FORGET:
        lkm_model_forget(m, k);
        break;
    case LKM_ACT_TICK:
        lkm_tick(m->w, &m->log, d);
        break;
    case LKM_ACT_NONE:
        break;
    }
}

static void lkm_model_done(struct lkm_model *m, unsigned k, int ok, long value)
{
    struct lkm_ent *e = &m->e[k];
    if (!e->fetching) {
        lkm_log(&m->log, LKM_DONE, k, -1, 0);
        return;
    }
    e->fetching = 0;
    if (ok)
        e->value = value;
    if (ok || m->w->remember) {
        e->have = 1;
        e->failed = !ok;
        e->fetched_ms = m->w->now_ms;
        if (!e->refetch)
            e->invalid = 0;
    }
    int refetched = 0;
    if (e->refetch) {
        e->refetch = 0;
        refetched = lkm_model_fetch(m, k) == 0;
    }
    if (!refetched) {
        size_t *ws = e->waiters, n = e->n_waiters;
        e->waiters = NULL;
        e->n_waiters = 0;
        e->delivering++;
        for (size_t i = 0; i < n; i++) {
            lkm_log(&m->log, LKM_WAKE, (long)ws[i], k, 0);
            lkm_model_run(m, m->waiters[ws[i]].action);
        }
        e->delivering--;
        free(ws);
    }
    lkm_log(&m->log, LKM_DONE, k, 0, 0);
}

/* ---- the driver ----------------------------------------------------------------------- */

/* Drops come in the table's bucket order, the model's in id order: a run of them is
 * compared as a set. */
static void lkm_sort_drops(struct lkm_log *l)
{
    for (size_t i = 0; i < l->n;) {
        size_t j = i;
        while (j < l->n && l->ev[j].type == LKM_DROP)
            j++;
        for (size_t a = i + 1; a < j; a++) {
            for (size_t b = a; b > i && l->ev[b - 1].a > l->ev[b].a; b--) {
                struct lkm_event t = l->ev[b];
                l->ev[b] = l->ev[b - 1];
                l->ev[b - 1] = t;
            }
        }
        i = j > i ? j : i + 1;
    }
}

static void lkm_compare(struct lkm_real *r, struct lkm_model *m)
{
    lkm_sort_drops(&r->log);
    lkm_sort_drops(&m->log);
    MODEL_CHECK(r->log.n == m->log.n);
    for (size_t i = 0; i < r->log.n; i++) {
        const struct lkm_event *a = &r->log.ev[i], *b = &m->log.ev[i];
        MODEL_CHECK(a->type == b->type && a->a == b->a && a->b == b->b && a->c == b->c);
    }
    r->log.n = m->log.n = 0;
    MODEL_CHECK(pc_lookups_count(r->t) == m->count);
    for (unsigned k = 0; k < LKM_IDS; k++) {
        const struct lkm_ent *e = &m->e[k];
        MODEL_CHECK((r->block[k] != NULL) == e->present);
        MODEL_CHECK(r->fetching[k] == e->fetching);
        MODEL_CHECK(e->n_waiters == 0 || e->fetching); /* nobody waits on nothing */
    }
}

/* Ids m0..m7, then four that share a chain of the table's 16 buckets (found by search). */
static void lkm_ids(struct lkm_world *w)
{
    for (unsigned i = 0; i < LKM_PLAIN; i++)
        snprintf(w->ids[i], LKM_ID_MAX, "m%u", i);
    model_colliding(w->ids[LKM_PLAIN], LKM_ID_MAX, LKM_COLLIDE, "ns-", 15);
}

/*
 * Runs the operations ops[0..n) on a new pc_lookups and on the model; MODEL_FAIL on the
 * first difference. Returns the number of operations run.
 */
static size_t lookups_model_run(const uint8_t *ops, size_t n)
{
    struct model_in in = {ops, n, 0};
    unsigned cfg = model_u8(&in);
    struct lkm_world *w = calloc(1, sizeof *w);
    struct lkm_model *m = calloc(1, sizeof *m);
    struct lkm_real *r = calloc(1, sizeof *r);
    MODEL_CHECK(w != NULL && m != NULL && r != NULL);
    lkm_ids(w);
    w->now_ms = 1000000;
    w->max = lkm_bounds[cfg & 7];
    w->period = lkm_periods[(cfg >> 3) & 3];
    w->remember = (cfg >> 5) & 1;
    m->w = r->w = w;
    struct pc_lookups_params p = {
        .max = w->max,
        .data_size = sizeof(struct lkm_block),
        .period_ms = w->period,
        .remember_failures = w->remember,
        .owner = r,
        .init = lkm_init,
        .fetch = lkm_fetch,
        .wake = lkm_wake,
        .drop = lkm_drop,
        .clock = {lkm_now, w},
    };
    r->t = pc_lookups_new(&p);
    MODEL_CHECK(r->t != NULL);
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in);
        unsigned k = model_u8(&in) % LKM_IDS;
        switch (op % 16) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
        case 5:
        case 6:
        case 7: {
            int wait = op % 16 < 6;
            int refuse = (op >> 4) == 15; /* init refuses, now and then */
            unsigned action = wait ? model_u8(&in) : 0;
            int64_t t0 = w->now_ms;
            lkm_real_get(r, k, wait, action, refuse);
            w->now_ms = t0; /* the model replays with the clock as the table saw it */
            lkm_model_get(m, k, wait, action, refuse);
            break;
        }
        case 8:
            pc_lookups_forget(r->t, w->ids[k]);
            lkm_log(&r->log, LKM_FORGET, k, 0, 0);
            lkm_model_forget(m, k);
            break;
        case 9:
        case 10:
        case 11:
        case 12: {
            /* A fetch ends: about the k-th fetching entry (with none, a present one). */
            unsigned pick = LKM_IDS;
            for (unsigned i = 0, seen = 0; i < LKM_IDS; i++) {
                if (m->e[i].fetching && seen++ <= k % LKM_IDS)
                    pick = i;
            }
            for (unsigned i = 0; pick == LKM_IDS && i < LKM_IDS; i++) {
                if (m->e[(k + i) % LKM_IDS].present)
                    pick = (k + i) % LKM_IDS;
            }
            if (pick == LKM_IDS)
                break;
            int ok = (op >> 4) % 4 != 0; /* one in four fails */
            int64_t t0 = w->now_ms;
            lkm_real_done(r, pick, ok, (long)model_step);
            w->now_ms = t0;
            lkm_model_done(m, pick, ok, (long)model_step);
            break;
        }
        case 13:
        case 14: {
            int64_t d = (op >> 4) < 12 ? (int64_t)(op >> 4) : w->period + (op >> 4) - 13;
            if (d > 0)
                w->now_ms += d;
            break;
        }
        default:
            w->refuse = (op >> 4) < 4; /* the source refuses for a while, one time in four */
            break;
        }
        lkm_compare(r, m);
    }
    /* The end: every entry goes (drop), no waiter is called. */
    for (unsigned k = 0; k < LKM_IDS; k++)
        r->fetching[k] = 0; /* the owner's I/O is gone first */
    pc_lookups_free(r->t);
    size_t drops = 0;
    for (size_t i = 0; i < r->log.n; i++) {
        MODEL_CHECK(r->log.ev[i].type == LKM_DROP);
        drops++;
    }
    MODEL_CHECK(drops == m->count);
    for (unsigned k = 0; k < LKM_IDS; k++)
        free(m->e[k].waiters);
    free(m->waiters);
    free(r->waiters);
    free(m->log.ev);
    free(r->log.ev);
    free(m);
    free(r);
    free(w);
    return steps;
}

#endif
