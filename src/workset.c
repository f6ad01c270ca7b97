/*
 * workset: the live sets of workers and the figures of those gone (see the header).
 */
#include "predcache/workset.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "predcache/config.h"
#include "predcache/wstate.h"

#define GONE_WORKERS 64 /* [server] workers at most */

struct live_set {
    struct pc_worker *group;
    size_t n;
};

/* A route's figures from sets gone, by name (a reload may renumber or drop routes). */
struct gone_route {
    char name[PC_CFG_STR];
    struct pc_route_metrics m;
};

struct pc_workset {
    pthread_mutex_t lock;
    struct live_set sets[PC_WORKSET_MAX];
    size_t n_sets;
    struct pc_metrics gone; /* counters of the sets gone; their gauges stay 0 */
    uint64_t gone_requests[GONE_WORKERS];
    struct gone_route *routes;
    size_t n_routes;
    uint64_t reloads_ok, reloads_failed;
    int last_ok;
    double last_success_s; /* Unix time */
};

static double unix_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

struct pc_workset *pc_workset_new(void)
{
    struct pc_workset *ws = calloc(1, sizeof *ws);
    if (ws == NULL)
        return NULL;
    pthread_mutex_init(&ws->lock, NULL);
    ws->last_ok = 1;
    ws->last_success_s = unix_now();
    return ws;
}

void pc_workset_free(struct pc_workset *ws)
{
    if (ws == NULL)
        return;
    pthread_mutex_destroy(&ws->lock);
    free(ws->routes);
    free(ws);
}

int pc_workset_add(struct pc_workset *ws, struct pc_worker *group, size_t n)
{
    pthread_mutex_lock(&ws->lock);
    int rc = -1;
    if (ws->n_sets < PC_WORKSET_MAX) {
        ws->sets[ws->n_sets++] = (struct live_set){group, n};
        rc = 0;
    }
    pthread_mutex_unlock(&ws->lock);
    return rc;
}

size_t pc_workset_alive(struct pc_workset *ws)
{
    pthread_mutex_lock(&ws->lock);
    size_t n = ws->n_sets;
    pthread_mutex_unlock(&ws->lock);
    return n;
}

/* The kept figures of route name; NULL when it has none (and none could be made). Under
 * the lock. */
static struct gone_route *gone_route(struct pc_workset *ws, const char *name, int make)
{
    for (size_t i = 0; i < ws->n_routes; i++) {
        if (strcmp(ws->routes[i].name, name) == 0)
            return &ws->routes[i];
    }
    if (!make)
        return NULL;
    struct gone_route *r = realloc(ws->routes, (ws->n_routes + 1) * sizeof *r);
    if (r == NULL)
        return NULL;
    ws->routes = r;
    r = &ws->routes[ws->n_routes++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

void pc_workset_remove(struct pc_workset *ws, struct pc_worker *group)
{
    pthread_mutex_lock(&ws->lock);
    for (size_t s = 0; s < ws->n_sets; s++) {
        if (ws->sets[s].group != group)
            continue;
        size_t n = ws->sets[s].n;
        for (size_t i = 0; i < n; i++) {
            const struct pc_worker *w = &group[i];
            struct pc_metrics m = {0};
            pc_metrics_add(&m, &w->metrics);
            /* Only counts are kept: what was in flight or buffered is over. */
            m.in_flight = m.store_pending = m.jobs_running = 0;
            m.output_buffered = m.input_buffered = m.backend_buffered = m.backend_paused = 0;
            pc_metrics_add(&ws->gone, &m);
            ws->gone.redis_desyncs += PC_METRIC_GET(w->sub_metrics.redis_desyncs);
            if (i < GONE_WORKERS)
                ws->gone_requests[i] += pc_metrics_requests(&w->metrics);
            for (size_t r = 0; r <= w->n_routes; r++) {
                struct gone_route *g = gone_route(ws, w->route_names[r], 1);
                if (g != NULL)
                    pc_route_metrics_add(&g->m, &w->route_metrics[r]);
            }
        }
        ws->sets[s] = ws->sets[--ws->n_sets];
        break;
    }
    pthread_mutex_unlock(&ws->lock);
}

void pc_workset_add_others(struct pc_workset *ws, const struct pc_worker *mine,
                           struct pc_metrics *sum, uint64_t *before, size_t n)
{
    pthread_mutex_lock(&ws->lock);
    for (size_t s = 0; s < ws->n_sets; s++) {
        const struct pc_worker *group = ws->sets[s].group;
        if (group == mine->group)
            continue;
        for (size_t i = 0; i < ws->sets[s].n; i++) {
            pc_metrics_add(sum, &group[i].metrics);
            sum->redis_desyncs += PC_METRIC_GET(group[i].sub_metrics.redis_desyncs);
            if (i < n)
                before[i] += pc_metrics_requests(&group[i].metrics);
        }
    }
    pc_metrics_add(sum, &ws->gone);
    for (size_t i = 0; i < n && i < GONE_WORKERS; i++)
        before[i] += ws->gone_requests[i];
    pthread_mutex_unlock(&ws->lock);
}

void pc_workset_add_routes(struct pc_workset *ws, const struct pc_worker *mine,
                           const char *const *names, size_t n, struct pc_route_metrics *sum)
{
    pthread_mutex_lock(&ws->lock);
    for (size_t r = 0; r < n; r++) {
        const struct gone_route *g = gone_route(ws, names[r], 0);
        if (g != NULL)
            pc_route_metrics_add(&sum[r], &g->m);
        for (size_t s = 0; s < ws->n_sets; s++) {
            const struct pc_worker *group = ws->sets[s].group;
            if (group == mine->group)
                continue;
            for (size_t i = 0; i < ws->sets[s].n; i++) {
                const struct pc_worker *w = &group[i];
                for (size_t k = 0; k <= w->n_routes; k++) {
                    if (strcmp(w->route_names[k], names[r]) == 0)
                        pc_route_metrics_add(&sum[r], &w->route_metrics[k]);
                }
            }
        }
    }
    pthread_mutex_unlock(&ws->lock);
}

void pc_workset_reloaded(struct pc_workset *ws, int ok)
{
    pthread_mutex_lock(&ws->lock);
    if (ok) {
        ws->reloads_ok++;
        ws->last_success_s = unix_now();
    } else {
        ws->reloads_failed++;
    }
    ws->last_ok = ok;
    pthread_mutex_unlock(&ws->lock);
}

int pc_workset_render(struct pc_workset *ws, struct pc_buf *out)
{
    pthread_mutex_lock(&ws->lock);
    int rc = pc_buf_printf(
        out,
        "# HELP predcache_config_reloads_total Configuration reloads (SIGHUP), by result: ok "
        "(applied) or failed (refused: the running configuration stayed)\n"
        "# TYPE predcache_config_reloads_total counter\n"
        "predcache_config_reloads_total{result=\"ok\"} %llu\n"
        "predcache_config_reloads_total{result=\"failed\"} %llu\n"
        "# HELP predcache_config_last_reload_successful 1 unless the last reload was refused\n"
        "# TYPE predcache_config_last_reload_successful gauge\n"
        "predcache_config_last_reload_successful %d\n"
        "# HELP predcache_config_last_reload_success_timestamp_seconds When the running "
        "configuration was applied (the start, or the last reload that succeeded)\n"
        "# TYPE predcache_config_last_reload_success_timestamp_seconds gauge\n"
        "predcache_config_last_reload_success_timestamp_seconds %.3f\n",
        (unsigned long long)ws->reloads_ok, (unsigned long long)ws->reloads_failed, ws->last_ok,
        ws->last_success_s);
    pthread_mutex_unlock(&ws->lock);
    return rc ? -1 : 0;
}
