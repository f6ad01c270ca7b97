/*
 * flight_model: pc_flights against a reference model, one operation at a time (see
 * model.h).
 *
 * The model is a dictionary written out plainly: an array indexed by key holding the entry
 * pc_flights_start returned for it (identity: the very pointer find must give back), its
 * leader and its waiters in order. The keys: a few, a few whose FNV-1a hashes agree on the
 * low 12 bits (one bucket chain up to 4096 buckets), and 4096 that make the table double.
 * The operations: start a key that is not in flight (the header forbids the other), find
 * any key, join a waiter to a key in flight, answer one (the proxy's done, status, ctype
 * and body, which the table frees with the entry: a leak shows under LeakSanitizer), and
 * finish one. After every step the count and the touched key (its entry, key, leader and
 * waiters) agree with the model; every 16 steps the few and the colliding keys do, every
 * 256 steps and at the end every key does.
 */
#ifndef PREDCACHE_TEST_FLIGHT_MODEL_H
#define PREDCACHE_TEST_FLIGHT_MODEL_H

#include "model.h"

#include <string.h>

#include "predcache/flight.h"

#define FLM_SMALL 8
#define FLM_COLLIDE 8
#define FLM_LARGE 4096
#define FLM_KEYS (FLM_SMALL + FLM_COLLIDE + FLM_LARGE)
#define FLM_KEY_MAX 32
#define FLM_PEERS 64 /* distinct leader and waiter pointers */

struct flm_entry {
    struct pc_flight *f; /* NULL: not in flight */
    void *leader;
    void **waiters;
    size_t n_waiters;
};

struct flm {
    const char (*keys)[FLM_KEY_MAX];
    struct flm_entry e[FLM_KEYS];
    size_t count;
};

/* Leaders and waiters are opaque to the table: any distinct addresses do. */
static char flm_peers[FLM_PEERS];

/* Keys c<n> whose hashes agree on their low 12 bits, found once per process. */
static const char *flm_colliding(unsigned i)
{
    static char keys[FLM_COLLIDE][FLM_KEY_MAX];
    static int found;
    if (!found) {
        model_colliding(keys[0], FLM_KEY_MAX, FLM_COLLIDE, "predcache:c", 0xFFF);
        found = 1;
    }
    return keys[i];
}

/* The keys: the same for every run, built once. */
static void flm_init(struct flm *m)
{
    static char keys[FLM_KEYS][FLM_KEY_MAX];
    static int built;
    for (unsigned i = 0; i < FLM_KEYS && !built; i++) {
        if (i < FLM_SMALL)
            snprintf(keys[i], FLM_KEY_MAX, "s%u", i);
        else if (i < FLM_SMALL + FLM_COLLIDE)
            snprintf(keys[i], FLM_KEY_MAX, "%s", flm_colliding(i - FLM_SMALL));
        else
            snprintf(keys[i], FLM_KEY_MAX, "predcache:v1:%u", i - FLM_SMALL - FLM_COLLIDE);
    }
    built = 1;
    memset(m, 0, sizeof *m);
    m->keys = (const char(*)[FLM_KEY_MAX])keys;
}

static unsigned flm_key(struct model_in *in)
{
    unsigned b = model_u8(in);
    if (b < 64)
        return b % FLM_SMALL;
    if (b < 128)
        return FLM_SMALL + b % FLM_COLLIDE;
    unsigned wide = ((b & 0x7F) << 8) | model_u8(in);
    return FLM_SMALL + FLM_COLLIDE + wide % FLM_LARGE;
}

/* find(key) is the model's entry, and that entry is the model's in every field it owns. */
static void flm_check_key(struct pc_flights *t, const struct flm *m, unsigned k)
{
    char key[FLM_KEY_MAX];
    memcpy(key, m->keys[k], sizeof key); /* another copy: find compares bytes, not pointers */
    struct pc_flight *f = pc_flights_find(t, key);
    const struct flm_entry *e = &m->e[k];
    MODEL_CHECK(f == e->f);
    if (f == NULL)
        return;
    MODEL_CHECK(strcmp(f->key, m->keys[k]) == 0);
    MODEL_CHECK(f->leader == e->leader);
    MODEL_CHECK(f->n_waiters == e->n_waiters && f->n_waiters <= f->cap_waiters);
    for (size_t i = 0; i < e->n_waiters; i++)
        MODEL_CHECK(f->waiters[i] == e->waiters[i]);
}

/* Keys [0, n): the few and the colliding ones (n = 16), or all of them. */
static void flm_check_keys(struct pc_flights *t, const struct flm *m, unsigned n)
{
    MODEL_CHECK(pc_flights_count(t) == m->count);
    for (unsigned k = 0; k < n; k++)
        flm_check_key(t, m, k);
}

static char *flm_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    MODEL_CHECK(p != NULL);
    memcpy(p, s, n);
    return p;
}

/*
 * Runs the operations ops[0..n) on a new pc_flights and on the model; MODEL_FAIL on the
 * first difference. Returns the number of operations run.
 */
static size_t flight_model_run(const uint8_t *ops, size_t n)
{
    struct model_in in = {ops, n, 0};
    struct flm *m = malloc(sizeof *m);
    MODEL_CHECK(m != NULL);
    flm_init(m);
    struct pc_flights *t = pc_flights_new();
    MODEL_CHECK(t != NULL);
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in) % 8;
        unsigned k = flm_key(&in);
        struct flm_entry *e = &m->e[k];
        if (op <= 2 && e->f == NULL) { /* start: the key is copied, the leader kept */
            char key[FLM_KEY_MAX];
            memcpy(key, m->keys[k], sizeof key);
            void *leader = (model_u8(&in) & 1) ? &flm_peers[k % FLM_PEERS] : NULL;
            struct pc_flight *f = pc_flights_start(t, key, leader);
            MODEL_CHECK(f != NULL);
            memset(key, 'x', sizeof key - 1);
            MODEL_CHECK(strcmp(f->key, m->keys[k]) == 0 && f->leader == leader);
            MODEL_CHECK(f->n_waiters == 0 && f->done == 0 && f->body == NULL);
            e->f = f;
            e->leader = leader;
            m->count++;
        } else if (op <= 4 && e->f != NULL) { /* join: waiters in arrival order */
            unsigned w = model_u8(&in);
            for (unsigned j = 0; j <= w % 20; j++) { /* bursts: the array grows */
                void *waiter = &flm_peers[(w + j) % FLM_PEERS];
                MODEL_CHECK(pc_flight_join(e->f, waiter) == 0);
                void **ws = realloc(e->waiters, (e->n_waiters + 1) * sizeof *ws);
                MODEL_CHECK(ws != NULL);
                e->waiters = ws;
                e->waiters[e->n_waiters++] = waiter;
            }
        } else if (op == 5 && e->f != NULL) { /* answered: the entry now owns the answer */
            if (!e->f->done) {
                e->f->done = 1;
                e->f->status = 200;
                e->f->ctype = flm_strdup("application/json");
                e->f->body = flm_strdup(m->keys[k]);
                e->f->body_len = strlen(m->keys[k]);
            }
        } else if (op == 6 && e->f != NULL) { /* finish: gone, its answer with it */
            pc_flights_finish(t, e->f);
            free(e->waiters);
            memset(e, 0, sizeof *e);
            m->count--;
        }
        /* Any other pairing (start of a key in flight, ...) is just a find. */
        MODEL_CHECK(pc_flights_count(t) == m->count);
        flm_check_key(t, m, k);
        if (model_step % 256 == 0)
            flm_check_keys(t, m, FLM_KEYS);
        else if (model_step % 16 == 0)
            flm_check_keys(t, m, FLM_SMALL + FLM_COLLIDE);
    }
    flm_check_keys(t, m, FLM_KEYS);
    pc_flights_free(t); /* what is still in flight, answers included */
    for (unsigned k = 0; k < FLM_KEYS; k++)
        free(m->e[k].waiters);
    free(m);
    return steps;
}

#endif
