/* health: active health checks of the model server (see the header). */
#include "predcache/health.h"

#include <stdlib.h>

#include <event2/event.h>

#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/upstream.h"

struct pc_health {
    struct pc_backend_cfg be; /* path, interval and thresholds (a copy) */
    const char *what;         /* "model server" or "backend NAME", for the log */
    pc_health_check_fn check; /* starts a check, which reports through pc_health_report */
    void *check_arg;
    int *gauge; /* 1 while up */
    struct event *timer;
    int up_state;
    int fails; /* consecutive */
    int passes;
    int checking;
};

void pc_health_report(struct pc_health *h, int ok, const char *why)
{
    h->checking = 0;
    if (ok) {
        h->fails = 0;
        if (!h->up_state && ++h->passes >= h->be.health_passes) {
            h->up_state = 1;
            pc_log(PC_LOG_WARN, "health: %s is up again (%d passes)", h->what, h->passes);
        }
    } else {
        h->passes = 0;
        if (h->up_state && ++h->fails >= h->be.health_fails) {
            h->up_state = 0;
            pc_log(PC_LOG_WARN, "health: %s is down after %d failed checks: %s", h->what, h->fails,
                   why != NULL ? why : "bad status");
        }
    }
    PC_METRIC_SET(*h->gauge, h->up_state);
}

/* The REST check: GET health_path, any 2xx or 3xx passes. */
static void on_check(const struct pc_upstream_resp *r, void *arg)
{
    if (r->error == PC_UP_NO_FD) { /* says nothing of the model server: not counted */
        ((struct pc_health *)arg)->checking = 0;
        return;
    }
    int ok = r->error == PC_UP_OK && r->status >= 200 && r->status < 400;
    pc_health_report(arg, ok, r->error != PC_UP_OK ? r->errmsg : NULL);
}

/* arg: the upstream. */
static int rest_check(struct pc_health *h, void *arg, const char *path, int timeout_ms)
{
    return pc_upstream_send(arg, "GET", path, NULL, 0, NULL, 0, timeout_ms, on_check, h) != NULL
               ? 0
               : -1;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_health *h = arg;
    if (h->checking)
        return; /* the previous check is still running: its own timeout ends it */
    int timeout = h->be.health_interval_ms;
    if (timeout > h->be.timeout_ms)
        timeout = h->be.timeout_ms;
    if (h->check(h, h->check_arg, h->be.health_path, timeout) == 0)
        h->checking = 1;
}

struct pc_health *pc_health_new_check(struct event_base *base, const struct pc_backend_cfg *be,
                                      const char *what, pc_health_check_fn check, void *arg,
                                      int *gauge)
{
    struct pc_health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->be = *be;
    h->what = what;
    h->check = check;
    h->check_arg = arg;
    h->gauge = gauge;
    h->up_state = 1;
    PC_METRIC_SET(*gauge, 1);
    if (be->health_path[0] == '\0')
        return h; /* checks off */
    h->timer = event_new(base, -1, EV_PERSIST, tick, h);
    if (h->timer == NULL) {
        free(h);
        return NULL;
    }
    int ms = be->health_interval_ms;
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

struct pc_health *pc_health_new(struct event_base *base, const struct pc_backend_cfg *be,
                                struct pc_upstream *up, int *gauge)
{
    struct pc_health *h = pc_health_new_check(base, be, "model server", rest_check, up, gauge);
    if (h != NULL && h->be.name[0] != '\0')
        h->what = h->be.name; /* "backend NAME" */
    return h;
}

int pc_health_up(const struct pc_health *h)
{
    return h == NULL || h->up_state;
}
