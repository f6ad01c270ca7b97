/* Unit tests of metrics' timers: the /stats percentiles, moments and JSON; shard sums. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/buf.h"
#include "predcache/metrics.h"

/* The documented bound: one bucket, at most 1/32 of the value above 64 us, 1 us below. */
#define REL_ERR (1.0 / PC_TIMER_SUB)

static struct pc_timer *timer_new(void)
{
    struct pc_timer *t = calloc(1, sizeof *t);
    assert_non_null(t);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The exact q-quantile of a sorted sample, by the same rank rule (ceil(q * n)-th value). */
static double exact_quantile(const double *sorted, size_t n, double q)
{
    size_t k = (size_t)ceil(q * (double)n);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return sorted[k - 1];
}

static const double qs[] = {0.5, 0.75, 0.95, 0.98, 0.99, 0.999};

/* Feeds the sample, checks every quantile against the exact one; returns the worst error. */
static double check_sample(double *v, size_t n)
{
    struct pc_timer *t = timer_new();
    for (size_t i = 0; i < n; i++)
        pc_timer_observe(t, v[i]);
    qsort(v, n, sizeof *v, cmp_double);
    double worst = 0;
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double exact = exact_quantile(v, n, qs[i]);
        double got = pc_timer_quantile(t, qs[i]);
        double err = fabs(got - exact);
        double bound = exact * REL_ERR + 1e-6 + 1e-12;
        if (err > bound)
            fail_msg("q %.3f: got %.9f s, exact %.9f s (bound %.9f)", qs[i], got, exact, bound);
        if (exact > 0 && err / exact > worst)
            worst = err / exact;
    }
    free(t);
    return worst;
}

static void test_uniform_1_to_1000_ms(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    for (int ms = 1; ms <= 1000; ms++)
        pc_timer_observe_us(t, (uint64_t)ms * 1000);
    assert_int_equal(t->count, 1000);
    assert_true(fabs(t->min_s - 0.001) < 1e-12);
    assert_true(fabs(t->max_s - 1.0) < 1e-12);
    assert_true(fabs(pc_timer_mean(t) - 0.5005) < 1e-9);
    /* sample stdDev of 1..1000 ms: sqrt(1000 * 1001 / 12) ms */
    assert_true(fabs(pc_timer_stddev(t) - sqrt(1000.0 * 1001.0 / 12.0) / 1e3) < 1e-9);
    double med = pc_timer_quantile(t, 0.5), p99 = pc_timer_quantile(t, 0.99);
    assert_true(fabs(med - 0.5) <= 0.5 * REL_ERR);
    assert_true(fabs(p99 - 0.99) <= 0.99 * REL_ERR);
    assert_true(fabs(pc_timer_quantile(t, 0.75) - 0.75) <= 0.75 * REL_ERR);
    assert_true(fabs(pc_timer_quantile(t, 0.999) - 0.999) <= 0.999 * REL_ERR);
    print_message("uniform 1..1000 ms: median %.3f ms (%.2f %%), p99 %.3f ms (%.2f %%)\n",
                  med * 1e3, fabs(med - 0.5) / 0.5 * 100, p99 * 1e3, fabs(p99 - 0.99) / 0.99 * 100);
    free(t);
}

/* Quantiles stay within the documented error on several shapes, from us to seconds. */
static void test_error_bound_distributions(void **state)
{
    (void)state;
    enum { N = 100000 };
    double *v = malloc(N * sizeof *v);
    assert_non_null(v);
    srand(12345);
    double worst = 0, w;
    for (size_t i = 0; i < N; i++) /* uniform 0..10 ms */
        v[i] = 0.01 * rand() / (double)RAND_MAX;
    w = check_sample(v, N);
    print_message("uniform 0..10 ms: worst relative error %.3f %%\n", w * 100);
    worst = fmax(worst, w);
    for (size_t i = 0; i < N; i++) /* log-uniform 10 us .. 10 s */
        v[i] = 1e-5 * pow(1e6, rand() / (double)RAND_MAX);
    w = check_sample(v, N);
    print_message("log-uniform 10 us..10 s: worst relative error %.3f %%\n", w * 100);
    worst = fmax(worst, w);
    for (size_t i = 0; i < N; i++) /* exponential, mean 20 ms (a long tail) */
        v[i] = -0.02 * log((rand() + 1.0) / ((double)RAND_MAX + 2.0));
    w = check_sample(v, N);
    print_message("exponential mean 20 ms: worst relative error %.3f %%\n", w * 100);
    worst = fmax(worst, w);
    for (size_t i = 0; i < N; i++) /* two modes: cache hits ~0.3 ms, misses ~80 ms */
        v[i] = (i % 4 ? 0.0003 : 0.08) * (0.8 + 0.4 * rand() / (double)RAND_MAX);
    w = check_sample(v, N);
    print_message("bimodal 0.3 ms / 80 ms: worst relative error %.3f %%\n", w * 100);
    worst = fmax(worst, w);
    assert_true(worst <= REL_ERR);
    free(v);
}

static void test_empty(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    assert_int_equal(t->count, 0);
    assert_true(pc_timer_mean(t) == 0);
    assert_true(pc_timer_stddev(t) == 0);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        assert_true(pc_timer_quantile(t, qs[i]) == 0);
    free(t);
}

static void test_single_value(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    pc_timer_observe(t, 0.0123);
    assert_int_equal(t->count, 1);
    assert_true(t->min_s == 0.0123 && t->max_s == 0.0123);
    assert_true(fabs(pc_timer_mean(t) - 0.0123) < 1e-15);
    assert_true(pc_timer_stddev(t) == 0);
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) /* kept within [min, max] */
        assert_true(pc_timer_quantile(t, qs[i]) == 0.0123);
    free(t);
}

static void test_constant_values_stddev_zero(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    for (int i = 0; i < 100000; i++)
        pc_timer_observe(t, 0.1);
    assert_true(pc_timer_stddev(t) < 1e-9);
    assert_true(fabs(pc_timer_mean(t) - 0.1) < 1e-9);
    assert_true(pc_timer_quantile(t, 0.5) == 0.1 && pc_timer_quantile(t, 0.999) == 0.1);
    free(t);
}

static void test_tiny_huge_and_invalid_values(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    pc_timer_observe(t, 1e-9); /* below 1 us: first bucket */
    pc_timer_observe(t, -5);   /* counts as 0 */
    pc_timer_observe(t, NAN);  /* counts as 0 */
    pc_timer_observe(t, 1e300);
    pc_timer_observe(t, INFINITY);
    pc_timer_observe(t, 500.0); /* above 134 s: last bucket */
    assert_int_equal(t->count, 6);
    assert_true(t->min_s == 0);
    assert_true(t->max_s == PC_TIMER_LIMIT_S);
    assert_true(isfinite(pc_timer_mean(t)) && isfinite(pc_timer_stddev(t)));
    uint64_t total = 0;
    for (size_t i = 0; i < PC_TIMER_BUCKETS; i++)
        total += t->buckets[i];
    assert_int_equal(total, 6);
    assert_int_equal(t->buckets[0], 3);
    assert_int_equal(t->buckets[PC_TIMER_BUCKETS - 1], 3);
    double prev = 0;
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double q = pc_timer_quantile(t, qs[i]);
        assert_true(isfinite(q) && q >= t->min_s && q <= t->max_s && q >= prev);
        prev = q;
    }
    free(t);

    t = timer_new();
    pc_timer_observe(t, 1e-7);
    assert_true(pc_timer_quantile(t, 0.5) == 1e-7); /* a single value stays exact */
    pc_timer_observe(t, 3e-7);
    double med = pc_timer_quantile(t, 0.5);
    assert_true(med >= 1e-7 && med <= 3e-7);
    free(t);
}

/* Bucket edges: a value's quantile stays inside its bucket, whole microseconds included. */
static void test_bucket_edges(void **state)
{
    (void)state;
    struct pc_timer *t = timer_new();
    const double top = (double)(UINT64_C(1) << PC_TIMER_MAX_BITS) / 1e6;
    for (uint64_t us = 2; us < (UINT64_C(1) << PC_TIMER_MAX_BITS); us = us * 9 / 8 + 1) {
        for (int d = -1; d <= 1; d++) {
            memset(t, 0, sizeof *t);
            double s = (double)(us + (uint64_t)d) / 1e6 + (d == 1 ? -5e-8 : 0);
            pc_timer_observe(t, 0); /* min and max away from the value: no clamping */
            pc_timer_observe(t, 0);
            pc_timer_observe(t, s);
            pc_timer_observe(t, top);
            pc_timer_observe(t, top);
            double q = pc_timer_quantile(t, 0.5); /* rank 2.5 of 5: the middle of s's bucket */
            double bound = s * REL_ERR > 1e-6 ? s * REL_ERR : 1e-6;
            if (fabs(q - s) > bound)
                fail_msg("value %.9f s: quantile %.9f s", s, q);
        }
    }
    /* A wide sample to exercise quantile interpolation across every bucket. */
    memset(t, 0, sizeof *t);
    for (uint64_t us = 0; us < (UINT64_C(1) << PC_TIMER_MAX_BITS); us += 997)
        pc_timer_observe_us(t, us);
    double prev = 0;
    for (int i = 1; i < 1000; i++) {
        double q = pc_timer_quantile(t, i / 1000.0);
        assert_true(q >= prev);
        prev = q;
    }
    free(t);
}

/* Checks that the JSON holds key followed by a number; returns it. */
static double json_number(const char *doc, const char *from, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(from ? from : doc, pat);
    assert_non_null(p);
    char *end;
    double v = strtod(p + strlen(pat), &end);
    assert_true(end > p + strlen(pat));
    assert_true(*end == ',' || *end == '}');
    return v;
}

static void test_render_stats(void **state)
{
    (void)state;
    struct pc_metrics *m = calloc(1, sizeof *m);
    assert_non_null(m);
    pc_metrics_init(m);
    struct pc_buf b;
    pc_buf_init(&b);
    /* nothing observed: every number 0, hit_ratio null */
    assert_int_equal(pc_metrics_render_stats(m, m->started_us, &b), 0);
    assert_non_null(strstr(b.data, "\"hit_ratio\":null"));
    assert_null(strstr(b.data, "nan"));
    assert_null(strstr(b.data, "inf"));
    assert_true(json_number(b.data, NULL, "uptime_s") == 0);
    assert_true(json_number(b.data, NULL, "backend_time_saved_s") == 0);

    pc_timer_observe(&m->t_hit, 0.001);
    pc_timer_observe(&m->t_hit, 0.003);
    pc_timer_observe(&m->t_miss, 0.050);
    pc_timer_observe(&m->t_backend, 0.040);
    pc_timer_observe(&m->t_backend, 0.060);
    m->from_cache_bytes = 1234;
    b.len = 0;
    assert_int_equal(pc_metrics_render_stats(m, m->started_us + 2000000, &b), 0);
    const char *doc = b.data;
    assert_true(doc[0] == '{' && doc[b.len - 1] == '}');
    assert_true(json_number(doc, NULL, "uptime_s") == 2.0);
    assert_true(fabs(json_number(doc, NULL, "hit_ratio") - 2.0 / 3.0) < 1e-6);
    assert_true(json_number(doc, NULL, "bytes_from_cache") == 1234);
    /* 2 hits x 50 ms mean backend latency */
    assert_true(fabs(json_number(doc, NULL, "backend_time_saved_s") - 0.1) < 1e-6);
    const char *names[] = {"predcache.request", "predcache.hit",       "predcache.miss",
                           "predcache.backend", "predcache.redis.get", "predcache.redis.set"};
    for (size_t i = 0; i < 6; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "{\"name\":\"%s\"", names[i]);
        assert_non_null(strstr(doc, pat));
    }
    const char *hit = strstr(doc, "\"name\":\"predcache.hit\"");
    assert_true(json_number(doc, hit, "count") == 2);
    assert_true(json_number(doc, hit, "meanRate") == 1.0);
    assert_true(json_number(doc, hit, "min") == 1.0);
    assert_true(json_number(doc, hit, "max") == 3.0);
    assert_true(json_number(doc, hit, "mean") == 2.0);
    assert_true(fabs(json_number(doc, hit, "stdDev") - sqrt(2.0)) < 1e-3);
    const char *fields[] = {"min",
                            "median",
                            "_75thPercentile",
                            "_95thPercentile",
                            "_98thPercentile",
                            "_99thPercentile",
                            "_999thPercentile",
                            "max"};
    double prev = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        double v = json_number(doc, hit, fields[i]);
        assert_true(v >= prev);
        prev = v;
    }
    pc_buf_release(&b);
    free(m);
}

/* Observations split over three shards sum to what one shard holding all of them shows. */
static void test_sum_of_shards(void **state)
{
    (void)state;
    struct pc_metrics *all = calloc(1, sizeof *all), *sum = calloc(1, sizeof *sum);
    struct pc_metrics *sh = calloc(3, sizeof *sh);
    assert_true(all != NULL && sum != NULL && sh != NULL);
    pc_metrics_init(all);
    for (int k = 0; k < 3; k++)
        pc_metrics_init(&sh[k]);
    const struct pc_metrics *shards[3] = {&sh[0], &sh[1], &sh[2]};
    uint64_t seed = 42;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        double v = 1e-5 * exp((double)(seed >> 11) / 9007199254740992.0 * 13.8); /* 10 us..10 s */
        struct pc_metrics *m = &sh[i % 7 == 0 ? 0 : i % 2 + 1];                  /* uneven shares */
        pc_timer_observe(&m->t_request, v);
        pc_timer_observe(&all->t_request, v);
        pc_hist_observe(&m->h_request, v);
        pc_hist_observe(&all->h_request, v);
        PC_METRIC_INC(m->req_hit);
        PC_METRIC_INC(all->req_hit);
    }
    PC_METRIC_SET(sh[1].in_flight, 3);
    PC_METRIC_SET(sh[2].in_flight, 4);
    sh[0].redis_up = sh[1].redis_up = sh[2].redis_up = 1;
    sh[0].backend_up = sh[2].backend_up = 1; /* shard 1's health checks say down */

    pc_metrics_sum(sum, shards, 3);
    assert_int_equal(sum->req_hit, 3000);
    assert_int_equal(sum->in_flight, 7);
    assert_int_equal(sum->redis_up, 1);
    assert_int_equal(sum->backend_up, 0);
    assert_int_equal(sum->h_request.count, 3000);
    assert_memory_equal(sum->h_request.buckets, all->h_request.buckets,
                        sizeof all->h_request.buckets);
    const struct pc_timer *a = &all->t_request, *t = &sum->t_request;
    assert_int_equal(t->count, a->count);
    assert_memory_equal(t->buckets, a->buckets, sizeof a->buckets);
    assert_true(t->min_s == a->min_s && t->max_s == a->max_s);
    assert_true(fabs(t->sum_s - a->sum_s) <= 1e-9 * a->sum_s);
    assert_true(fabs(pc_timer_stddev(t) - pc_timer_stddev(a)) <= 1e-9 * pc_timer_stddev(a));
    for (double q = 0.05; q < 1; q += 0.05)
        assert_true(pc_timer_quantile(t, q) == pc_timer_quantile(a, q));

    /* One shard sums to itself, bit for bit where /stats reads it. */
    pc_metrics_sum(sum, shards, 1);
    assert_memory_equal(&sum->t_request, &sh[0].t_request, sizeof sh[0].t_request);
    assert_int_equal(sum->started_us, sh[0].started_us);

    struct pc_buf b;
    pc_buf_init(&b);
    assert_int_equal(pc_metrics_render_workers(shards, 3, NULL, &b), 0);
    assert_non_null(strstr(b.data, "\npredcache_workers 3\n"));
    char line[128];
    snprintf(line, sizeof line, "predcache_worker_requests_total{worker=\"1\"} %llu\n",
             (unsigned long long)sh[1].req_hit);
    assert_non_null(strstr(b.data, line));
    pc_buf_release(&b);
    free(all);
    free(sum);
    free(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform_1_to_1000_ms),
        cmocka_unit_test(test_error_bound_distributions),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_single_value),
        cmocka_unit_test(test_constant_values_stddev_zero),
        cmocka_unit_test(test_tiny_huge_and_invalid_values),
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_render_stats),
        cmocka_unit_test(test_sum_of_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
