/*
 * bgcall: a request as it is sent to the model server (see bgcall.h).
 */
#include "bgcall.h"

#include <stdlib.h>
#include <string.h>

#include "predcache/config.h"

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
        p->fwd[p->n_fwd].name = strdup(in[i].name);
        p->fwd[p->n_fwd].value = strdup(in[i].value);
        if (p->fwd[p->n_fwd].name == NULL || p->fwd[p->n_fwd].value == NULL) {
            pc_buf_release(&xff);
            return -1;
        }
        p->n_fwd++;
    }
    pc_buf_append_str(&xff, pc_http_req_client(p->req));
    p->fwd[p->n_fwd].name = strdup("X-Forwarded-For");
    p->fwd[p->n_fwd].value = pc_buf_steal(&xff, NULL);
    if (p->fwd[p->n_fwd].name == NULL || p->fwd[p->n_fwd].value == NULL)
        return -1;
    p->n_fwd++;
    const char *id = pc_http_req_id(p->req);
    if (id[0] != '\0') {
        p->fwd[p->n_fwd].name = strdup("X-Request-Id");
        p->fwd[p->n_fwd].value = strdup(id);
        if (p->fwd[p->n_fwd].name == NULL || p->fwd[p->n_fwd].value == NULL)
            return -1;
        p->n_fwd++;
    }
    return 0;
}

const char *pc_proxy_wire_body(struct pc_preq *p, const char *body, size_t *len)
{
    if (p->plain == NULL || body != p->plain)
        return body;
    char *name = strdup("Content-Encoding"), *value = strdup(p->coding);
    if (name == NULL || value == NULL) { /* the decoded body, then: the same request */
        free(name);
        free(value);
        return body;
    }
    p->fwd[p->n_fwd++] = (struct pc_header){name, value};
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
    p->fwd = NULL;
    p->n_fwd = 0;
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
    for (size_t i = 0; i < c->n_hdrs; i++) {
        free(c->hdrs[i].name);
        free(c->hdrs[i].value);
    }
    free(c->hdrs);
    free(c->method);
    free(c->target);
    free(c->body);
    memset(c, 0, sizeof *c);
}
