/*
 * jobtab: the jobs one worker holds, by stream entry id, oldest first, each with its cache
 * key and its step; and, by cache key, which of them runs and which waits behind an
 * identical job (a twin) for its answer to land in the cache.
 *
 * Owns its slots (at most max) and copies of the entry ids and keys. Never touches the jobs
 * themselves (pointers it is handed and gives back), Redis, the event loop or the clock.
 * One thread.
 */
#ifndef PREDCACHE_JOBTAB_H
#define PREDCACHE_JOBTAB_H

#include <stddef.h>

struct pc_jobtab;

/* A held job's step; a set of steps is their OR. */
enum pc_job_step {
    PC_JOB_STARTING = 1 << 0,  /* start script in flight */
    PC_JOB_PARKED = 1 << 1,    /* a twin runs: waits for its answer */
    PC_JOB_RUNNING = 1 << 2,   /* loopback request in flight */
    PC_JOB_FINISHING = 1 << 3, /* finish script in flight */
    PC_JOB_RELEASING = 1 << 4, /* release script in flight */
};
#define PC_JOB_ANY 0x1fu

/* At most max jobs (0: none). NULL on no memory. */
struct pc_jobtab *pc_jobtab_new(size_t max);
/* Frees the table, not the jobs. Accepts NULL. */
void pc_jobtab_free(struct pc_jobtab *t);

/* Holds job under entry with cache key key ("": none, never parked), STARTING. Copies
 * entry and key. 0 ok; -1 entry is held already, the table is full, or no memory. */
int pc_jobtab_add(struct pc_jobtab *t, const char *entry, const char *key, void *job);
/* The job held under entry, NULL when none. */
void *pc_jobtab_find(const struct pc_jobtab *t, const char *entry);
/* Lets go of entry: its job, NULL when none. Jobs parked behind it stay parked. */
void *pc_jobtab_remove(struct pc_jobtab *t, const char *entry);
size_t pc_jobtab_count(const struct pc_jobtab *t);

/* The i-th oldest held job (i < count), and its entry id (valid until the table changes)
 * and step when asked. Removing it leaves the order of those before it. */
void *pc_jobtab_at(const struct pc_jobtab *t, size_t i, const char **entry, enum pc_job_step *step);
/* entry's step, 0 when it is not held. */
enum pc_job_step pc_jobtab_step(const struct pc_jobtab *t, const char *entry);
/* 0 ok, -1 not held. */
int pc_jobtab_set_step(struct pc_jobtab *t, const char *entry, enum pc_job_step step);
/* The oldest job whose step is in steps and, unless key is NULL, whose cache key is key. */
void *pc_jobtab_first(const struct pc_jobtab *t, unsigned steps, const char *key);

/*
 * entry's job is ready to run. 1: no other job with its cache key is RUNNING (or it has no
 * key): it is RUNNING now, send it. 0: a twin runs: it is PARKED until pc_jobtab_unpark of
 * its key. -1: not held.
 */
int pc_jobtab_run(struct pc_jobtab *t, const char *entry);
/* A twin's answer came: the oldest job parked behind key, RUNNING now; NULL when none is.
 * Called until NULL, every job parked behind key runs (from the cache). */
void *pc_jobtab_unpark(struct pc_jobtab *t, const char *key);

#endif
