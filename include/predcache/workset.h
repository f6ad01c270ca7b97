/*
 * workset: the sets of workers one process runs (the one serving and, after a reload, the
 * ones finishing what they hold) and what is left of the sets gone: their counters (in
 * total, by worker index and by route name), so that /metrics counts on across reloads;
 * and the reloads themselves. main adds and removes sets; the serving set's admin reads
 * from another thread: a mutex guards the list and the figures kept (the shards of live
 * sets are read relaxed, as metrics.h says).
 */
#ifndef PREDCACHE_WORKSET_H
#define PREDCACHE_WORKSET_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"
#include "predcache/metrics.h"

struct pc_worker;
struct pc_workset;

#define PC_WORKSET_MAX 8 /* sets alive at once: the serving one and those still finishing */

/* NULL: out of memory. */
struct pc_workset *pc_workset_new(void);
void pc_workset_free(struct pc_workset *ws);

/* group[0 .. n) starts. 0 ok; -1 PC_WORKSET_MAX sets are alive. */
int pc_workset_add(struct pc_workset *ws, struct pc_worker *group, size_t n);
/* group's threads have all returned: its counters are kept and it leaves the list, after
 * which no reader touches it (it may be released). */
void pc_workset_remove(struct pc_workset *ws, struct pc_worker *group);
/* How many sets are alive. */
size_t pc_workset_alive(struct pc_workset *ws);

/*
 * For mine's /metrics: adds to sum what every other set counted (live ones: read now; gone
 * ones: kept), and to before[i] (i < n) the requests their worker i answered.
 */
void pc_workset_add_others(struct pc_workset *ws, const struct pc_worker *mine,
                           struct pc_metrics *sum, uint64_t *before, size_t n);
/* Adds to sum[r] (r < n) the figures of the route named names[r] in every other set. */
void pc_workset_add_routes(struct pc_workset *ws, const struct pc_worker *mine,
                           const char *const *names, size_t n, struct pc_route_metrics *sum);

/* A reload was tried: ok 1, applied; 0, refused (the running configuration stays). */
void pc_workset_reloaded(struct pc_workset *ws, int ok);
/* Appends predcache_config_reloads_total{result}, predcache_config_last_reload_successful
 * and predcache_config_last_reload_success_timestamp_seconds (the start counts as one). */
int pc_workset_render(struct pc_workset *ws, struct pc_buf *out);

#endif
