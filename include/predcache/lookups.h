/*
 * lookups: a bounded table of values fetched from elsewhere, by id: which to serve, when to
 * fetch, who waits. The state machine behind versions (a model server's status endpoint)
 * and generations (a Redis hash per namespace), without their I/O.
 *
 * Owns its entries (at most max), each with the owner's block of data_size bytes, their
 * state and their waiters. Never does I/O and never reads a value: it asks the owner's fetch
 * function to start one, and the owner reports how it ended with pc_lookups_done. Reads the
 * time only through its clock. One thread.
 *
 * An entry's life:
 *   - served (SERVE) once a fetch succeeded and no invalidation was announced since; older
 *     than period_ms, it is fetched again behind the callers, who keep being served
 *   - a failed fetch: with remember_failures, the id is answered NONE for period_ms (the
 *     source is not asked on every request); without, the entry keeps what it had
 *   - otherwise callers wait (WAIT) for the fetch, started by the first of them
 *   - pc_lookups_forget (an announcement): callers wait for the next fetch; announced while
 *     a fetch is in flight, that fetch's answer may predate it: it is fetched again once
 *     more before the waiters are called
 *   - each waiter is called exactly once, when the fetch it waits for ends (either way),
 *     after the entry's state moved; a waiter may call into the table (wait again, look up
 *     or create other ids, forget)
 *   - a new id in a full table first drops the entries older than period_ms that are not
 *     fetching and that no waiter waits for or is being called on; if none can go, the new
 *     id gets NONE and no entry
 */
#ifndef PREDCACHE_LOOKUPS_H
#define PREDCACHE_LOOKUPS_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

struct pc_lookups;

/* A waiter's callback, of the owner's own type, converted to this one and back by the
 * owner's wake function (C allows converting between function pointer types). */
typedef void (*pc_lookups_fn)(void);

struct pc_lookups_params {
    size_t max;            /* entries at most (at least 1) */
    size_t data_size;      /* the owner's block per entry, zeroed when the entry is made */
    int64_t period_ms;     /* an entry's value is fresh for this long */
    int remember_failures; /* 1: a failed fetch is answered NONE for period_ms */
    void *owner;           /* handed to every function below */
    /* A new entry for id: fills data from seed (pc_lookups_get's). 0 ok, -1 drop it. May be
     * NULL (data stays zeroed). */
    int (*init)(void *owner, const char *id, void *data, const void *seed);
    /* Starts fetching id. 0 started: the owner calls pc_lookups_done later, never from
     * inside this call; -1 could not start. */
    int (*fetch)(void *owner, const char *id, void *data);
    /* Calls one waiter: fn and arg as given to pc_lookups_get. */
    void (*wake)(void *owner, void *data, pc_lookups_fn fn, void *arg);
    /* The entry goes (dropped when full, or the table freed): release what data holds.
     * May be NULL. */
    void (*drop)(void *owner, void *data);
    struct pc_clock clock; /* now_ms NULL: the wall clock */
};

enum pc_lookup {
    PC_LOOKUP_SERVE, /* *data holds a value to serve (a refresh may have started behind) */
    PC_LOOKUP_WAIT,  /* fn(arg) is queued: called exactly once, later, through wake */
    PC_LOOKUP_NONE,  /* nothing to serve and nothing queued: failed recently (remembered),
                      * the fetch could not start, fn NULL, no memory, or no room (*data
                      * NULL then) */
};

/* Copies params. NULL on no memory or max 0. */
struct pc_lookups *pc_lookups_new(const struct pc_lookups_params *params);
/* Drops every entry (drop is called; waiters still queued are not). Call once no fetch
 * can end any more (the owner's I/O is torn down first: its callbacks land in the table).
 * Accepts NULL. */
void pc_lookups_free(struct pc_lookups *l);

/*
 * The entry of id, made (init with seed) when there is none, and what its caller does.
 * *data: the entry's block (NULL when there is no entry), valid until the call returns, or
 * while the entry is fetching. fn(arg) is queued only when WAIT is returned; fn NULL: the
 * caller does not wait (NONE where it would be WAIT, but the fetch is started). Borrows id
 * and seed for the call; may call init and fetch, never wake.
 */
enum pc_lookup pc_lookups_get(struct pc_lookups *l, const char *id, const void *seed,
                              pc_lookups_fn fn, void *arg, void **data);

/*
 * The fetch of the entry whose block is data ended (ok 1: the owner has put the new value
 * in data). Calls the waiters, unless an announcement made it fetch again. 0, or -1 when
 * that entry was not fetching (ignored). data must be a block the table handed out.
 */
int pc_lookups_done(struct pc_lookups *l, void *data, int ok);

/* An invalidation of id was announced: its callers wait for the next fetch. */
void pc_lookups_forget(struct pc_lookups *l, const char *id);

/* The id of the entry whose block is data (valid while the entry is). */
const char *pc_lookups_id(const void *data);

/* Entries in the table. */
size_t pc_lookups_count(const struct pc_lookups *l);

/* Calls fn(data, arg) for every entry's block, read only (fn must not change the table),
 * in no particular order. */
typedef void (*pc_lookups_each_fn)(const void *data, void *arg);
void pc_lookups_each(const struct pc_lookups *l, pc_lookups_each_fn fn, void *arg);

#endif
