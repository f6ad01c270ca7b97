/*
 * forward: a request's model server call (see forward.h).
 */
#include "forward.h"

#include "predcache/metrics.h"
#include "answer.h"
#include "bgcall.h"

int pc_forward_prepare_or_free(struct pc_preq *p, enum pc_cache_result result)
{
    struct pc_worker *w = p->w;
    p->result = result;
    if (w->closing) {
        pc_proxy_answer_error(p, 503, "predcache is shutting down");
        pc_preq_free(p);
        return -1;
    }
    if (p->only_if_cached) { /* RFC 9111 5.2.1.7: 504 when the cache cannot answer */
        pc_proxy_answer_error(p, 504, "not in the cache (only-if-cached)");
        pc_preq_free(p);
        return -1;
    }
    const char *unavailable = pc_worker_backend_refusal(w, p->backend);
    if (unavailable != NULL) {
        PC_METRIC_INC(w->metrics.backend_refused);
        pc_proxy_answer_error(p, 503, unavailable);
        pc_preq_free(p);
        return -1;
    }
    if (pc_proxy_forward_headers(p) != 0) {
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return -1;
    }
    return 0;
}

void pc_proxy_forward_body(struct pc_preq *p, enum pc_cache_result result, const char *body,
                           size_t len, pc_upstream_cb cb)
{
    struct pc_worker *w = p->w;
    if (pc_forward_prepare_or_free(p, result) != 0)
        return;
    body = pc_proxy_wire_body(p, body, &len);
    long elapsed_ms = (long)((pc_now_us() - pc_http_req_start_us(p->req)) / 1000);
    long left_ms = w->cfg->request_timeout_ms - elapsed_ms;
    if (left_ms <= 0) {
        pc_proxy_answer_error(p, 504, "request timed out before reaching the model server");
        pc_preq_free(p);
        return;
    }
    PC_METRIC_INC(w->metrics.backend_requests);
    /* body is borrowed by curl: p (and p->req) stay alive until cb answers. */
    if (pc_upstream_send(w->ups[p->backend], pc_http_req_method(p->req), pc_http_req_target(p->req),
                         p->fwd, p->n_fwd, body, len, (int)left_ms, cb, p) == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        pc_proxy_answer_error(p, 502, "cannot start a model server request");
        pc_preq_free(p);
    }
}
