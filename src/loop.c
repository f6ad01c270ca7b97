/* loop: see include/predcache/loop.h. */
#include "predcache/loop.h"

#include <stddef.h>

#include <event2/event.h>

struct event_base *pc_loop_new(void)
{
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        return NULL;
    struct event_base *base = NULL;
    /* At most one callback at PC_LOOP_DEFAULT or below between two looks for new events. */
    if (event_config_set_max_dispatch_interval(cfg, NULL, 1, PC_LOOP_DEFAULT) == 0)
        base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base != NULL && event_base_priority_init(base, PC_LOOP_PRIORITIES) != 0) {
        event_base_free(base);
        base = NULL;
    }
    return base;
}

int pc_loop_priority(struct event_base *base, int prio)
{
    int n = event_base_get_npriorities(base);
    return prio < n ? prio : n - 1;
}

/* Both of a later's events: the later is arg. */
static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_loop_later *l = arg;
    pc_loop_later_disarm(l);
    l->fn(l->arg);
}

int pc_loop_later_init(struct pc_loop_later *l, struct event_base *base, int bound_ms,
                       void (*fn)(void *arg), void *arg)
{
    *l = (struct pc_loop_later){.bound_ms = bound_ms, .fn = fn, .arg = arg};
    l->idle = event_new(base, -1, 0, later_cb, l);
    l->bound = evtimer_new(base, later_cb, l);
    if (l->idle == NULL || l->bound == NULL)
        return -1;
    event_priority_set(l->idle, pc_loop_priority(base, PC_LOOP_IDLE));
    return 0;
}

void pc_loop_later_arm(struct pc_loop_later *l)
{
    struct timeval tv = {l->bound_ms / 1000, (l->bound_ms % 1000) * 1000};
    event_active(l->idle, EV_TIMEOUT, 1);
    evtimer_add(l->bound, &tv);
}

void pc_loop_later_disarm(struct pc_loop_later *l)
{
    if (l->idle != NULL)
        event_del(l->idle);
    if (l->bound != NULL)
        evtimer_del(l->bound);
}

void pc_loop_later_free(struct pc_loop_later *l)
{
    if (l->idle != NULL)
        event_free(l->idle);
    if (l->bound != NULL)
        event_free(l->bound);
    l->idle = l->bound = NULL;
}
