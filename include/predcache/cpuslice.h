/*
 * cpuslice: the calling thread's time slice under Linux's EEVDF scheduler (6.12 and
 * later: sched_attr.sched_runtime of a SCHED_OTHER or SCHED_BATCH thread, 0.1 to 100 ms;
 * the default is 0.7 ms times 1 + log2 of the CPUs, 1.4 ms on two).
 *
 * Why a worker asks for a long one ([server] sched_slice_us, docs/PERFORMANCE.md "Redis
 * and the model server run when they wake"): a thread that wakes with a shorter slice
 * than the running one's takes the CPU at once. With the default, every thread has the
 * same slice, and a Redis server or a model server that shares a CPU with a worker and is
 * woken by the worker's own write (a miss's lookup, its model call) waits until the
 * worker's slice ends or its loop blocks: behind the other requests' work. With a longer
 * slice for the worker they run as soon as they wake: the lookup's reply is there at the
 * worker's next look for events, and the model server reads each call when it is sent.
 * Over a CPU's time nothing changes: the worker's share is its weight's (its nice
 * value), not its slice's.
 *
 * Owns nothing; every call is about the calling thread only.
 */
#ifndef PREDCACHE_CPUSLICE_H
#define PREDCACHE_CPUSLICE_H

#define PC_CPUSLICE_MIN_US 100 /* the kernel's bounds */
#define PC_CPUSLICE_MAX_US 100000

enum pc_cpuslice_result {
    PC_CPUSLICE_SET,         /* the kernel reports the slice asked for */
    PC_CPUSLICE_UNSUPPORTED, /* the kernel keeps no slice per thread (before 6.12) */
    PC_CPUSLICE_POLICY,      /* the thread is not SCHED_OTHER or SCHED_BATCH: left alone */
    PC_CPUSLICE_FAILED,      /* sched_getattr or sched_setattr failed: errno */
};

/* Asks for a slice of us microseconds (PC_CPUSLICE_MIN_US..PC_CPUSLICE_MAX_US) for the
 * calling thread, keeping its policy and nice value. */
enum pc_cpuslice_result pc_cpuslice_set(long us);

/* The calling thread's slice in microseconds as the kernel reports it; 0 when it reports
 * none; -1 on error (errno). */
long pc_cpuslice_get(void);

/* A phrase for a result ("set", "unsupported by this kernel", ...). */
const char *pc_cpuslice_describe(enum pc_cpuslice_result r);

#endif
