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

#include "predcache/buildinfo.h"
#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/routes.h"
#include "predcache/tlsctx.h"
#include "predcache/l1.h"
#include "predcache/worker.h"

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

/* ---- workers ------------------------------------------------------------------- */

struct run;
struct thread_arg {
    struct run *run;
    size_t i;
};

struct run {
    struct pc_worker *workers;
    struct thread_arg *args;
    struct event_base **bases;
    struct pc_config *cfgs;
    pthread_t *threads;
    size_t n;               /* workers */
    size_t inited;          /* workers built (to release) */
    size_t started;         /* threads running (to join) */
    size_t returned;        /* worker loops that have returned */
    int done[2];            /* pipe: a worker thread writes one byte when its loop returns */
    int draining;           /* a signal was seen */
    struct event_base *ctl; /* the main thread's loop: signals and done */
    struct pc_l1 *l1;       /* the in-process tier every worker shares; NULL: off */
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

static void *worker_main(void *arg)
{
    struct thread_arg *ta = arg;
    struct run *r = ta->run;
    event_base_dispatch(r->bases[ta->i]);
    char c = 1;
    while (write(r->done[1], &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct run *r = arg;
    enum pc_worker_cmd cmd = PC_WORKER_DRAIN;
    if (r->draining) {
        pc_log(PC_LOG_WARN, "signal %d during drain: exiting now", (int)sig);
        cmd = PC_WORKER_STOP;
    } else {
        pc_log(PC_LOG_INFO, "signal %d: draining", (int)sig);
        r->draining = 1;
    }
    for (size_t i = 0; i < r->started; i++)
        pc_worker_post(&r->workers[i], cmd);
}

/* SIGUSR1: the access log is opened again (logrotate moved it away). arg: the config. */
static void on_reopen(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    const struct pc_config *cfg = arg;
    if (pc_log_reopen_access(cfg->access_log) != 0)
        pc_log(PC_LOG_WARN,
               "SIGUSR1: cannot open the access log '%s' again: %s (still writing "
               "to the old one)",
               cfg->access_log, strerror(errno));
    else
        pc_log(PC_LOG_INFO, "SIGUSR1: access log reopened");
}

static void on_worker_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct run *r = arg;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0)
        r->returned += (size_t)n;
    if (r->returned >= r->started)
        event_base_loopexit(r->ctl, NULL);
}

/* [redis] tls = on: its files are read now, so that a wrong path, an unreadable CA or a key
 * that does not match its certificate stops the start (and --check) with its reason.
 * 0 ok; -1 said on stderr. */
static int check_redis_tls(const struct pc_config *cfg, const char *conf)
{
    if (!cfg->redis_tls)
        return 0;
    struct pc_tls_opts o = {cfg->redis_tls_ca_file, cfg->redis_tls_cert_file,
                            cfg->redis_tls_key_file, cfg->redis_tls_server_name,
                            cfg->redis_tls_verify};
    char err[512];
    SSL_CTX *ctx = pc_tls_client_ctx(&o, err, sizeof err);
    if (ctx == NULL) {
        fprintf(stderr, "predcache: %s%s[redis] %s\n", conf ? conf : "", conf ? ": " : "", err);
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

/* Builds every worker in this thread, in order (worker 0 binds first). 0 ok, -1 with err. */
/* Once at start: the routes whose family has no version endpoint predcache reads. */
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

static int run_init(struct run *r, const struct pc_config *cfg, size_t n, char *err, size_t errlen)
{
    r->n = n;
    r->done[0] = r->done[1] = -1;
    r->workers = calloc(n, sizeof *r->workers);
    r->bases = calloc(n, sizeof *r->bases);
    r->cfgs = calloc(n, sizeof *r->cfgs);
    r->threads = calloc(n, sizeof *r->threads);
    r->args = calloc(n, sizeof *r->args);
    if (r->workers == NULL || r->bases == NULL || r->cfgs == NULL || r->threads == NULL ||
        r->args == NULL || pipe2(r->done, O_NONBLOCK | O_CLOEXEC) != 0 ||
        (r->ctl = event_base_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->l1 = pc_l1_new(cfg->l1_max_bytes, cfg->l1_ttl_ms, NULL);
    if (r->l1 == NULL && cfg->l1_max_bytes > 0) {
        snprintf(err, errlen, "out of memory for the l1 tier");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        worker_config(&r->cfgs[i], cfg, i, n);
        r->args[i] = (struct thread_arg){r, i};
        if ((r->bases[i] = event_base_new()) == NULL) {
            snprintf(err, errlen, "event_base_new failed");
            return -1;
        }
        r->inited = i + 1;
        if (pc_worker_init(&r->workers[i], r->bases[i], &r->cfgs[i], r->workers, n, err, errlen) !=
            0)
            return -1;
        r->workers[i].l1 = r->l1;
    }
    return 0;
}

/* After every started thread was joined: tear down in this thread. */
static void run_free(struct run *r)
{
    for (size_t i = 0; i < r->inited; i++)
        pc_worker_release(&r->workers[i]);
    for (size_t i = 0; r->bases != NULL && i < r->n; i++)
        if (r->bases[i] != NULL)
            event_base_free(r->bases[i]);
    if (r->ctl != NULL)
        event_base_free(r->ctl);
    pc_l1_free(r->l1); /* after every worker: they share it */
    if (r->done[0] >= 0) {
        close(r->done[0]);
        close(r->done[1]);
    }
    free(r->workers);
    free(r->bases);
    free(r->cfgs);
    free(r->threads);
    free(r->args);
}

/* Starts one thread per worker, with SIGTERM and SIGINT blocked in them. 0 ok, -1 error. */
static int run_start(struct run *r)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (size_t i = 0; i < r->n && rc == 0; i++) {
        int e = pthread_create(&r->threads[i], NULL, worker_main, &r->args[i]);
        if (e != 0) {
            pc_log(PC_LOG_ERROR, "cannot start worker thread %zu: %s", i, strerror(e));
            rc = -1;
        } else {
            r->started++;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
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

    static struct pc_config cfg; /* static: large, and it outlives the loop */
    char err[1024];
    pc_config_defaults(&cfg);
    if (conf != NULL && pc_config_load(&cfg, conf, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s\n", err);
        return 1;
    }
    if (apply_overrides(&cfg, &ov, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s\n", err);
        return 1;
    }
    if (check_redis_tls(&cfg, conf) != 0)
        return 1;
    if (check) {
        if (pc_log_check_access(cfg.access_log) != 0) {
            fprintf(stderr, "predcache: %s%s[log] access_log: cannot open '%s': %s\n",
                    conf ? conf : "", conf ? ": " : "", cfg.access_log, strerror(errno));
            return 1;
        }
        printf("predcache: configuration %s is valid\n", conf ? conf : "(defaults)");
        return 0;
    }
    if (pc_log_apply(pc_log_parse_level(cfg.log_level), cfg.log_format == PC_LOG_FORMAT_JSON,
                     cfg.access_log) != 0) {
        fprintf(stderr, "predcache: %s%s[log] access_log: cannot open '%s': %s\n", conf ? conf : "",
                conf ? ": " : "", cfg.access_log, strerror(errno));
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
        return 1;
    }
    size_t n = cfg.workers > 0 ? (size_t)cfg.workers : auto_workers();
    raise_nofile(&cfg, n);
    struct run r = {0};
    if (run_init(&r, &cfg, n, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s\n", err);
        run_free(&r);
        curl_global_cleanup();
        pc_log_close_access();
        return 1;
    }
    struct event *sigterm = evsignal_new(r.ctl, SIGTERM, on_signal, &r);
    struct event *sigint = evsignal_new(r.ctl, SIGINT, on_signal, &r);
    struct event *sigusr1 = evsignal_new(r.ctl, SIGUSR1, on_reopen, &cfg);
    struct event *done = event_new(r.ctl, r.done[0], EV_READ | EV_PERSIST, on_worker_done, &r);
    int rc = 0;
    if (sigterm == NULL || sigint == NULL || sigusr1 == NULL || done == NULL ||
        event_add(sigterm, NULL) != 0 || event_add(sigint, NULL) != 0 ||
        event_add(sigusr1, NULL) != 0 || event_add(done, NULL) != 0) {
        fprintf(stderr, "predcache: cannot set up signal handling\n");
        rc = 1;
    }
    if (rc == 0) {
        pc_log(PC_LOG_INFO,
               "predcache %s: data %s, admin %s, backend %s, redis %s:%d, %zu worker%s", PC_VERSION,
               cfg.listen, cfg.admin_listen, cfg.backend_url, cfg.redis_host, cfg.redis_port, n,
               n == 1 ? "" : "s");
        log_keyed_as_sent(&cfg);
        if (run_start(&r) != 0)
            rc = 1;
    }
    if (rc == 0) {
        event_base_dispatch(r.ctl);
    } else { /* no loop to wait for: stop the threads that did start */
        for (size_t i = 0; i < r.started; i++)
            pc_worker_post(&r.workers[i], PC_WORKER_STOP);
    }
    for (size_t i = 0; i < r.started; i++)
        pthread_join(r.threads[i], NULL);

    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sigusr1)
        event_free(sigusr1);
    if (done)
        event_free(done);
    run_free(&r);
    curl_global_cleanup();
    pc_log_close_access();
    pc_log(PC_LOG_INFO, "predcache: stopped");
    return rc;
}
