/* bevread: a plain socket bufferevent read by a read of our own (see the header). */
#include "predcache/bevread.h"

#include <errno.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

/* The first read's reservation: a 16 KB chain of libevent's (its own header inside), which
 * holds a request or reply of a few KB. The reads after a full one take 64 KB chains. A
 * chain of 64 KB or more costs more than its size: glibc's free of a chunk that large
 * consolidates its fast bins first (cold memory, every time). */
#define READ_FIRST (16384 - 512)
#define READ_CHUNK (65536 - 4096)

/* One readv of up to want bytes from fd into in's end. Bytes read, 0 the end, -1 an error
 * (errno) or no memory (ENOMEM). */
static ssize_t read_into(struct evbuffer *in, evutil_socket_t fd, size_t want)
{
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
    if (nv <= 0) {
        errno = ENOMEM;
        return -1;
    }
    /* The space reserved may be larger than asked: want bounds the read all the same. */
    struct iovec iov[2];
    size_t cap = want;
    for (int i = 0; i < nv; i++) {
        size_t take = v[i].iov_len < cap ? v[i].iov_len : cap;
        iov[i] = (struct iovec){v[i].iov_base, take};
        cap -= take;
    }
    ssize_t n = readv(fd, iov, nv);
    int saved = errno;
    size_t left = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < nv; i++) {
        v[i].iov_len = left < iov[i].iov_len ? left : iov[i].iov_len;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, n > 0 ? nv : 0);
    errno = saved;
    return n;
}

void pc_bevread_read(struct pc_bevread *r, evutil_socket_t fd, short what)
{
    struct bufferevent *bev = r->bev;
    short fail = BEV_EVENT_READING;
    if (what == EV_TIMEOUT) { /* with EV_READ too, a read came: the timeout is moot */
        fail |= BEV_EVENT_TIMEOUT;
    } else {
        struct evbuffer *in = bufferevent_get_input(bev);
        size_t limit = r->limit(r->limit_arg), got = 0;
        if (limit == 0)
            limit = 1;
        ssize_t n;
        /* The bufferevent keeps its input's end frozen but while it reads: thawed for this
         * read as for its own. */
        evbuffer_unfreeze(in, 0);
        for (;;) {
            size_t chunk = got == 0 ? READ_FIRST : READ_CHUNK;
            size_t want = limit - got < chunk ? limit - got : chunk;
            n = read_into(in, fd, want);
            if (n > 0)
                got += (size_t)n;
            if (n <= 0 || (size_t)n < want || got >= limit)
                break;
        }
        int err = errno;
        evbuffer_freeze(in, 0);
        int retry = n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR);
        /* Full, or the end or an error met after bytes: their read comes next. */
        r->full = got >= limit || (n <= 0 && !retry);
        if (got > 0) {
            bufferevent_trigger(bev, EV_READ, 0);
            return;
        }
        if (retry)
            return;
        errno = err;
        fail |= n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
    }
    int saved = errno;
    bufferevent_disable(bev, EV_READ);
    errno = saved;
    bufferevent_trigger_event(bev, fail, 0);
}

/* rd assigned anew with callback cb(arg) and the flags extra more, keeping its priority. */
static int reassign(struct event *rd, short extra, event_callback_fn cb, void *arg)
{
    int prio = event_get_priority(rd);
    if (event_assign(rd, event_get_base(rd), event_get_fd(rd), event_get_events(rd) | extra, cb,
                     arg) != 0)
        return -1;
    event_priority_set(rd, prio);
    return 0;
}

int pc_bevread_own(struct bufferevent *bev, struct pc_bevread *r,
                   void (*read_event)(evutil_socket_t fd, short what, void *bev),
                   size_t (*limit)(void *arg), void *limit_arg)
{
    struct event *rd = &bev->ev_read;
    if (event_pending(rd, EV_READ, NULL) || read_event == NULL || limit == NULL)
        return -1;
    r->bev = bev;
    r->limit = limit;
    r->limit_arg = limit_arg;
    r->full = 0;
    /* The event's argument stays the bufferevent: libevent's finalization of a freed
     * bufferevent's events takes it from there. */
    return reassign(rd, 0, read_event, bev);
}

size_t pc_bevread_64k(void *arg)
{
    (void)arg;
    return 65536;
}

int pc_bevread_may_hold(const struct pc_bevread *r)
{
    return r->full || r->peer_ended;
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
    if (reassign(rd, EV_ET, event_get_callback(rd), event_get_callback_arg(rd)) != 0)
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
