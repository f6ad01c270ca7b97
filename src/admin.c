/*
 * admin: the admin port, served by worker 0. /health (liveness), /ready (Redis and the
 * model server answer now, and every other worker has both up), /metrics (Prometheus
 * text) and /stats (latency timers as JSON), both the sum over all workers' shards;
 * DELETE /cache/<key> through worker 0's store. Bound to 127.0.0.1 by default.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/admin.h"
#include "predcache/buf.h"
#include "predcache/buildinfo.h"
#include "predcache/config.h"
#include "predcache/generations.h"
#include "predcache/l1.h"
#include "predcache/health.h"
#include "predcache/http.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/routes.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/versions.h"
#include "predcache/workset.h"
#include "predcache/wstate.h"
#include "done.h"

#define READY_BACKEND_TIMEOUT_MS 2000
#define MAX_SHARDS 64 /* [server] workers at most */

/* One /ready probe: waits for both checks, then answers. */
struct ready_probe {
    struct pc_http_req *req;
    int waiting;
    int redis_ok;
    int backend_ok;
    char backend_err[256];
    const struct pc_worker *w;
};

/* A named backend's health checks, over every worker: up only when up in each. */
static int named_up(const struct pc_worker *w, size_t be)
{
    for (size_t i = 0; i < w->n_workers; i++) {
        if (!PC_METRIC_GET(w->group[i].backend_up[be]))
            return 0;
    }
    return 1;
}

/* ,"backends":{"NAME":"ok"|"down",...} for the named backends (none: nothing); how many
 * are up. */
static size_t named_json(const struct pc_worker *w, struct pc_buf *out)
{
    size_t n_up = 0;
    for (size_t be = 1; be < w->n_backends; be++) {
        int up = named_up(w, be);
        n_up += up != 0;
        pc_buf_printf(out, "%s\"%s\":\"%s\"", be == 1 ? ",\"backends\":{" : ",",
                      w->cfg->backends[be - 1].name, up ? "ok" : "down");
    }
    if (w->n_backends > 1)
        pc_buf_append_str(out, "}");
    return n_up;
}

static const struct pc_header json_ct = {(char *)"Content-Type", (char *)"application/json"};

/* One master of the cluster as a JSON object, after a '[' or a ','. */
static void node_json(const char *host, int port, size_t slots, int up, size_t pending, void *arg)
{
    struct pc_buf *out = arg;
    pc_buf_printf(out, "%s{\"node\":\"%s:%d\",\"slots\":%zu,\"up\":%s,\"pending\":%zu}",
                  out->len > 0 && out->data[out->len - 1] == '[' ? "" : ",", host, port, slots,
                  up ? "true" : "false", pending);
}

/* With [redis] cluster = on: ,"redis_cluster":{...} from every worker's view (the weakest). */
static void cluster_json(const struct pc_worker *w, struct pc_buf *out)
{
    if (!w->cfg->redis_cluster)
        return;
    const struct pc_metrics *shards[MAX_SHARDS];
    size_t n = 0;
    for (size_t i = 0; i < w->n_workers && n < MAX_SHARDS; i++)
        shards[n++] = &w->group[i].metrics;
    struct pc_metrics *sum = malloc(sizeof *sum);
    if (sum == NULL)
        return;
    pc_metrics_sum(sum, shards, n);
    pc_buf_printf(out,
                  ",\"redis_cluster\":{\"slots_covered\":%lld,\"masters\":%lld,"
                  "\"masters_up\":%lld,\"redirects\":{\"moved\":%llu,\"ask\":%llu},"
                  "\"nodes\":[",
                  (long long)sum->cluster_slots, (long long)sum->cluster_masters,
                  (long long)sum->cluster_masters_up, (unsigned long long)sum->redis_moved,
                  (unsigned long long)sum->redis_ask);
    pc_store_cluster_nodes(w->store, node_json, out); /* worker 0's view: the admin's own */
    pc_buf_append_str(out, "]}");
    free(sum);
}

/* One model name as a JSON string, after a '[' or a ','. */
static void model_json(const char *name, void *arg)
{
    struct pc_buf *out = arg;
    pc_buf_append_str(out, out->len > 0 && out->data[out->len - 1] == '[' ? "\"" : ",\"");
    pc_buf_json_chars(out, name);
    pc_buf_append_char(out, '"');
}

/*
 * Ready means predcache can answer requests: not draining, and some model server is up
 * (the [backend]'s, or a named one's). Redis trouble only degrades the answers (BYPASS:
 * every request still gets the model's answer), so it is said in the body and the
 * metrics, and makes /ready fail only with [server] ready_requires_redis: under a
 * readiness probe, a Redis blip must not take every instance out of service.
 */
static void ready_maybe_answer(struct ready_probe *pr)
{
    if (--pr->waiting > 0)
        return;
    const struct pc_worker *w = pr->w;
    struct pc_buf named, body;
    pc_buf_init(&named);
    pc_buf_init(&body);
    size_t named_up_n = named_json(w, &named);
    cluster_json(pr->w, &named);
    pc_buf_append_str(&named, ",\"keyed_by_path\":[");
    pc_routes_list_as_sent(pr->w->cfg, 1, &named);
    pc_buf_append_str(&named, "],\"models_without_versions\":[");
    pc_versions_unversioned(pr->w->versions, model_json, &named);
    pc_buf_append_str(&named, "]");
    int any_model = pr->backend_ok || named_up_n > 0;
    int redis_gates = w->cfg->ready_requires_redis && !pr->redis_ok;
    int ok = !w->draining && any_model && !redis_gates;
    const char *nj = named.data ? named.data : "";
    struct pc_buf why;
    pc_buf_init(&why);
    if (w->draining)
        pc_buf_append_str(&why, "draining; ");
    if (!any_model)
        pc_buf_append_str(&why, w->n_backends > 1 ? "no model server up; "
                                                  : "model server unavailable; ");
    if (!pr->redis_ok)
        pc_buf_append_str(&why, redis_gates ? "redis unavailable; "
                                            : "redis unavailable: answers come from the model "
                                              "server uncached (BYPASS); ");
    if (pr->backend_ok && named_up_n + 1 < w->n_backends)
        pc_buf_append_str(&why, "a named backend is down (health checks failing); ");
    if (why.len >= 2)
        why.data[why.len -= 2] = '\0';
    pc_buf_printf(&body, "{\"ready\":%s,\"redis\":\"%s\",\"backend\":\"%s\"%s",
                  ok ? "true" : "false", pr->redis_ok ? "ok" : "down",
                  pr->backend_ok ? "ok" : "down", nj);
    if (why.len > 0)
        pc_buf_printf(&body, ",\"%s\":\"%s\"", ok ? "degraded" : "error", why.data);
    pc_buf_append_char(&body, '}');
    pc_buf_release(&why);
    if (body.data == NULL)
        pc_http_reply_error(pr->req, 503, "out of memory");
    else
        pc_http_reply(pr->req, ok ? 200 : 503, &json_ct, 1, body.data, body.len);
    pc_buf_release(&named);
    pc_buf_release(&body);
    free(pr);
}

/* The other workers' own view, from their shards: Redis connected, health checks up. */
static void ready_others(const struct pc_worker *w, int *redis_ok, int *backend_ok)
{
    *redis_ok = *backend_ok = 1;
    for (size_t i = 1; i < w->n_workers; i++) {
        const struct pc_metrics *m = &w->group[i].metrics;
        *redis_ok = *redis_ok && PC_METRIC_GET(m->redis_up);
        *backend_ok = *backend_ok && PC_METRIC_GET(m->backend_up);
    }
}

static void ready_redis_cb(int ok, void *arg)
{
    struct ready_probe *pr = arg;
    pr->redis_ok = ok;
    ready_maybe_answer(pr);
}

/* Any HTTP answer from the model server means it is up: its root may well be a 404. */
static void ready_backend_cb(const struct pc_upstream_resp *r, void *arg)
{
    struct ready_probe *pr = arg;
    pr->backend_ok = r->error == PC_UP_OK;
    ready_maybe_answer(pr);
}

static void handle_ready(struct pc_worker *w, struct pc_http_req *req)
{
    struct ready_probe *pr = calloc(1, sizeof *pr);
    if (pr == NULL) {
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    pr->req = req;
    pr->w = w;
    pr->waiting = 3; /* two checks, plus this function's own hold until both are started */
    int others_redis, others_backend;
    ready_others(w, &others_redis, &others_backend);
    if (!others_redis || pc_store_ping(w->store, ready_redis_cb, pr) != 0)
        pr->waiting--;
    if (!others_backend || !pc_health_up(w->health)) { /* down already: no need to ask */
        pr->waiting--;
    } else if (w->cfg->backend_health_path[0] != '\0') { /* its health checks say up */
        pr->backend_ok = 1;
        pr->waiting--;
    } else if (pc_upstream_send(w->up, "GET", "/", NULL, 0, NULL, 0, READY_BACKEND_TIMEOUT_MS,
                                ready_backend_cb, pr) == NULL) {
        pr->waiting--;
    }
    ready_maybe_answer(pr);
}

/* The sum over every worker's shard, in sum (large: the caller's heap), with what the
 * workers before a reload counted (before[i]: worker i's requests). */
static void metrics_sum(const struct pc_worker *w, struct pc_metrics *sum,
                        const struct pc_metrics **shards, size_t *n, uint64_t *before)
{
    pc_worker_shards(w, shards, MAX_SHARDS, n);
    pc_metrics_sum(sum, shards, *n);
    for (size_t i = 0; i < w->n_workers; i++) /* the subscribers' connections desync too */
        sum->redis_desyncs += PC_METRIC_GET(w->group[i].sub_metrics.redis_desyncs);
    memset(before, 0, MAX_SHARDS * sizeof *before);
    if (w->workset != NULL)
        pc_workset_add_others(w->workset, w, sum, before, *n);
}

/* The per-route families, summed over every worker. */
static int render_routes(const struct pc_worker *w, struct pc_buf *out)
{
    size_t n_routes = w->n_routes + 1;
    const struct pc_route_metrics *shards[MAX_SHARDS];
    size_t n = 0;
    for (size_t i = 0; i < w->n_workers && n < MAX_SHARDS; i++)
        shards[n++] = w->group[i].route_metrics;
    struct pc_route_metrics *sum = calloc(n_routes, sizeof *sum);
    if (sum == NULL)
        return -1;
    pc_route_metrics_sum(sum, shards, n, n_routes);
    if (w->workset != NULL)
        pc_workset_add_routes(w->workset, w, w->route_names, n_routes, sum);
    int rc = pc_route_metrics_render(sum, w->route_names, n_routes, out);
    free(sum);
    return rc;
}

/* The named backends' health gauges, over every worker. */
static int render_named_backends(const struct pc_worker *w, struct pc_buf *out)
{
    if (w->n_backends <= 1)
        return 0;
    int rc = pc_buf_printf(out, "# HELP predcache_named_backend_up 1 unless the active health "
                                "checks of a [backend NAME] failed\n"
                                "# TYPE predcache_named_backend_up gauge\n");
    for (size_t be = 1; be < w->n_backends; be++)
        rc |= pc_buf_printf(out, "predcache_named_backend_up{backend=\"%s\"} %d\n",
                            w->cfg->backends[be - 1].name, named_up(w, be));
    return rc ? -1 : 0;
}

/* One master of the cluster as three metric lines (arg: the buffer). */
static void node_metric(const char *host, int port, size_t slots, int up, size_t pending, void *arg)
{
    pc_buf_printf(arg,
                  "predcache_redis_cluster_node_up{node=\"%s:%d\"} %d\n"
                  "predcache_redis_cluster_node_slots{node=\"%s:%d\"} %zu\n"
                  "predcache_redis_cluster_node_pending{node=\"%s:%d\"} %zu\n",
                  host, port, up, host, port, slots, host, port, pending);
}

/* The cluster's masters as this worker (the admin's) sees them: its own store, its thread. */
static int render_cluster_nodes(const struct pc_worker *w, struct pc_buf *out)
{
    if (!w->cfg->redis_cluster)
        return 0;
    int rc = pc_buf_append_str(
        out, "# HELP predcache_redis_cluster_node_up 1 when worker 0's connection to this "
             "master is ready\n"
             "# TYPE predcache_redis_cluster_node_up gauge\n"
             "# HELP predcache_redis_cluster_node_slots Slots this master serves (worker 0's map)\n"
             "# TYPE predcache_redis_cluster_node_slots gauge\n"
             "# HELP predcache_redis_cluster_node_pending Worker 0's commands awaiting this "
             "master's reply\n"
             "# TYPE predcache_redis_cluster_node_pending gauge\n");
    pc_store_cluster_nodes(w->store, node_metric, out);
    return rc;
}

/* /metrics (Prometheus text) or /stats (JSON): both render the sum over the workers. */
static void handle_sum(struct pc_worker *w, struct pc_http_req *req, int stats)
{
    struct pc_buf b;
    pc_buf_init(&b);
    const struct pc_metrics *shards[MAX_SHARDS];
    uint64_t before[MAX_SHARDS];
    size_t n;
    struct pc_metrics *sum = malloc(sizeof *sum);
    int rc = -1;
    if (sum != NULL) {
        metrics_sum(w, sum, shards, &n, before);
        if (stats)
            rc = pc_metrics_render_stats(sum, pc_now_us(), &b);
        else
            rc = pc_metrics_render(sum, &b) | pc_metrics_render_workers(shards, n, before, &b) |
                 render_routes(w, &b) | render_named_backends(w, &b) | render_cluster_nodes(w, &b) |
                 pc_buildinfo_render(&b) |
                 (w->workset != NULL ? pc_workset_render(w->workset, &b) : 0);
        free(sum);
    }
    if (rc != 0) {
        pc_buf_release(&b);
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    struct pc_header ct = {(char *)"Content-Type", (char *)"text/plain; version=0.0.4"};
    pc_http_reply(req, 200, stats ? &json_ct : &ct, 1, b.data, b.len);
    pc_buf_release(&b);
}

/* ---- purge ------------------------------------------------------------------------ */

/* Mutating endpoints need "Authorization: Bearer <[server] admin_token>" when it is set. */
static int authorized(const struct pc_worker *w, struct pc_http_req *req)
{
    const char *token = w->cfg->admin_token;
    if (token[0] == '\0')
        return 1;
    const char *auth = pc_http_req_header(req, "Authorization");
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 && pc_token_equal(auth + 7, token))
        return 1;
    struct pc_header h[2] = {json_ct, {(char *)"WWW-Authenticate", (char *)"Bearer"}};
    const char *body = "{\"error\":\"admin token required\"}";
    pc_http_reply(req, 401, h, 2, body, strlen(body));
    return 0;
}

struct purge {
    struct pc_http_req *req;
    char key[PC_CFG_STR * 2];
};

static void on_purged(const struct pc_reply *r, void *arg)
{
    struct purge *pg = arg;
    if (r == NULL || pc_reply_type(r) != PC_REPLY_INTEGER) {
        pc_http_reply_error(pg->req, 503, "Redis unavailable");
    } else {
        struct pc_buf b;
        pc_buf_init(&b);
        pc_buf_printf(&b, "{\"key\":\"%s\",\"deleted\":%lld}", pg->key, pc_reply_integer(r));
        pc_http_reply(pg->req, 200, &json_ct, 1, b.data, b.len);
        pc_buf_release(&b);
    }
    free(pg);
}

/* Is key[0..len) an entry's key: prefix "v2:{" 64 hex "}" (or the first format's prefix
 * "v1:" 64 hex, until those age out)? */
static int is_entry_key(const char *prefix, const char *key, size_t len)
{
    size_t pl = strlen(prefix);
    if (len < pl || memcmp(key, prefix, pl) != 0)
        return 0;
    const char *k = key + pl;
    size_t rest = len - pl;
    size_t hex_at = rest == 4 + 64 + 1 && memcmp(k, "v2:{", 4) == 0 && k[68] == '}' ? 4
                    : rest == 3 + 64 && memcmp(k, "v1:", 3) == 0                    ? 3
                                                                                    : 0;
    if (hex_at == 0)
        return 0;
    for (size_t i = 0; i < 64; i++) {
        char c = k[hex_at + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

/* DELETE /cache/<key>: one entry, by the key from X-Cache-Key. */
static void handle_purge(struct pc_worker *w, struct pc_http_req *req, const char *raw)
{
    const char *prefix = w->cfg->key_prefix;
    /* A key's hash tag braces arrive as %7B and %7D from most clients. */
    char key[sizeof((struct purge *)0)->key];
    size_t kl = 0;
    const char *s = raw;
    while (*s && kl + 1 < sizeof key) {
        unsigned v;
        if (s[0] == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2]) &&
            sscanf(s + 1, "%2x", &v) == 1 && v != 0) {
            key[kl++] = (char)v;
            s += 3;
        } else {
            key[kl++] = *s++;
        }
    }
    key[kl] = '\0';
    if (*s != '\0') /* longer than any key */
        kl = 0;
    /* Only cache entries (their key's form): never a job record, the job stream or the
     * invalidation counters, which share the prefix. */
    if (!is_entry_key(prefix, key, kl)) {
        pc_http_reply_error(req, 400, "not a cache key of this predcache (see X-Cache-Key)");
        return;
    }
    struct purge *pg = calloc(1, sizeof *pg);
    if (pg == NULL) {
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    pg->req = req;
    memcpy(pg->key, key, kl + 1);
    if (pc_done_purge(w, pg->key, on_purged, pg) != 0) {
        free(pg);
        pc_http_reply_error(req, 503, "Redis unavailable");
    }
}

/* ---- invalidation ------------------------------------------------------------------ */

/* One round trip: the counter moves and every process hears of it. */
static const char invalidate_script[] = "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1) "
                                        "redis.call('PUBLISH', ARGV[2], ARGV[3]) return n";

struct invalidation {
    struct pc_worker *w;
    struct pc_http_req *req;
    char ns[PC_CFG_STR];
    char model[128];
    char version[64];
};

/* Decodes %XX and '+' of a query value in place. 0 ok, -1 malformed or a NUL in it. */
static int query_decode(char *s)
{
    char *o = s;
    for (char *i = s; *i; i++) {
        if (*i == '%') {
            int hi = pc_hexval(i[1]), lo = hi >= 0 ? pc_hexval(i[2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0))
                return -1; /* malformed, or %00: it would cut the name short */
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = *i == '+' ? ' ' : *i;
        }
    }
    *o = '\0';
    return 0;
}

/* A model name or version as keys see it: printable, no '/', no quote, no backslash. */
static int model_name_ok(const char *s, size_t cap)
{
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static void on_invalidated(const struct pc_reply *r, void *arg)
{
    struct invalidation *iv = arg;
    if (r == NULL || pc_reply_type(r) != PC_REPLY_INTEGER) {
        pc_http_reply_error(iv->req, 503, "Redis unavailable: nothing invalidated");
    } else {
        pc_generations_forget(iv->w->generations, iv->ns); /* this worker: at once */
        PC_METRIC_INC(iv->w->metrics.invalidations);
        const char *what = iv->version[0] ? "version" : iv->model[0] ? "model" : "namespace";
        pc_log(PC_LOG_INFO, "admin: invalidated %s %s%s%s%s in namespace %s (generation %lld)",
               what, iv->model, iv->version[0] ? " version " : "", iv->version,
               iv->model[0] ? "" : "(all)", iv->ns, pc_reply_integer(r));
        struct pc_buf b;
        pc_buf_init(&b);
        pc_buf_printf(&b, "{\"invalidated\":\"%s\",\"namespace\":\"%s\"", what, iv->ns);
        if (iv->model[0])
            pc_buf_printf(&b, ",\"model\":\"%s\"", iv->model);
        if (iv->version[0])
            pc_buf_printf(&b, ",\"version\":\"%s\"", iv->version);
        pc_buf_printf(&b, ",\"generation\":%lld}", pc_reply_integer(r));
        pc_http_reply(iv->req, 200, &json_ct, 1, b.data, b.len);
        pc_buf_release(&b);
    }
    free(iv);
}

/*
 * POST /cache/invalidate?model=NAME[&version=V][&namespace=NS] or ?all=1[&namespace=NS]:
 * every entry of that model (version, namespace) is out of reach at once. O(1): one
 * counter in Redis, part of every key that model's requests derive.
 */
static void handle_invalidate(struct pc_worker *w, struct pc_http_req *req)
{
    struct invalidation *iv = calloc(1, sizeof *iv);
    char *q = strdup(pc_http_req_query(req));
    const char *bad = NULL;
    int all = 0;
    if (iv == NULL || q == NULL) {
        free(iv);
        free(q);
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    iv->w = w;
    iv->req = req;
    pc_strlcpy(iv->ns, w->cfg->namespace_, sizeof iv->ns);
    for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv && !bad;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL) {
            bad = "a query parameter without a value";
            break;
        }
        *eq = '\0';
        char *v = eq + 1;
        if (query_decode(v) != 0)
            bad = "malformed %-escape (or %00) in the query";
        else if (strcmp(kv, "model") == 0 && model_name_ok(v, sizeof iv->model))
            pc_strlcpy(iv->model, v, sizeof iv->model);
        else if (strcmp(kv, "version") == 0 && model_name_ok(v, sizeof iv->version))
            pc_strlcpy(iv->version, v, sizeof iv->version);
        else if (strcmp(kv, "namespace") == 0 && pc_name_ok(v, 64))
            pc_strlcpy(iv->ns, v, sizeof iv->ns);
        else if (strcmp(kv, "all") == 0 && strcmp(v, "1") == 0)
            all = 1;
        else
            bad = "expected model=NAME[&version=V] or all=1, and optionally namespace=NS "
                  "(names: printable, no '/', '\"' or '\\'; a namespace: 1 to 64 of "
                  "A-Z a-z 0-9 . _ -)";
    }
    free(q);
    if (bad == NULL && all == (iv->model[0] != '\0'))
        bad = "give either model=NAME or all=1";
    if (bad == NULL && iv->version[0] && !iv->model[0])
        bad = "version needs model";
    char key[PC_CFG_STR * 2 + 8], field[PC_CFG_STR], chan[PC_CHANNEL_MAX], msg[PC_CFG_STR + 8];
    if (bad == NULL && (pc_generations_key(w->cfg, iv->ns, key, sizeof key) != 0 ||
                        pc_generations_field(iv->model, iv->version, field, sizeof field) != 0 ||
                        pc_done_channel(w->cfg, chan, sizeof chan) != 0))
        bad = "names too long";
    if (bad != NULL) {
        free(iv);
        pc_http_reply_error(req, 400, bad);
        return;
    }
    snprintf(msg, sizeof msg, "%s%s", PC_GEN_ANNOUNCE, iv->ns);
    const char *argv[] = {"EVAL", invalidate_script, "1", key, field, chan, msg};
    size_t lens[7];
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (pc_store_command(w->store, 0, on_invalidated, iv, 7, argv, lens) != 0) {
        free(iv);
        pc_http_reply_error(req, 503, "Redis unavailable: nothing invalidated");
    }
}

void pc_admin_handle(struct pc_http_req *req, void *arg)
{
    struct pc_worker *w = arg;
    const char *path = pc_http_req_path(req);
    const char *method = pc_http_req_method(req);
    if (strcmp(path, "/cache/invalidate") == 0) {
        if (strcmp(method, "POST") != 0) {
            struct pc_header h[2] = {json_ct, {(char *)"Allow", (char *)"POST"}};
            const char *body = "{\"error\":\"method not allowed\"}";
            pc_http_reply(req, 405, h, 2, body, strlen(body));
        } else if (authorized(w, req)) {
            handle_invalidate(w, req);
        }
        return;
    }
    if (strncmp(path, "/cache/", 7) == 0) {
        if (strcmp(method, "DELETE") != 0) {
            struct pc_header h[2] = {json_ct, {(char *)"Allow", (char *)"DELETE"}};
            const char *body = "{\"error\":\"method not allowed\"}";
            pc_http_reply(req, 405, h, 2, body, strlen(body));
        } else if (authorized(w, req)) {
            handle_purge(w, req, path + 7);
        }
        return;
    }
    int known = strcmp(path, "/health") == 0 || strcmp(path, "/live") == 0 ||
                strcmp(path, "/ready") == 0 || strcmp(path, "/metrics") == 0 ||
                strcmp(path, "/stats") == 0;
    if (!known) {
        pc_http_reply_error(req, 404, "no such admin endpoint");
        return;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        struct pc_header h[2] = {json_ct, {(char *)"Allow", (char *)"GET, HEAD"}};
        const char *body = "{\"error\":\"method not allowed\"}";
        pc_http_reply(req, 405, h, 2, body, strlen(body));
        return;
    }
    if (strcmp(path, "/health") == 0 || strcmp(path, "/live") == 0) { /* no dependency asked */
        const char *body = w->draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ok\"}";
        pc_http_reply(req, 200, &json_ct, 1, body, strlen(body));
    } else if (strcmp(path, "/ready") == 0) {
        handle_ready(w, req);
    } else if (strcmp(path, "/stats") == 0) {
        handle_sum(w, req, 1);
    } else {
        handle_sum(w, req, 0);
    }
}
