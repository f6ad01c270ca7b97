/* l1refresh: reading the in-process tier's entries again before they expire (see the
 * header). */
#include "predcache/l1refresh.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/l1.h"
#include "predcache/metrics.h"
#include "predcache/store.h"

struct refill {
    struct pc_l1 *l1;
    uint64_t epoch;
    char key[]; /* NUL-terminated */
};

static void on_get(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct refill *r = arg;
    if (res == PC_STORE_HIT)
        pc_l1_refill(r->l1, r->key, data, len, r->epoch);
    else if (res == PC_STORE_MISS)
        pc_l1_refill(r->l1, r->key, NULL, 0, r->epoch);
    /* an error: the entry ends at its time, as without reading ahead */
    free(r);
}

int pc_l1_get_refresh(struct pc_l1 *l1, struct pc_store *st, const char *key, struct pc_buf *out,
                      uint64_t *asked)
{
    int due;
    uint64_t epoch;
    int found = pc_l1_get_due(l1, key, out, &due, &epoch);
    if (!due || st == NULL)
        return found;
    size_t n = strlen(key);
    struct refill *r = malloc(sizeof *r + n + 1);
    if (r == NULL)
        return found;
    r->l1 = l1;
    r->epoch = epoch;
    memcpy(r->key, key, n + 1);
    if (pc_store_get(st, key, on_get, r) != 0)
        free(r);
    else if (asked != NULL)
        PC_METRIC_INC(*asked);
    return found;
}
