/* generations: invalidation counters that are part of cache keys (see the header). */
#include "predcache/generations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/store.h"
#include "predcache/worker.h"

struct field {
    char *name;
    long long value;
};

struct waiter {
    pc_gen_cb cb;
    void *arg;
};

struct ns_entry {
    struct pc_generations *g;
    char ns[PC_CFG_STR];
    struct field *fields;
    size_t n_fields;
    int64_t fetched_ms;
    int have;     /* the counters were read at least once */
    int invalid;  /* an invalidation was announced since: wait for the new counters */
    int fetching; /* an HGETALL is in flight */
    int refetch;  /* announced while fetching: that answer may be older, read again */
    struct waiter *waiters;
    size_t n_waiters, cap_waiters;
};

struct pc_generations {
    struct pc_worker *w;
    struct ns_entry **entries;
    size_t n;
};

int pc_generations_key(const struct pc_config *cfg, const char *ns, char *out, size_t len)
{
    int n = snprintf(out, len, "%sgen:%s", cfg->key_prefix, ns);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

/* Appends s to out[*n..len); 0 ok, -1 when it does not fit (with its NUL). */
static int field_put(char *out, size_t len, size_t *n, const char *s)
{
    size_t k = strlen(s);
    if (*n + k >= len)
        return -1;
    memcpy(out + *n, s, k + 1);
    *n += k;
    return 0;
}

int pc_generations_field(const char *model, const char *version, char *out, size_t len)
{
    size_t n = 0;
    if (model == NULL || model[0] == '\0')
        return field_put(out, len, &n, "*");
    if (version == NULL || version[0] == '\0')
        return field_put(out, len, &n, "m/") | field_put(out, len, &n, model);
    return field_put(out, len, &n, "v/") | field_put(out, len, &n, model) |
           field_put(out, len, &n, "/") | field_put(out, len, &n, version);
}

struct pc_generations *pc_generations_new(struct pc_worker *w)
{
    struct pc_generations *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->w = w;
    g->entries = calloc(PC_GENERATIONS_MAX, sizeof *g->entries);
    if (g->entries == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

static void clear_fields(struct ns_entry *e)
{
    for (size_t i = 0; i < e->n_fields; i++)
        free(e->fields[i].name);
    free(e->fields);
    e->fields = NULL;
    e->n_fields = 0;
}

static void entry_free(struct ns_entry *e)
{
    clear_fields(e);
    free(e->waiters);
    free(e);
}

void pc_generations_free(struct pc_generations *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n; i++)
        entry_free(g->entries[i]);
    free(g->entries);
    free(g);
}

static long long counter(const struct ns_entry *e, const char *field)
{
    for (size_t i = 0; i < e->n_fields; i++) {
        if (strcmp(e->fields[i].name, field) == 0)
            return e->fields[i].value;
    }
    return 0;
}

/* The HGETALL answer: [field, value, field, value, ...]. 0 ok, -1 unreadable. */
static int read_fields(struct ns_entry *e, const struct pc_reply *r)
{
    size_t n = pc_reply_count(r);
    if (pc_reply_type(r) != PC_REPLY_ARRAY || n % 2 != 0)
        return -1;
    struct field *f = calloc(n / 2 + 1, sizeof *f);
    if (f == NULL)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        size_t fl, vl;
        const char *name = pc_reply_str(pc_reply_elem(r, i), &fl);
        const char *val = pc_reply_str(pc_reply_elem(r, i + 1), &vl);
        char num[32];
        if (name == NULL || val == NULL || vl == 0 || vl >= sizeof num)
            continue;
        memcpy(num, val, vl);
        num[vl] = '\0';
        char *end;
        long long v = strtoll(num, &end, 10);
        if (*end != '\0' || (f[k].name = malloc(fl + 1)) == NULL)
            continue;
        memcpy(f[k].name, name, fl);
        f[k].name[fl] = '\0';
        f[k++].value = v;
    }
    clear_fields(e);
    e->fields = f;
    e->n_fields = k;
    return 0;
}

static int fetch(struct ns_entry *e);

static void on_hgetall(const struct pc_reply *r, void *arg)
{
    struct ns_entry *e = arg;
    struct pc_generations *g = e->g;
    e->fetching = 0;
    if (g->w->closing) {
        r = NULL; /* the store is going away: answer the waiters, start nothing */
        e->refetch = 0;
    }
    if (r != NULL && read_fields(e, r) == 0) {
        e->have = 1;
        e->fetched_ms = pc_wall_ms();
        if (!e->refetch)
            e->invalid = 0;
    } else {
        pc_log(PC_LOG_INFO, "generations: cannot read the counters of namespace %s", e->ns);
    }
    if (e->refetch) { /* announced meanwhile: this answer may predate it */
        e->refetch = 0;
        if (fetch(e) == 0)
            return; /* the waiters wait for that one */
    }
    struct waiter *ws = e->waiters;
    size_t n = e->n_waiters;
    e->waiters = NULL;
    e->n_waiters = e->cap_waiters = 0;
    for (size_t i = 0; i < n; i++)
        ws[i].cb(ws[i].arg);
    free(ws);
}

static int fetch(struct ns_entry *e)
{
    char key[PC_CFG_STR * 2 + 8];
    if (pc_generations_key(e->g->w->cfg, e->ns, key, sizeof key) != 0)
        return -1;
    const char *argv[] = {"HGETALL", key};
    size_t lens[] = {7, strlen(key)};
    if (pc_store_command(e->g->w->store, 0, on_hgetall, e, 2, argv, lens) != 0)
        return -1;
    e->fetching = 1;
    return 0;
}

static struct ns_entry *find(struct pc_generations *g, const char *ns)
{
    for (size_t i = 0; i < g->n; i++) {
        if (strcmp(g->entries[i]->ns, ns) == 0)
            return g->entries[i];
    }
    return NULL;
}

/* Drops namespaces nobody asked about for a while (and nothing waits on). */
static void evict_idle(struct pc_generations *g)
{
    int64_t now = pc_wall_ms();
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        struct ns_entry *e = g->entries[i];
        if (!e->fetching && now - e->fetched_ms > g->w->cfg->generation_refresh_ms)
            entry_free(e);
        else
            g->entries[k++] = e;
    }
    g->n = k;
}

/* The generation text of e's counters for model and version. 0 ok, -1 no room. */
static int format_gen(const struct ns_entry *e, const char *model, const char *version, char *out,
                      size_t outlen)
{
    char field[PC_CFG_STR + 80];
    long long all = counter(e, "*"), m = 0, v = 0;
    if (model != NULL && model[0] != '\0') {
        if (pc_generations_field(model, NULL, field, sizeof field) == 0)
            m = counter(e, field);
        if (version != NULL && version[0] != '\0' &&
            pc_generations_field(model, version, field, sizeof field) == 0)
            v = counter(e, field);
    }
    if (!all && !m && !v) { /* the usual case: nothing invalidated, the key is unchanged */
        if (outlen > 0)
            out[0] = '\0';
        return outlen > 0 ? 0 : -1;
    }
    int n = snprintf(out, outlen, "g%lld.%lld.%lld", all, m, v);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            out[0] = '\0';
        return -1;
    }
    return 0;
}

enum pc_gen_state pc_generations_get(struct pc_generations *g, const char *ns, const char *model,
                                     const char *version, char *out, size_t outlen, pc_gen_cb cb,
                                     void *arg)
{
    if (outlen > 0)
        out[0] = '\0';
    struct ns_entry *e = find(g, ns);
    if (e == NULL) {
        if (strlen(ns) >= sizeof e->ns)
            return PC_GEN_UNKNOWN;
        if (g->n == PC_GENERATIONS_MAX)
            evict_idle(g);
        if (g->n == PC_GENERATIONS_MAX || (e = calloc(1, sizeof *e)) == NULL)
            return PC_GEN_UNKNOWN;
        e->g = g;
        memcpy(e->ns, ns, strlen(ns) + 1);
        g->entries[g->n++] = e;
    }
    if (e->have && !e->invalid) {
        if (pc_wall_ms() - e->fetched_ms > g->w->cfg->generation_refresh_ms && !e->fetching)
            fetch(e); /* behind: an announcement may have been missed */
        return format_gen(e, model, version, out, outlen) == 0 ? PC_GEN_KNOWN : PC_GEN_UNKNOWN;
    }
    format_gen(e, model, version, out, outlen); /* the best known, for an UNKNOWN answer */
    if (!e->fetching && fetch(e) != 0)
        return PC_GEN_UNKNOWN;
    if (cb == NULL)
        return PC_GEN_UNKNOWN; /* the caller does not wait (again) */
    if (e->n_waiters == e->cap_waiters) {
        size_t cap = e->cap_waiters ? e->cap_waiters * 2 : 4;
        struct waiter *nw = realloc(e->waiters, cap * sizeof *nw);
        if (nw == NULL)
            return PC_GEN_UNKNOWN;
        e->waiters = nw;
        e->cap_waiters = cap;
    }
    e->waiters[e->n_waiters++] = (struct waiter){cb, arg};
    return PC_GEN_PENDING;
}

void pc_generations_forget(struct pc_generations *g, const char *ns)
{
    struct ns_entry *e = find(g, ns);
    if (e == NULL)
        return;
    e->invalid = 1;
    if (e->fetching)
        e->refetch = 1;
}
