"""Client connections are read edge-triggered (epoll's EPOLLET).

Level-triggered, a connection reported ready goes back to the end of epoll's ready list at
once; when its next request is not there yet at the next epoll_wait (answered last in a
pass, its client still sending), it drops out and comes back behind every other
connection, to be answered last again: under load such a connection's requests waited two
passes of the loop. Edge-triggered, connections are queued as their bytes arrive. These
tests read predcache's own epoll registrations from /proc, and check that nothing is left
unread: bytes left in the socket after a read callback bring no new edge, so predcache must
ask again itself (bevread.h).
"""

import json
import os
import socket
import time

from test_http import post_bytes, split_responses

PREDICT = "/v1/models/m:predict"
EPOLLET = 1 << 31
EPOLLIN = 1


def server_fd(pid, listen_port, client):
    """predcache's descriptor for the server side of the client socket."""
    port = client.getsockname()[1]
    local, remote = "0100007F:%04X" % listen_port, "0100007F:%04X" % port
    inode = None
    with open("/proc/%d/net/tcp" % pid) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
    assert inode is not None, "predcache's side of the connection"
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                return int(fd)
        except OSError:
            pass
    raise AssertionError("no descriptor for socket %s" % inode)


def epoll_events(pid, fd):
    """The events mask fd is registered with in predcache's epoll instances (0: none)."""
    found = 0
    for efd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, efd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, efd)) as f:
                for line in f:
                    parts = line.split()
                    if parts[:1] == ["tfd:"] and int(parts[1]) == fd:
                        found |= int(parts[3], 16)
        except OSError:
            pass
    return found


def read_answers(s, n):
    data = b""
    while len(split_responses_complete(data)) < n:
        chunk = s.recv(1 << 20)
        assert chunk, "the connection closed with %d answers" % len(split_responses(data))
        data += chunk
    return split_responses(data)


def split_responses_complete(data):
    """The answers wholly in data."""
    out = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        if len(rest) < n:
            break
        out.append(head)
        data = rest[n:]
    return out


def body(tag, size=0):
    return json.dumps({"instances": [[tag, "x" * size]]}).encode()


def test_client_connections_are_read_edge_triggered(proxy, model):
    pid = proxy.proc.pid
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        s.sendall(post_bytes(PREDICT, body("edge-1")))
        (status, headers, _), = read_answers(s, 1)
        assert status.startswith("HTTP/1.1 200") and headers["x-cache"] == "MISS"
        fd = server_fd(pid, proxy.listen_port, s)
        ev = epoll_events(pid, fd)
        print("after one answer: events %#x" % ev)
        assert ev & EPOLLIN and ev & EPOLLET, "read edge-triggered"

        # Pipelined: the first answer waits for the write event while the second is
        # read; the write event gone, reading is edge-triggered again.
        s.sendall(post_bytes(PREDICT, body("edge-2")) + post_bytes(PREDICT, body("edge-3")))
        answers = read_answers(s, 2)
        assert [a[0][:12] for a in answers] == ["HTTP/1.1 200"] * 2
        ev = epoll_events(pid, fd)
        print("after a pipelined pair: events %#x" % ev)
        assert ev & EPOLLIN and ev & EPOLLET, "edge-triggered again after the write event"

        # A body of 3 MB sent at once: many reads past the first, each asked for again.
        s.sendall(post_bytes(PREDICT, body("edge-big", 3 << 20)))
        (status, headers, got), = read_answers(s, 1)
        assert status.startswith("HTTP/1.1 200"), status
        assert json.loads(model.last()["body"])["instances"][0][0] == "edge-big"

        # and the connection goes on serving
        s.sendall(post_bytes(PREDICT, body("edge-1")))
        (status, headers, _), = read_answers(s, 1)
        assert headers["x-cache"] in ("HIT", "MISS")
        assert epoll_events(pid, fd) & EPOLLET
    finally:
        s.close()


def test_a_slow_sender_on_an_edge_triggered_connection(proxy, model):
    # A request in many small pieces, each its own edge: nothing waits on a piece read.
    req = post_bytes(PREDICT, body("edge-slow", 20000))
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        for i in range(0, len(req), 1500):
            s.sendall(req[i:i + 1500])
            time.sleep(0.002)
        (status, headers, _), = read_answers(s, 1)
        assert status.startswith("HTTP/1.1 200"), status
        assert json.loads(model.last()["body"])["instances"][0][0] == "edge-slow"
    finally:
        s.close()
