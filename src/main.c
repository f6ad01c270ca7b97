/*
 * main: command line, configuration, signals, and the worker threads.
 *
 *     predcache -c FILE [--listen H:P] [--backend URL] [--redis H:P] [--workers N] [--check]
 *
 *     main thread: config -> curl_global_init -> pc_worker_init x N (binds every listener,
 *                  so a bad address fails here, before any thread) -> N threads, each
 *                  running its own worker's event loop -> control loop: signals, exits
 *     SIGTERM/SIGINT -> PC_WORKER_DRAIN to every worker; a second one: PC_WORKER_STOP
 *     each worker's loop returns -> tells the control loop -> all returned: join, release
 *
 * The worker threads block SIGTERM and SIGINT, so only the main thread takes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "predcache/budget.h"
#include "predcache/buildinfo.h"
#include "predcache/config.h"
#include "predcache/cpuslice.h"
#include "predcache/log.h"
#include "predcache/loop.h"
#include "predcache/routes.h"
#include "predcache/tlsctx.h"
#include "predcache/l1.h"
#include "predcache/worker.h"
#include "predcache/workset.h"

#define PC_MMAP_THRESHOLD (1 << 20)

static void usage(FILE *out)
{
    fprintf(out,
            "predcache %s - a prediction cache in front of a model server\n"
            "\n"
            "usage: predcache [-c FILE] [options]\n"
            "\n"
            "  -c, --config FILE   configuration file (INI); without it, built-in defaults\n"
            "  -t, --check         validate the configuration and exit 0 (valid) or 1\n"
            "      --listen H:P    data port address (overrides [server] listen)\n"
            "      --admin H:P     admin port address (overrides [server] admin_listen)\n"
            "      --backend URL   model server base URL (overrides [backend] url)\n"
            "      --redis H:P     Redis address (overrides [redis] host and port)\n"
            "      --workers N     worker threads, 1..64 or auto (overrides [server] workers)\n"
            "      --set S.K=V     any option: [S] K = V, after the file (repeatable), e.g.\n"
            "                      --set cache.version_refresh_s=0\n"
            "  -v, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n",
            PC_VERSION);
}

#define MAX_SETS 64

struct overrides {
    const char *listen, *admin, *backend, *redis, *workers;
    const char *sets[MAX_SETS]; /* --set SECTION.KEY=VALUE, in order */
    size_t n_sets;
};

static int apply_overrides(struct pc_config *cfg, const struct overrides *o, char *err,
                           size_t errlen)
{
    if (o->listen && pc_config_set(cfg, "server", "listen", o->listen, err, errlen) != 0)
        return -1;
    if (o->admin && pc_config_set(cfg, "server", "admin_listen", o->admin, err, errlen) != 0)
        return -1;
    if (o->backend && pc_config_set(cfg, "backend", "url", o->backend, err, errlen) != 0)
        return -1;
    if (o->workers && pc_config_set(cfg, "server", "workers", o->workers, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < o->n_sets; i++) {
        char section[64];
        const char *dot = strchr(o->sets[i], '.');
        const char *eq = dot != NULL ? strchr(dot, '=') : NULL;
        if (dot == NULL || eq == NULL || dot == o->sets[i] || eq == dot + 1 ||
            (size_t)(dot - o->sets[i]) >= sizeof section) {
            snprintf(err, errlen, "--set: expected SECTION.KEY=VALUE, got '%s'", o->sets[i]);
            return -1;
        }
        snprintf(section, sizeof section, "%.*s", (int)(dot - o->sets[i]), o->sets[i]);
        char key[64];
        if ((size_t)(eq - dot - 1) >= sizeof key) {
            snprintf(err, errlen, "--set: no such option '%s'", o->sets[i]);
            return -1;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
        if (pc_config_set(cfg, section, key, eq + 1, err, errlen) != 0)
            return -1;
    }
    if (o->redis) {
        char host[256];
        int port;
        if (pc_config_split_hostport(o->redis, host, sizeof host, &port) != 0 || port == 0) {
            snprintf(err, errlen, "--redis: expected HOST:PORT, got '%s'", o->redis);
            return -1;
        }
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%d", port);
        if (pc_config_set(cfg, "redis", "host", host, err, errlen) != 0 ||
            pc_config_set(cfg, "redis", "port", portstr, err, errlen) != 0)
            return -1;
    }
    return pc_config_validate(cfg, err, errlen);
}

/* ---- sets of workers ----------------------------------------------------------- */

struct proc;
struct set;
struct thread_arg {
    struct set *set;
    size_t i;
};

/* One set of workers: the configuration they run, their loops and threads. */
struct set {
    struct proc *proc;
    unsigned id;           /* 0: the start; then one more per reload applied */
    struct pc_config *cfg; /* what the set runs (each worker reads its own share, cfgs[i]) */
    struct pc_worker *workers;
    struct thread_arg *args;
    struct event_base **bases;
    struct pc_config *cfgs;
    pthread_t *threads;
    size_t n;         /* workers */
    size_t inited;    /* workers built (to release) */
    size_t started;   /* threads running (to join) */
    size_t returned;  /* worker loops that have returned (atomic: their threads add) */
    struct pc_l1 *l1; /* the in-process tier its workers share; NULL: off */
    int owns_l1;      /* frees it (a reload hands an unchanged tier to the next set) */
    int listed;       /* in the workset */
};

/* The process: its sets of workers, oldest first (the last serves; the others retire). */
struct proc {
    struct set *sets[PC_WORKSET_MAX];
    size_t n_sets;
    int done[2];            /* pipe: a worker thread writes one byte when its loop returns */
    int draining;           /* SIGTERM or SIGINT was seen */
    struct event_base *ctl; /* the main thread's loop: signals and done */
    struct pc_workset *ws;
    const char *conf;           /* -c FILE, read again on SIGHUP; NULL: built-in defaults */
    const struct overrides *ov; /* the command line's, applied again on SIGHUP */
    unsigned reloads;
};

/* [server] workers = auto: the CPUs this process may run on. */
static size_t auto_workers(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (size_t)n;
}

/* part of total for worker i of n: floor shares, the remainder to the first workers. */
static int share_floor(int total, size_t i, size_t n)
{
    return total / (int)n + ((size_t)(total % (int)n) > i ? 1 : 0);
}

/* A bound where 0 means none: each worker gets total / n rounded up, so none gets 0. */
static long long share_bound(long long total, size_t n)
{
    return total == 0 ? 0 : (total + (long long)n - 1) / (long long)n;
}

/*
 * Each worker reads its own copy of the configuration. The limits that the README
 * states for the whole process are split between the workers: async jobs run at once
 * ([jobs] concurrency), model server calls at once ([backend] max_in_flight, and each
 * [backend NAME]'s), pending
 * Redis stores ([redis] max_pending, max_pending_bytes) and the key memo's bytes ([cache]
 * key_memo_bytes: each worker keeps its own).
 */
static void worker_config(struct pc_config *out, const struct pc_config *cfg, size_t i, size_t n)
{
    *out = *cfg;
    out->jobs_concurrency = share_floor(cfg->jobs_concurrency, i, n);
    out->backend_max_in_flight = (int)share_bound(cfg->backend_max_in_flight, n);
    for (size_t k = 0; k < cfg->n_backends; k++) /* each named backend's own bound too */
        out->backends[k].max_in_flight = (int)share_bound(cfg->backends[k].max_in_flight, n);
    out->redis_max_pending = (int)share_bound(cfg->redis_max_pending, n);
    out->redis_max_pending_bytes = (size_t)share_bound((long long)cfg->redis_max_pending_bytes, n);
    out->key_memo_bytes = (size_t)share_bound((long long)cfg->key_memo_bytes, n);
}

/* [server] sched_slice_us for the calling worker thread (cpuslice.h). The first worker of a
 * set tells what came of it: the others get the same. */
static void worker_slice(const struct pc_config *cfg, size_t i)
{
    if (cfg->sched_slice_us == 0)
        return;
    enum pc_cpuslice_result r = pc_cpuslice_set(cfg->sched_slice_us);
    int e = errno;
    if (i != 0)
        return;
    if (r == PC_CPUSLICE_SET)
        pc_log(PC_LOG_INFO, "workers: a scheduler slice of %d us each ([server] sched_slice_us)",
               cfg->sched_slice_us);
    else if (r == PC_CPUSLICE_FAILED)
        pc_log(PC_LOG_WARN, "workers: [server] sched_slice_us = %d failed: %s; the kernel's slice",
               cfg->sched_slice_us, strerror(e));
    else
        pc_log(PC_LOG_INFO, "workers: [server] sched_slice_us = %d %s", cfg->sched_slice_us,
               pc_cpuslice_describe(r));
}

static void *worker_main(void *arg)
{
    struct thread_arg *ta = arg;
    struct set *s = ta->set;
    worker_slice(&s->cfgs[ta->i], ta->i);
    pc_log_defer_access(pc_worker_log_defer, &s->workers[ta->i]);
    event_base_dispatch(s->bases[ta->i]);
    pc_log_flush_access();
    pc_log_defer_access(NULL, NULL);
    __atomic_add_fetch(&s->returned, 1, __ATOMIC_RELEASE);
    char c = 1;
    while (write(s->proc->done[1], &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* Posts cmd to every started worker of every set. */
static void post_all(struct proc *p, enum pc_worker_cmd cmd)
{
    for (size_t k = 0; k < p->n_sets; k++)
        for (size_t i = 0; i < p->sets[k]->started; i++)
            pc_worker_post(&p->sets[k]->workers[i], cmd);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct proc *p = arg;
    enum pc_worker_cmd cmd = PC_WORKER_DRAIN;
    if (p->draining) {
        pc_log(PC_LOG_WARN, "signal %d during drain: exiting now", (int)sig);
        cmd = PC_WORKER_STOP;
    } else {
        pc_log(PC_LOG_INFO, "signal %d: draining", (int)sig);
        p->draining = 1;
    }
    post_all(p, cmd);
}

static struct set *serving(const struct proc *p)
{
    return p->sets[p->n_sets - 1];
}

/* SIGUSR1: the access log is opened again (logrotate moved it away). */
static void on_reopen(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    const struct pc_config *cfg = serving(arg)->cfg;
    if (pc_log_reopen_access(cfg->access_log) != 0)
        pc_log(PC_LOG_WARN,
               "SIGUSR1: cannot open the access log '%s' again: %s (still writing "
               "to the old one)",
               cfg->access_log, strerror(errno));
    else
        pc_log(PC_LOG_INFO, "SIGUSR1: access log reopened");
}

/* [redis] tls = on: its files are read now, so that a wrong path, an unreadable CA or a key
 * that does not match its certificate stops the start (and --check, and a reload) with its
 * reason. 0 ok; -1 with err. */
static int check_redis_tls(const struct pc_config *cfg, char *err, size_t errlen)
{
    if (!cfg->redis_tls)
        return 0;
    struct pc_tls_opts o = {cfg->redis_tls_ca_file, cfg->redis_tls_cert_file,
                            cfg->redis_tls_key_file, cfg->redis_tls_server_name,
                            cfg->redis_tls_verify};
    char why[512];
    SSL_CTX *ctx = pc_tls_client_ctx(&o, why, sizeof why);
    if (ctx == NULL) {
        snprintf(err, errlen, "[redis] %s", why);
        return -1;
    }
    SSL_CTX_free(ctx);
    return 0;
}

/* Every connection is a file descriptor: the soft open-file limit (often 1024) is raised
 * to the hard one, as far as the connections allowed need, and a limit below them is
 * said at start. Past it, new connections are refused with 503 (http.c). */
static void raise_nofile(const struct pc_config *cfg, size_t workers)
{
    /* Both listeners' connections, a model server connection for each data connection,
     * and a margin for Redis, logs and the loop's own descriptors. */
    rlim_t need = (rlim_t)workers * (rlim_t)cfg->max_connections * 2 + 256;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    if (rl.rlim_cur < need)
        pc_log(PC_LOG_WARN,
               "open-file limit %llu (hard %llu) is below what %zu worker%s x max_connections "
               "%d may need (%llu): connections past it are refused with 503; raise it "
               "(ulimit -n, LimitNOFILE=)",
               (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, workers,
               workers == 1 ? "" : "s", cfg->max_connections, (unsigned long long)need);
    else if (rl.rlim_cur != was)
        pc_log(PC_LOG_INFO, "open-file limit raised from %llu to %llu", (unsigned long long)was,
               (unsigned long long)rl.rlim_cur);
}

/* Once per configuration applied: the routes whose family has no version endpoint. */
static void log_keyed_as_sent(const struct pc_config *cfg)
{
    struct pc_buf list;
    pc_buf_init(&list);
    long n = pc_routes_list_as_sent(cfg, 0, &list);
    if (n > 0)
        pc_log(PC_LOG_INFO,
               "routes keyed by the path as sent (their API has no model version endpoint: a "
               "new default version is served from the cache until ttl_s or POST "
               "/cache/invalidate?model=NAME on the admin port): %s",
               list.data);
    pc_buf_release(&list);
}

/*
 * The configuration: built-in defaults, the file (when there is one), the command line's
 * overrides, validated, the Redis TLS files read. At start and on SIGHUP alike. 0 ok; -1
 * with err.
 */
static int load_config(struct pc_config *cfg, const char *conf, const struct overrides *ov,
                       char *err, size_t errlen)
{
    pc_config_defaults(cfg);
    if (conf != NULL && pc_config_load(cfg, conf, err, errlen) != 0)
        return -1;
    if (apply_overrides(cfg, ov, err, errlen) != 0)
        return -1;
    char why[768];
    if (check_redis_tls(cfg, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s%s%s", conf ? conf : "", conf ? ": " : "", why);
        return -1;
    }
    return 0;
}

/* What the process as a whole takes from a configuration: log level and access log,
 * byte budgets, open-file limit. 0 ok; -1 with err (the access log cannot be opened). */
static int apply_process(const struct pc_config *cfg, size_t n, char *err, size_t errlen)
{
    if (pc_log_apply(pc_log_parse_level(cfg->log_level), cfg->log_format == PC_LOG_FORMAT_JSON,
                     cfg->access_log) != 0) {
        snprintf(err, errlen, "[log] access_log: cannot open '%s': %s", cfg->access_log,
                 strerror(errno));
        return -1;
    }
    pc_budget_set_limit(cfg->max_output_bytes);
    pc_budget_input_set_limit(cfg->max_input_bytes);
    raise_nofile(cfg, n);
    return 0;
}

/* After every started thread was joined: tear down in this thread. */
static void set_free(struct set *s)
{
    if (s == NULL)
        return;
    if (s->listed)
        pc_workset_remove(s->proc->ws, s->workers);
    for (size_t i = 0; i < s->inited; i++)
        pc_worker_release(&s->workers[i]);
    for (size_t i = 0; s->bases != NULL && i < s->n; i++)
        if (s->bases[i] != NULL)
            event_base_free(s->bases[i]);
    if (s->owns_l1)
        pc_l1_free(s->l1); /* after every worker: they share it */
    free(s->workers);
    free(s->bases);
    free(s->cfgs);
    free(s->threads);
    free(s->args);
    free(s->cfg);
    free(s);
}

/*
 * Builds a set of n workers on cfg (the set owns it from now on, even on failure). prev:
 * the set serving now (a reload), whose listening sockets the new one takes where the
 * addresses are unchanged, and whose in-process tier it takes when its size and age are;
 * NULL at start. NULL with err (nothing of prev changed).
 */
static struct set *set_new(struct proc *p, struct pc_config *cfg, size_t n, struct set *prev,
                           char *err, size_t errlen)
{
    struct set *s = calloc(1, sizeof *s);
    if (s == NULL) {
        free(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->proc = p;
    s->cfg = cfg;
    s->n = n;
    s->workers = calloc(n, sizeof *s->workers);
    s->bases = calloc(n, sizeof *s->bases);
    s->cfgs = calloc(n, sizeof *s->cfgs);
    s->threads = calloc(n, sizeof *s->threads);
    s->args = calloc(n, sizeof *s->args);
    if (s->workers == NULL || s->bases == NULL || s->cfgs == NULL || s->threads == NULL ||
        s->args == NULL) {
        snprintf(err, errlen, "out of memory");
        set_free(s);
        return NULL;
    }
    int same_l1 = prev != NULL && prev->cfg->l1_max_bytes == cfg->l1_max_bytes &&
                  prev->cfg->l1_ttl_ms == cfg->l1_ttl_ms;
    if (same_l1) {
        s->l1 = prev->l1; /* taken over once the set is running (set_take_l1) */
    } else {
        s->l1 = pc_l1_new(cfg->l1_max_bytes, cfg->l1_ttl_ms, NULL);
        s->owns_l1 = 1;
        if (s->l1 == NULL && cfg->l1_max_bytes > 0) {
            snprintf(err, errlen, "out of memory for the l1 tier");
            set_free(s);
            return NULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        worker_config(&s->cfgs[i], cfg, i, n);
        s->args[i] = (struct thread_arg){s, i};
        /* Its priorities and the order of its callbacks: loop.h. */
        if ((s->bases[i] = pc_loop_new()) == NULL) {
            snprintf(err, errlen, "cannot make an event loop");
            set_free(s);
            return NULL;
        }
        s->inited = i + 1;
        if (pc_worker_init(&s->workers[i], s->bases[i], &s->cfgs[i], s->workers, n,
                           prev != NULL ? &prev->workers[i] : NULL, err, errlen) != 0) {
            set_free(s);
            return NULL;
        }
        s->workers[i].l1 = s->l1;
        s->workers[i].workset = p->ws;
    }
    return s;
}

/* Starts one thread per worker, with the signals main takes blocked in them. 0 ok; -1: the
 * threads that did start were stopped and joined. */
static int set_start(struct set *s)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (size_t i = 0; i < s->n && rc == 0; i++) {
        int e = pthread_create(&s->threads[i], NULL, worker_main, &s->args[i]);
        if (e != 0) {
            pc_log(PC_LOG_ERROR, "cannot start worker thread %zu: %s", i, strerror(e));
            rc = -1;
        } else {
            s->started++;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        for (size_t i = 0; i < s->started; i++)
            pc_worker_post(&s->workers[i], PC_WORKER_STOP);
        for (size_t i = 0; i < s->started; i++)
            pthread_join(s->threads[i], NULL);
        s->started = 0;
    }
    return rc;
}

/* Joins and frees the sets whose loops have all returned, oldest first: a set is freed only
 * after every older one, since an older set may still hand it connections. */
static void reap(struct proc *p)
{
    while (p->n_sets > 0) {
        struct set *s = p->sets[0];
        if (__atomic_load_n(&s->returned, __ATOMIC_ACQUIRE) < s->started)
            break;
        for (size_t i = 0; i < s->started; i++)
            pthread_join(s->threads[i], NULL);
        if (p->n_sets > 1)
            pc_log(PC_LOG_INFO, "reload: the workers of configuration %u are gone", s->id);
        memmove(&p->sets[0], &p->sets[1], (p->n_sets - 1) * sizeof p->sets[0]);
        p->n_sets--;
        set_free(s);
    }
    if (p->n_sets == 0)
        event_base_loopexit(p->ctl, NULL);
}

static void on_worker_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    reap(arg);
}

static void log_serving(const struct set *s, const char *what)
{
    const struct pc_config *cfg = s->cfg;
    pc_log(PC_LOG_INFO, "%s: data %s, admin %s, backend %s, redis %s:%d, %zu worker%s", what,
           cfg->listen, cfg->admin_listen, cfg->backend_url, cfg->redis_host, cfg->redis_port, s->n,
           s->n == 1 ? "" : "s");
    log_keyed_as_sent(cfg);
}

/* Refuses a reload: says why, and the running configuration stays. */
static void reload_refused(struct proc *p, const char *why)
{
    pc_log(PC_LOG_ERROR, "reload: %s; the running configuration stays", why);
    pc_workset_reloaded(p->ws, 0);
}

/*
 * SIGHUP: the configuration is read again; when it is valid, a new set of workers starts
 * on it (on the same listening sockets where the addresses are unchanged) and the serving
 * set retires: it hands every connection to the new one at its next request boundary,
 * finishes what it holds, and exits. Anything that fails before the new set runs leaves
 * the serving set as it was.
 */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct proc *p = arg;
    if (p->draining) {
        pc_log(PC_LOG_WARN, "reload: shutting down: SIGHUP ignored");
        return;
    }
    char err[1024], why[1200];
    if (p->n_sets >= PC_WORKSET_MAX) {
        snprintf(why, sizeof why,
                 "%zu earlier configurations are still finishing their requests (at most %d "
                 "at once): send SIGHUP again later",
                 p->n_sets - 1, PC_WORKSET_MAX - 1);
        reload_refused(p, why);
        return;
    }
    pc_log(PC_LOG_INFO, "reload: reading %s", p->conf ? p->conf : "(defaults)");
    struct pc_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL) {
        reload_refused(p, "out of memory");
        return;
    }
    if (load_config(cfg, p->conf, p->ov, err, sizeof err) != 0) {
        free(cfg);
        reload_refused(p, err);
        return;
    }
    if (pc_log_check_access(cfg->access_log) != 0) {
        snprintf(why, sizeof why, "[log] access_log: cannot open '%s': %s", cfg->access_log,
                 strerror(errno));
        free(cfg);
        reload_refused(p, why);
        return;
    }
    struct set *cur = serving(p);
    size_t n = cfg->workers > 0 ? (size_t)cfg->workers : auto_workers();
    if (n != cur->n) {
        pc_log(PC_LOG_WARN,
               "reload: [server] workers = %zu takes effect at the next restart; %zu workers "
               "go on",
               n, cur->n);
        n = cur->n;
    }
    struct set *s = set_new(p, cfg, n, cur, err, sizeof err);
    if (s == NULL) {
        reload_refused(p, err);
        return;
    }
    s->id = ++p->reloads;
    if (apply_process(s->cfg, n, err, sizeof err) != 0) {
        apply_process(cur->cfg, n, why, sizeof why); /* back as it was */
        set_free(s);
        reload_refused(p, err);
        return;
    }
    s->listed = pc_workset_add(p->ws, s->workers, s->n) == 0;
    if (set_start(s) != 0) {
        apply_process(cur->cfg, n, why, sizeof why);
        set_free(s);
        reload_refused(p, "cannot start the new worker threads");
        return;
    }
    if (s->l1 == cur->l1) { /* the tier goes on with the newest set */
        s->owns_l1 = cur->owns_l1;
        cur->owns_l1 = 0;
    }
    for (size_t i = 0; i < cur->started; i++) {
        cur->workers[i].successor = &s->workers[i];
        pc_worker_post(&cur->workers[i], PC_WORKER_RETIRE);
    }
    p->sets[p->n_sets++] = s;
    snprintf(why, sizeof why, "reload: configuration %u applied", s->id);
    log_serving(s, why);
    pc_workset_reloaded(p->ws, 1);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 't'},
                                         {"listen", required_argument, NULL, 'L'},
                                         {"admin", required_argument, NULL, 'A'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"redis", required_argument, NULL, 'R'},
                                         {"workers", required_argument, NULL, 'W'},
                                         {"set", required_argument, NULL, 'S'},
                                         {"version", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *conf = NULL;
    int check = 0, opt;
    struct overrides ov = {0};
    while ((opt = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'L':
            ov.listen = optarg;
            break;
        case 'A':
            ov.admin = optarg;
            break;
        case 'B':
            ov.backend = optarg;
            break;
        case 'R':
            ov.redis = optarg;
            break;
        case 'W':
            ov.workers = optarg;
            break;
        case 'S':
            if (ov.n_sets == MAX_SETS) {
                fprintf(stderr, "predcache: more than %d --set options\n", MAX_SETS);
                return 1;
            }
            ov.sets[ov.n_sets++] = optarg;
            break;
        case 'v':
            printf("predcache %s\n", PC_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "predcache: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }

    char err[1024];
    struct pc_config *cfg = malloc(sizeof *cfg); /* large; the first set owns it */
    if (cfg == NULL) {
        fprintf(stderr, "predcache: out of memory\n");
        return 1;
    }
    if (load_config(cfg, conf, &ov, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s\n", err);
        free(cfg);
        return 1;
    }
    if (check) {
        int rc = 0;
        if (pc_log_check_access(cfg->access_log) != 0) {
            fprintf(stderr, "predcache: %s%s[log] access_log: cannot open '%s': %s\n",
                    conf ? conf : "", conf ? ": " : "", cfg->access_log, strerror(errno));
            rc = 1;
        } else {
            printf("predcache: configuration %s is valid\n", conf ? conf : "(defaults)");
        }
        free(cfg);
        return rc;
    }
    size_t n = cfg->workers > 0 ? (size_t)cfg->workers : auto_workers();
    if (apply_process(cfg, n, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s%s%s\n", conf ? conf : "", conf ? ": " : "", err);
        free(cfg);
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    /* Answer-sized buffers (a model server answer, an answer waiting in an output buffer)
     * are mapped on their own and go back to the system when freed. glibc's default raises
     * its threshold to the largest block freed (up to 32 MB), after which such buffers come
     * from the heaps, and RSS stays where the largest burst of them left it: with
     * max_output_bytes bounding live answer bytes, RSS would still not follow them down. */
    mallopt(M_MMAP_THRESHOLD, PC_MMAP_THRESHOLD);
    /* Once, before any thread: libcurl's global state is not thread-safe to set up. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "predcache: curl_global_init failed\n");
        free(cfg);
        return 1;
    }
    struct proc p = {.conf = conf, .ov = &ov, .done = {-1, -1}};
    int rc = 0;
    if ((p.ws = pc_workset_new()) == NULL || (p.ctl = event_base_new()) == NULL ||
        pipe2(p.done, O_NONBLOCK | O_CLOEXEC) != 0) {
        fprintf(stderr, "predcache: out of memory\n");
        free(cfg);
        rc = 1;
    }
    struct set *first = rc == 0 ? set_new(&p, cfg, n, NULL, err, sizeof err) : NULL;
    if (rc == 0 && first == NULL) {
        fprintf(stderr, "predcache: %s\n", err);
        rc = 1;
    }
    if (first != NULL) {
        p.sets[p.n_sets++] = first;
        first->listed = pc_workset_add(p.ws, first->workers, first->n) == 0;
    }
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL, *sigusr1 = NULL, *done = NULL;
    if (rc == 0) {
        sigterm = evsignal_new(p.ctl, SIGTERM, on_signal, &p);
        sigint = evsignal_new(p.ctl, SIGINT, on_signal, &p);
        sighup = evsignal_new(p.ctl, SIGHUP, on_reload, &p);
        sigusr1 = evsignal_new(p.ctl, SIGUSR1, on_reopen, &p);
        done = event_new(p.ctl, p.done[0], EV_READ | EV_PERSIST, on_worker_done, &p);
        if (sigterm == NULL || sigint == NULL || sighup == NULL || sigusr1 == NULL ||
            done == NULL || event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0 ||
            event_add(sighup, NULL) != 0 || event_add(sigusr1, NULL) != 0 ||
            event_add(done, NULL) != 0) {
            fprintf(stderr, "predcache: cannot set up signal handling\n");
            rc = 1;
        }
    }
    if (rc == 0) {
        char what[64];
        snprintf(what, sizeof what, "predcache %s", PC_VERSION);
        log_serving(first, what);
        if (set_start(first) != 0)
            rc = 1;
    }
    if (rc == 0)
        event_base_dispatch(p.ctl);         /* until every set's loops have returned (reap) */
    for (size_t k = 0; k < p.n_sets; k++) { /* a failed start: nothing runs; else none left */
        for (size_t i = 0; i < p.sets[k]->started; i++)
            pthread_join(p.sets[k]->threads[i], NULL);
        set_free(p.sets[k]);
    }
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sighup)
        event_free(sighup);
    if (sigusr1)
        event_free(sigusr1);
    if (done)
        event_free(done);
    if (p.ctl != NULL)
        event_base_free(p.ctl);
    if (p.done[0] >= 0) {
        close(p.done[0]);
        close(p.done[1]);
    }
    pc_workset_free(p.ws);
    curl_global_cleanup();
    pc_log_close_access();
    pc_log(PC_LOG_INFO, "predcache: stopped");
    return rc;
}
