/* metrics: counters and latency histograms, rendered as Prometheus text. */
#include "predcache/metrics.h"

#include <string.h>

/* Upper bounds in seconds; the last bucket is +Inf. */
static const double bucket_le[PC_HIST_BUCKETS - 1] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void pc_metrics_init(struct pc_metrics *m)
{
    memset(m, 0, sizeof *m);
}

void pc_hist_observe(struct pc_hist *h, double seconds)
{
    size_t i = 0;
    while (i < PC_HIST_BUCKETS - 1 && seconds > bucket_le[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_s += seconds;
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
    /* The five request outcomes are one family with a label; the rest stand alone. */
    rc |= pc_buf_append_str(out, "# HELP predcache_requests_total Client requests by cache result\n"
                                 "# TYPE predcache_requests_total counter\n");
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"hit\"} %llu\n",
                        (unsigned long long)m->req_hit);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"miss\"} %llu\n",
                        (unsigned long long)m->req_miss);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"bypass\"} %llu\n",
                        (unsigned long long)m->req_bypass);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"partial\"} %llu\n",
                        (unsigned long long)m->req_partial);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"coalesced\"} %llu\n",
                        (unsigned long long)m->req_coalesced);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"stale\"} %llu\n",
                        (unsigned long long)m->req_stale);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"pass\"} %llu\n",
                        (unsigned long long)m->req_pass);
    rc |= pc_buf_printf(out, "predcache_requests_total{cache=\"error\"} %llu\n",
                        (unsigned long long)m->req_error);
#define PC_X(name, help)                                                                           \
    if (strncmp(#name, "req_", 4) != 0)                                                            \
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
    rc |= pc_buf_printf(out,
                        "# HELP predcache_in_flight Client requests being handled\n"
                        "# TYPE predcache_in_flight gauge\npredcache_in_flight %lld\n"
                        "# HELP predcache_store_pending Redis commands awaiting an answer\n"
                        "# TYPE predcache_store_pending gauge\npredcache_store_pending %lld\n"
                        "# HELP predcache_redis_up 1 when the Redis connection is ready\n"
                        "# TYPE predcache_redis_up gauge\npredcache_redis_up %d\n"
                        "# HELP predcache_backend_up 1 unless active health checks failed\n"
                        "# TYPE predcache_backend_up gauge\npredcache_backend_up %d\n",
                        (long long)m->in_flight, (long long)m->store_pending, m->redis_up,
                        m->backend_up);
    rc |= pc_buf_printf(out,
                        "# HELP predcache_jobs_running Async jobs held by this process\n"
                        "# TYPE predcache_jobs_running gauge\npredcache_jobs_running %lld\n",
                        (long long)m->jobs_running);
    return rc ? -1 : 0;
}
