/*
 * preq: the end of a request's life (see preq.h).
 */
#include "preq.h"

#include <stdlib.h>

#include "predcache/budget.h"
#include "predcache/metrics.h"

static const char *const result_names[] = {"HIT",   "MISS",    "BYPASS",    "PASS",
                                           "ERROR", "PARTIAL", "COALESCED", "STALE"};

const char *pc_proxy_result_name(enum pc_cache_result r)
{
    return result_names[r];
}

void pc_preq_hold_input(struct pc_worker *w, int64_t delta)
{
    pc_budget_input_add(delta);
    PC_METRIC_ADD(w->metrics.input_buffered, delta);
}

void pc_preq_free(struct pc_preq *p)
{
    PC_PREQ_CHECK(p);
    if (p->release != NULL)
        p->release(p); /* coalesce: its lock, its wait, the flight it led */
    free(p->fwd);
    pc_arena_release(&p->fwd_text);
    for (size_t i = 0; i < p->n_stream_hdrs; i++) {
        free(p->stream_hdrs[i].name);
        free(p->stream_hdrs[i].value);
    }
    free(p->stream_hdrs);
    pc_buf_release(&p->stream_rec);
    free(p->head);
    if (p->plain != NULL)
        pc_preq_hold_input(p->w, -(int64_t)p->plain_len);
    free(p->plain);
    if (p->batch != NULL && p->free_items != NULL)
        p->free_items(p->batch);
    p->magic = 0;
    free(p);
}

const char *pc_preq_body(const struct pc_preq *p, size_t *len)
{
    if (p->plain != NULL) {
        *len = p->plain_len;
        return p->plain;
    }
    return pc_http_req_body(p->req, len);
}
