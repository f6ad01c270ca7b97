/*
 * metrics: counters and latency histograms, rendered as Prometheus text; timers as JSON.
 * Shard writes are relaxed atomic stores of their owner thread; pc_metrics_sum reads other
 * threads' shards with relaxed atomic loads (see the header).
 */
#include "predcache/metrics.h"

#include "predcache/grpcwire.h"
#include "predcache/verify.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Upper bounds in seconds; the last bucket is +Inf. */
static const double bucket_le[PC_HIST_BUCKETS - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void pc_metrics_init(struct pc_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->started_us = pc_now_us();
}

/* Relaxed atomic access to a double (the _n built-ins take integers and pointers only). */
static double load_d(const double *p)
{
    double v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

static void store_d(double *p, double v)
{
    __atomic_store(p, &v, __ATOMIC_RELAXED);
}

void pc_hist_observe(struct pc_hist *h, double seconds)
{
    size_t i = 0;
    while (i < PC_HIST_BUCKETS - 1 && seconds > bucket_le[i])
        i++;
    PC_METRIC_INC(h->buckets[i]);
    PC_METRIC_INC(h->count);
    store_d(&h->sum_s, h->sum_s + seconds);
}

static int render_hist(struct pc_buf *out, const char *name, const char *help,
                       const struct pc_hist *h)
{
    int rc = pc_buf_printf(
        out, "# HELP predcache_%s_seconds %s\n# TYPE predcache_%s_seconds histogram\n", name, help,
        name);
    uint64_t cum = 0;
    for (size_t i = 0; i < PC_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        if (i < PC_HIST_BUCKETS - 1)
            rc |= pc_buf_printf(out, "predcache_%s_seconds_bucket{le=\"%g\"} %llu\n", name,
                                bucket_le[i], (unsigned long long)cum);
        else
            rc |= pc_buf_printf(out, "predcache_%s_seconds_bucket{le=\"+Inf\"} %llu\n", name,
                                (unsigned long long)cum);
    }
    rc |= pc_buf_printf(out, "predcache_%s_seconds_sum %.6f\npredcache_%s_seconds_count %llu\n",
                        name, h->sum_s, name, (unsigned long long)h->count);
    return rc;
}

int pc_metrics_render(const struct pc_metrics *m, struct pc_buf *out)
{
    int rc = 0;
    /* The request outcomes are one family with a label; the other counters stand alone. */
    const struct {
        const char *label;
        uint64_t value;
    } outcomes[] = {
        {"hit", m->req_hit},         {"miss", m->req_miss},           {"bypass", m->req_bypass},
        {"partial", m->req_partial}, {"coalesced", m->req_coalesced}, {"stale", m->req_stale},
        {"pass", m->req_pass},       {"error", m->req_error},
    };
    rc |= pc_buf_append_str(out, "# HELP predcache_requests_total Client requests by cache result\n"
                                 "# TYPE predcache_requests_total counter\n");
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
        rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"%s\"} %llu\n", outcomes[i].label,
                            (unsigned long long)outcomes[i].value);
#define PC_X(name, help)                                                                           \
    if (strncmp(#name, "req_", 4) != 0 && strcmp(#name, "redis_moved") != 0 &&                     \
        strcmp(#name, "redis_ask") != 0)                                                           \
        rc |= pc_buf_printf(out,                                                                   \
                            "# HELP predcache_" #name "_total " help "\n"                          \
                            "# TYPE predcache_" #name "_total counter\n"                           \
                            "predcache_" #name "_total %llu\n",                                    \
                            (unsigned long long)m->name);
    PC_COUNTERS(PC_X)
#undef PC_X
#define PC_X(name, help) rc |= render_hist(out, #name, help, &m->h_##name);
    PC_HISTOGRAMS(PC_X)
#undef PC_X
    rc |= pc_buf_append_str(out, "# HELP predcache_grpc_calls_total gRPC calls answered on the "
                                 "gRPC port, by grpc-status\n"
                                 "# TYPE predcache_grpc_calls_total counter\n");
    for (int s = 0; s < (int)(sizeof m->grpc_calls / sizeof m->grpc_calls[0]); s++)
        if (s == 0 || m->grpc_calls[s] > 0)
            rc |= pc_buf_printf(out, "predcache_grpc_calls_total{grpc_status=\"%s\"} %llu\n",
                                pc_grpc_status_name(s), (unsigned long long)m->grpc_calls[s]);
    static const char *const gcache[] = PC_GRPC_CACHE_NAMES;
    rc |= pc_buf_append_str(out, "# HELP predcache_grpc_cache_total Calls of the gRPC port's "
                                 "cached methods, by cache result\n"
                                 "# TYPE predcache_grpc_cache_total counter\n");
    for (size_t c = 0; c < sizeof gcache / sizeof gcache[0]; c++)
        rc |= pc_buf_printf(out, "predcache_grpc_cache_total{cache=\"%s\"} %llu\n", gcache[c],
                            (unsigned long long)m->grpc_cache[c]);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_in_flight Client requests being handled\n"
                        "# TYPE predcache_in_flight gauge\npredcache_in_flight %lld\n"
                        "# HELP predcache_store_pending Redis commands awaiting an answer\n"
                        "# TYPE predcache_store_pending gauge\npredcache_store_pending %lld\n"
                        "# HELP predcache_redis_up 1 when the Redis connection is ready\n"
                        "# TYPE predcache_redis_up gauge\npredcache_redis_up %d\n"
                        "# HELP predcache_backend_up 1 unless active health checks failed\n"
                        "# TYPE predcache_backend_up gauge\npredcache_backend_up %d\n"
                        "# HELP predcache_grpc_backend_up 1 unless the gRPC model server's "
                        "active health checks failed\n"
                        "# TYPE predcache_grpc_backend_up gauge\npredcache_grpc_backend_up %d\n",
                        (long long)m->in_flight, (long long)m->store_pending, m->redis_up,
                        m->backend_up, m->grpc_backend_up);
    rc |= pc_buf_append_str(out, "# HELP predcache_uncached_total Requests not answered from the "
                                 "cache (BYPASS, PASS) or whose answer was not stored, by "
                                 "reason (X-Cache-Reason)\n"
                                 "# TYPE predcache_uncached_total counter\n");
    for (size_t r = 1; r < PC_REASON_COUNT; r++)
        rc |= pc_buf_printf(out, "predcache_uncached_total{reason=\"%s\"} %llu\n",
                            pc_reason_token((enum pc_reason)r), (unsigned long long)m->uncached[r]);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_redis_redirects_total Redis Cluster redirections "
                        "received (MOVED, ASK), by kind\n"
                        "# TYPE predcache_redis_redirects_total counter\n"
                        "predcache_redis_redirects_total{kind=\"moved\"} %llu\n"
                        "predcache_redis_redirects_total{kind=\"ask\"} %llu\n",
                        (unsigned long long)m->redis_moved, (unsigned long long)m->redis_ask);
    if (m->cluster)
        rc |= pc_buf_printf(
            out,
            "# HELP predcache_redis_cluster_slots_covered Slots of 16384 with a known master\n"
            "# TYPE predcache_redis_cluster_slots_covered gauge\n"
            "predcache_redis_cluster_slots_covered %lld\n"
            "# HELP predcache_redis_cluster_masters Masters in the slot map\n"
            "# TYPE predcache_redis_cluster_masters gauge\npredcache_redis_cluster_masters %lld\n"
            "# HELP predcache_redis_cluster_masters_up Masters with a ready connection (the "
            "fewest of any worker)\n"
            "# TYPE predcache_redis_cluster_masters_up gauge\n"
            "predcache_redis_cluster_masters_up %lld\n",
            (long long)m->cluster_slots, (long long)m->cluster_masters,
            (long long)m->cluster_masters_up);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_jobs_running Async jobs held by this process\n"
                        "# TYPE predcache_jobs_running gauge\npredcache_jobs_running %lld\n",
                        (long long)m->jobs_running);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_lock_alone Workers that take no cross-process lock "
                        "now: nobody else heard on the done channel ([cache] lock = auto)\n"
                        "# TYPE predcache_lock_alone gauge\npredcache_lock_alone %lld\n",
                        (long long)m->lock_alone);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_output_buffered_bytes Answer bytes in client "
                        "connections' output buffers, not yet taken by their sockets\n"
                        "# TYPE predcache_output_buffered_bytes gauge\n"
                        "predcache_output_buffered_bytes %lld\n"
                        "# HELP predcache_backend_buffered_bytes Model server answer bytes "
                        "received by transfers in flight\n"
                        "# TYPE predcache_backend_buffered_bytes gauge\n"
                        "predcache_backend_buffered_bytes %lld\n"
                        "# HELP predcache_backend_paused Model server transfers paused until "
                        "answer bytes held for clients fall under max_output_bytes\n"
                        "# TYPE predcache_backend_paused gauge\npredcache_backend_paused %lld\n",
                        (long long)m->output_buffered, (long long)m->backend_buffered,
                        (long long)m->backend_paused);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_input_buffered_bytes Request bytes held while requests "
                        "are received and handled, process-wide\n"
                        "# TYPE predcache_input_buffered_bytes gauge\n"
                        "predcache_input_buffered_bytes %lld\n",
                        (long long)m->input_buffered);
    return rc ? -1 : 0;
}

/* ---- the sum of several shards ------------------------------------------------- */

static void hist_add(struct pc_hist *sum, const struct pc_hist *h)
{
    for (size_t i = 0; i < PC_HIST_BUCKETS; i++)
        sum->buckets[i] += PC_METRIC_GET(h->buckets[i]);
    sum->count += PC_METRIC_GET(h->count);
    sum->sum_s += load_d(&h->sum_s);
}

/* Merges timer t into sum: counts and sums add, the mean and m2 combine (Chan et al.). */
static void timer_add(struct pc_timer *sum, const struct pc_timer *t)
{
    struct pc_timer b;
    b.count = PC_METRIC_GET(t->count);
    if (b.count == 0)
        return;
    b.sum_s = load_d(&t->sum_s);
    b.mean_s = load_d(&t->mean_s);
    b.m2 = load_d(&t->m2);
    b.min_s = load_d(&t->min_s);
    b.max_s = load_d(&t->max_s);
    if (sum->count == 0) {
        sum->count = b.count;
        sum->sum_s = b.sum_s;
        sum->mean_s = b.mean_s;
        sum->m2 = b.m2;
        sum->min_s = b.min_s;
        sum->max_s = b.max_s;
    } else {
        double na = (double)sum->count, nb = (double)b.count, n = na + nb;
        double delta = b.mean_s - sum->mean_s;
        sum->mean_s += delta * nb / n;
        sum->m2 += b.m2 + delta * delta * na * nb / n;
        sum->count += b.count;
        sum->sum_s += b.sum_s;
        if (b.min_s < sum->min_s)
            sum->min_s = b.min_s;
        if (b.max_s > sum->max_s)
            sum->max_s = b.max_s;
    }
    for (size_t i = 0; i < PC_TIMER_BUCKETS; i++)
        sum->buckets[i] += PC_METRIC_GET(t->buckets[i]);
}

void pc_metrics_add(struct pc_metrics *sum, const struct pc_metrics *m)
{
#define PC_X(name, help) sum->name += PC_METRIC_GET(m->name);
    PC_COUNTERS(PC_X)
#undef PC_X
#define PC_X(name, help) hist_add(&sum->h_##name, &m->h_##name);
    PC_HISTOGRAMS(PC_X)
#undef PC_X
#define PC_X(name, stat, what) timer_add(&sum->t_##name, &m->t_##name);
    PC_TIMERS(PC_X)
#undef PC_X
    uint64_t started = PC_METRIC_GET(m->started_us);
    if (started != 0 && (sum->started_us == 0 || started < sum->started_us))
        sum->started_us = started;
    sum->in_flight += PC_METRIC_GET(m->in_flight);
    sum->store_pending += PC_METRIC_GET(m->store_pending);
    sum->jobs_running += PC_METRIC_GET(m->jobs_running);
    sum->lock_alone += PC_METRIC_GET(m->lock_alone);
    sum->output_buffered += PC_METRIC_GET(m->output_buffered);
    sum->input_buffered += PC_METRIC_GET(m->input_buffered);
    sum->backend_buffered += PC_METRIC_GET(m->backend_buffered);
    sum->backend_paused += PC_METRIC_GET(m->backend_paused);
    for (size_t r = 0; r < PC_REASON_COUNT; r++)
        sum->uncached[r] += PC_METRIC_GET(m->uncached[r]);
    for (size_t s = 0; s < sizeof sum->grpc_calls / sizeof sum->grpc_calls[0]; s++)
        sum->grpc_calls[s] += PC_METRIC_GET(m->grpc_calls[s]);
    for (size_t c = 0; c < sizeof sum->grpc_cache / sizeof sum->grpc_cache[0]; c++)
        sum->grpc_cache[c] += PC_METRIC_GET(m->grpc_cache[c]);
}

void pc_metrics_sum(struct pc_metrics *sum, const struct pc_metrics *const *shards, size_t n)
{
    memset(sum, 0, sizeof *sum);
    sum->redis_up = sum->backend_up = sum->grpc_backend_up = 1;
    for (size_t k = 0; k < n; k++) {
        const struct pc_metrics *m = shards[k];
        pc_metrics_add(sum, m);
        sum->redis_up = sum->redis_up && PC_METRIC_GET(m->redis_up);
        sum->backend_up = sum->backend_up && PC_METRIC_GET(m->backend_up);
        sum->grpc_backend_up = sum->grpc_backend_up && PC_METRIC_GET(m->grpc_backend_up);
        if (PC_METRIC_GET(m->cluster)) {
            int64_t slots = PC_METRIC_GET(m->cluster_slots);
            int64_t up = PC_METRIC_GET(m->cluster_masters_up);
            int64_t masters = PC_METRIC_GET(m->cluster_masters);
            sum->cluster_slots =
                !sum->cluster || slots < sum->cluster_slots ? slots : sum->cluster_slots;
            sum->cluster_masters_up =
                !sum->cluster || up < sum->cluster_masters_up ? up : sum->cluster_masters_up;
            sum->cluster_masters = masters > sum->cluster_masters ? masters : sum->cluster_masters;
            sum->cluster = 1;
        }
    }
}

uint64_t pc_metrics_requests(const struct pc_metrics *m)
{
    uint64_t total = 0;
#define PC_X(name, help)                                                                           \
    if (strncmp(#name, "req_", 4) == 0)                                                            \
        total += PC_METRIC_GET(m->name);
    PC_COUNTERS(PC_X)
#undef PC_X
    return total;
}

int pc_metrics_render_workers(const struct pc_metrics *const *shards, size_t n,
                              const uint64_t *before, struct pc_buf *out)
{
    int rc = pc_buf_printf(out,
                           "# HELP predcache_workers Worker threads, each with its own event loop\n"
                           "# TYPE predcache_workers gauge\npredcache_workers %zu\n"
                           "# HELP predcache_worker_requests_total Client requests answered, by "
                           "worker (all cache results)\n"
                           "# TYPE predcache_worker_requests_total counter\n",
                           n);
    for (size_t k = 0; k < n; k++) {
        uint64_t total = pc_metrics_requests(shards[k]) + (before != NULL ? before[k] : 0);
        rc |= pc_buf_printf(out, "predcache_worker_requests_total{worker=\"%zu\"} %llu\n", k,
                            (unsigned long long)total);
    }
    return rc ? -1 : 0;
}

/* ---- timers (/stats) --------------------------------------------------------------- */

static size_t timer_bucket(uint64_t us)
{
    if (us < 2 * PC_TIMER_SUB)
        return (size_t)us;
    if (us >= (UINT64_C(1) << PC_TIMER_MAX_BITS))
        return PC_TIMER_BUCKETS - 1;
    int e = 63 - __builtin_clzll(us); /* us in [2^e, 2^(e+1)), e > PC_TIMER_SUB_BITS */
    int shift = e - PC_TIMER_SUB_BITS;
    return (size_t)(2 * PC_TIMER_SUB + (e - PC_TIMER_SUB_BITS - 1) * PC_TIMER_SUB +
                    (int)((us >> shift) - PC_TIMER_SUB));
}

/* Bucket i covers [*lo, *lo + *width) microseconds. */
static void timer_bucket_range(size_t i, double *lo, double *width)
{
    if (i < 2 * PC_TIMER_SUB) {
        *lo = (double)i;
        *width = 1;
        return;
    }
    size_t k = i - 2 * PC_TIMER_SUB;
    int shift = (int)(k / PC_TIMER_SUB) + 1;
    *lo = (double)((uint64_t)(PC_TIMER_SUB + k % PC_TIMER_SUB) << shift);
    *width = (double)(UINT64_C(1) << shift);
}

void pc_timer_observe(struct pc_timer *t, double seconds)
{
    if (!(seconds >= 0)) /* negative or NaN */
        seconds = 0;
    if (seconds > PC_TIMER_LIMIT_S)
        seconds = PC_TIMER_LIMIT_S;
    /* The owner thread reads its own fields plainly; only its writes can race a reader. */
    uint64_t count = t->count + 1;
    if (count == 1 || seconds < t->min_s)
        store_d(&t->min_s, seconds);
    if (count == 1 || seconds > t->max_s)
        store_d(&t->max_s, seconds);
    PC_METRIC_SET(t->count, count);
    store_d(&t->sum_s, t->sum_s + seconds);
    double delta = seconds - t->mean_s;
    double mean = t->mean_s + delta / (double)count;
    store_d(&t->mean_s, mean);
    store_d(&t->m2, t->m2 + delta * (seconds - mean));
    /* + 1 ps: 0.003 s * 1e6 is 2999.9999999999995, still 3000 us whole */
    PC_METRIC_INC(t->buckets[timer_bucket((uint64_t)(seconds * 1e6 + 1e-6))]);
}

void pc_timer_observe_us(struct pc_timer *t, uint64_t us)
{
    pc_timer_observe(t, (double)us / 1e6);
}

double pc_timer_mean(const struct pc_timer *t)
{
    return t->count ? t->sum_s / (double)t->count : 0;
}

double pc_timer_stddev(const struct pc_timer *t)
{
    if (t->count < 2 || !(t->m2 > 0))
        return 0;
    return sqrt(t->m2 / (double)(t->count - 1));
}

double pc_timer_quantile(const struct pc_timer *t, double q)
{
    if (t->count == 0)
        return 0;
    if (!(q > 0))
        return t->min_s;
    if (q >= 1)
        return t->max_s;
    double rank = q * (double)t->count; /* observations at or below the answer */
    uint64_t before = 0;
    for (size_t i = 0; i < PC_TIMER_BUCKETS; i++) {
        uint64_t c = t->buckets[i];
        if (c == 0)
            continue;
        if ((double)(before + c) >= rank) {
            double lo, width;
            timer_bucket_range(i, &lo, &width);
            double v = (lo + width * (rank - (double)before) / (double)c) / 1e6;
            return v < t->min_s ? t->min_s : v > t->max_s ? t->max_s : v;
        }
        before += c;
    }
    return t->max_s;
}

/* A JSON number: never NaN or infinite. */
static double json_num(double v)
{
    return isfinite(v) ? v : 0;
}

static int render_timer(struct pc_buf *out, const char *name, const struct pc_timer *t,
                        double uptime_s)
{
    double rate = uptime_s > 0 ? (double)t->count / uptime_s : 0;
    return pc_buf_printf(
        out,
        "{\"name\":\"%s\",\"count\":%llu,\"meanRate\":%.6f,\"min\":%.3f,\"max\":%.3f,"
        "\"mean\":%.3f,\"median\":%.3f,\"stdDev\":%.3f,\"_75thPercentile\":%.3f,"
        "\"_95thPercentile\":%.3f,\"_98thPercentile\":%.3f,\"_99thPercentile\":%.3f,"
        "\"_999thPercentile\":%.3f}",
        name, (unsigned long long)t->count, json_num(rate), json_num(t->count ? t->min_s * 1e3 : 0),
        json_num(t->count ? t->max_s * 1e3 : 0), json_num(pc_timer_mean(t) * 1e3),
        json_num(pc_timer_quantile(t, 0.5) * 1e3), json_num(pc_timer_stddev(t) * 1e3),
        json_num(pc_timer_quantile(t, 0.75) * 1e3), json_num(pc_timer_quantile(t, 0.95) * 1e3),
        json_num(pc_timer_quantile(t, 0.98) * 1e3), json_num(pc_timer_quantile(t, 0.99) * 1e3),
        json_num(pc_timer_quantile(t, 0.999) * 1e3));
}

int pc_metrics_render_stats(const struct pc_metrics *m, uint64_t now_us, struct pc_buf *out)
{
    double uptime_s = now_us > m->started_us ? (double)(now_us - m->started_us) / 1e6 : 0;
    int rc = pc_buf_printf(out, "{\"uptime_s\":%.3f,\"timers\":[", uptime_s);
    const char *sep = "";
#define PC_X(name, stat, what)                                                                     \
    rc |= pc_buf_append_str(out, sep);                                                             \
    rc |= render_timer(out, stat, &m->t_##name, uptime_s);                                         \
    sep = ",";
    PC_TIMERS(PC_X)
#undef PC_X
    uint64_t hits = m->t_hit.count, cacheable = m->t_hit.count + m->t_miss.count;
    rc |= pc_buf_append_str(out, "],\"hit_ratio\":");
    if (cacheable == 0)
        rc |= pc_buf_append_str(out, "null");
    else
        rc |= pc_buf_printf(out, "%.6f", (double)hits / (double)cacheable);
    /* An estimate: each hit would have cost one model server call of the mean latency. */
    rc |= pc_buf_printf(out, ",\"bytes_from_cache\":%llu,\"backend_time_saved_s\":%.6f",
                        (unsigned long long)m->from_cache_bytes,
                        json_num((double)hits * pc_timer_mean(&m->t_backend)));
    /* Shadow verification: the share of compared hits the model server answered otherwise. */
    uint64_t compared = m->verify_match + m->verify_mismatch;
    rc |= pc_buf_printf(out,
                        ",\"verify\":{\"match\":%llu,\"mismatch\":%llu,\"error\":%llu,"
                        "\"skipped\":%llu,\"mismatch_rate\":",
                        (unsigned long long)m->verify_match, (unsigned long long)m->verify_mismatch,
                        (unsigned long long)m->verify_error, (unsigned long long)m->verify_skipped);
    if (compared == 0)
        rc |= pc_buf_append_str(out, "null}}");
    else
        rc |= pc_buf_printf(out, "%.6f}}", (double)m->verify_mismatch / (double)compared);
    return rc ? -1 : 0;
}

/* ---- per route ----------------------------------------------------------------------- */

void pc_route_metrics_add(struct pc_route_metrics *sum, const struct pc_route_metrics *m)
{
    for (size_t i = 0; i < PC_ROUTE_RESULTS; i++)
        sum->requests[i] += PC_METRIC_GET(m->requests[i]);
    for (size_t i = 0; i < 3; i++)
        sum->verify[i] += PC_METRIC_GET(m->verify[i]);
    hist_add(&sum->h_request, &m->h_request);
    hist_add(&sum->h_backend, &m->h_backend);
}

void pc_route_metrics_sum(struct pc_route_metrics *sum,
                          const struct pc_route_metrics *const *shards, size_t n, size_t n_routes)
{
    memset(sum, 0, n_routes * sizeof *sum);
    for (size_t k = 0; k < n; k++) {
        for (size_t r = 0; r < n_routes; r++)
            pc_route_metrics_add(&sum[r], &shards[k][r]);
    }
}

/* A label value as Prometheus reads it: backslash, quote and newline escaped. */
static int label_value(struct pc_buf *out, const char *v)
{
    int rc = 0;
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            rc |= pc_buf_append_char(out, '\\') | pc_buf_append_char(out, *v);
        else if (*v == '\n')
            rc |= pc_buf_append_str(out, "\\n");
        else
            rc |= pc_buf_append_char(out, *v);
    }
    return rc;
}

static int render_route_hist(struct pc_buf *out, const char *family, const char *route,
                             const struct pc_hist *h)
{
    int rc = 0;
    uint64_t cum = 0;
    for (size_t i = 0; i < PC_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        rc |= pc_buf_printf(out, "predcache_%s_seconds_bucket{route=\"", family);
        rc |= label_value(out, route);
        if (i < PC_HIST_BUCKETS - 1)
            rc |= pc_buf_printf(out, "\",le=\"%g\"} %llu\n", bucket_le[i], (unsigned long long)cum);
        else
            rc |= pc_buf_printf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    rc |= pc_buf_printf(out, "predcache_%s_seconds_sum{route=\"", family);
    rc |= label_value(out, route);
    rc |= pc_buf_printf(out, "\"} %.6f\npredcache_%s_seconds_count{route=\"", h->sum_s, family);
    rc |= label_value(out, route);
    rc |= pc_buf_printf(out, "\"} %llu\n", (unsigned long long)h->count);
    return rc;
}

int pc_route_metrics_render(const struct pc_route_metrics *m, const char *const *names,
                            size_t n_routes, struct pc_buf *out)
{
    static const char *const results[] = PC_ROUTE_RESULT_NAMES;
    int rc = pc_buf_append_str(out, "# HELP predcache_route_requests_total Client requests by "
                                    "route and cache result\n"
                                    "# TYPE predcache_route_requests_total counter\n");
    for (size_t r = 0; r < n_routes; r++) {
        for (size_t i = 0; i < PC_ROUTE_RESULTS; i++) {
            if (m[r].requests[i] == 0)
                continue;
            rc |= pc_buf_append_str(out, "predcache_route_requests_total{route=\"");
            rc |= label_value(out, names[r]);
            rc |= pc_buf_printf(out, "\",cache=\"%s\"} %llu\n", results[i],
                                (unsigned long long)m[r].requests[i]);
        }
    }
    static const char *const verify_results[] = PC_VERIFY_RESULT_NAMES;
    rc |= pc_buf_append_str(out, "# HELP predcache_verify_total Sampled hits checked against "
                                 "the model server, by route and result\n"
                                 "# TYPE predcache_verify_total counter\n");
    for (size_t r = 0; r < n_routes; r++) {
        for (size_t i = 0; i < 3; i++) {
            if (m[r].verify[i] == 0)
                continue;
            rc |= pc_buf_append_str(out, "predcache_verify_total{route=\"");
            rc |= label_value(out, names[r]);
            rc |= pc_buf_printf(out, "\",result=\"%s\"} %llu\n", verify_results[i],
                                (unsigned long long)m[r].verify[i]);
        }
    }
    static const struct {
        const char *family, *help;
        size_t offset;
    } hists[] = {
        {"route_request", "Time from the request's arrival to its answer, by route, seconds",
         offsetof(struct pc_route_metrics, h_request)},
        {"route_backend", "Model server latency, by route, seconds",
         offsetof(struct pc_route_metrics, h_backend)},
    };
    for (size_t k = 0; k < sizeof hists / sizeof hists[0]; k++) {
        rc |= pc_buf_printf(out,
                            "# HELP predcache_%s_seconds %s\n# TYPE predcache_%s_seconds "
                            "histogram\n",
                            hists[k].family, hists[k].help, hists[k].family);
        for (size_t r = 0; r < n_routes; r++) {
            const struct pc_hist *h =
                (const struct pc_hist *)((const char *)&m[r] + hists[k].offset);
            if (h->count > 0)
                rc |= render_route_hist(out, hists[k].family, names[r], h);
        }
    }
    return rc ? -1 : 0;
}
