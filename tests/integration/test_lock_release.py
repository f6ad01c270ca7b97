"""A lock release that Redis never got is sent again once Redis is back; a release that
comes after the lock may have expired deletes it only when it is still the releaser's; and
a release's announcement that overtakes a waiter's lookup reply is not lost.

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

import pytest

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


def asker(body, results, timeout):
    """ask(name, p): POSTs body to p, keeping (response, seconds) as results[name]."""
    def ask(name, p):
        t0 = time.monotonic()
        r = p.post(PREDICT, body=body, timeout=timeout)
        results[name] = (r, time.monotonic() - t0)
    return ask


def judge(oracle, body, results):
    """Each answer in results (name: (response, seconds)) checked against body: 200, right."""
    for name in sorted(results):
        r, took = results[name]
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        print("%s: %d %s in %.2f s" % (name, r.status_code, r.headers.get("X-Cache"), took))
        assert r.status_code == 200
    assert oracle.wrong == 0


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
        ask = asker(body, results, 20)

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
        judge(oracle, body, results)
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
    ask = asker(body, results, 20)

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
    judge(oracle, body, results)
    assert [results[n][0].headers["X-Cache"] for n in ("a", "b")] == ["MISS", "MISS"]
    assert model.count() == 2
    wait_for(lambda: [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")] == [],
             what="B released its lock")


HOLD_S = 0.8


@pytest.mark.parametrize("per_instance,body", [
    ("off", '{"instances": [["announced early, one body"]]}'),
    ("on", '{"instances": [["announced early"], ["a batch of two"]]}'),
], ids=["whole-body", "batch"])
def test_an_announcement_before_the_flight_is_not_lost(injector, start_predcache, model,
                                                       per_instance, body):
    """A holder's announcement that comes before the waiter's flight begins is not lost.

    A miss's lookup takes the cross-process lock in the same round trip (the lock script as
    the lookup; a batch's MGET script with the lock folded in). When another process holds the
    lock, the script leaves a mark that someone waits, and the holder PUBLISHes its key when it
    is done. That message comes on the subscriber connection and can overtake the lookup's own
    reply, which comes on the command connection: then no flight of the key exists yet in the
    waiting process, and nobody hears it. A lookup that finds the lock held therefore asks the
    lock again once its flight exists: the value is there (the holder is done), or the lock is
    held still and the wait can hear the announcement, or it is free and taken.

    Here B's Redis is the byte injector (tests/fixtures/fake_redis.py), told to hold every
    reply 0.8 s but on subscriber connections: A's announcement reaches B before B's lookup
    reply. Before, B waited lock_timeout_ms (counted in predcache_lock_timeouts_total).
    """
    try:
        # the tier on, as shipped: a whole body's lookup is the lock script only there
        cache = {"lock_timeout_ms": "6000", "per_instance": per_instance, "l1_max_bytes": "64m"}
        a = start_predcache(conf={"server": {"workers": "1"}, "cache": cache})
        b = start_predcache(conf={"server": {"workers": "1"}, "cache": cache,
                                  "redis": {"port": str(injector.port), "timeout_ms": "3000"}})
        wait_for(lambda: b.metric("predcache_redis_up") == 1, what="B connected")
        # B's generations and connections are ready: its next lookup is one held round trip
        warm = '{"instances": [["B warms up"]]}'
        assert b.post(PREDICT, body=warm, timeout=20).status_code == 200
        model.control(delay_ms=1000)
        injector.hold_s = HOLD_S
        oracle = Oracle("announced early", per_instance=per_instance == "on")
        results = {}
        ask = asker(body, results, 30)

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
        judge(oracle, body, results)
        # B did not wait out lock_timeout_ms (6 s) for an announcement it had already heard
        assert b.metric("predcache_lock_timeouts_total") == 0
        assert results["b"][1] < 5.0, results["b"][1]
    finally:
        injector.hold_s = 0.0  # predcache stops without waiting on held replies
