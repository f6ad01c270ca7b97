/*
 * flight: the table of cache keys whose answer is being fetched right now, for request
 * coalescing inside one process. Owns its entries and their waiter lists; the waiters
 * themselves are opaque pointers it never dereferences. Pure: no I/O.
 */
#ifndef PREDCACHE_FLIGHT_H
#define PREDCACHE_FLIGHT_H

#include <stddef.h>
#include <stdint.h>

struct pc_flights;

struct pc_flight {
    char *key;
    void *leader;   /* the request whose model server call everyone waits for */
    void **waiters; /* requests answered with the leader's answer */
    size_t n_waiters;
    size_t cap_waiters;
    int done;   /* answered; kept until its store is acknowledged, answering late misses */
    int status; /* the answer kept once done (freed with the entry) */
    char *ctype;
    char *body;
    size_t body_len;
    uint64_t begun_us;      /* set by its user: when the leader's request came (0 unset) */
    struct pc_flight *next; /* hash chain */
};

struct pc_flights *pc_flights_new(void);
/* Frees every entry (not the waiters they point to). Accepts NULL. */
void pc_flights_free(struct pc_flights *t);
/* The entry for key, or NULL. */
struct pc_flight *pc_flights_find(struct pc_flights *t, const char *key);
/* Adds an entry for key (which must not be present) led by leader. NULL on no memory. */
struct pc_flight *pc_flights_start(struct pc_flights *t, const char *key, void *leader);
/* Appends a waiter. 0 ok, -1 no memory. */
int pc_flight_join(struct pc_flight *f, void *waiter);
/* Removes f from the table and frees it. */
void pc_flights_finish(struct pc_flights *t, struct pc_flight *f);
/* Entries in the table. */
size_t pc_flights_count(const struct pc_flights *t);

#endif
