/* lookups: values fetched from elsewhere, by id, with their waiters (see the header). */
#include "predcache/lookups.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define LK_MAGIC 0x4c4b5550u /* "LKUP": a block handed back is one of ours */

struct waiter {
    pc_lookups_fn fn;
    void *arg;
};

struct entry {
    unsigned magic;
    struct entry *next; /* hash chain */
    const char *id;     /* after the block, in the same allocation */
    uint64_t hash;
    int64_t fetched_ms; /* when the last counted fetch ended */
    int have;           /* a fetch ended and counted (ok, or failed and remembered) */
    int failed;         /* that fetch failed (remember_failures) */
    int fetching;
    int invalid;    /* announced since: callers wait for the next fetch */
    int refetch;    /* announced while fetching: that answer may predate it */
    int delivering; /* waiters of this entry are being called (nesting depth) */
    struct waiter *waiters;
    size_t n_waiters, cap_waiters;
    max_align_t data[]; /* the owner's block */
};

struct pc_lookups {
    struct pc_lookups_params p;
    struct entry **buckets;
    size_t mask; /* the number of buckets (a power of two) minus one */
    size_t n;
};

static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static struct entry *entry_of(const void *data)
{
    struct entry *e = (struct entry *)((const char *)data - offsetof(struct entry, data));
    assert(e->magic == LK_MAGIC);
    return e;
}

struct pc_lookups *pc_lookups_new(const struct pc_lookups_params *params)
{
    if (params->max == 0)
        return NULL;
    struct pc_lookups *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->p = *params;
    size_t nb = 16;
    while (nb < l->p.max && nb < ((size_t)1 << 20))
        nb *= 2;
    l->buckets = calloc(nb, sizeof *l->buckets);
    if (l->buckets == NULL) {
        free(l);
        return NULL;
    }
    l->mask = nb - 1;
    return l;
}

static void entry_free(struct pc_lookups *l, struct entry *e)
{
    if (l->p.drop != NULL)
        l->p.drop(l->p.owner, e->data);
    e->magic = 0;
    free(e->waiters);
    free(e);
}

void pc_lookups_free(struct pc_lookups *l)
{
    if (l == NULL)
        return;
    for (size_t b = 0; b <= l->mask; b++) {
        struct entry *e = l->buckets[b];
        while (e != NULL) {
            struct entry *next = e->next;
            entry_free(l, e);
            e = next;
        }
    }
    free(l->buckets);
    free(l);
}

static struct entry *find(const struct pc_lookups *l, const char *id, uint64_t h)
{
    for (struct entry *e = l->buckets[h & l->mask]; e != NULL; e = e->next) {
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

static int64_t now_ms(const struct pc_lookups *l)
{
    return pc_clock_ms(&l->p.clock);
}

/* Makes room: drops the expired entries that nothing fetches, waits for or is called on. */
static void evict_expired(struct pc_lookups *l)
{
    int64_t now = now_ms(l);
    for (size_t b = 0; b <= l->mask; b++) {
        struct entry **pp = &l->buckets[b];
        while (*pp != NULL) {
            struct entry *e = *pp;
            if (!e->fetching && e->n_waiters == 0 && e->delivering == 0 &&
                now - e->fetched_ms > l->p.period_ms) {
                *pp = e->next; /* pp stays: it now holds the next entry */
                l->n--;
                entry_free(l, e);
            } else {
                pp = &e->next;
            }
        }
    }
}

static struct entry *entry_new(struct pc_lookups *l, const char *id, uint64_t h, const void *seed)
{
    size_t block = (l->p.data_size + sizeof(max_align_t) - 1) / sizeof(max_align_t);
    size_t idlen = strlen(id);
    struct entry *e = calloc(1, sizeof *e + block * sizeof(max_align_t) + idlen + 1);
    if (e == NULL)
        return NULL;
    char *idcopy = (char *)(e->data + block);
    memcpy(idcopy, id, idlen + 1);
    e->magic = LK_MAGIC;
    e->id = idcopy;
    e->hash = h;
    if (l->p.init != NULL && l->p.init(l->p.owner, id, e->data, seed) != 0) {
        free(e); /* never handed out: no drop */
        return NULL;
    }
    e->next = l->buckets[h & l->mask];
    l->buckets[h & l->mask] = e;
    l->n++;
    return e;
}

static int start_fetch(struct pc_lookups *l, struct entry *e)
{
    if (l->p.fetch(l->p.owner, e->id, e->data) != 0)
        return -1;
    e->fetching = 1;
    return 0;
}

enum pc_lookup pc_lookups_get(struct pc_lookups *l, const char *id, const void *seed,
                              pc_lookups_fn fn, void *arg, void **data)
{
    *data = NULL;
    uint64_t h = hash_of(id);
    struct entry *e = find(l, id, h);
    if (e == NULL) {
        if (l->n >= l->p.max)
            evict_expired(l);
        if (l->n >= l->p.max || (e = entry_new(l, id, h, seed)) == NULL)
            return PC_LOOKUP_NONE;
    }
    *data = e->data;
    int stale = now_ms(l) - e->fetched_ms > l->p.period_ms;
    if (e->have && !e->failed && !e->invalid) {
        if (stale && !e->fetching)
            start_fetch(l, e); /* behind: this caller is served what is known until now */
        return PC_LOOKUP_SERVE;
    }
    if (e->have && e->failed && !e->invalid && !stale)
        return PC_LOOKUP_NONE; /* failed recently: not asked again before the period */
    if (!e->fetching && start_fetch(l, e) != 0)
        return PC_LOOKUP_NONE;
    if (fn == NULL)
        return PC_LOOKUP_NONE; /* the caller does not wait */
    if (e->n_waiters == e->cap_waiters) {
        size_t cap = e->cap_waiters ? e->cap_waiters * 2 : 4;
        struct waiter *nw = realloc(e->waiters, cap * sizeof *nw);
        if (nw == NULL)
            return PC_LOOKUP_NONE;
        e->waiters = nw;
        e->cap_waiters = cap;
    }
    e->waiters[e->n_waiters++] = (struct waiter){fn, arg};
    return PC_LOOKUP_WAIT;
}

int pc_lookups_done(struct pc_lookups *l, void *data, int ok)
{
    struct entry *e = entry_of(data);
    if (!e->fetching)
        return -1;
    e->fetching = 0;
    if (ok || l->p.remember_failures) {
        e->have = 1;
        e->failed = !ok;
        e->fetched_ms = now_ms(l);
        if (!e->refetch)
            e->invalid = 0;
    }
    if (e->refetch) { /* announced meanwhile: this answer may predate it */
        e->refetch = 0;
        if (start_fetch(l, e) == 0)
            return 0; /* the waiters wait for that one */
    }
    /* Detached first: a waiter may queue new ones (for the next fetch). The entry stays
     * while they are called (delivering), so the block they are shown is still there. */
    struct waiter *ws = e->waiters;
    size_t n = e->n_waiters;
    e->waiters = NULL;
    e->n_waiters = e->cap_waiters = 0;
    e->delivering++;
    for (size_t i = 0; i < n; i++)
        l->p.wake(l->p.owner, e->data, ws[i].fn, ws[i].arg);
    e->delivering--;
    free(ws);
    return 0;
}

void pc_lookups_forget(struct pc_lookups *l, const char *id)
{
    struct entry *e = find(l, id, hash_of(id));
    if (e == NULL)
        return;
    e->invalid = 1;
    if (e->fetching)
        e->refetch = 1;
}

const char *pc_lookups_id(const void *data)
{
    return entry_of(data)->id;
}

size_t pc_lookups_count(const struct pc_lookups *l)
{
    return l->n;
}

void pc_lookups_each(const struct pc_lookups *l, pc_lookups_each_fn fn, void *arg)
{
    for (size_t b = 0; l != NULL && b <= l->mask; b++) {
        for (const struct entry *e = l->buckets[b]; e != NULL; e = e->next)
            fn(e->data, arg);
    }
}
