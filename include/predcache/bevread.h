/*
 * bevread: reading what a plain socket bufferevent's socket holds in one go. libevent 2.1
 * reads at most 4096 bytes a read callback, whatever bufferevent_set_max_single_read says
 * (evbuffer_read's own cap): an 8 KB request or Redis reply would take three passes of the
 * loop and six system calls. After a read that came back full, pc_bevread_more reads the
 * rest at once. Not for a TLS bufferevent: its socket's bytes are the filter's.
 */
#ifndef PREDCACHE_BEVREAD_H
#define PREDCACHE_BEVREAD_H

#include <stddef.h>

struct bufferevent;

/* What the input's last addition brought (set by the callback pc_bevread_follow adds). */
struct pc_bevread {
    size_t last;
};

/* Follows bev's input additions into r (which must outlive bev). 0 ok, -1 no memory. */
int pc_bevread_follow(struct bufferevent *bev, struct pc_bevread *r);
/* From bev's read callback: when its read came back full, reads up to max bytes more from
 * its socket into its input (nothing read, the end or an error: its next read says so). */
void pc_bevread_more(struct bufferevent *bev, struct pc_bevread *r, size_t max);

#endif
