/*
 * buildinfo: the binary's version and commit, and the process's figures (see the header).
 */
#include "predcache/buildinfo.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef PC_COMMIT
#define PC_COMMIT "unknown"
#endif

const char *pc_build_commit(void)
{
    return PC_COMMIT;
}

/* Fields 14, 15 (utime, stime: clock ticks), 22 (starttime: ticks after boot), 23 (vsize:
 * bytes) and 24 (rss: pages) of /proc/self/stat. 0 ok. */
static int read_stat(unsigned long long *ticks, unsigned long long *start,
                     unsigned long long *vsize, long long *rss_pages)
{
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (p == NULL)
        return -1;
    unsigned long long utime, stime;
    /* after ")": state (3), then fields 4.. */
    if (sscanf(p + 1,
               " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
               "%llu %llu %lld",
               &utime, &stime, start, vsize, rss_pages) != 5)
        return -1;
    *ticks = utime + stime;
    return 0;
}

/* Seconds since the epoch at boot (/proc/stat btime), or -1. */
static long long boot_time(void)
{
    char line[256];
    long long btime = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "btime %lld", &btime) == 1)
            break;
    }
    fclose(f);
    return btime;
}

static long long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

int pc_buildinfo_render(struct pc_buf *out)
{
    int rc = pc_buf_printf(out,
                           "# HELP predcache_build_info The version and commit of this binary\n"
                           "# TYPE predcache_build_info gauge\n"
                           "predcache_build_info{version=\"%s\",commit=\"%s\"} 1\n",
                           PC_VERSION, PC_COMMIT);
    unsigned long long ticks, start, vsize;
    long long rss_pages;
    long hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (hz > 0 && page > 0 && read_stat(&ticks, &start, &vsize, &rss_pages) == 0) {
        rc |= pc_buf_printf(out,
                            "# HELP process_cpu_seconds_total User and system CPU time spent\n"
                            "# TYPE process_cpu_seconds_total counter\n"
                            "process_cpu_seconds_total %.2f\n"
                            "# HELP process_resident_memory_bytes Resident memory size\n"
                            "# TYPE process_resident_memory_bytes gauge\n"
                            "process_resident_memory_bytes %lld\n"
                            "# HELP process_virtual_memory_bytes Virtual memory size\n"
                            "# TYPE process_virtual_memory_bytes gauge\n"
                            "process_virtual_memory_bytes %llu\n",
                            (double)ticks / (double)hz, rss_pages * (long long)page, vsize);
        long long boot = boot_time();
        if (boot >= 0)
            rc |= pc_buf_printf(out,
                                "# HELP process_start_time_seconds Start time of the process "
                                "since the epoch\n"
                                "# TYPE process_start_time_seconds gauge\n"
                                "process_start_time_seconds %.2f\n",
                                (double)boot + (double)start / (double)hz);
    }
    long long fds = open_fds();
    struct rlimit rl;
    if (fds >= 0)
        rc |= pc_buf_printf(out,
                            "# HELP process_open_fds Open file descriptors\n"
                            "# TYPE process_open_fds gauge\n"
                            "process_open_fds %lld\n",
                            fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        rc |= pc_buf_printf(out,
                            "# HELP process_max_fds Most open file descriptors allowed\n"
                            "# TYPE process_max_fds gauge\n"
                            "process_max_fds %llu\n",
                            (unsigned long long)rl.rlim_cur);
    return rc != 0 ? -1 : 0;
}
