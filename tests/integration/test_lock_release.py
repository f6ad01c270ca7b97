"""A lock release that Redis never got is sent again once Redis is back; and a release that
comes after the lock may have expired deletes it only when it is still the releaser's.

Process A holds the cross-process lock of a key while its model server call runs; process B
waits for A's release (its PUBLISH) before reading the answer. If A's connection to Redis is
lost exactly then (a network blackhole: bytes vanish, nothing is refused), A's SET and its
release time out and are dropped with the connection. Without a second attempt, the lock
stays until it expires and B waits the whole lock_timeout_ms (counted in
predcache_lock_timeouts_total). A keeps the release and sends it again once it reaches
Redis, so B's wait ends with A's release, not with its timeout.
"""

import socket
import threading
import time

from conftest import wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"


class Blackhole:
    """A TCP relay to a real Redis that can swallow every byte in both directions (as a
    network partition does) while `black` is set; connections stay open."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.black = threading.Event()
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
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if self.black.is_set():
                continue  # swallowed
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.closed.set()
        self.lsock.close()
        for s in self.socks:
            s.close()


def test_a_release_lost_with_the_connection_is_sent_again(start_predcache, model, redis):
    hole = Blackhole(redis.port)
    try:
        cache = {"lock_timeout_ms": "6000"}
        a = start_predcache(conf={"redis": {"port": str(hole.port), "timeout_ms": "200"},
                                  "server": {"workers": "1"}, "cache": cache})
        b = start_predcache(conf={"server": {"workers": "1"}, "cache": cache})
        wait_for(lambda: a.metric("predcache_redis_up") == 1, what="A connected")
        model.control(delay_ms=1500)
        body = '{"instances": [["held by A"]]}'
        oracle = Oracle("lock release")
        results = {}

        def ask(name, p):
            t0 = time.monotonic()
            r = p.post(PREDICT, body=body, timeout=20)
            results[name] = (r, time.monotonic() - t0)

        ta = threading.Thread(target=ask, args=("a", a))
        ta.start()
        wait_for(lambda: model.count() == 1, what="A's model call started (A holds the lock)")
        tb = threading.Thread(target=ask, args=("b", b))
        tb.start()
        wait_for(lambda: b.metric("predcache_lock_waits_total") == 1, what="B waiting for A")
        hole.black.set()  # A's answer, SET and release will vanish
        ta.join(20)
        time.sleep(0.6)  # A's commands time out (200 ms) and its connection is dropped
        hole.black.clear()  # Redis reachable again: A reconnects
        tb.join(20)
        for name in ("a", "b"):
            r, took = results[name]
            oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                         r.headers.get("X-Cache"))
            print("%s: %d %s in %.2f s" % (name, r.status_code, r.headers.get("X-Cache"), took))
            assert r.status_code == 200
        assert oracle.wrong == 0
        # B's wait ended with A's release (sent again after the reconnect), not with
        # lock_timeout_ms: no lock timeout, and the lock is gone.
        assert b.metric("predcache_lock_timeouts_total") == 0
        assert results["b"][0].headers["X-Cache"] in ("MISS", "COALESCED")
        lock_keys = [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")]
        assert lock_keys == []
    finally:
        hole.close()


def test_a_late_release_leaves_the_next_holders_lock(start_predcache, model, redis):
    """A's model call outlives its lock (lock_timeout_ms 2000, the call 3 s). B misses the
    same key after A's lock expired and takes the lock itself. A's release, 3 s after its
    lock was asked (past half of lock_timeout_ms, when a plain DEL is no longer safe),
    checks the owner: B's lock stays, so a third request waits for B instead of calling
    the model a third time."""
    cache = {"lock_timeout_ms": "2000"}
    a = start_predcache(conf={"server": {"workers": "1"}, "cache": cache})
    b = start_predcache(conf={"server": {"workers": "1"}, "cache": cache})
    model.control(delay_ms=3000)
    body = '{"instances": [["outlives its lock"]]}'
    oracle = Oracle("late release")
    results = {}

    def ask(name, p):
        r = p.post(PREDICT, body=body, timeout=20)
        results[name] = r

    t0 = time.monotonic()
    ta = threading.Thread(target=ask, args=("a", a))
    ta.start()
    wait_for(lambda: model.count() == 1, what="A's model call started (A holds the lock)")
    time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))  # A's lock has expired
    assert [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")] == []
    tb = threading.Thread(target=ask, args=("b", b))
    tb.start()
    wait_for(lambda: model.count() == 2, what="B's model call started (B took the lock)")
    lock_keys = [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")]
    assert len(lock_keys) == 1
    b_owner = redis.command("GET", lock_keys[0])
    ta.join(20)
    time.sleep(0.2)  # A's SET and release have run
    assert b.metric("predcache_lock_waits_total") == 0
    # B's lock (asked at t0 + 2.3 s, for 2 s) outlives A's release: it is still there
    assert redis.command("GET", lock_keys[0]) == b_owner
    tb.join(20)
    for name in ("a", "b"):
        r = results[name]
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert oracle.wrong == 0
    assert model.count() == 2
    wait_for(lambda: [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")] == [],
             what="B released its lock")
