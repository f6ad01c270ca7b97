/*
 * coalesce: the miss machinery every flow shares. Inside a process, the flights (one model
 * server call per key while others wait for it: join, keep the answer while its SET is on
 * the way, release, fail); across processes, the lock on a key in Redis (one round trip:
 * the value if it landed, else the lock), the wait for its holder's announcement on the
 * done channel (bounded by lock_timeout_ms), and the release, sent again when its reply was
 * lost. A flow hands itself over through struct pc_flow: coalesce resumes it through those
 * function pointers and never calls a flow's functions by name.
 *
 *   miss --EVAL: value? / SET lock NX PX--> value: flow->found (a HIT)
 *                                          acquired: flow->send; when answered and stored,
 *                                                    release the lock and PUBLISH the key
 *                                          held elsewhere: wait for that PUBLISH (or
 *                                                    lock_timeout_ms), then flow->relook
 *
 * The script may be a request's lookup itself (pc_coalesce_lookup; a batch folds it into
 * its MGET): then "held" is asked again once the request leads its flight, since the
 * holder's PUBLISH may have come before there was a flight to hear it.
 *
 * Ownership: at any time exactly one of the lock reply, the wait timer (or the PUBLISH
 * that cuts it short) and the relook holds p; each either answers and frees p or hands it
 * to the next step.
 */
#ifndef PREDCACHE_COALESCE_H
#define PREDCACHE_COALESCE_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/flight.h"
#include "lock.h"
#include "preq.h"

struct pc_reply;

/* How coalesce resumes a request of a flow (each takes p over). */
struct pc_flow {
    /* Its model server call, labelled result (MISS, or BYPASS when Redis could not say). */
    void (*send)(struct pc_preq *p, enum pc_cache_result result);
    /* Another process answered its key, or the wait ended: look it up again. */
    void (*relook)(struct pc_preq *p);
    /* The lock script found a value (data, len): 1 when p was answered with it; 0 goes on
     * to send. NULL: never (a batch's herd key holds no value). */
    int (*found)(struct pc_preq *p, const char *data, size_t len);
};

/* The key p coalesces on: a batch sub-request's herd key, else its entry's key. */
const char *pc_coalesce_key(const struct pc_preq *p);

/*
 * Coalescing in a process, on pc_coalesce_key(p). pc_proxy_join: PC_JOIN_WAIT p waits for
 * the flight's leader (answered by it); PC_JOIN_DONE *done is a flight already answered
 * whose stores are on the way (answer p from its kept answer); PC_JOIN_LEAD p leads
 * (p->flight set, or NULL: no memory, go alone).
 */
enum pc_join { PC_JOIN_LEAD, PC_JOIN_WAIT, PC_JOIN_DONE };
enum pc_join pc_proxy_join(struct pc_preq *p, struct pc_flight **done);
/* Waiters of p's flight that the leader's answer cannot serve: ends the flight and hands
 * them back (count in *n, malloc'ed array, NULL when none). */
struct pc_preq **pc_proxy_flight_release(struct pc_preq *p, size_t *n);
/* Keeps the leader's answer in its flight while its stores are on the way: the argument for
 * pc_proxy_flight_stored, which ends the flight; NULL when there is no flight (then it has
 * ended now). */
void *pc_proxy_flight_keep(struct pc_preq *p, const struct pc_upstream_resp *r);
void pc_proxy_flight_stored(int ok, void *arg);
/* Ends the leader's flight at once (nothing to share). */
void pc_proxy_flight_drop(struct pc_preq *p);

/* Asks the cross-process lock on p's key for a leader p of flow (set on p): p is held until
 * flow->found, flow->send or flow->relook takes it. */
void pc_coalesce_lock(struct pc_preq *p, const struct pc_flow *flow);
/* Readies p to take the lock in a script of its flow's own (its lookup's): p's lock side
 * and its release hook, so that a lock the script takes is released with p. lock and wait
 * get the key's lock and waiters' mark, owner this worker's name in locks (each at least
 * PC_KEY_MAX + 8 bytes; owner 32). */
void pc_coalesce_prepare(struct pc_preq *p, const char *key, char *lock, char *wait, char *owner);
/* p's lookup as the lock script (the value, else the lock, else a waiters' mark: one round
 * trip before a model call), with p's lock side readied as pc_coalesce_prepare does: cb
 * gets what it found and must hand TAKEN to pc_lockwait_answer. 0 asked, -1 not (cb is
 * not called). */
int pc_coalesce_lookup(struct pc_preq *p, pc_lock_cb cb);
/* Releases now a lock p's lookup took (p joined another request's call instead of leading
 * its own); nothing when p holds none. */
void pc_coalesce_unlock(struct pc_preq *p);
/* The lock script's answer that p's lookup brought (TAKEN or HELD), for a leader of flow
 * readied by pc_coalesce_prepare: as pc_coalesce_lock goes on from its own answer. */
void pc_coalesce_said(struct pc_preq *p, const struct pc_flow *flow, enum pc_lock what);
/* 1 when a miss asks the cross-process lock: [cache] lock_timeout_ms > 0, and lock = always
 * or another worker or process shares the done channel (peers.h); sets the lock_alone gauge.
 * With count, a miss that goes without it for being alone counts lock_skipped (ask once per
 * miss with count). */
int pc_lock_wanted(struct pc_worker *w, int count);
/* A batch leader asks the lock (result: its label): 1 asked (as pc_coalesce_lock); 0 not
 * (no flight, locks off or alone, not a miss): the caller goes on. */
int pc_proxy_lock_batch(struct pc_preq *p, const struct pc_flow *flow, enum pc_cache_result result);

/* Another process announced key answered (on the done channel): wakes its waiting leader. */
void pc_proxy_on_answered(struct pc_worker *w, const char *key);

/* The cross-process lock on a key, for any flow (the per-body and batch flows above, the
 * gRPC cache): its types are lock.h's. */
int pc_lock_ask(struct pc_worker *w, const char *key, pc_lock_cb cb, void *arg);
/* Releases this worker's lock on key, taken by a script sent at asked_us, and, when another
 * process waited, announces key answered (after any SET of its answer on the same
 * connection); sent again until it is answered or the lock expired. */
void pc_lock_release(struct pc_worker *w, const char *key, uint64_t asked_us);
/* 1 when r is an error reply to a lock script (NOPERM for a user without EVAL, OOM, ...),
 * logged once a second at most; 0 for anything else. */
int pc_lock_refused(const struct pc_reply *r);
/* How long a request started at start_us waits for another process: lock_timeout_ms, or
 * less when its own deadline (request_timeout_ms) comes first. */
long pc_lock_wait_ms(const struct pc_worker *w, uint64_t start_us);

/* pc_lock_ask for lw's owner (asking, until its answer is given to pc_lockwait_answer). */
int pc_lockwait_ask(struct pc_lockwait *lw, const char *key, pc_lock_cb cb, void *arg);
/* The lock script's answer: TAKEN marks it held; HELD waits (at most ms) for the
 * announcement and returns 1 (relook resumes the owner; at once when the announcement
 * came first); else, or when no wait could be set up, 0: the owner goes on. */
int pc_lockwait_answer(struct pc_lockwait *lw, enum pc_lock what, long ms);
/* An announcement of the owner's key: a waiting owner looks again now; one still asking
 * will not wait. */
void pc_lockwait_wake(struct pc_lockwait *lw);
/* Releases the lock lw holds on key (pc_lock_release, with when it was asked); nothing
 * when it holds none. */
void pc_lockwait_unlock(struct pc_lockwait *lw, const char *key);
/* Ends a wait without resuming (the owner is freed). */
void pc_lockwait_stop(struct pc_lockwait *lw);
/* Frees the lock releases still waiting to be sent again (after the store is freed). */
void pc_proxy_unlocks_free(struct pc_worker *w);

#endif
