/*
 * worker: wires one event loop: listeners -> proxy/admin handlers -> store + upstream.
 * Also runs the drain on shutdown: stop accepting and stop taking async jobs, then poll
 * until no request is in flight, no job is held and no Redis command is pending, or until
 * drain_timeout_ms has passed. Other threads reach a worker only through its control pipe
 * (drain, stop) and, for worker 0's admin, its metrics shard.
 */
#include "predcache/worker.h"

#include "predcache/admin.h"
#include "predcache/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "predcache/budget.h"
#include "predcache/config.h"
#include "predcache/flight.h"
#include "predcache/generations.h"
#include "predcache/grpc_proxy.h"
#include "predcache/h2srv.h"
#include "predcache/h2up.h"
#include "predcache/health.h"
#include "predcache/http.h"
#include "predcache/jobs.h"
#include "predcache/keymemo.h"
#include "predcache/log.h"
#include "predcache/loop.h"
#include "predcache/peers.h"
#include "predcache/purges.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/versions.h"
#include "coalesce.h"
#include "done.h"

#define DRAIN_POLL_MS 20
#define DRAIN_FLUSH_MS 100
/* A greeting Redis would not take is tried again this soon (peers.h). */
#define GREET_RETRY_MS 100

/* Requests the HTTP layer refused get their access line and count as errors too. */
static void on_http_failure(const struct pc_http_failure *f, void *arg)
{
    struct pc_worker *w = arg;
    PC_METRIC_INC(w->metrics.req_error);
    struct pc_access a = {
        .id = f->id,
        .client = f->client,
        .method = f->method,
        .path = f->path,
        .query = f->query,
        .status = f->status,
        .cache = "ERROR",
        .backend_ms = -1,
        .total_ms = f->total_ms,
    };
    pc_log_access(&a);
}

/* The route table with each route's key parameters. */
static int init_routes(struct pc_worker *w, char *err, size_t errlen)
{
    const struct pc_config *cfg = w->cfg;
    w->n_routes = pc_routes_count(cfg);
    w->routes = calloc(w->n_routes ? w->n_routes : 1, sizeof *w->routes);
    w->route_metrics = calloc(w->n_routes + 1, sizeof *w->route_metrics);
    w->route_names = calloc(w->n_routes + 1, sizeof *w->route_names);
    if (w->routes == NULL || w->route_metrics == NULL || w->route_names == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < w->n_routes; i++) {
        struct pc_wroute *r = &w->routes[i];
        pc_routes_get(cfg, i, &r->v);
        for (size_t f = 0; f < r->v.n_input_fields && f < PC_CFG_MAX_LIST; f++)
            r->input_fields[f] = r->v.input_fields[f];
        r->keyp = w->keyp;
        r->keyp.input_fields = r->input_fields;
        r->keyp.n_input_fields = r->v.n_input_fields;
        r->keyp.path_field = r->v.path_field;
        r->ignore_auto = r->v.n_ignore_fields == 1 && strcmp(r->v.ignore_fields[0], "auto") == 0;
        for (size_t f = 0; !r->ignore_auto && f < r->v.n_ignore_fields; f++)
            r->ignore_fields[f] = r->v.ignore_fields[f];
        r->keyp.ignore_fields = r->ignore_fields;
        r->keyp.n_ignore_fields = r->ignore_auto ? 0 : r->v.n_ignore_fields;
        for (size_t f = 0; f < r->v.n_vary && r->n_vary < PC_WROUTE_VARY; f++) {
            char name[64];
            size_t k = 0;
            for (; r->v.vary[f][k] && k < sizeof name - 1; k++)
                name[k] = (char)tolower((unsigned char)r->v.vary[f][k]);
            name[k] = '\0';
            int dup = 0;
            for (size_t j = 0; j < r->n_vary; j++)
                dup |= strcmp(r->vary[j], name) == 0;
            if (!dup)
                memcpy(r->vary[r->n_vary++], name, sizeof name);
        }
        w->route_names[i + 1] = r->v.name;
    }
    w->route_names[0] = "(none)";
    return 0;
}

/* One connection handed over: its socket, its peer, and which port it came in on. */
struct pc_handed_conn {
    int fd;
    int admin;
    char peer[64];
};

/* Queues a connection for to (another thread's worker) and wakes it. */
static void hand_to(struct pc_worker *to, int fd, const char *peer, int admin)
{
    struct pc_handed *h = &to->handed;
    pthread_mutex_lock(&h->lock);
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct pc_handed_conn *c = realloc(h->conns, cap * sizeof *c);
        if (c == NULL) {
            pthread_mutex_unlock(&h->lock);
            close(fd); /* out of memory: the client sees a close between two requests */
            return;
        }
        h->conns = c;
        h->cap = cap;
    }
    struct pc_handed_conn *c = &h->conns[h->n++];
    c->fd = fd;
    c->admin = admin;
    pc_strlcpy(c->peer, peer, sizeof c->peer);
    pthread_mutex_unlock(&h->lock);
    if (pc_worker_post(to, PC_WORKER_TAKE) != 0)
        pc_log(PC_LOG_WARN, "reload: cannot wake worker %zu for a connection handed over", to->id);
}

/* The http servers' hand-over callbacks (a retiring worker's): to the successor. */
static void give_data(int fd, const char *peer, void *arg)
{
    struct pc_worker *w = arg;
    hand_to(w->successor, fd, peer, 0);
}

static void give_admin(int fd, const char *peer, void *arg)
{
    struct pc_worker *w = arg;
    hand_to(&w->successor->group[0], fd, peer, 1);
}

/* Serves the connections handed to this worker. */
static void take_handed(struct pc_worker *w)
{
    struct pc_handed *h = &w->handed;
    pthread_mutex_lock(&h->lock);
    struct pc_handed_conn *conns = h->conns;
    size_t n = h->n;
    h->conns = NULL;
    h->n = h->cap = 0;
    pthread_mutex_unlock(&h->lock);
    for (size_t i = 0; i < n; i++) {
        struct pc_http_server *srv = conns[i].admin ? w->admin : w->data;
        if (srv == NULL)
            close(conns[i].fd);
        else
            pc_http_server_take(srv, conns[i].fd, conns[i].peer);
    }
    free(conns);
}

/* Commands posted by other threads (main's signal handling and reloads). */
static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct pc_worker *w = arg;
    char cmds[16];
    ssize_t n = read(fd, cmds, sizeof cmds);
    for (ssize_t i = 0; i < n; i++) {
        if (cmds[i] == PC_WORKER_DRAIN) {
            pc_worker_drain(w);
        } else if (cmds[i] == PC_WORKER_RETIRE) {
            pc_worker_retire(w);
        } else if (cmds[i] == PC_WORKER_TAKE) {
            take_handed(w);
        } else if (cmds[i] == PC_WORKER_STOP) {
            event_base_loopbreak(w->base);
            return;
        }
    }
}

int pc_worker_post(struct pc_worker *w, enum pc_worker_cmd cmd)
{
    char c = (char)cmd;
    ssize_t n;
    do
        n = write(w->ctl[1], &c, 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

/* The address a worker binds for hostport: as written for worker 0; for the others, that
 * host with the port worker 0 bound (port0; it differs from the configured one when that is
 * 0), so that they join its port. NULL when hostport is not an address. */
static const char *bind_address(const struct pc_worker *w, const char *hostport, int port0,
                                char *out, size_t len)
{
    if (w->id == 0)
        return hostport;
    char host[256];
    int port, n;
    if (pc_config_split_hostport(hostport, host, sizeof host, &port) != 0)
        return NULL;
    if (host[0] == '\0')
        n = snprintf(out, len, ":%d", port0);
    else if (strchr(host, ':') != NULL)
        n = snprintf(out, len, "[%s]:%d", host, port0);
    else
        n = snprintf(out, len, "%s:%d", host, port0);
    return n > 0 && (size_t)n < len ? out : NULL;
}

/* A sentinel's +switch-master: "<name> <old ip> <old port> <new ip> <new port>". Every
 * connection of this worker to the master of [redis] sentinel_master follows. Called by the
 * watcher store (w->sentinel_watch) with the worker as arg; msg is borrowed for the call. */
/* A message on the done channel: invalidations and purges are done.c's; an answered key
 * wakes the leader waiting for it, on the data port or the gRPC port. */
static void on_done(const char *msg, size_t len, void *arg)
{
    struct pc_worker *w = arg;
    char key[PC_KEY_MAX];
    int handled = pc_done_message(w, msg, len, key, sizeof key);
    if (handled == 1)
        pc_lock_wanted(w, 0); /* a greeting, say: the lock_alone gauge follows at once */
    if (handled != 0)
        return;
    pc_proxy_on_answered(w, key);
    pc_grpc_cache_on_answered(w, key);
}

/* Publishes this worker's greeting on the done channel (peers.h); again after
 * PC_PEERS_GREET_MS, or sooner while Redis would not take it (a new worker's first: the
 * others stop skipping the lock as soon as they hear it). arg is the worker, which owns
 * the timer (freed in pc_worker_release, after its loop has stopped). */
static void greet(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_worker *w = arg;
    int sent = pc_done_publish(w, pc_peers_greeting(w->peers)) == 0;
    pc_lock_wanted(w, 0); /* the lock_alone gauge follows the time without traffic */
    struct timeval next = {0, GREET_RETRY_MS * 1000};
    if (sent)
        next = (struct timeval){PC_PEERS_GREET_MS / 1000, (PC_PEERS_GREET_MS % 1000) * 1000};
    event_add(w->greet_timer, &next);
}

/* The access lines a pass of the loop wrote, written together once its other callbacks
 * ran (activated by the first of them: pc_worker_log_defer), at the lowest priority: after
 * the answers held in that pass (http.c), which were armed before the first line. */
static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pc_log_flush_access();
}

void pc_worker_log_defer(void *worker)
{
    struct pc_worker *w = worker;
    event_active(w->log_flush, EV_TIMEOUT, 1);
}

static void on_switch_master(const char *msg, size_t len, void *arg)
{
    struct pc_worker *w = arg;
    char text[4 * PC_CFG_STR], name[PC_CFG_STR], old_ip[PC_CFG_STR], new_ip[PC_CFG_STR];
    int old_port, new_port;
    if (len >= sizeof text)
        return;
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text, "%255s %255s %d %255s %d", name, old_ip, &old_port, new_ip, &new_port) != 5 ||
        strcmp(name, w->cfg->redis_sentinel_master) != 0 || new_port <= 0 || new_port > 65535)
        return;
    pc_store_master_moved(w->store, new_ip, new_port);
    pc_store_master_moved(w->subscriber, new_ip, new_port);
    pc_jobs_master_moved(w->jobs, new_ip, new_port);
}

/* A duplicate of the running worker's listening socket fd (-1: none) when its address
 * (was) is the one wanted (now), else -1: a reload keeps the sockets, so no connection is
 * refused meanwhile. */
static int inherit_fd(int fd, const char *was, const char *now)
{
    return fd < 0 || strcmp(was, now) != 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

int pc_worker_init(struct pc_worker *w, struct event_base *base, const struct pc_config *cfg,
                   struct pc_worker *group, size_t n, const struct pc_worker *prev, char *err,
                   size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->pid = (long)getpid();
    pthread_mutex_init(&w->handed.lock, NULL);
    w->ctl[0] = w->ctl[1] = -1;
    w->group = group;
    w->n_workers = n;
    w->id = (size_t)(w - group);
    w->base = base;
    /* Each worker samples hits on its own sequence; never 0 (the sampler's fixed point). */
    w->verify_rng = ((uint64_t)getpid() << 32) ^ pc_now_us() ^ ((uint64_t)w->id << 56) ^ 1u;
    w->cfg = cfg;
    pc_metrics_init(&w->metrics);
    if (pipe2(w->ctl, O_NONBLOCK | O_CLOEXEC) != 0 ||
        (w->log_flush = event_new(base, -1, 0, on_log_flush, NULL)) == NULL ||
        event_priority_set(w->log_flush, pc_loop_priority(base, PC_LOOP_IDLE)) != 0 ||
        (w->ctl_ev = event_new(base, w->ctl[0], EV_READ | EV_PERSIST, on_ctl, w)) == NULL ||
        event_add(w->ctl_ev, NULL) != 0) {
        snprintf(err, errlen, "cannot create the worker's control pipe: %s", strerror(errno));
        return -1;
    }
    w->flights = pc_flights_new();
    w->refreshing = pc_flights_new();
    w->grpc_flights = pc_flights_new();
    if (w->flights == NULL || w->refreshing == NULL || w->grpc_flights == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_input_fields && i < 32; i++)
        w->input_fields[i] = cfg->input_fields[i];
    w->keyp = (struct pc_key_params){
        .namespace_ = cfg->namespace_,
        .prefix = cfg->key_prefix,
        .input_fields = w->input_fields,
        .n_input_fields = cfg->n_input_fields,
        .path_field = cfg->path_field,
    };
    /* A backend is known by its cache_id, else by its URL as written. */
    w->cache_ids[0] = cfg->backend_cache_id[0] ? cfg->backend_cache_id : cfg->backend_url;
    for (size_t i = 0; i < cfg->n_backends && i + 1 < PC_WORKER_BACKENDS; i++)
        w->cache_ids[i + 1] =
            cfg->backends[i].cache_id[0] ? cfg->backends[i].cache_id : cfg->backends[i].url;
    struct pc_http_limits lim = {
        .on_failure = on_http_failure,
        .on_failure_arg = w,
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_bytes = cfg->max_body_bytes,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .read_timeout_ms = cfg->request_timeout_ms,
        .max_connections = cfg->max_connections,
        .answers_queued = &w->metrics.answers_queued,
        .answers_held = &w->metrics.answers_held,
        .answer_flushes = &w->metrics.answer_flushes,
        .output_bytes = &w->metrics.output_buffered,
        .shed_over_budget = 1,
        .answers_shed = &w->metrics.answers_shed,
        .clients_stalled = &w->metrics.clients_stalled,
        .connections_refused = &w->metrics.connections_refused,
        .input_pauses = &w->metrics.input_pauses,
        .input_bytes = &w->metrics.input_buffered,
        .request_ids = 1,
    };
    w->n_backends = 1 + cfg->n_backends;
    for (size_t i = 0; i < w->n_backends; i++) {
        struct pc_backend_cfg def;
        const struct pc_backend_cfg *be = pc_config_backend(cfg, i, &def);
        w->ups[i] = pc_upstream_new_backend(base, be);
        if (w->ups[i] == NULL) {
            snprintf(err, errlen, "cannot create the model server client");
            return -1;
        }
        pc_upstream_set_gauges(w->ups[i], &(struct pc_upstream_gauges){
                                              .buffered = &w->metrics.backend_buffered,
                                              .paused = &w->metrics.backend_paused,
                                              .pauses = &w->metrics.backend_pauses,
                                          });
        w->healths[i] =
            pc_health_new(base, be, w->ups[i], i == 0 ? &w->metrics.backend_up : &w->backend_up[i]);
        if (w->healths[i] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    w->up = w->ups[0];
    w->health = w->healths[0];
    w->memo = pc_keymemo_new(cfg->key_memo_bytes, NULL);
    if (w->memo == NULL && cfg->key_memo_bytes > 0) {
        snprintf(err, errlen, "out of memory for the key memo");
        return -1;
    }
    w->versions = pc_versions_new(w);
    w->generations = pc_generations_new(w);
    w->purges = pc_purges_new(PC_PURGES_KEEP);
    w->peers = pc_peers_new();
    if (w->versions == NULL || w->generations == NULL || w->purges == NULL || w->peers == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (init_routes(w, err, errlen) != 0)
        return -1;
    /* Several workers: one listener each on one port, and the kernel spreads connections. */
    char addr[PC_CFG_STR + 16];
    lim.bind = n == 1       ? PC_LISTEN_EXCLUSIVE
               : w->id == 0 ? PC_LISTEN_SHARE_FIRST
                            : PC_LISTEN_SHARE_JOIN;
    int fd = prev != NULL
                 ? inherit_fd(pc_http_server_listen_fd(prev->data), prev->cfg->listen, cfg->listen)
                 : -1;
    const char *listen = bind_address(
        w, cfg->listen, w->id > 0 ? pc_http_server_port(group[0].data) : 0, addr, sizeof addr);
    if (fd >= 0)
        w->data = pc_http_server_adopt(base, fd, &lim, pc_proxy_handle, w, err, errlen);
    else if (listen == NULL)
        snprintf(err, errlen, "invalid listen address '%s'", cfg->listen);
    else
        w->data = pc_http_server_new(base, listen, &lim, pc_proxy_handle, w, err, errlen);
    if (w->data == NULL)
        return -1;
    if (w->id == 0) {
        struct pc_http_limits admin_lim = lim;
        admin_lim.on_failure = NULL; /* the data port's counters and access log only */
        admin_lim.answers_queued = NULL;
        admin_lim.answers_held = NULL;
        admin_lim.answer_flushes = NULL;
        /* The operator's answers (/metrics above all) are never refused for the budget;
         * their bytes still count in it. */
        admin_lim.shed_over_budget = 0;
        admin_lim.answers_shed = NULL;
        admin_lim.clients_stalled = NULL;
        admin_lim.connections_refused = NULL;
        admin_lim.input_pauses = NULL;
        admin_lim.request_ids = 0;
        admin_lim.max_body_bytes = 65536; /* the admin port takes no large bodies */
        admin_lim.bind = PC_LISTEN_EXCLUSIVE;
        int afd = prev != NULL ? inherit_fd(pc_http_server_listen_fd(prev->admin),
                                            prev->cfg->admin_listen, cfg->admin_listen)
                               : -1;
        if (afd >= 0)
            w->admin = pc_http_server_adopt(base, afd, &admin_lim, pc_admin_handle, w, err, errlen);
        else
            w->admin = pc_http_server_new(base, cfg->admin_listen, &admin_lim, pc_admin_handle, w,
                                          err, errlen);
        if (w->admin == NULL)
            return -1;
    }
    if (cfg->grpc_listen[0] != '\0') {
        struct pc_h2_limits glim = {
            .bind = lim.bind,
            .max_header_bytes = cfg->max_header_bytes,
            .max_body_bytes = cfg->max_body_bytes,
            .max_streams = 128,
            .max_connections = cfg->max_connections,
            .idle_timeout_ms = cfg->idle_timeout_ms,
            .input_bytes = &w->metrics.input_buffered,
        };
        int gfd = prev != NULL ? inherit_fd(pc_h2_server_listen_fd(prev->grpc),
                                            prev->cfg->grpc_listen, cfg->grpc_listen)
                               : -1;
        const char *gaddr =
            bind_address(w, cfg->grpc_listen, w->id > 0 ? pc_h2_server_port(group[0].grpc) : 0,
                         addr, sizeof addr);
        if (gfd >= 0)
            w->grpc = pc_h2_server_adopt(base, gfd, &glim, pc_grpc_handle, w, err, errlen);
        else if (gaddr == NULL)
            snprintf(err, errlen, "invalid grpc_listen address '%s'", cfg->grpc_listen);
        else
            w->grpc = pc_h2_server_new(base, gaddr, &glim, pc_grpc_handle, w, err, errlen);
        if (w->grpc == NULL)
            return -1;
    }
    w->metrics.grpc_backend_up = 1;
    if (cfg->backend_grpc_url[0] != '\0') {
        w->grpc_up = pc_h2_client_new(base, cfg->backend_grpc_url, cfg->backend_connect_timeout_ms,
                                      err, errlen);
        if (w->grpc_up == NULL)
            return -1;
        /* The REST checks' interval and thresholds, on the gRPC method. */
        struct pc_backend_cfg def, gbe;
        gbe = *pc_config_backend(cfg, 0, &def);
        pc_strlcpy(gbe.health_path, cfg->backend_grpc_health_path, sizeof gbe.health_path);
        w->grpc_health = pc_health_new_check(base, &gbe, "gRPC model server", pc_grpc_health_check,
                                             w, &w->metrics.grpc_backend_up);
        if (w->grpc_health == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    { /* answered keys (cross-process coalescing) and invalidations are announced here */
        char chan[PC_CHANNEL_MAX];
        if (pc_done_channel(cfg, chan, sizeof chan) != 0 ||
            (w->subscriber =
                 pc_store_new_subscriber(base, cfg, &w->sub_metrics, chan, on_done, w)) == NULL) {
            snprintf(err, errlen, "cannot create the Redis subscriber");
            return -1;
        }
    }
    w->store = pc_store_new(base, cfg, &w->metrics);
    if (w->store == NULL) {
        snprintf(err, errlen, "cannot create the Redis client");
        return -1;
    }
    if (cfg->redis_sentinels[0] != '\0' &&
        (w->sentinel_watch = pc_store_new_sentinel_watch(base, cfg, &w->sub_metrics,
                                                         on_switch_master, w)) == NULL) {
        snprintf(err, errlen, "cannot create the Sentinel watcher");
        return -1;
    }
    /* Greets the other workers and processes on the done channel (peers.h): at once, then
     * every PC_PEERS_GREET_MS. */
    struct timeval soon = {0, 0};
    if ((w->greet_timer = event_new(base, -1, 0, greet, w)) == NULL ||
        event_add(w->greet_timer, &soon) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Jobs run through the data port and keep their queue in the store: both exist now. */
    if (cfg->jobs_enabled && (w->jobs = pc_jobs_new(w, err, errlen)) == NULL)
        return -1;
    return 0;
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_worker *w = arg;
    if (w->metrics.in_flight > 0 || pc_store_pending(w->store) > 0 || pc_jobs_held(w->jobs) > 0 ||
        pc_http_server_writing(w->data) > 0 ||
        (w->admin != NULL && pc_http_server_writing(w->admin) > 0) ||
        pc_h2_server_connections(w->grpc) > 0 || pc_h2_client_active(w->grpc_up) > 0)
        return; /* (the gRPC model server's calls: refreshes of stale entries too) */
    /* Retiring: every connection has been handed over (or closed) first. */
    if (w->retiring && pc_http_server_connections(w->data) +
                               (w->admin != NULL ? pc_http_server_connections(w->admin) : 0) >
                           0)
        return;
    pc_log(PC_LOG_INFO, "%s: worker %zu done", w->retiring ? "reload" : "drain", w->id);
    event_base_loopexit(w->base, NULL);
}

static void drain_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_worker *w = arg;
    pc_log(PC_LOG_WARN,
           "drain: worker %zu: %lld requests, %zu stores and %zu jobs still pending after %d ms; "
           "exiting",
           w->id, (long long)w->metrics.in_flight, pc_store_pending(w->store),
           pc_jobs_held(w->jobs), w->cfg->drain_timeout_ms);
    /* Unfinished jobs go back to the queue first, so that none records the 503 below as
     * its result; another process takes them over. */
    pc_jobs_abort(w->jobs);
    /* Clients still waiting get a 503 rather than a dropped connection; give the loop a
     * moment to write those answers out (and the jobs' hand-back to reach Redis). */
    for (size_t i = 0; i < w->n_backends; i++)
        pc_upstream_abort_all(w->ups[i]);
    pc_h2_client_abort_all(w->grpc_up); /* gRPC calls: UNAVAILABLE */
    struct timeval flush = {0, DRAIN_FLUSH_MS * 1000};
    event_base_loopexit(w->base, &flush);
}

/* Polls until nothing is held (drain_check), at most drain_timeout_ms (drain_deadline). */
static void finish(struct pc_worker *w)
{
    pc_jobs_drain(w->jobs); /* no new jobs from the queue; running ones finish */
    struct timeval poll = {0, DRAIN_POLL_MS * 1000};
    struct timeval dl = {w->cfg->drain_timeout_ms / 1000, (w->cfg->drain_timeout_ms % 1000) * 1000};
    w->drain_timer = event_new(w->base, -1, EV_PERSIST, drain_check, w);
    w->drain_deadline = evtimer_new(w->base, drain_deadline, w);
    if (w->drain_timer == NULL || w->drain_deadline == NULL) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    event_add(w->drain_timer, &poll);
    event_add(w->drain_deadline, &dl);
}

void pc_worker_drain(struct pc_worker *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    pc_log(PC_LOG_INFO, "drain: worker %zu stopped accepting; %lld requests in flight", w->id,
           (long long)w->metrics.in_flight);
    pc_http_server_stop_accepting(w->data);
    pc_http_server_stop_accepting(w->admin);
    pc_h2_server_stop_accepting(w->grpc);
    finish(w);
}

void pc_worker_retire(struct pc_worker *w)
{
    if (w->draining || w->successor == NULL)
        return;
    w->draining = w->retiring = 1;
    size_t conns = pc_http_server_connections(w->data);
    pc_http_server_hand_over(w->data, give_data, w);
    pc_http_server_hand_over(w->admin, give_admin, w);
    pc_h2_server_stop_accepting(w->grpc); /* GOAWAY: gRPC clients make new calls anew */
    pc_log(PC_LOG_INFO,
           "reload: worker %zu handed its port over; %zu connections move at their next request, "
           "%lld requests in flight finish here",
           w->id, conns, (long long)w->metrics.in_flight);
    finish(w);
}

/*
 * Order matters: listeners first (requests still held by the proxy become orphans),
 * then the jobs (unfinished ones stay pending in the stream for another process; what
 * still waits on the store is let go when the store fails it), then the store (its
 * pending callbacks see w->closing), then the upstream (transfers are dropped without
 * callbacks).
 */
void pc_worker_release(struct pc_worker *w)
{
    w->closing = 1;
    pc_http_server_free(w->data);
    pc_http_server_free(w->admin);
    pc_h2_server_free(w->grpc);
    pc_h2_client_free(w->grpc_up);  /* after the server: its calls' requests are orphans */
    pc_health_free(w->grpc_health); /* after its client: a check in flight is dropped */
    pc_jobs_free(w->jobs);
    w->jobs = NULL;
    pc_store_free(w->sentinel_watch);
    pc_store_free(w->subscriber);
    pc_store_free(w->store);
    pc_proxy_unlocks_free(w);            /* after the store: its failed releases call back */
    pc_generations_free(w->generations); /* after the store: its HGETALLs call back */
    for (size_t i = 0; i < w->n_backends; i++) {
        pc_upstream_free(w->ups[i]);
        pc_health_free(w->healths[i]); /* after the upstream: a check in flight calls back */
    }
    pc_versions_free(w->versions); /* after the upstreams: status calls call back */
    pc_keymemo_free(w->memo);
    pc_purges_free(w->purges);
    pc_peers_free(w->peers);
    if (w->greet_timer)
        event_free(w->greet_timer);
    free(w->routes);
    free(w->route_metrics);
    free(w->route_names);
    pc_flights_free(w->flights); /* last: store and upstream callbacks above may touch it */
    pc_flights_free(w->refreshing);
    pc_flights_free(w->grpc_flights);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->drain_deadline)
        event_free(w->drain_deadline);
    if (w->ctl_ev)
        event_free(w->ctl_ev);
    if (w->log_flush)
        event_free(w->log_flush);
    if (w->ctl[0] >= 0) {
        close(w->ctl[0]);
        close(w->ctl[1]);
    }
    for (size_t i = 0; i < w->handed.n; i++) /* handed over, never taken: the loop ended */
        close(w->handed.conns[i].fd);
    free(w->handed.conns);
    pthread_mutex_destroy(&w->handed.lock);
    memset(w, 0, sizeof *w);
    w->ctl[0] = w->ctl[1] = -1;
}
