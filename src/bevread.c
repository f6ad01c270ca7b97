/* bevread: reading what a socket holds in one go (see the header). */
#include "predcache/bevread.h"

#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#define LIBEVENT_READ_CAP 4096 /* libevent 2.1's EVBUFFER_MAX_READ */

static void on_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added > 0)
        ((struct pc_bevread *)arg)->last = info->n_added;
}

int pc_bevread_follow(struct bufferevent *bev, struct pc_bevread *r)
{
    *r = (struct pc_bevread){0};
    return evbuffer_add_cb(bufferevent_get_input(bev), on_added, r) != NULL ? 0 : -1;
}

int pc_bevread_more(struct bufferevent *bev, struct pc_bevread *r, size_t max)
{
    if (r->last != LIBEVENT_READ_CAP)
        return r->peer_ended; /* a short read: the socket is empty but for the end */
    int full = 0;
    /* The bufferevent keeps its input's end frozen but while it reads: thawed for this
     * read as for its own. */
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_unfreeze(in, 0);
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
    if (nv > 0) {
        /* The space reserved may be larger than asked: max bounds the read all the same. */
        struct iovec iov[2];
        size_t cap = max;
        for (int i = 0; i < nv; i++) {
            size_t take = v[i].iov_len < cap ? v[i].iov_len : cap;
            iov[i] = (struct iovec){v[i].iov_base, take};
            cap -= take;
        }
        ssize_t n = readv(bufferevent_getfd(bev), iov, nv);
        size_t left = n > 0 ? (size_t)n : 0, room = 0;
        for (int i = 0; i < nv; i++)
            room += iov[i].iov_len;
        full = n > 0 && (size_t)n == room;
        for (int i = 0; i < nv; i++) {
            v[i].iov_len = left < v[i].iov_len ? left : v[i].iov_len;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, n > 0 ? nv : 0);
    }
    evbuffer_freeze(in, 0);
    return full || r->peer_ended;
}

int pc_bevread_may_hold(const struct pc_bevread *r)
{
    return r->last == LIBEVENT_READ_CAP || r->peer_ended;
}

/* The peer's end came (once): the read is asked again, and reads it. */
static void on_closed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_bevread *r = arg;
    r->peer_ended = 1;
    pc_bevread_rearm(r->bev);
}

int pc_bevread_edge(struct bufferevent *bev, struct pc_bevread *r)
{
    struct event *rd = &bev->ev_read;
    if (event_pending(rd, EV_READ, NULL) || r->closed != NULL)
        return -1; /* only before the read is first enabled */
    if (event_assign(rd, event_get_base(rd), event_get_fd(rd), event_get_events(rd) | EV_ET,
                     event_get_callback(rd), event_get_callback_arg(rd)) != 0)
        return -1;
    r->bev = bev;
    r->closed = event_new(event_get_base(rd), event_get_fd(rd), EV_CLOSED | EV_ET, on_closed, r);
    if (r->closed == NULL || event_add(r->closed, NULL) != 0) {
        pc_bevread_release(r);
        return -1;
    }
    return 0;
}

void pc_bevread_release(struct pc_bevread *r)
{
    if (r->closed != NULL)
        event_free(r->closed);
    r->closed = NULL;
}

void pc_bevread_rearm(struct bufferevent *bev)
{
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        return; /* enabling it again adds it, which looks at the socket then */
    bufferevent_disable(bev, EV_READ);
    bufferevent_enable(bev, EV_READ);
}
