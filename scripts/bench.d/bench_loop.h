/*
 * bench_loop: the event loop of the bench's small servers (fixed_server.c, delay_relay.c):
 * a base with microsecond timers (timerfd), a listener on 127.0.0.1:port whose accept
 * callback gets the base, and SIGTERM or SIGINT to end the loop. Header-only: each server
 * is one file the bench compiles on its own.
 */
#ifndef BENCH_LOOP_H
#define BENCH_LOOP_H

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>

#include <event2/event.h>
#include <event2/listener.h>

struct bench_loop {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sigterm, *sigint;
};

static void bench_loop_on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
}

/* Frees what l holds (any of it NULL). */
static void bench_loop_close(struct bench_loop *l)
{
    if (l->sigint != NULL)
        event_free(l->sigint);
    if (l->sigterm != NULL)
        event_free(l->sigterm);
    if (l->listener != NULL)
        evconnlistener_free(l->listener);
    if (l->base != NULL)
        event_base_free(l->base);
    *l = (struct bench_loop){0};
}

/* 0 ready (run it with event_base_dispatch(l->base)); -1 failed, said on stderr as name's,
 * l closed. */
static int bench_loop_open(struct bench_loop *l, const char *name, int port,
                           evconnlistener_cb on_accept)
{
    *l = (struct bench_loop){0};
    signal(SIGPIPE, SIG_IGN);
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return -1;
    event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER); /* timerfd: microseconds */
    l->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (l->base == NULL) {
        fprintf(stderr, "%s: no event base\n", name);
        return -1;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->listener = evconnlistener_new_bind(l->base, on_accept, l->base,
                                          LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 1024,
                                          (struct sockaddr *)&sin, sizeof sin);
    if (l->listener == NULL) {
        fprintf(stderr, "%s: bind 127.0.0.1:%d: ", name, port);
        perror(NULL);
        bench_loop_close(l);
        return -1;
    }
    l->sigterm = evsignal_new(l->base, SIGTERM, bench_loop_on_signal, l->base);
    l->sigint = evsignal_new(l->base, SIGINT, bench_loop_on_signal, l->base);
    if (l->sigterm == NULL || l->sigint == NULL || event_add(l->sigterm, NULL) ||
        event_add(l->sigint, NULL)) {
        bench_loop_close(l);
        return -1;
    }
    return 0;
}

#endif
