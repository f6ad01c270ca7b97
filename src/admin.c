/*
 * admin: the admin port, served by worker 0. /health (liveness), /ready (Redis and the
 * model server answer now, and every other worker has both up), /metrics (Prometheus
 * text) and /stats (latency timers as JSON), both the sum over all workers' shards;
 * DELETE /cache/<key> through worker 0's store. Bound to 127.0.0.1 by default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/buf.h"
#include "predcache/config.h"
#include "predcache/health.h"
#include "predcache/http.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/worker.h"

#define READY_BACKEND_TIMEOUT_MS 2000
#define MAX_SHARDS 64 /* [server] workers at most */

/* One /ready probe: waits for both checks, then answers. */
struct ready_probe {
    struct pc_http_req *req;
    int waiting;
    int redis_ok;
    int backend_ok;
    char backend_err[256];
};

static const struct pc_header json_ct = {(char *)"Content-Type", (char *)"application/json"};

static void ready_maybe_answer(struct ready_probe *pr)
{
    if (--pr->waiting > 0)
        return;
    char body[512];
    int ok = pr->redis_ok && pr->backend_ok;
    int n;
    if (ok)
        n = snprintf(body, sizeof body, "{\"ready\":true,\"redis\":\"ok\",\"backend\":\"ok\"}");
    else
        n = snprintf(body, sizeof body,
                     "{\"ready\":false,\"redis\":\"%s\",\"backend\":\"%s\",\"error\":\"%s%s%s\"}",
                     pr->redis_ok ? "ok" : "down", pr->backend_ok ? "ok" : "down",
                     pr->redis_ok ? "" : "redis unavailable",
                     !pr->redis_ok && !pr->backend_ok ? "; " : "",
                     pr->backend_ok ? "" : "model server unavailable");
    pc_http_reply(pr->req, ok ? 200 : 503, &json_ct, 1, body, (size_t)n);
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
    pr->waiting = 3; /* two checks, plus this function's own hold until both are started */
    int others_redis, others_backend;
    ready_others(w, &others_redis, &others_backend);
    if (!others_redis || pc_store_ping(w->store, ready_redis_cb, pr) != 0)
        pr->waiting--;
    if (!others_backend || !pc_health_up(w->health)) /* down already: no need to ask */
        pr->waiting--;
    else if (pc_upstream_send(w->up, "GET", "/", NULL, 0, NULL, 0, READY_BACKEND_TIMEOUT_MS,
                              ready_backend_cb, pr) == NULL)
        pr->waiting--;
    ready_maybe_answer(pr);
}

/* The sum over every worker's shard, in sum (large: the caller's heap). */
static void metrics_sum(const struct pc_worker *w, struct pc_metrics *sum,
                        const struct pc_metrics **shards, size_t *n)
{
    pc_worker_shards(w, shards, MAX_SHARDS, n);
    pc_metrics_sum(sum, shards, *n);
}

static void handle_metrics(struct pc_worker *w, struct pc_http_req *req)
{
    struct pc_buf b;
    pc_buf_init(&b);
    const struct pc_metrics *shards[MAX_SHARDS];
    size_t n;
    struct pc_metrics *sum = malloc(sizeof *sum);
    int rc = -1;
    if (sum != NULL) {
        metrics_sum(w, sum, shards, &n);
        rc = pc_metrics_render(sum, &b) | pc_metrics_render_workers(shards, n, &b);
        free(sum);
    }
    if (rc != 0) {
        pc_buf_release(&b);
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    struct pc_header ct = {(char *)"Content-Type", (char *)"text/plain; version=0.0.4"};
    pc_http_reply(req, 200, &ct, 1, b.data, b.len);
    pc_buf_release(&b);
}

static void handle_stats(struct pc_worker *w, struct pc_http_req *req)
{
    struct pc_buf b;
    pc_buf_init(&b);
    const struct pc_metrics *shards[MAX_SHARDS];
    size_t n;
    struct pc_metrics *sum = malloc(sizeof *sum);
    int rc = -1;
    if (sum != NULL) {
        metrics_sum(w, sum, shards, &n);
        rc = pc_metrics_render_stats(sum, pc_now_us(), &b);
        free(sum);
    }
    if (rc != 0) {
        pc_buf_release(&b);
        pc_http_reply_error(req, 503, "out of memory");
        return;
    }
    pc_http_reply(req, 200, &json_ct, 1, b.data, b.len);
    pc_buf_release(&b);
}

/* ---- purge ------------------------------------------------------------------------ */

/* Constant-time comparison, so the token cannot be guessed byte by byte from timings. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ (i < lb ? b[i] : 0));
    return diff == 0;
}

/* Mutating endpoints need "Authorization: Bearer <[server] admin_token>" when it is set. */
static int authorized(const struct pc_worker *w, struct pc_http_req *req)
{
    const char *token = w->cfg->admin_token;
    if (token[0] == '\0')
        return 1;
    const char *auth = pc_http_req_header(req, "Authorization");
    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 && token_equal(auth + 7, token))
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

/* DELETE /cache/<key>: one entry, by the key from X-Cache-Key. */
static void handle_purge(struct pc_worker *w, struct pc_http_req *req, const char *key)
{
    const char *prefix = w->cfg->key_prefix;
    size_t kl = strlen(key);
    int ok =
        kl > 0 && kl < sizeof((struct purge *)0)->key && strncmp(key, prefix, strlen(prefix)) == 0;
    for (size_t i = 0; ok && i < kl; i++)
        ok = key[i] > 0x20 && key[i] < 0x7f && key[i] != '"' && key[i] != '\\';
    if (!ok) { /* only cache entries: never a job record or anything else in Redis */
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
    const char *argv[] = {"DEL", pg->key};
    size_t lens[] = {3, kl};
    if (pc_store_command(w->store, 0, on_purged, pg, 2, argv, lens) != 0) {
        free(pg);
        pc_http_reply_error(req, 503, "Redis unavailable");
    }
}

void pc_admin_handle(struct pc_http_req *req, void *arg)
{
    struct pc_worker *w = arg;
    const char *path = pc_http_req_path(req);
    const char *method = pc_http_req_method(req);
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
    int known = strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0 ||
                strcmp(path, "/metrics") == 0 || strcmp(path, "/stats") == 0;
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
    if (strcmp(path, "/health") == 0) {
        const char *body = w->draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ok\"}";
        pc_http_reply(req, 200, &json_ct, 1, body, strlen(body));
    } else if (strcmp(path, "/ready") == 0) {
        handle_ready(w, req);
    } else if (strcmp(path, "/stats") == 0) {
        handle_stats(w, req);
    } else {
        handle_metrics(w, req);
    }
}
