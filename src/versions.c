/* versions: model versions from the model server's status endpoint (see the header). The
 * table, its refreshes and its waiters are lookups.c; here are the status call and its
 * reading. */
#include "predcache/versions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/grpckey.h"
#include "predcache/grpcwire.h"
#include "predcache/h2up.h"
#include "predcache/log.h"
#include "predcache/lookups.h"
#include "predcache/upstream.h"
#include "predcache/wstate.h"

#define STATUS_TIMEOUT_MS 5000

/* What pc_lookups_get hands a new entry. */
struct seed {
    size_t backend;
    const struct pc_model_ref *m;
};

/* One model's entry: the table's block. */
struct model {
    struct pc_versions *v;
    size_t backend;
    struct pc_model_ref m;
    char version[64]; /* "" when the last lookup failed, or the model has no versions */
    int unversioned;  /* the model server has no versions for it: keyed by path */
};

struct pc_versions {
    struct pc_worker *w;
    struct pc_lookups *table;
};

static int model_init(void *owner, const char *id, void *data, const void *seed)
{
    (void)id;
    struct model *e = data;
    const struct seed *s = seed;
    e->v = owner;
    e->backend = s->backend;
    e->m = *s->m;
    return 0;
}

/* m's status endpoint, for a log line ("-" when it cannot be named). */
static void status_path_text(const struct model *e, char *out, size_t len)
{
    if (e->backend == PC_VERSIONS_GRPC) {
        pc_strlcpy(out, e->m.api == PC_API_KSERVE_V2 ? "gRPC ModelMetadata" : "gRPC GetModelStatus",
                   len);
        return;
    }
    struct pc_buf path;
    pc_buf_init(&path);
    pc_strlcpy(out, pc_model_status_path(&e->m, &path) == 0 && path.data != NULL ? path.data : "-",
               len);
    pc_buf_release(&path);
}

/*
 * What a status lookup found, and the entry's new state: rc 0 with found, the version; 1,
 * the model has no versions at the model server (a status answer that lists none, or no
 * status endpoint at all): its requests are keyed by the path as sent, said once; -1, not
 * knowing (why): those requests are not cached until the next lookup.
 */
static void settle(struct model *e, int rc, const char *found, const char *why)
{
    if (rc == 1) {
        if (!e->unversioned) {
            char path[PC_CFG_STR];
            status_path_text(e, path, sizeof path);
            pc_log(PC_LOG_INFO,
                   "versions: model %s has no versions at the model server (status endpoint %s: "
                   "%s); its requests are keyed by the path as sent (invalidate it when the "
                   "model changes)",
                   e->m.name, path, why);
        }
        e->unversioned = 1;
        e->version[0] = '\0';
    } else if (rc == 0) {
        e->unversioned = 0;
        if (strcmp(found, e->version) != 0)
            pc_log(PC_LOG_INFO, "versions: model %s%s%s is served by version %s", e->m.name,
                   e->m.label[0] ? " label " : "", e->m.label, found);
        pc_strlcpy(e->version, found, sizeof e->version);
    } else {
        char path[PC_CFG_STR];
        status_path_text(e, path, sizeof path);
        pc_log(PC_LOG_WARN,
               "versions: cannot tell the version of model %s (status endpoint %s: %s); its "
               "requests without a version are not cached for %d s (set [cache] "
               "version_refresh_s = 0, or --set cache.version_refresh_s=0, to key them by "
               "path)",
               e->m.name, path, why, e->v->w->cfg->version_refresh_s);
        e->version[0] = '\0';
        e->unversioned = 0;
    }
    pc_lookups_done(e->v->table, e, rc >= 0);
}

/* The REST status call's answer; arg is the model's entry (the table's, alive until
 * pc_lookups_done). */
static void on_status(const struct pc_upstream_resp *r, void *arg)
{
    struct model *e = arg;
    char found[64] = "";
    int rc = r->error == PC_UP_OK && r->status == 200
                 ? pc_model_parse_status(e->m.api, r->body.data ? r->body.data : "", r->body.len,
                                         found, sizeof found)
                 : -1;
    char why[320];
    if (r->error == PC_UP_OK && (r->status == 404 || rc == 1)) {
        settle(e, 1, "", r->status == 404 ? "it answered 404" : "its answer lists none");
        return;
    }
    /* Why, as the operator can check it: the call failed, the endpoint answered something
     * other than 200 or 404, or its answer names no available version. */
    if (r->error != PC_UP_OK)
        snprintf(why, sizeof why, "%s", r->errmsg);
    else if (r->status != 200)
        snprintf(why, sizeof why, "it answered %d", r->status);
    else
        snprintf(why, sizeof why, "no available version in its answer");
    settle(e, rc == 0 && found[0] != '\0' ? 0 : -1, found, why);
}

/* The gRPC status call's answer (GetModelStatus, ModelMetadata): the newest version it
 * lists as serving; KServe v2 listing none: no versions. */
static void on_grpc_status(const struct pc_h2_resp *r, void *arg)
{
    struct model *e = arg;
    enum pc_grpc_kind kind = e->m.api == PC_API_KSERVE_V2 ? PC_GRPC_V2_INFER : PC_GRPC_TFS_PREDICT;
    int code = pc_h2_grpc_status(r);
    const uint8_t *msg = NULL;
    size_t len = 0;
    struct pc_buf list;
    pc_buf_init(&list);
    char why[320] = "";
    if (r->error != PC_H2_OK)
        snprintf(why, sizeof why, "%s", r->error_text);
    else if (code != PC_GRPC_OK)
        snprintf(why, sizeof why, "grpc-status %s", pc_grpc_status_name(code));
    else if (!pc_h2_grpc_message(r, &msg, &len) ||
             pc_grpc_status_versions(kind, msg, len, &list) != 0)
        snprintf(why, sizeof why, "an answer that does not decode");
    if (why[0] != '\0') {
        pc_buf_release(&list);
        settle(e, -1, "", why);
        return;
    }
    char best[64] = "";
    for (char *line = list.data, *nl; line != NULL && (nl = strchr(line, '\n')) != NULL;
         line = nl + 1) {
        *nl = '\0';
        if (line[0] != '\0' && strlen(line) < sizeof best && strpbrk(line, "/:?#\n") == NULL &&
            (best[0] == '\0' || pc_model_version_cmp(line, best) > 0))
            pc_strlcpy(best, line, sizeof best);
    }
    int listed = list.len > 0;
    pc_buf_release(&list);
    if (!listed && kind == PC_GRPC_V2_INFER)
        settle(e, 1, "", "its answer lists none");
    else
        settle(e, best[0] != '\0' ? 0 : -1, best, "no available version in its answer");
}

static int grpc_fetch(struct pc_versions *v, struct model *e)
{
    if (v->w->grpc_up == NULL)
        return -1;
    enum pc_grpc_kind kind = e->m.api == PC_API_KSERVE_V2 ? PC_GRPC_V2_INFER : PC_GRPC_TFS_PREDICT;
    struct pc_buf body;
    pc_buf_init(&body);
    const char *path;
    uint8_t prefix[PC_GRPC_PREFIX] = {0};
    int rc = -1;
    if (pc_buf_append(&body, prefix, sizeof prefix) == 0 &&
        pc_grpc_status_request(kind, e->m.name, e->m.label, &body, &path) == 0) {
        pc_grpc_frame_prefix((uint8_t *)body.data, 0, (uint32_t)(body.len - PC_GRPC_PREFIX));
        const struct pc_header h[] = {{(char *)"content-type", (char *)"application/grpc"},
                                      {(char *)"te", (char *)"trailers"}};
        if (pc_h2_client_call(v->w->grpc_up, path, h, 2, (const uint8_t *)body.data, body.len,
                              STATUS_TIMEOUT_MS, on_grpc_status, e) != NULL)
            rc = 0;
    }
    pc_buf_release(&body);
    return rc;
}

static int model_fetch(void *owner, const char *id, void *data)
{
    (void)id;
    struct pc_versions *v = owner;
    struct model *e = data;
    if (e->backend == PC_VERSIONS_GRPC)
        return grpc_fetch(v, e);
    struct pc_buf path;
    pc_buf_init(&path);
    int rc = -1;
    if (pc_model_status_path(&e->m, &path) == 0 &&
        pc_upstream_send(v->w->ups[e->backend], "GET", path.data, NULL, 0, NULL, 0,
                         STATUS_TIMEOUT_MS, on_status, e) != NULL)
        rc = 0;
    pc_buf_release(&path);
    return rc;
}

static void model_wake(void *owner, void *data, pc_lookups_fn fn, void *arg)
{
    (void)owner;
    const struct model *e = data;
    ((pc_version_cb)fn)(e->version[0] || e->unversioned ? e->version : NULL, arg);
}

struct pc_versions *pc_versions_new(struct pc_worker *w)
{
    struct pc_versions *v = calloc(1, sizeof *v);
    if (v == NULL)
        return NULL;
    v->w = w;
    struct pc_lookups_params p = {
        .max = PC_VERSIONS_MAX,
        .data_size = sizeof(struct model),
        .period_ms = (int64_t)w->cfg->version_refresh_s * 1000,
        .remember_failures = 1, /* the model server is not asked on every request */
        .owner = v,
        .init = model_init,
        .fetch = model_fetch,
        .wake = model_wake,
    };
    v->table = pc_lookups_new(&p);
    if (v->table == NULL) {
        free(v);
        return NULL;
    }
    return v;
}

void pc_versions_free(struct pc_versions *v)
{
    if (v == NULL)
        return;
    pc_lookups_free(v->table);
    free(v);
}

/* The table's key of a model: "backend\napi\nname\nlabel", written without printf (it is
 * made for every request). */
static void model_id(size_t be, const struct pc_model_ref *m, char *id)
{
    size_t k = pc_u64_text(be, id);
    id[k++] = '\n';
    k += pc_u64_text((uint64_t)m->api, id + k);
    id[k++] = '\n';
    size_t n = strnlen(m->name, sizeof m->name - 1);
    memcpy(id + k, m->name, n);
    k += n;
    id[k++] = '\n';
    n = strnlen(m->label, sizeof m->label - 1);
    memcpy(id + k, m->label, n);
    id[k + n] = '\0';
}

enum pc_version_state pc_versions_get(struct pc_versions *v, size_t be,
                                      const struct pc_model_ref *m, char *out, size_t outlen,
                                      pc_version_cb cb, void *arg)
{
    char id[2 * PC_U64_TEXT + sizeof m->name + sizeof m->label]; /* backend, api, name, label */
    model_id(be, m, id);
    struct seed s = {be, m};
    void *data;
    switch (pc_lookups_get(v->table, id, &s, (pc_lookups_fn)cb, arg, &data)) {
    case PC_LOOKUP_SERVE: {
        const struct model *e = data;
        size_t n = strlen(e->version);
        if (n >= outlen)
            return PC_VERSION_UNKNOWN;
        memcpy(out, e->version, n + 1);
        return PC_VERSION_KNOWN;
    }
    case PC_LOOKUP_WAIT:
        return PC_VERSION_PENDING;
    case PC_LOOKUP_NONE:
        break;
    }
    return PC_VERSION_UNKNOWN;
}

struct each_name {
    pc_versions_name_fn fn;
    void *arg;
};

static void name_if_unversioned(const void *data, void *arg)
{
    const struct model *e = data;
    const struct each_name *en = arg;
    if (e->unversioned)
        en->fn(e->m.name, en->arg);
}

void pc_versions_unversioned(const struct pc_versions *v, pc_versions_name_fn fn, void *arg)
{
    struct each_name en = {fn, arg};
    if (v != NULL)
        pc_lookups_each(v->table, name_if_unversioned, &en);
}
