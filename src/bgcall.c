/*
 * bgcall: a request as it is sent to the model server (see bgcall.h).
 */
#include "bgcall.h"

#include <stdlib.h>
#include <string.h>

#include "predcache/config.h"

/* One header for the model server, its strings in p->fwd_text. 0 ok; -1 no memory. */
static int fwd_add(struct pc_preq *p, const char *name, const char *value)
{
    struct pc_header *h = &p->fwd[p->n_fwd];
    h->name = pc_arena_strdup(&p->fwd_text, name);
    h->value = pc_arena_strdup(&p->fwd_text, value);
    if (h->name == NULL || h->value == NULL)
        return -1;
    p->n_fwd++;
    return 0;
}

/* Copies the request's end-to-end headers for the model server and adds X-Forwarded-For and
 * the request's X-Request-Id (the one its answer carries). */
int pc_proxy_forward_headers(struct pc_preq *p)
{
    size_t n;
    const struct pc_header *in = pc_http_req_headers(p->req, &n);
    /* + X-Forwarded-For, + X-Request-Id, + Content-Encoding (wire) */
    p->fwd = calloc(n + 3, sizeof *p->fwd);
    if (p->fwd == NULL)
        return -1;
    struct pc_buf xff; /* every X-Forwarded-For value in order, then this client */
    pc_buf_init(&xff);
    for (size_t i = 0; i < n; i++) {
        if (pc_strcaseeq(in[i].name, "X-Forwarded-For")) {
            if (in[i].value[0] != '\0')
                pc_buf_printf(&xff, "%s, ", in[i].value);
            continue;
        }
        /* A cached body is stored without its encoding: ask the model server for identity. */
        if (p->cacheable && pc_strcaseeq(in[i].name, "Accept-Encoding"))
            continue;
        if (pc_strcaseeq(in[i].name, "X-Predcache-Token")) /* the operator's, not the model's */
            continue;
        if (pc_strcaseeq(in[i].name, "X-Request-Id")) /* as answered: the client's, or ours */
            continue;
        if (p->plain != NULL && pc_strcaseeq(in[i].name, "Content-Encoding"))
            continue; /* the body's own: put back by wire_body when the body goes as sent */
        if (pc_http_is_hop_by_hop_in(in[i].name, in, n))
            continue;
        if (fwd_add(p, in[i].name, in[i].value) != 0) {
            pc_buf_release(&xff);
            return -1;
        }
    }
    int rc = pc_buf_append_str(&xff, pc_http_req_client(p->req)) == 0
                 ? fwd_add(p, "X-Forwarded-For", xff.data)
                 : -1;
    pc_buf_release(&xff);
    if (rc != 0)
        return -1;
    const char *id = pc_http_req_id(p->req);
    return id[0] != '\0' ? fwd_add(p, "X-Request-Id", id) : 0;
}

const char *pc_proxy_wire_body(struct pc_preq *p, const char *body, size_t *len)
{
    if (p->plain == NULL || body != p->plain)
        return body;
    if (fwd_add(p, "Content-Encoding", p->coding) != 0)
        return body; /* the decoded body, then: the same request */
    return pc_http_req_body(p->req, len);
}

int pc_bgcall_copy(struct pc_preq *p, const char *body, size_t len, struct pc_bgcall *c)
{
    memset(c, 0, sizeof *c);
    c->backend = p->backend;
    int rc = pc_proxy_forward_headers(p);
    if (rc == 0)
        body = pc_proxy_wire_body(p, body, &len);
    c->hdrs = p->fwd; /* the headers move to the call (also those copied before a failure) */
    c->n_hdrs = p->n_fwd;
    c->text = p->fwd_text; /* an arena without a buffer of its own: it may move */
    p->fwd = NULL;
    p->n_fwd = 0;
    pc_arena_init(&p->fwd_text, NULL, 0);
    c->method = strdup(pc_http_req_method(p->req));
    c->target = strdup(pc_http_req_target(p->req));
    c->body = malloc(len + 1);
    if (rc != 0 || c->method == NULL || c->target == NULL || c->body == NULL) {
        pc_bgcall_release(c);
        return -1;
    }
    if (len > 0)
        memcpy(c->body, body, len);
    c->len = len;
    return 0;
}

int pc_bgcall_send(struct pc_worker *w, struct pc_bgcall *c, pc_upstream_cb cb, void *arg)
{
    PC_METRIC_INC(w->metrics.backend_requests);
    if (pc_upstream_send(w->ups[c->backend], c->method, c->target, c->hdrs, c->n_hdrs, c->body,
                         c->len, w->cfg->backend_timeout_ms, cb, arg) == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        return -1;
    }
    return 0;
}

void pc_bgcall_release(struct pc_bgcall *c)
{
    free(c->hdrs);
    pc_arena_release(&c->text);
    free(c->method);
    free(c->target);
    free(c->body);
    memset(c, 0, sizeof *c);
}
