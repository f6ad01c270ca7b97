/*
 * refresh: stale-while-revalidate (see refresh.h).
 */
#include "refresh.h"

#include <stdlib.h>

#include "predcache/flight.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "answer.h"
#include "bgcall.h"

/* A background call that refreshes one stale entry, or a batch's stale instances. */
struct refresh {
    struct pc_worker *w;
    struct pc_wroute *route;
    size_t vary_n;
    char key[PC_KEY_MAX];          /* the entry's, or the batch's herd key */
    struct pc_refresh_items items; /* a batch's: the key of each instance sent, in order */
    int ttl_s;
    int client_ttl;
    int ignore_cc, streamed; /* as answer_rules */
    uint64_t begun_us;       /* when it was started: a purge since keeps its answer out */
    struct pc_bgcall call;
};

static void refresh_free(struct refresh *rf)
{
    struct pc_flight *f = pc_flights_find(rf->w->refreshing, rf->key);
    if (f != NULL)
        pc_flights_finish(rf->w->refreshing, f);
    pc_bgcall_release(&rf->call);
    if (rf->items.keys != NULL)
        rf->items.free_keys(rf->items.keys);
    free(rf);
}

/* The refresh's model server answer; arg is the refresh, which this call owns and frees
 * (its keys handed to the item flow's store, or freed with it). */
static void on_refresh(const struct pc_upstream_resp *r, void *arg)
{
    struct refresh *rf = arg;
    struct pc_worker *w = rf->w;
    pc_hist_observe(&w->metrics.h_backend, r->total_ms / 1000.0);
    pc_timer_observe(&w->metrics.t_backend, r->total_ms / 1000.0);
    struct pc_answer_rules a = {w, rf->route,     rf->vary_n,  rf->ttl_s, rf->client_ttl,
                                0, rf->ignore_cc, rf->streamed};
    const char *why = r->error != PC_UP_OK ? r->errmsg : NULL;
    enum pc_reason refused = why == NULL ? pc_answer_judge(&a, r, NULL) : PC_REASON_NONE;
    if (refused != PC_REASON_NONE)
        why = pc_reason_words(refused);
    int rttl = a.no_grace ? a.ttl_s : pc_answer_redis_ttl(w, a.ttl_s);
    if (why == NULL && rf->items.keys != NULL)
        why = rf->items.store(w, r, &rf->items.keys, a.record ? a.ttl_s : 0, rttl, rf->begun_us);
    else if (why == NULL)
        pc_answer_store(w, rf->key, a.ttl_s, a.record, rttl, r, rf->begun_us, NULL, NULL);
    if (why == NULL) {
        PC_METRIC_INC(w->metrics.refresh_ok);
    } else {
        PC_METRIC_INC(w->metrics.refresh_failed);
        pc_log(PC_LOG_INFO, "proxy: refresh of %s not stored: %s", rf->key, why);
    }
    refresh_free(rf);
}

void pc_refresh_start(struct pc_preq *p, const char *key, int stale_ttl_s, const char *body,
                      size_t len, const struct pc_refresh_items *items)
{
    struct pc_worker *w = p->w;
    struct refresh *rf = NULL;
    if (p->no_store || pc_flights_find(w->refreshing, key) != NULL ||
        !pc_worker_backend_available(w, p->backend) || (rf = calloc(1, sizeof *rf)) == NULL) {
        if (items != NULL)
            items->free_keys(items->keys);
        return;
    }
    if (items != NULL)
        rf->items = *items;
    rf->w = w;
    rf->begun_us = pc_now_us();
    rf->route = pc_preq_wroute(p);
    rf->vary_n = p->vary_n;
    rf->ignore_cc = pc_answer_ignores_cc(p);
    rf->streamed = p->stream_keep;
    /* The refreshed entry keeps the TTL the stale one was stored with, unless this
     * request names one. */
    rf->client_ttl = p->client_ttl || stale_ttl_s > 0;
    rf->ttl_s = p->client_ttl || stale_ttl_s <= 0 ? p->ttl_s : stale_ttl_s;
    pc_strlcpy(rf->key, key, sizeof rf->key);
    if (pc_bgcall_copy(p, body, len, &rf->call) != 0 ||
        pc_flights_start(w->refreshing, rf->key, NULL) == NULL ||
        pc_bgcall_send(w, &rf->call, on_refresh, rf) != 0)
        refresh_free(rf);
}
