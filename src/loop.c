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
