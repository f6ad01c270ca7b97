/*
 * bevread: reading what a plain socket bufferevent's socket holds in one go. libevent 2.1
 * reads at most 4096 bytes a read callback, whatever bufferevent_set_max_single_read says
 * (evbuffer_read's own cap): an 8 KB request or Redis reply would take three passes of the
 * loop and six system calls. After a read that came back full, pc_bevread_more reads the
 * rest at once. Not for a TLS bufferevent: its socket's bytes are the filter's.
 *
 * Edge-triggered reading (pc_bevread_edge), for connections served in turn. With epoll's
 * level-triggered mode an fd reported ready goes back to the end of the ready list at
 * once, in the order of the reports; when its next bytes are not there yet at the next
 * epoll_wait (a client answered last in a pass, still sending), it drops out and comes
 * back behind every other connection, then is answered last again: such a connection is
 * served every other pass, and its requests wait two passes (the hit p99 of a busy loop
 * was twice its p50). Edge-triggered, an fd is queued when its bytes arrive: in arrival
 * order. The price is that a read callback that leaves bytes in the socket must ask again
 * (pc_bevread_rearm), since no new edge comes for them. Nor does the peer's end when it
 * came with the last bytes (a client that half-closes after its request): a read that
 * came back short may leave it unread. An EPOLLRDHUP watch (EV_CLOSED, once) asks again
 * then, and from then on every read callback asks again, until the end is read (the end
 * comes after the bytes sent before it: a short read then does not mean the socket is
 * done).
 */
#ifndef PREDCACHE_BEVREAD_H
#define PREDCACHE_BEVREAD_H

#include <stddef.h>

struct bufferevent;
struct event;

/* What the input's last addition brought (set by the callback pc_bevread_follow adds). */
struct pc_bevread {
    size_t last;
    struct event *closed;    /* pc_bevread_edge's watch of the peer's end, or NULL */
    struct bufferevent *bev; /* the one watched */
    int peer_ended;          /* the watch fired: reading goes on until the end is read */
};

/* Follows bev's input additions into r (which must outlive bev). 0 ok, -1 no memory. */
int pc_bevread_follow(struct bufferevent *bev, struct pc_bevread *r);
/* From bev's read callback: when its read came back full, reads up to max bytes more from
 * its socket into its input (nothing read, the end or an error: its next read says so).
 * 1 when that read came back full too, or the peer's end is still to be read (the
 * socket may hold more), else 0. */
int pc_bevread_more(struct bufferevent *bev, struct pc_bevread *r, size_t max);
/* 1 when the read callback's own read came back full, or the peer's end is still to be
 * read: the socket may hold more. */
int pc_bevread_may_hold(const struct pc_bevread *r);
/* Makes the read event of bev (a plain socket bufferevent followed into r, its read not
 * yet enabled) edge-triggered, and watches for the peer's end. libevent sets EPOLLET per
 * fd: while bev's write event is added too, the fd is level-triggered again (reading is
 * then as before, never lost). 0 ok, -1 not. */
int pc_bevread_edge(struct bufferevent *bev, struct pc_bevread *r);
/* Before bev is freed or its fd given away: the watch goes. */
void pc_bevread_release(struct pc_bevread *r);
/* From the read callback of an edge-triggered bev that left bytes in its socket: reading
 * is asked again (its event deleted and added: the add looks at the socket). Nothing
 * while reading is off: enabling it later adds it. */
void pc_bevread_rearm(struct bufferevent *bev);

#endif
