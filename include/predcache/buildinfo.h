/*
 * buildinfo: what this binary is: its version and the commit it was built from (the
 * Makefile passes `git rev-parse --short=12 HEAD` to this one file, rebuilt each build;
 * "unknown" outside a git checkout). The process's own figures from /proc/self, as
 * Prometheus's process collector names them. No state.
 */
#ifndef PREDCACHE_BUILDINFO_H
#define PREDCACHE_BUILDINFO_H

#include "predcache/buf.h"

#define PC_VERSION "0.1.0"

const char *pc_build_commit(void);

/*
 * Appends predcache_build_info{version,commit} 1 and the process_* metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds) in Prometheus text. A figure /proc cannot give is left out.
 * 0 ok, -1 no memory.
 */
int pc_buildinfo_render(struct pc_buf *out);

#endif
