/*
 * metrics: counters, gauges and latency histograms of one worker (its shard), the sum of
 * several shards, rendered as Prometheus text, and latency timers rendered as JSON for
 * the admin /stats. Declared once as X-macros. Owns only its numbers; reads the clock
 * only in pc_metrics_init.
 *
 * Threads: a shard is written only by its own worker's thread, and read by worker 0's
 * admin (pc_metrics_sum) from another thread. Every write goes through PC_METRIC_* or
 * the observe functions: a relaxed atomic load and store, which is a plain mov on x86-64
 * and arm64 (no lock prefix, no fence: with one writer no read-modify-write atomicity is
 * needed). Readers load relaxed. So each number is read whole and no access is a data
 * race; a scrape may see an observation in one field and not yet in the next.
 */
#ifndef PREDCACHE_METRICS_H
#define PREDCACHE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"
#include "predcache/reason.h"

/* Owner-thread updates of one shard field (see above). */
#define PC_METRIC_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define PC_METRIC_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define PC_METRIC_ADD(field, n) PC_METRIC_SET((field), PC_METRIC_GET(field) + (n))
#define PC_METRIC_INC(field) PC_METRIC_ADD((field), 1)
#define PC_METRIC_DEC(field) PC_METRIC_ADD((field), -1)

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
    X(lock_skipped, "Misses that took no cross-process lock: no other worker or process heard")    \
    X(instances_hit, "Batch instances answered from the cache")                                    \
    X(instances_miss, "Batch instances sent to the model server")                                  \
    X(req_pass, "Requests forwarded without the cache: route not cached, or request uncacheable")  \
    X(req_error, "Requests answered with an error by predcache itself")                            \
    X(backend_requests, "Requests sent to the model server")                                       \
    X(backend_errors, "Model server transfers that failed (connect, timeout, protocol)")           \
    X(redis_get_ok, "Redis GETs answered (hit or miss)")                                           \
    X(redis_get_failed, "Redis GETs failed or timed out")                                          \
    X(redis_reconnects, "Redis connection attempts")                                               \
    X(redis_desyncs, "Redis replies not for the oldest command sent (the connection is dropped)")  \
    X(redis_moved, "Redis Cluster MOVED replies (each followed, at most 5 times a command)")       \
    X(redis_ask, "Redis Cluster ASK replies (each followed, at most 5 times a command)")           \
    X(redis_cluster_refreshes, "Redis Cluster slot maps read (CLUSTER SLOTS answered)")            \
    X(store_ok, "Results stored in Redis")                                                         \
    X(store_failed, "Result stores that Redis refused, timed out or could not take")               \
    X(store_skipped, "Results not stored: not 2xx, too large, no-store")                           \
    X(from_cache_bytes, "Body bytes answered from the cache")                                      \
    X(jobs_submitted, "Async jobs accepted (202)")                                                 \
    X(jobs_rejected, "Async job submits refused: queue full (429) or Redis unavailable (503)")     \
    X(jobs_polled, "Job status requests (GET /jobs/<id>, GET /job/<id>)")                          \
    X(jobs_done, "Async jobs this process finished with a 2xx answer")                             \
    X(jobs_failed, "Async jobs this process finished with an error answer")                        \
    X(jobs_reclaimed, "Async jobs taken over after claim_after_ms unrenewed (XAUTOCLAIM)")         \
    X(jobs_released, "Async jobs handed back unfinished on shutdown, for another process")         \
    X(invalidations, "Invalidations by model, version or namespace (POST /cache/invalidate)")      \
    X(l1_hits, "Requests answered from the in-process tier without asking Redis")                  \
    X(l1_refreshes, "In-process tier entries read again from Redis before they expired")           \
    X(key_memo_hits, "Requests keyed from the key memo, their body not read again")                \
    X(key_memo_misses, "Cacheable requests whose keys were derived from their body")               \
    X(verify_match, "Sampled hits the model server answered the same way (shadow verification)")   \
    X(verify_mismatch, "Sampled hits the model server answered differently")                       \
    X(verify_error, "Sampled hits whose check failed: model server error, timeout or 5xx")         \
    X(verify_skipped, "Sampled hits not checked: model server down or busy, or no memory")         \
    X(answers_queued, "Answers the client's socket did not take at once (slow or stalled "         \
                      "readers)")                                                                  \
    X(answers_held, "Answers made while a read was handled, held to be written together with "     \
                    "the others the loop made before it next waited")                              \
    X(answer_flushes, "Writes of held answers together (answers_held over this: answers a "        \
                      "write)")                                                                    \
    X(clients_stalled, "Client connections closed because they read none of their answer for "     \
                       "idle_timeout_ms")                                                          \
    X(connections_refused, "Client connections refused with 503 at once: past max_connections, "   \
                           "or no file descriptor left (open-file limit)")                         \
    X(input_pauses, "Times a client connection stopped reading its request because request "       \
                    "bytes held were over max_input_bytes")                                        \
    X(answers_shed, "Answers refused with 503 because answer bytes held for clients were over "    \
                    "max_output_bytes")                                                            \
    X(backend_pauses, "Times a model server transfer was paused because answer bytes held for "    \
                      "clients were over max_output_bytes, or a streamed answer's client had "     \
                      "256 KB unread")

/* The cache results of the gRPC port's cached methods, as grpc_cache[] counts them. */
#define PC_GRPC_CACHE_NAMES                                                                        \
    {                                                                                              \
        "HIT", "MISS", "COALESCED", "BYPASS", "PASS", "ERROR"                                      \
    }

/* name, help */
#define PC_HISTOGRAMS(X)                                                                           \
    X(request, "Time from the request's arrival to its answer, seconds")                           \
    X(backend, "Model server latency, seconds")                                                    \
    X(redis_get, "Redis GET latency, seconds")                                                     \
    X(redis_set, "Redis SET latency, seconds")

#define PC_HIST_BUCKETS 15 /* upper bounds in metrics.c, the last is +Inf */

/* name, name in /stats, what it times */
#define PC_TIMERS(X)                                                                               \
    X(request, "predcache.request", "data-port requests, arrival to answer")                       \
    X(hit, "predcache.hit", "answers from the cache (HIT)")                                        \
    X(miss, "predcache.miss", "cacheable answers from the model server (MISS, BYPASS, ...)")       \
    X(backend, "predcache.backend", "model server calls")                                          \
    X(redis_get, "predcache.redis.get", "answered Redis GETs")                                     \
    X(redis_set, "predcache.redis.set", "successful Redis SETs")

/*
 * Timer histogram: log-linear (HDR-style) buckets over whole microseconds. Below
 * 2 * PC_TIMER_SUB us every microsecond has its own bucket; above, each doubling
 * [2^e, 2^(e+1)) is cut into PC_TIMER_SUB equal buckets, so a bucket is at most 1/32
 * (3.1 %) of the values in it wide. Values of 2^PC_TIMER_MAX_BITS us (134 s) and more
 * count in the last bucket.
 */
#define PC_TIMER_SUB_BITS 5
#define PC_TIMER_SUB (1 << PC_TIMER_SUB_BITS)
#define PC_TIMER_MAX_BITS 27
#define PC_TIMER_BUCKETS                                                                           \
    (2 * PC_TIMER_SUB + (PC_TIMER_MAX_BITS - PC_TIMER_SUB_BITS - 1) * PC_TIMER_SUB)
/* Observations are clamped into [0, PC_TIMER_LIMIT_S] (NaN counts as 0). */
#define PC_TIMER_LIMIT_S 1e6

struct pc_timer {
    uint64_t count;
    double sum_s;
    double mean_s; /* running mean and sum of squared deviations (Welford), for stdDev */
    double m2;
    double min_s;
    double max_s;
    uint64_t buckets[PC_TIMER_BUCKETS];
};

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
#define PC_X(name, stat, what) struct pc_timer t_##name;
    PC_TIMERS(PC_X)
#undef PC_X
    uint64_t started_us; /* pc_now_us() at pc_metrics_init: /stats rates and uptime */
    int64_t in_flight;   /* client requests being handled */
    int64_t store_pending;
    int64_t jobs_running; /* async jobs held by this process's consumer */
    int64_t lock_alone;   /* 1: this worker skips the cross-process lock now (peers.h) */
    /* The output budget (budget.h), this worker's share: answer bytes in its clients' output
     * buffers, model server answer bytes its transfers received, its transfers paused. */
    int64_t output_buffered;
    int64_t backend_buffered;
    int64_t backend_paused;
    int64_t input_buffered; /* the input budget's figure, this worker's share */
    /* Requests answered with a reason (reason.h), by reason: X-Cache BYPASS, PASS, or a MISS
     * not stored. Index 0 (NONE) unused. */
    uint64_t uncached[PC_REASON_COUNT];
    /* gRPC calls answered, by grpc-status (0 OK .. 16 UNAUTHENTICATED), and the cached
     * methods' calls by cache result (PC_GRPC_CACHE_NAMES). */
    uint64_t grpc_calls[17];
    uint64_t grpc_cache[6];
    int redis_up;
    int backend_up;      /* from the active health checks (1 when they are off) */
    int grpc_backend_up; /* the gRPC model server's ([backend] grpc_health_path) */
    /* [redis] cluster = on (cluster 1): slots with a known master, masters, masters with a
     * ready connection. Summed as the weakest shard (min; masters: max). */
    int cluster;
    int64_t cluster_slots;
    int64_t cluster_masters;
    int64_t cluster_masters_up;
};

/*
 * Per route: one entry per route of the table plus one (index 0) for requests that match
 * none. Results are indexed like the proxy's (hit, miss, bypass, pass, error, partial,
 * coalesced, stale: PC_ROUTE_RESULT_NAMES).
 */
#define PC_ROUTE_RESULTS 8
#define PC_ROUTE_RESULT_NAMES                                                                      \
    {                                                                                              \
        "hit", "miss", "bypass", "pass", "error", "partial", "coalesced", "stale"                  \
    }
struct pc_route_metrics {
    uint64_t requests[PC_ROUTE_RESULTS];
    uint64_t verify[3];       /* shadow verification, by enum pc_verify_result (verify.h) */
    struct pc_hist h_request; /* arrival to answer */
    struct pc_hist h_backend; /* model server calls */
};
/* *sum += *m, read relaxed. */
void pc_route_metrics_add(struct pc_route_metrics *sum, const struct pc_route_metrics *m);
/* sum[r] = the sum over n shards (arrays of n_routes entries each), read relaxed. */
void pc_route_metrics_sum(struct pc_route_metrics *sum,
                          const struct pc_route_metrics *const *shards, size_t n, size_t n_routes);
/* Appends predcache_route_requests_total{route,cache}, predcache_verify_total{route,result}
 * and the route histograms;
 * names[r] labels entry r. */
int pc_route_metrics_render(const struct pc_route_metrics *m, const char *const *names,
                            size_t n_routes, struct pc_buf *out);

void pc_metrics_init(struct pc_metrics *m);
void pc_hist_observe(struct pc_hist *h, double seconds);
/*
 * Fills sum (a plain struct of the caller's) with n >= 1 shards, each read with relaxed
 * atomic loads: counters, histograms, timers and the gauges in_flight, store_pending,
 * jobs_running, lock_alone, output_buffered, backend_buffered, backend_paused and input_buffered
 * add up; redis_up, backend_up and grpc_backend_up are 1 only when they are 1 in every shard;
 * started_us is the earliest. Timers merge exactly (mean and variance by Chan's formula), so that
 * one shard sums to itself.
 */
void pc_metrics_sum(struct pc_metrics *sum, const struct pc_metrics *const *shards, size_t n);
/* Adds m's counters, histograms, timers, reasons and additive gauges (in_flight, ...) to sum,
 * and keeps the earlier started_us; the up gauges and the cluster's are left alone (the
 * workers of a reload that are going away do not speak for Redis or the model server). */
void pc_metrics_add(struct pc_metrics *sum, const struct pc_metrics *m);
/* The requests m answered, all cache results. */
uint64_t pc_metrics_requests(const struct pc_metrics *m);
/* Appends the Prometheus text exposition of m to out. */
int pc_metrics_render(const struct pc_metrics *m, struct pc_buf *out);
/* Appends predcache_workers (n) and each shard's requests, labelled worker="i", plus
 * before[i] (NULL: none): what worker i's predecessors answered before a reload. */
int pc_metrics_render_workers(const struct pc_metrics *const *shards, size_t n,
                              const uint64_t *before, struct pc_buf *out);

/* One observation, in seconds or in microseconds. No allocation. */
void pc_timer_observe(struct pc_timer *t, double seconds);
void pc_timer_observe_us(struct pc_timer *t, uint64_t us);
/*
 * The q-quantile (0 <= q <= 1) in seconds, interpolated linearly inside its bucket and
 * kept within [min, max]: off from the exact sample quantile by at most one bucket
 * (3.1 % of the value above 64 us, 1 us below). 0 when the timer is empty.
 */
double pc_timer_quantile(const struct pc_timer *t, double q);
double pc_timer_mean(const struct pc_timer *t);   /* seconds; 0 when empty */
double pc_timer_stddev(const struct pc_timer *t); /* sample (n - 1) stdDev; 0 below 2 */
/* Appends the /stats JSON of m to out; now_us is pc_now_us() (m->started_us's clock). */
int pc_metrics_render_stats(const struct pc_metrics *m, uint64_t now_us, struct pc_buf *out);

#endif
