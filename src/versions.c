/* versions: model versions from the model server's status endpoint (see the header). */
#include "predcache/versions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/log.h"
#include "predcache/upstream.h"
#include "predcache/worker.h"

#define STATUS_TIMEOUT_MS 5000

struct waiter {
    pc_version_cb cb;
    void *arg;
};

struct entry {
    struct pc_versions *v;
    char id[sizeof(((struct pc_model_ref *)0)->name) + 96]; /* backend, api, name, label */
    size_t backend;
    struct pc_model_ref m;
    char version[64]; /* "" when the last lookup failed */
    int64_t fetched_ms;
    int have; /* fetched at least once */
    int fetching;
    struct waiter *waiters;
    size_t n_waiters, cap_waiters;
};

struct pc_versions {
    struct pc_worker *w;
    struct entry **entries;
    size_t n;
};

/* ---- the cache ---------------------------------------------------------------------- */

struct pc_versions *pc_versions_new(struct pc_worker *w)
{
    struct pc_versions *v = calloc(1, sizeof *v);
    if (v == NULL)
        return NULL;
    v->w = w;
    v->entries = calloc(PC_VERSIONS_MAX, sizeof *v->entries);
    if (v->entries == NULL) {
        free(v);
        return NULL;
    }
    return v;
}

static void entry_free(struct entry *e)
{
    free(e->waiters);
    free(e);
}

void pc_versions_free(struct pc_versions *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->n; i++)
        entry_free(v->entries[i]);
    free(v->entries);
    free(v);
}

static int64_t refresh_ms(const struct pc_versions *v)
{
    return (int64_t)v->w->cfg->version_refresh_s * 1000;
}

/* Makes room for one entry: drops the expired ones that nothing waits for. */
static void evict_expired(struct pc_versions *v)
{
    int64_t now = pc_wall_ms();
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++) {
        struct entry *e = v->entries[i];
        if (!e->fetching && now - e->fetched_ms > refresh_ms(v))
            entry_free(e);
        else
            v->entries[k++] = e;
    }
    v->n = k;
}

static void on_status(const struct pc_upstream_resp *r, void *arg)
{
    struct entry *e = arg;
    e->fetching = 0;
    e->have = 1;
    e->fetched_ms = pc_wall_ms();
    char found[64];
    if (r->error == PC_UP_OK && r->status == 200 &&
        pc_model_parse_status(e->m.api, r->body.data ? r->body.data : "", r->body.len, found,
                              sizeof found) == 0) {
        if (strcmp(found, e->version) != 0)
            pc_log(PC_LOG_INFO, "versions: model %s%s%s is served by version %s", e->m.name,
                   e->m.label[0] ? " label " : "", e->m.label, found);
        memcpy(e->version, found, sizeof e->version);
    } else {
        pc_log(PC_LOG_WARN,
               "versions: cannot tell the version of model %s (status endpoint: %s); its "
               "requests without a version are not cached for %d s (set [cache] "
               "version_refresh_s = 0 to key them by path)",
               e->m.name, r->error != PC_UP_OK ? r->errmsg : "no available version in the answer",
               e->v->w->cfg->version_refresh_s);
        e->version[0] = '\0';
    }
    /* The waiters may add new ones (a request continuing can look up another model). */
    struct waiter *ws = e->waiters;
    size_t n = e->n_waiters;
    e->waiters = NULL;
    e->n_waiters = e->cap_waiters = 0;
    for (size_t i = 0; i < n; i++)
        ws[i].cb(e->version[0] ? e->version : NULL, ws[i].arg);
    free(ws);
}

static int fetch(struct pc_versions *v, struct entry *e)
{
    struct pc_buf path;
    pc_buf_init(&path);
    int rc = -1;
    if (pc_model_status_path(&e->m, &path) == 0 &&
        pc_upstream_send(v->w->ups[e->backend], "GET", path.data, NULL, 0, NULL, 0,
                         STATUS_TIMEOUT_MS, on_status, e) != NULL) {
        e->fetching = 1;
        rc = 0;
    }
    pc_buf_release(&path);
    return rc;
}

enum pc_version_state pc_versions_get(struct pc_versions *v, size_t be,
                                      const struct pc_model_ref *m, char *out, size_t outlen,
                                      pc_version_cb cb, void *arg)
{
    char id[sizeof(((struct entry *)0)->id)];
    snprintf(id, sizeof id, "%zu\n%d\n%s\n%s", be, (int)m->api, m->name, m->label);
    struct entry *e = NULL;
    for (size_t i = 0; i < v->n && e == NULL; i++) {
        if (strcmp(v->entries[i]->id, id) == 0)
            e = v->entries[i];
    }
    int64_t now = pc_wall_ms();
    if (e == NULL) {
        if (v->n == PC_VERSIONS_MAX)
            evict_expired(v);
        if (v->n == PC_VERSIONS_MAX || (e = calloc(1, sizeof *e)) == NULL)
            return PC_VERSION_UNKNOWN;
        memcpy(e->id, id, sizeof e->id);
        e->v = v;
        e->backend = be;
        e->m = *m;
        v->entries[v->n++] = e;
    }
    int fresh = e->have && now - e->fetched_ms <= refresh_ms(v);
    if (e->have && e->version[0] != '\0') {
        if (!fresh && !e->fetching)
            fetch(v, e); /* behind: this request keeps the version known until now */
        if (strlen(e->version) >= outlen)
            return PC_VERSION_UNKNOWN;
        memcpy(out, e->version, strlen(e->version) + 1);
        return PC_VERSION_KNOWN;
    }
    if (fresh)
        return PC_VERSION_UNKNOWN; /* failed recently: not asked again before the period */
    if (!e->fetching && fetch(v, e) != 0)
        return PC_VERSION_UNKNOWN;
    if (e->n_waiters == e->cap_waiters) {
        size_t cap = e->cap_waiters ? e->cap_waiters * 2 : 4;
        struct waiter *nw = realloc(e->waiters, cap * sizeof *nw);
        if (nw == NULL)
            return PC_VERSION_UNKNOWN;
        e->waiters = nw;
        e->cap_waiters = cap;
    }
    e->waiters[e->n_waiters++] = (struct waiter){cb, arg};
    return PC_VERSION_PENDING;
}
