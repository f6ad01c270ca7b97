/* generations: invalidation counters that are part of cache keys (see the header). */
#include "predcache/generations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/lookups.h"
#include "predcache/store.h"
#include "predcache/wstate.h"

struct field {
    char *name;
    long long value;
};

/* One namespace's counters: the table's block. */
struct counters {
    struct pc_generations *g;
    struct field *fields;
    size_t n_fields;
};

struct pc_generations {
    struct pc_worker *w;
    struct pc_lookups *table;
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

static void clear_fields(struct counters *e)
{
    for (size_t i = 0; i < e->n_fields; i++)
        free(e->fields[i].name);
    free(e->fields);
    e->fields = NULL;
    e->n_fields = 0;
}

static long long counter(const struct counters *e, const char *field)
{
    for (size_t i = 0; i < e->n_fields; i++) {
        if (strcmp(e->fields[i].name, field) == 0)
            return e->fields[i].value;
    }
    return 0;
}

/* The HGETALL answer: [field, value, field, value, ...]. 0 ok, -1 unreadable. */
static int read_fields(struct counters *e, const struct pc_reply *r)
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

static void on_hgetall(const struct pc_reply *r, void *arg)
{
    struct counters *e = arg;
    struct pc_generations *g = e->g;
    /* The store is going away: answer the waiters (fetch starts nothing now). */
    int ok = !g->w->closing && r != NULL && read_fields(e, r) == 0;
    if (!ok)
        pc_log(PC_LOG_INFO, "generations: cannot read the counters of namespace %s",
               pc_lookups_id(e));
    pc_lookups_done(g->table, e, ok);
}

static int counters_fetch(void *owner, const char *ns, void *data)
{
    struct pc_generations *g = owner;
    char key[PC_CFG_STR * 2 + 8];
    if (g->w->closing || pc_generations_key(g->w->cfg, ns, key, sizeof key) != 0)
        return -1;
    const char *argv[] = {"HGETALL", key};
    size_t lens[] = {7, strlen(key)};
    return pc_store_command(g->w->store, 0, on_hgetall, data, 2, argv, lens);
}

static int counters_init(void *owner, const char *ns, void *data, const void *seed)
{
    (void)ns;
    (void)seed;
    struct counters *e = data;
    e->g = owner;
    return 0;
}

static void counters_wake(void *owner, void *data, pc_lookups_fn fn, void *arg)
{
    (void)owner;
    (void)data;
    ((pc_gen_cb)fn)(arg);
}

static void counters_drop(void *owner, void *data)
{
    (void)owner;
    clear_fields(data);
}

struct pc_generations *pc_generations_new(struct pc_worker *w)
{
    struct pc_generations *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->w = w;
    struct pc_lookups_params p = {
        .max = PC_GENERATIONS_MAX,
        .data_size = sizeof(struct counters),
        .period_ms = w->cfg->generation_refresh_ms,
        .remember_failures = 0, /* a failed read keeps the counters known before it */
        .owner = g,
        .init = counters_init,
        .fetch = counters_fetch,
        .wake = counters_wake,
        .drop = counters_drop,
    };
    g->table = pc_lookups_new(&p);
    if (g->table == NULL) {
        free(g);
        return NULL;
    }
    return g;
}

void pc_generations_free(struct pc_generations *g)
{
    if (g == NULL)
        return;
    pc_lookups_free(g->table);
    free(g);
}

/* The generation text of e's counters for model and version. 0 ok, -1 no room. */
static int format_gen(const struct counters *e, const char *model, const char *version, char *out,
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
    if (strlen(ns) >= PC_CFG_STR)
        return PC_GEN_UNKNOWN;
    void *data;
    enum pc_lookup r = pc_lookups_get(g->table, ns, NULL, (pc_lookups_fn)cb, arg, &data);
    if (data == NULL)
        return PC_GEN_UNKNOWN; /* no room */
    /* Served: the counters; otherwise the best known, for an UNKNOWN answer. */
    int formatted = format_gen(data, model, version, out, outlen) == 0;
    switch (r) {
    case PC_LOOKUP_SERVE:
        return formatted ? PC_GEN_KNOWN : PC_GEN_UNKNOWN;
    case PC_LOOKUP_WAIT:
        return PC_GEN_PENDING;
    case PC_LOOKUP_NONE:
        break;
    }
    return PC_GEN_UNKNOWN;
}

void pc_generations_forget(struct pc_generations *g, const char *ns)
{
    pc_lookups_forget(g->table, ns);
}
