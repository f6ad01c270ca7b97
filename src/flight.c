/* flight: chained hash table of in-flight cache keys (FNV-1a, doubling at load 1). */
#include "predcache/flight.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct pc_flights {
    struct pc_flight **buckets;
    size_t n_buckets; /* a power of two */
    size_t count;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct pc_flights *pc_flights_new(void)
{
    struct pc_flights *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->n_buckets = 64;
    t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
    if (t->buckets == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

static void entry_free(struct pc_flight *f)
{
    free(f->ctype);
    free(f->body);
    free(f->key);
    free(f->waiters);
    free(f);
}

void pc_flights_free(struct pc_flights *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct pc_flight *f = t->buckets[i];
        while (f != NULL) {
            struct pc_flight *next = f->next;
            entry_free(f);
            f = next;
        }
    }
    free(t->buckets);
    free(t);
}

struct pc_flight *pc_flights_find(struct pc_flights *t, const char *key)
{
    struct pc_flight *f = t->buckets[hash_key(key) & (t->n_buckets - 1)];
    while (f != NULL && strcmp(f->key, key) != 0)
        f = f->next;
    return f;
}

/* Doubles the bucket array; on no memory the table just stays denser. */
static void grow(struct pc_flights *t)
{
    size_t n = t->n_buckets * 2;
    struct pc_flight **b = calloc(n, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        struct pc_flight *f = t->buckets[i];
        while (f != NULL) {
            struct pc_flight *next = f->next;
            size_t j = hash_key(f->key) & (n - 1);
            f->next = b[j];
            b[j] = f;
            f = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

struct pc_flight *pc_flights_start(struct pc_flights *t, const char *key, void *leader)
{
    struct pc_flight *f = calloc(1, sizeof *f);
    if (f == NULL || (f->key = strdup(key)) == NULL) {
        free(f);
        return NULL;
    }
    f->leader = leader;
    if (t->count + 1 > t->n_buckets)
        grow(t);
    size_t i = hash_key(key) & (t->n_buckets - 1);
    f->next = t->buckets[i];
    t->buckets[i] = f;
    t->count++;
    return f;
}

int pc_flight_join(struct pc_flight *f, void *waiter)
{
    if (f->n_waiters == f->cap_waiters) {
        size_t cap = f->cap_waiters ? f->cap_waiters * 2 : 8;
        void **w = realloc(f->waiters, cap * sizeof *w);
        if (w == NULL)
            return -1;
        f->waiters = w;
        f->cap_waiters = cap;
    }
    f->waiters[f->n_waiters++] = waiter;
    return 0;
}

void pc_flights_finish(struct pc_flights *t, struct pc_flight *f)
{
    struct pc_flight **pp = &t->buckets[hash_key(f->key) & (t->n_buckets - 1)];
    while (*pp != NULL && *pp != f)
        pp = &(*pp)->next;
    if (*pp == f) {
        *pp = f->next;
        t->count--;
    }
    entry_free(f);
}

size_t pc_flights_count(const struct pc_flights *t)
{
    return t->count;
}
