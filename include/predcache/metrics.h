/*
 * metrics: counters, a gauge and latency histograms of one worker, rendered as
 * Prometheus text. Declared once as X-macros. Owns only its numbers.
 */
#ifndef PREDCACHE_METRICS_H
#define PREDCACHE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"

/* name, help */
#define PC_COUNTERS(X)                                                                             \
    X(req_hit, "Requests answered from the cache")                                                 \
    X(req_miss, "Cacheable requests forwarded after a cache miss")                                 \
    X(req_bypass, "Cacheable requests forwarded because Redis was unavailable")                    \
    X(req_partial, "Batches answered partly from the cache, partly by the model server")           \
    X(req_coalesced, "Misses answered by waiting for the same key's model server call")            \
    X(req_stale, "Requests answered with an entry past its TTL (grace), refreshed behind")         \
    X(refresh_ok, "Stale entries refreshed in the background")                                     \
    X(refresh_failed, "Background refreshes that failed or could not be stored")                   \
    X(backend_refused, "Requests answered 503 at once: model server down or too busy")             \
    X(store_dropped, "Results not stored because too many stores were pending")                    \
    X(lock_waits, "Misses that waited for another predcache process's model server call")          \
    X(lock_timeouts, "Such waits that ran out (lock_timeout_ms) before an answer was announced")   \
    X(instances_hit, "Batch instances answered from the cache")                                    \
    X(instances_miss, "Batch instances sent to the model server")                                  \
    X(req_pass, "Requests on routes that are not cached, forwarded unchanged")                     \
    X(req_error, "Requests answered with an error by predcache itself")                            \
    X(backend_requests, "Requests sent to the model server")                                       \
    X(backend_errors, "Model server transfers that failed (connect, timeout, protocol)")           \
    X(redis_get_ok, "Redis GETs answered (hit or miss)")                                           \
    X(redis_get_failed, "Redis GETs failed or timed out")                                          \
    X(redis_reconnects, "Redis connection attempts")                                               \
    X(store_ok, "Results stored in Redis")                                                         \
    X(store_failed, "Result stores that Redis refused, timed out or could not take")               \
    X(store_skipped, "Results not stored: not 2xx, too large, no-store")                           \
    X(bytes_from_cache, "Body bytes answered from the cache")                                      \
    X(jobs_submitted, "Async jobs accepted (202)")                                                 \
    X(jobs_rejected, "Async job submits refused: queue full (429) or Redis unavailable (503)")     \
    X(jobs_polled, "Job status requests (GET /jobs/<id>, GET /job/<id>)")                          \
    X(jobs_done, "Async jobs this process finished with a 2xx answer")                             \
    X(jobs_failed, "Async jobs this process finished with an error answer")                        \
    X(jobs_reclaimed, "Async jobs taken over after claim_after_ms unrenewed (XAUTOCLAIM)")         \
    X(jobs_released, "Async jobs handed back unfinished on shutdown, for another process")

/* name, help */
#define PC_HISTOGRAMS(X)                                                                           \
    X(request, "Time from the request's arrival to its answer, seconds")                           \
    X(backend, "Model server latency, seconds")                                                    \
    X(redis_get, "Redis GET latency, seconds")                                                     \
    X(redis_set, "Redis SET latency, seconds")

#define PC_HIST_BUCKETS 15 /* upper bounds in metrics.c, the last is +Inf */

struct pc_hist {
    uint64_t buckets[PC_HIST_BUCKETS]; /* non-cumulative */
    uint64_t count;
    double sum_s;
};

struct pc_metrics {
#define PC_X(name, help) uint64_t name;
    PC_COUNTERS(PC_X)
#undef PC_X
#define PC_X(name, help) struct pc_hist h_##name;
    PC_HISTOGRAMS(PC_X)
#undef PC_X
    int64_t in_flight; /* client requests being handled */
    int64_t store_pending;
    int64_t jobs_running; /* async jobs held by this process's consumer */
    int redis_up;
    int backend_up; /* from the active health checks (1 when they are off) */
};

void pc_metrics_init(struct pc_metrics *m);
void pc_hist_observe(struct pc_hist *h, double seconds);
/* Appends the Prometheus text exposition of m to out. */
int pc_metrics_render(const struct pc_metrics *m, struct pc_buf *out);

#endif
