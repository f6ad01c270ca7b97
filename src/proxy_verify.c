/*
 * proxy_verify: shadow verification of hits ([cache] verify_sample, verify_compare,
 * verify_float_tolerance, verify_action).
 *
 *   HIT answered --sampled? (verify_sample)--no--> done
 *        | yes, and the model server is up, has room, and few checks run here
 *   copy the request and the cached answer (before the reply)
 *        | the client has its answer
 *   the same request to the model server, in the background (backend_timeout_ms)
 *        |
 *   compare (verify.c) --> predcache_verify_total{route,result}; a mismatch logs a warning
 *                          with the key, and with verify_action = purge deletes the entries
 *                          that answered (here, in Redis, and in the other processes' tiers)
 *
 * A check never delays a client (it starts after the answer), never counts against a
 * client's request and never takes more than half of a backend's max_in_flight. Its
 * answer is never stored: it only judges the one in the cache.
 */
#include <stdlib.h>
#include <string.h>

#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/store.h"
#include "predcache/verify.h"
#include "bgcall.h"
#include "done.h"
#include "preq.h"
#include "proxy_verify.h"

/* Checks at once per worker, whatever max_in_flight allows. */
#define VERIFY_MAX_IN_FLIGHT 64

struct pc_verify {
    struct pc_worker *w;
    struct pc_bgcall call;
    size_t route; /* index into the worker's route_metrics */
    int status;   /* the cached answer */
    char *body;
    size_t len;
    char (*keys)[PC_KEY_MAX]; /* the entries that answered */
    size_t n_keys;
};

static void verify_free(struct pc_verify *v)
{
    if (v == NULL)
        return;
    pc_bgcall_release(&v->call);
    free(v->body);
    free(v->keys);
    free(v);
}

/* Room for a check on backend be: up, under half its in-flight bound, few checks running. */
static int has_room(const struct pc_worker *w, size_t be)
{
    if (w->closing || w->draining || w->verify_in_flight >= VERIFY_MAX_IN_FLIGHT ||
        !pc_worker_backend_available(w, be))
        return 0;
    struct pc_backend_cfg def;
    const struct pc_backend_cfg *b = pc_config_backend(w->cfg, be, &def);
    /* A worker's conf holds its share of max_in_flight (main.c splits it). */
    return b->max_in_flight <= 0 ||
           pc_upstream_active(w->ups[be]) + 1 <= (size_t)b->max_in_flight / 2;
}

struct pc_verify *pc_proxy_verify_prepare(struct pc_preq *p, int status, const char *body,
                                          size_t len)
{
    struct pc_worker *w = p->w;
    if (p->result != RES_HIT || !pc_verify_sampled(&w->verify_rng, w->cfg->verify_sample))
        return NULL;
    struct pc_verify *v = NULL;
    if (!has_room(w, p->backend) || (v = calloc(1, sizeof *v)) == NULL)
        goto skip;
    v->w = w;
    v->route = p->route ? p->route->v.id + 1 : 0;
    v->status = status;
    v->len = len;
    if ((v->body = malloc(len + 1)) == NULL)
        goto skip;
    if (len > 0)
        memcpy(v->body, body, len);
    if (p->batch != NULL) {
        if (p->hit_keys == NULL || p->hit_keys(p, &v->keys, &v->n_keys) != 0)
            goto skip;
    } else {
        if ((v->keys = malloc(sizeof *v->keys)) == NULL)
            goto skip;
        memcpy(v->keys[0], p->key, sizeof p->key);
        v->n_keys = 1;
    }
    size_t blen;
    const char *req_body = pc_preq_body(p, &blen);
    if (pc_bgcall_copy(p, req_body, blen, &v->call) != 0)
        goto skip;
    return v;
skip:
    PC_METRIC_INC(w->metrics.verify_skipped);
    verify_free(v);
    return NULL;
}

/* A mismatch with verify_action = purge: the entries that answered go, everywhere. */
static void purge_keys(struct pc_verify *v)
{
    for (size_t i = 0; i < v->n_keys; i++) {
        if (pc_done_purge(v->w, v->keys[i], NULL, NULL) != 0)
            pc_log(PC_LOG_WARN, "verify: cannot purge %s: Redis unavailable", v->keys[i]);
    }
}

/* The model server's answer to a check (r valid during the call); takes v and frees it. */
static void on_verify(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_verify *v = arg;
    struct pc_worker *w = v->w;
    w->verify_in_flight--;
    enum pc_verify_result res = PC_VERIFY_ERROR;
    /* The model server failing now says nothing about the cached answer. */
    if (r->error == PC_UP_OK && r->status < 500)
        res = pc_verify_compare(w->cfg->verify_compare, w->cfg->verify_float_tolerance, v->status,
                                v->body, v->len, r->status, r->body.data, r->body.len);
    PC_METRIC_INC(w->route_metrics[v->route].verify[res]);
    switch (res) {
    case PC_VERIFY_MATCH:
        PC_METRIC_INC(w->metrics.verify_match);
        break;
    case PC_VERIFY_ERROR:
        PC_METRIC_INC(w->metrics.verify_error);
        pc_log(PC_LOG_DEBUG, "verify: %s %s: model server %s", v->call.method, v->call.target,
               r->error != PC_UP_OK ? r->errmsg : "answered 5xx");
        break;
    case PC_VERIFY_MISMATCH: {
        PC_METRIC_INC(w->metrics.verify_mismatch);
        int purge = w->cfg->verify_action == PC_VERIFY_PURGE;
        pc_log(PC_LOG_WARN,
               "verify: mismatch: %s %s key %s%s: cached %d (%zu bytes), model server %d "
               "(%zu bytes)%s",
               v->call.method, v->call.target, v->keys[0],
               v->n_keys > 1 ? " (and the batch's other instance keys)" : "", v->status, v->len,
               r->status, r->body.len, purge ? "; purged" : "");
        if (purge)
            purge_keys(v);
        break;
    }
    }
    verify_free(v);
}

void pc_proxy_verify_start(struct pc_verify *v)
{
    struct pc_worker *w = v->w;
    if (pc_bgcall_send(w, &v->call, on_verify, v) != 0) {
        PC_METRIC_INC(w->metrics.verify_skipped);
        verify_free(v);
        return;
    }
    w->verify_in_flight++;
}
