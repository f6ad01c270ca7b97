/*
 * wstate: the questions asked of a worker's state (see the header).
 */
#include "predcache/wstate.h"

#include "predcache/health.h"
#include "predcache/upstream.h"

const char *pc_worker_backend_refusal(const struct pc_worker *w, size_t be)
{
    struct pc_backend_cfg def;
    const struct pc_backend_cfg *b = pc_config_backend(w->cfg, be, &def);
    if (!pc_health_up(w->healths[be]))
        return "model server is down (health checks failing)";
    if (b->max_in_flight > 0 && pc_upstream_active(w->ups[be]) >= (size_t)b->max_in_flight)
        return "too many model server requests in flight";
    return NULL;
}

int pc_worker_backend_available(const struct pc_worker *w, size_t be)
{
    return pc_worker_backend_refusal(w, be) == NULL;
}

void pc_worker_shards(const struct pc_worker *w, const struct pc_metrics **out, size_t max,
                      size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < w->n_workers && i < max; i++)
        out[(*n)++] = &w->group[i].metrics;
}
