/*
 * listen: a listening TCP socket for "host:port", alone on its port or shared by the
 * process's workers (SO_REUSEPORT), for the HTTP/1.1 and the HTTP/2 servers alike. Owns
 * nothing once it returns the descriptor.
 */
#ifndef PREDCACHE_LISTEN_H
#define PREDCACHE_LISTEN_H

#include <stddef.h>

/* How a listener takes its port. */
enum pc_listen_bind {
    PC_LISTEN_EXCLUSIVE,   /* the only listener on its port (SO_REUSEADDR) */
    PC_LISTEN_SHARE_FIRST, /* opens a port that the same process's other listeners join
                              (SO_REUSEPORT); fails like EXCLUSIVE when anything listens there */
    PC_LISTEN_SHARE_JOIN,  /* joins a port opened with PC_LISTEN_SHARE_FIRST */
};

/* A non-blocking, close-on-exec socket listening on hostport (backlog 1024); -1 with a
 * message in err. */
int pc_listen_socket(const char *hostport, enum pc_listen_bind bind, char *err, size_t errlen);
struct sockaddr;
/* A peer's address as text ("unknown" for a family other than IPv4 and IPv6). */
void pc_listen_peer(const struct sockaddr *sa, char out[64]);
/* The port fd is bound to; 0 when it cannot be read. */
int pc_listen_port(int fd);

#endif
