/* bevread: reading what a socket holds in one go (see the header). */
#include "predcache/bevread.h"

#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define LIBEVENT_READ_CAP 4096 /* libevent 2.1's EVBUFFER_MAX_READ */

static void on_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added > 0)
        ((struct pc_bevread *)arg)->last = info->n_added;
}

int pc_bevread_follow(struct bufferevent *bev, struct pc_bevread *r)
{
    r->last = 0;
    return evbuffer_add_cb(bufferevent_get_input(bev), on_added, r) != NULL ? 0 : -1;
}

void pc_bevread_more(struct bufferevent *bev, struct pc_bevread *r, size_t max)
{
    if (r->last != LIBEVENT_READ_CAP)
        return; /* a short read: the socket is empty */
    /* The bufferevent keeps its input's end frozen but while it reads: thawed for this
     * read as for its own. */
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_unfreeze(in, 0);
    struct evbuffer_iovec v[2];
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
    if (nv > 0) {
        struct iovec iov[2];
        for (int i = 0; i < nv; i++)
            iov[i] = (struct iovec){v[i].iov_base, v[i].iov_len};
        ssize_t n = readv(bufferevent_getfd(bev), iov, nv);
        size_t left = n > 0 ? (size_t)n : 0;
        for (int i = 0; i < nv; i++) {
            v[i].iov_len = left < v[i].iov_len ? left : v[i].iov_len;
            left -= v[i].iov_len;
        }
        evbuffer_commit_space(in, v, n > 0 ? nv : 0);
    }
    evbuffer_freeze(in, 0);
}
