/*
 * lock: the cross-process lock's types, shared by the flows that keep a leader's side of
 * it in their requests (preq.h, grpc_call.h); coalesce.c implements it (coalesce.h).
 *
 * pc_lock_ask runs the lock script (one round trip: the key's value if it landed, else SET
 * key:lock NX PX lock_timeout_ms, else a mark that someone waits) and tells its callback
 * what it found: FOUND (data, len: the value, valid during the callback), TAKEN (release it
 * with pc_lock_release once the answer is stored), HELD by another process (wait for its
 * announcement, at most pc_lock_wait_ms), UNKNOWN (no reply) or REFUSED (an error reply:
 * NOPERM for a user without EVAL, ...; else as UNKNOWN).
 */
#ifndef PREDCACHE_LOCK_H
#define PREDCACHE_LOCK_H

#include <stddef.h>
#include <stdint.h>

struct event;
struct pc_worker;

enum pc_lock { PC_LOCK_FOUND, PC_LOCK_TAKEN, PC_LOCK_HELD, PC_LOCK_UNKNOWN, PC_LOCK_REFUSED };
typedef void (*pc_lock_cb)(enum pc_lock what, const char *data, size_t len, void *arg);

/*
 * A leader's side of the lock, as every flow keeps it (in its request): asking, holding,
 * or waiting for the holder's announcement. relook(owner) resumes the owner when a wait
 * ends (the announcement came, or the wait ran out: lock_timeouts counted), taking it over.
 */
struct pc_lockwait {
    struct pc_worker *w;
    void (*relook)(void *owner);
    void *owner;
    struct event *timer; /* waiting: its deadline */
    int asking;          /* the lock script is on its way */
    int notified;        /* and the holder's announcement came before its answer */
    int held;            /* ours: release it once the answer is stored (pc_lock_release) */
    uint64_t asked_us;   /* when the script that may take it was sent: it lives from later */
};

#endif
