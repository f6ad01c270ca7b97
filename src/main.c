/*
 * main: command line, configuration, signals, and the event loop.
 *
 *     predcache -c FILE [--listen H:P] [--backend URL] [--redis H:P] [--check]
 *
 * SIGTERM/SIGINT start a graceful drain; a second signal exits at once.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "predcache/config.h"
#include "predcache/log.h"
#include "predcache/l1.h"
#include "predcache/worker.h"

#define PC_VERSION "0.1.0"

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
            "  -v, --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n",
            PC_VERSION);
}

struct overrides {
    const char *listen, *admin, *backend, *redis;
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

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct pc_worker *w = arg;
    if (w->draining) {
        pc_log(PC_LOG_WARN, "signal %d during drain: exiting now", (int)sig);
        event_base_loopbreak(w->base);
        return;
    }
    pc_log(PC_LOG_INFO, "signal %d: draining", (int)sig);
    pc_worker_drain(w);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 't'},
                                         {"listen", required_argument, NULL, 'L'},
                                         {"admin", required_argument, NULL, 'A'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"redis", required_argument, NULL, 'R'},
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
    if (check) {
        printf("predcache: configuration %s is valid\n", conf ? conf : "(defaults)");
        return 0;
    }
    pc_log_set_level(pc_log_parse_level(cfg.log_level));
    if (pc_log_open_access(cfg.access_log) != 0) {
        fprintf(stderr, "predcache: cannot open access log '%s'\n", cfg.access_log);
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "predcache: curl_global_init failed\n");
        return 1;
    }
    struct event_base *base = event_base_new();
    if (base == NULL) {
        fprintf(stderr, "predcache: event_base_new failed\n");
        return 1;
    }
    struct pc_l1 *l1 = pc_l1_new(cfg.l1_max_bytes, cfg.l1_ttl_ms); /* NULL: tier off */
    struct pc_worker w;
    if (pc_worker_init(&w, base, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "predcache: %s\n", err);
        pc_worker_release(&w);
        event_base_free(base);
        pc_l1_free(l1);
        return 1;
    }
    w.l1 = l1;
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, &w);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, &w);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    pc_log(PC_LOG_INFO, "predcache %s: data %s, admin %s, backend %s, redis %s:%d", PC_VERSION,
           cfg.listen, cfg.admin_listen, cfg.backend_url, cfg.redis_host, cfg.redis_port);

    event_base_dispatch(base);

    event_free(sigterm);
    event_free(sigint);
    pc_worker_release(&w);
    event_base_free(base);
    pc_l1_free(l1);
    curl_global_cleanup();
    pc_log_close_access();
    pc_log(PC_LOG_INFO, "predcache: stopped");
    return 0;
}
