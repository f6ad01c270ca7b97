/* cpuslice: the calling thread's EEVDF time slice (see the header). */
#include "predcache/cpuslice.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's struct sched_attr, its first version (48 bytes: no utilization clamps).
 * glibc 2.36 has neither the struct nor the calls. */
struct attr {
    uint32_t size;
    uint32_t policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime; /* ns: a fair thread's slice */
    uint64_t deadline;
    uint64_t period;
};

/* Both fail with ENOSYS on a kernel older than 3.14. */
static int get_attr(struct attr *a)
{
    memset(a, 0, sizeof *a);
    return (int)syscall(SYS_sched_getattr, 0, a, (unsigned)sizeof *a, 0u);
}

static int set_attr(struct attr *a)
{
    return (int)syscall(SYS_sched_setattr, 0, a, 0u);
}

long pc_cpuslice_get(void)
{
    struct attr a;
    if (get_attr(&a) != 0)
        return -1;
    return (long)(a.runtime / 1000);
}

enum pc_cpuslice_result pc_cpuslice_set(long us)
{
    struct attr a;
    if (us < PC_CPUSLICE_MIN_US || us > PC_CPUSLICE_MAX_US) {
        errno = EINVAL;
        return PC_CPUSLICE_FAILED;
    }
    if (get_attr(&a) != 0)
        return errno == ENOSYS ? PC_CPUSLICE_UNSUPPORTED : PC_CPUSLICE_FAILED;
    if (a.policy != SCHED_OTHER && a.policy != SCHED_BATCH)
        return PC_CPUSLICE_POLICY;
    /* A kernel with slices reports the thread's (a default one too); one without, 0. */
    if (a.runtime == 0)
        return PC_CPUSLICE_UNSUPPORTED;
    a.size = sizeof a;
    a.flags = 0; /* policy and nice as read: set again unchanged */
    a.runtime = (uint64_t)us * 1000;
    if (set_attr(&a) != 0)
        return PC_CPUSLICE_FAILED;
    return pc_cpuslice_get() == us ? PC_CPUSLICE_SET : PC_CPUSLICE_UNSUPPORTED;
}

const char *pc_cpuslice_describe(enum pc_cpuslice_result r)
{
    switch (r) {
    case PC_CPUSLICE_SET:
        return "set";
    case PC_CPUSLICE_UNSUPPORTED:
        return "not kept by this kernel (per-thread slices came with Linux 6.12)";
    case PC_CPUSLICE_POLICY:
        return "left alone: the thread runs under a policy other than SCHED_OTHER or SCHED_BATCH";
    case PC_CPUSLICE_FAILED:
        break;
    }
    return "failed";
}
