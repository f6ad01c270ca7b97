/* health: active health checks of the model server (see the header). */
#include "predcache/health.h"

#include <stdlib.h>

#include <event2/event.h>

#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/upstream.h"

struct pc_health {
    const struct pc_config *cfg;
    struct pc_upstream *up;
    struct pc_metrics *m;
    struct event *timer;
    int up_state;
    int fails; /* consecutive */
    int passes;
    int checking;
};

static void on_check(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_health *h = arg;
    h->checking = 0;
    int ok = r->error == PC_UP_OK && r->status >= 200 && r->status < 400;
    if (ok) {
        h->fails = 0;
        if (!h->up_state && ++h->passes >= h->cfg->backend_health_passes) {
            h->up_state = 1;
            pc_log(PC_LOG_WARN, "health: model server is up again (%d passes)", h->passes);
        }
    } else {
        h->passes = 0;
        if (h->up_state && ++h->fails >= h->cfg->backend_health_fails) {
            h->up_state = 0;
            pc_log(PC_LOG_WARN, "health: model server is down after %d failed checks: %s", h->fails,
                   r->error != PC_UP_OK ? r->errmsg : "bad status");
        }
    }
    PC_METRIC_SET(h->m->backend_up, h->up_state);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_health *h = arg;
    if (h->checking)
        return; /* the previous check is still running: its own timeout ends it */
    int timeout = h->cfg->backend_health_interval_ms;
    if (timeout > h->cfg->backend_timeout_ms)
        timeout = h->cfg->backend_timeout_ms;
    if (pc_upstream_send(h->up, "GET", h->cfg->backend_health_path, NULL, 0, NULL, 0, timeout,
                         on_check, h) != NULL)
        h->checking = 1;
}

struct pc_health *pc_health_new(struct event_base *base, const struct pc_config *cfg,
                                struct pc_upstream *up, struct pc_metrics *m)
{
    struct pc_health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->cfg = cfg;
    h->up = up;
    h->m = m;
    h->up_state = 1;
    PC_METRIC_SET(m->backend_up, 1);
    if (cfg->backend_health_path[0] == '\0')
        return h; /* checks off */
    h->timer = event_new(base, -1, EV_PERSIST, tick, h);
    if (h->timer == NULL) {
        free(h);
        return NULL;
    }
    int ms = cfg->backend_health_interval_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(h->timer, &tv);
    tick(-1, 0, h);
    return h;
}

void pc_health_free(struct pc_health *h)
{
    if (h == NULL)
        return;
    if (h->timer != NULL)
        event_free(h->timer);
    free(h);
}

int pc_health_up(const struct pc_health *h)
{
    return h == NULL || h->up_state;
}
