/*
 * delay_relay: a TCP relay that delays every reply, for scripts/bench --redis-delay-ms.
 * Redis on another host costs a network round trip per command (or per pipeline of
 * commands); on loopback it costs next to nothing. Between predcache and redis-server,
 * this relay adds that trip back:
 *
 *     usage: delay_relay LISTEN_PORT TARGET_PORT DELAY_US   (127.0.0.1 on both sides)
 *
 * Each accepted connection gets its own connection to the target. What the client sends
 * is passed on at once; what the target answers is held DELAY_US from the moment it was
 * read, then written to the client: every chunk read from the target (one read: a
 * reply, several pipelined replies, or part of a big one) is queued with its due time
 * and written when due, oldest first, so bytes are never reordered and a chunk never
 * waits behind a later one. One precise timer per connection (timerfd, microseconds)
 * over its queue. The delay is one way (replies only): a command and its reply together
 * take DELAY_US more, as a round trip to another host would.
 *
 * Either side closing closes the pair (the target's last replies are delivered first).
 * SIGTERM or SIGINT stops it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "bench_loop.h"

/* Bytes read from the target at one time, held until due. */
struct chunk {
    struct timeval due;
    struct evbuffer *buf;
    struct chunk *next;
};

struct pair {
    struct bufferevent *client, *target;
    struct event *timer;
    struct chunk *head, *tail;
    int target_done; /* the target closed: close the client once the queue is written */
};

static struct sockaddr_in target_addr;
static struct timeval delay;

static void pair_free(struct pair *p)
{
    while (p->head != NULL) {
        struct chunk *c = p->head;
        p->head = c->next;
        evbuffer_free(c->buf);
        free(c);
    }
    if (p->timer != NULL)
        event_free(p->timer);
    if (p->client != NULL)
        bufferevent_free(p->client);
    if (p->target != NULL)
        bufferevent_free(p->target);
    free(p);
}

/* Closes the pair when the target is gone and everything it sent reached the client. */
static void maybe_close(struct pair *p)
{
    if (p->target_done && p->head == NULL &&
        evbuffer_get_length(bufferevent_get_output(p->client)) == 0)
        pair_free(p);
}

static void arm(struct pair *p)
{
    struct timeval now, wait;
    evutil_gettimeofday(&now, NULL);
    if (evutil_timercmp(&p->head->due, &now, <=))
        evutil_timerclear(&wait);
    else
        evutil_timersub(&p->head->due, &now, &wait);
    evtimer_add(p->timer, &wait);
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pair *p = arg;
    struct timeval now;
    evutil_gettimeofday(&now, NULL);
    while (p->head != NULL && evutil_timercmp(&p->head->due, &now, <=)) {
        struct chunk *c = p->head;
        p->head = c->next;
        if (p->head == NULL)
            p->tail = NULL;
        bufferevent_write_buffer(p->client, c->buf);
        evbuffer_free(c->buf);
        free(c);
    }
    if (p->head != NULL)
        arm(p);
    else
        maybe_close(p);
}

/* From the client: on to the target at once. */
static void on_client_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    bufferevent_write_buffer(p->target, bufferevent_get_input(bev));
}

/* What the target sent: queued, due DELAY_US from now. -1: out of memory. */
static int queue(struct pair *p, struct bufferevent *bev)
{
    struct chunk *c = calloc(1, sizeof *c);
    if (c == NULL || (c->buf = evbuffer_new()) == NULL) {
        free(c);
        return -1;
    }
    evbuffer_add_buffer(c->buf, bufferevent_get_input(bev));
    evutil_gettimeofday(&c->due, NULL);
    evutil_timeradd(&c->due, &delay, &c->due);
    if (p->tail != NULL)
        p->tail->next = c;
    else
        p->head = c;
    p->tail = c;
    if (!evtimer_pending(p->timer, NULL))
        arm(p);
    return 0;
}

static void on_target_read(struct bufferevent *bev, void *arg)
{
    if (queue(arg, bev) != 0)
        pair_free(arg);
}

static void on_client_written(struct bufferevent *bev, void *arg)
{
    (void)bev;
    maybe_close(arg);
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        pair_free(arg);
}

static void on_target_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        /* whatever is left in its input, in order */
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0 && queue(p, bev) != 0) {
            pair_free(p);
            return;
        }
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        p->target_done = 1;
        maybe_close(p);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    struct event_base *base = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pair *p = calloc(1, sizeof *p);
    if (p == NULL) {
        evutil_closesocket(fd);
        return;
    }
    p->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    p->target = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    p->timer = evtimer_new(base, on_due, p);
    if (p->client == NULL || p->target == NULL || p->timer == NULL ||
        bufferevent_socket_connect(p->target, (struct sockaddr *)&target_addr,
                                   sizeof target_addr) != 0) {
        if (p->client == NULL)
            evutil_closesocket(fd);
        pair_free(p);
        return;
    }
    bufferevent_setcb(p->client, on_client_read, on_client_written, on_client_event, p);
    bufferevent_setcb(p->target, on_target_read, NULL, on_target_event, p);
    bufferevent_enable(p->client, EV_READ | EV_WRITE);
    bufferevent_enable(p->target, EV_READ | EV_WRITE);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: delay_relay LISTEN_PORT TARGET_PORT DELAY_US\n");
        return 2;
    }
    int port = atoi(argv[1]), target = atoi(argv[2]);
    long delay_us = atol(argv[3]);
    if (port <= 0 || port > 65535 || target <= 0 || target > 65535 || delay_us < 0 ||
        delay_us > 10000000) {
        fprintf(stderr, "delay_relay: bad LISTEN_PORT, TARGET_PORT or DELAY_US\n");
        return 2;
    }
    delay.tv_sec = delay_us / 1000000;
    delay.tv_usec = delay_us % 1000000;
    target_addr.sin_family = AF_INET;
    target_addr.sin_port = htons((unsigned short)target);
    target_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    struct bench_loop l;
    if (bench_loop_open(&l, "delay_relay", port, on_accept) != 0)
        return 1;
    fprintf(stderr, "delay_relay: 127.0.0.1:%d -> 127.0.0.1:%d, replies delayed %ld us\n", port,
            target, delay_us);
    event_base_dispatch(l.base);
    bench_loop_close(&l);
    return 0;
}
