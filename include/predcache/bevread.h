/*
 * bevread: reading a plain socket bufferevent's socket ourselves. libevent 2.1's read asks
 * the kernel how much is waiting (ioctl FIONREAD) before every read and then reads at most
 * 4096 bytes, whatever bufferevent_set_max_single_read says: an 8 KB request or Redis reply
 * took an ioctl and two or three reads, and as many passes of the loop. pc_bevread_own puts
 * a read of its own in the bufferevent's read event: one readv of what the socket holds,
 * up to the owner's limit (more after a full one, when the limit allows), straight into
 * the input, then the bufferevent's read callback, or its event callback with the end, an
 * error or the read timeout, as libevent's own read does. Not for a TLS bufferevent: its
 * socket's bytes are the filter's.
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

#include <event2/util.h>

struct bufferevent;
struct event;

/* A bufferevent's own read (pc_bevread_own). */
struct pc_bevread {
    size_t (*limit)(void *arg); /* the most one read callback takes */
    void *limit_arg;
    int full;                /* the last read took its limit: the socket may hold more */
    struct event *closed;    /* pc_bevread_edge's watch of the peer's end, or NULL */
    struct bufferevent *bev; /* the one watched */
    int peer_ended;          /* the watch fired: reading goes on until the end is read */
};

/* Reads bev (a plain socket bufferevent, its socket set: after bufferevent_socket_connect,
 * which makes its events anew; its read not yet enabled) with a read of its own into r
 * (which must outlive bev): its read event's callback becomes read_event, whose argument
 * stays bev (libevent's finalization of a freed bufferevent needs it); read_event finds r
 * (from bev's callback argument: bufferevent_getcb) and calls pc_bevread_read. Each read
 * takes up to limit(limit_arg) bytes. The event keeps its flags and priority. 0 ok, -1
 * not (reading enabled). */
int pc_bevread_own(struct bufferevent *bev, struct pc_bevread *r,
                   void (*read_event)(evutil_socket_t fd, short what, void *bev),
                   size_t (*limit)(void *arg), void *limit_arg);
/* The read (from read_event): up to the limit, in reads of 16 KB, then 60 KB, until one
 * comes back short, then bev's read callback. The end, an error or the read timeout go to its event
 * callback, reading disabled, as libevent's own read does (a read the next one would retry
 * is nothing). r is not touched after a callback, which may free it with its owner. */
void pc_bevread_read(struct pc_bevread *r, evutil_socket_t fd, short what);
/* A limit of 64 KB a read callback (arg unused). */
size_t pc_bevread_64k(void *arg);
/* 1 when the read before the read callback took its limit, or the peer's end is still to
 * be read: the socket may hold more. */
int pc_bevread_may_hold(const struct pc_bevread *r);
/* Makes the read event of bev (a plain socket bufferevent read into r, its read not
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
