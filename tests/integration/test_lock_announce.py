"""A holder's announcement that comes before the waiter's flight begins is not lost.

A miss's lookup takes the cross-process lock in the same round trip (the lock script as
the lookup; a batch's MGET script with the lock folded in). When another process holds the
lock, the script leaves a mark that someone waits, and the holder PUBLISHes its key when it
is done. That message comes on the subscriber connection and can overtake the lookup's own
reply, which comes on the command connection: then no flight of the key exists yet in the
waiting process, and nobody hears it. A lookup that finds the lock held therefore asks the
lock again once its flight exists: the value is there (the holder is done), or the lock is
held still and the wait can hear the announcement, or it is free and taken.

Here B's command connection goes through a relay that holds every Redis reply 0.8 s,
while its subscriber connection is not held: A's announcement reaches B before B's lookup
reply. Before, B waited lock_timeout_ms (counted in predcache_lock_timeouts_total).
"""

import socket
import threading
import time

import pytest

from conftest import wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
HOLD_S = 0.8


class ReplyDelay:
    """A TCP relay to a real Redis that holds each reply HOLD_S on every connection that
    has not sent SUBSCRIBE (what the client sends goes on at once; replies keep their
    order). A subscriber connection's replies and messages pass at once."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [client, server]
            link = {"subscriber": False}
            threading.Thread(target=self._up, args=(client, server, link), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, link),
                             daemon=True).start()

    @staticmethod
    def _shut(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _up(self, src, dst, link):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._shut(src, dst)
                return
            if b"SUBSCRIBE" in data.upper():
                link["subscriber"] = True
            try:
                dst.sendall(data)
            except OSError:
                return

    def _down(self, src, dst, link):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._shut(src, dst)
                return
            if not link["subscriber"]:
                time.sleep(HOLD_S)  # this thread sends in order: every reply is held
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed.set()
        self.lsock.close()
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("per_instance,body", [
    ("off", '{"instances": [["announced early, one body"]]}'),
    ("on", '{"instances": [["announced early"], ["a batch of two"]]}'),
], ids=["whole-body", "batch"])
def test_an_announcement_before_the_flight_is_not_lost(start_predcache, model, redis,
                                                       per_instance, body):
    relay = ReplyDelay(redis.port)
    try:
        cache = {"lock_timeout_ms": "6000", "per_instance": per_instance}
        a = start_predcache(conf={"server": {"workers": "1"}, "cache": cache})
        b = start_predcache(conf={"server": {"workers": "1"}, "cache": cache,
                                  "redis": {"port": str(relay.port), "timeout_ms": "3000"}})
        wait_for(lambda: b.metric("predcache_redis_up") == 1, what="B connected")
        # B's generations and connections are ready: its next lookup is one held round trip
        warm = '{"instances": [["B warms up"]]}'
        assert b.post(PREDICT, body=warm, timeout=20).status_code == 200
        model.control(delay_ms=1000)
        oracle = Oracle("announced early", per_instance=per_instance == "on")
        results = {}

        def ask(name, p):
            t0 = time.monotonic()
            r = p.post(PREDICT, body=body, timeout=30)
            results[name] = (r, time.monotonic() - t0)

        calls = model.count()
        ta = threading.Thread(target=ask, args=("a", a))
        ta.start()
        wait_for(lambda: model.count() == calls + 1, what="A's model call started (A locked)")
        time.sleep(0.3)
        # B's lookup runs in Redis now (the lock held: a mark), its reply comes 0.8 s later;
        # A is done 0.7 s from now and announces the key, which B hears at once.
        tb = threading.Thread(target=ask, args=("b", b))
        tb.start()
        ta.join(30)
        tb.join(30)
        for name in ("a", "b"):
            r, took = results[name]
            oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                         r.headers.get("X-Cache"))
            print("%s: %d %s in %.2f s" % (name, r.status_code, r.headers.get("X-Cache"), took))
            assert r.status_code == 200
        assert oracle.wrong == 0
        # B did not wait out lock_timeout_ms (6 s) for an announcement it had already heard
        assert b.metric("predcache_lock_timeouts_total") == 0
        assert results["b"][1] < 5.0, results["b"][1]
    finally:
        relay.close()
