/*
 * listen: listening sockets (see the header).
 */
#include "predcache/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "predcache/config.h"

/* 1 when a socket without SO_REUSEPORT cannot bind ai: something listens there already. */
static int port_taken(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0; /* let the real bind report it */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int taken = bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

int pc_listen_socket(const char *hostport, enum pc_listen_bind how, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (pc_config_split_hostport(hostport, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "invalid listen address '%s'", hostport);
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return -1;
    }
    /* SO_REUSEPORT would let this listener share the port with any other program of the
     * same user that set it too: first make sure that nothing listens there yet. */
    int e = 0, fd = -1;
    if (how == PC_LISTEN_SHARE_FIRST && port != 0 && port_taken(ai)) {
        e = EADDRINUSE;
    } else if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
        e = errno;
    } else {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if ((how != PC_LISTEN_EXCLUSIVE &&
             setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(e));
    return fd;
}

int pc_listen_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

void pc_listen_peer(const struct sockaddr *sa, char out[64])
{
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, 64);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, 64);
    else
        snprintf(out, 64, "unknown");
}
