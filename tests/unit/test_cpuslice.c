/* cpuslice: the calling thread's EEVDF slice, asked for and read back; the thread's policy
 * and nice value kept; a thread under another policy left alone. Each case runs in a
 * thread of its own, which ends with it. The slice is read back two ways: through
 * sched_getattr (pc_cpuslice_get) and from /proc (se.slice, in nanoseconds). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "predcache/cpuslice.h"

/* se.slice of the calling thread in /proc, in ns; -1 when the kernel shows none. */
static long long proc_slice_ns(void)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/self/task/%ld/sched", (long)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    long long v = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "se.slice", 8) == 0) {
            const char *colon = strchr(line, ':');
            if (colon != NULL)
                v = strtoll(colon + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Whether this kernel keeps a slice per thread (Linux 6.12 and later). */
static int kernel_has_slices(void)
{
    return pc_cpuslice_get() > 0;
}

static void in_thread(void *(*fn)(void *))
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, NULL), 0);
    void *res = NULL;
    assert_int_equal(pthread_join(t, &res), 0);
    assert_null(res); /* a case's failure message, else NULL */
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (void *)("failed: " #cond);                                                     \
    } while (0)

static void *set_and_read_back(void *arg)
{
    (void)arg;
    long before = pc_cpuslice_get();
    CHECK(before > 0);
    CHECK(proc_slice_ns() == (long long)before * 1000);
    CHECK(pc_cpuslice_set(20000) == PC_CPUSLICE_SET);
    CHECK(pc_cpuslice_get() == 20000);
    CHECK(proc_slice_ns() == 20000000LL);
    CHECK(pc_cpuslice_set(PC_CPUSLICE_MIN_US) == PC_CPUSLICE_SET);
    CHECK(proc_slice_ns() == 100000LL);
    CHECK(pc_cpuslice_set(PC_CPUSLICE_MAX_US) == PC_CPUSLICE_SET);
    CHECK(proc_slice_ns() == 100000000LL);
    return NULL;
}

static void test_set_and_read_back(void **state)
{
    (void)state;
    if (!kernel_has_slices())
        skip();
    in_thread(set_and_read_back);
}

static void *out_of_bounds(void *arg)
{
    (void)arg;
    long long before = proc_slice_ns();
    errno = 0;
    CHECK(pc_cpuslice_set(PC_CPUSLICE_MIN_US - 1) == PC_CPUSLICE_FAILED);
    CHECK(errno == EINVAL);
    errno = 0;
    CHECK(pc_cpuslice_set(PC_CPUSLICE_MAX_US + 1) == PC_CPUSLICE_FAILED);
    CHECK(errno == EINVAL);
    CHECK(pc_cpuslice_set(0) == PC_CPUSLICE_FAILED);
    CHECK(proc_slice_ns() == before);
    return NULL;
}

static void test_out_of_bounds_changes_nothing(void **state)
{
    (void)state;
    in_thread(out_of_bounds);
}

/* A thread under nice 7 and SCHED_BATCH keeps both. */
static void *keeps_policy_and_nice(void *arg)
{
    (void)arg;
    struct sched_param sp = {0};
    CHECK(sched_setscheduler(0, SCHED_BATCH, &sp) == 0);
    pid_t tid = (pid_t)syscall(SYS_gettid);
    CHECK(setpriority(PRIO_PROCESS, (id_t)tid, 7) == 0);
    CHECK(pc_cpuslice_set(5000) == PC_CPUSLICE_SET);
    CHECK(proc_slice_ns() == 5000000LL);
    CHECK(sched_getscheduler(0) == SCHED_BATCH);
    errno = 0;
    CHECK(getpriority(PRIO_PROCESS, (id_t)tid) == 7 && errno == 0);
    return NULL;
}

static void test_keeps_policy_and_nice(void **state)
{
    (void)state;
    if (!kernel_has_slices())
        skip();
    in_thread(keeps_policy_and_nice);
}

/* SCHED_IDLE: not a thread to give a slice; left as it is. */
static void *other_policy_left_alone(void *arg)
{
    (void)arg;
    struct sched_param sp = {0};
    CHECK(sched_setscheduler(0, SCHED_IDLE, &sp) == 0);
    long long before = proc_slice_ns();
    CHECK(pc_cpuslice_set(20000) == PC_CPUSLICE_POLICY);
    CHECK(sched_getscheduler(0) == SCHED_IDLE);
    CHECK(proc_slice_ns() == before);
    return NULL;
}

static void test_other_policy_left_alone(void **state)
{
    (void)state;
    in_thread(other_policy_left_alone);
}

static void test_describe(void **state)
{
    (void)state;
    const char *seen[4];
    enum pc_cpuslice_result all[] = {PC_CPUSLICE_SET, PC_CPUSLICE_UNSUPPORTED, PC_CPUSLICE_POLICY,
                                     PC_CPUSLICE_FAILED};
    for (int i = 0; i < 4; i++) {
        seen[i] = pc_cpuslice_describe(all[i]);
        assert_non_null(seen[i]);
        assert_true(seen[i][0] != '\0');
        for (int j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_read_back),
        cmocka_unit_test(test_out_of_bounds_changes_nothing),
        cmocka_unit_test(test_keeps_policy_and_nice),
        cmocka_unit_test(test_other_policy_left_alone),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
