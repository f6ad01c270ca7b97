"""Redis Cluster replies predcache must survive: slot maps that make no sense, MOVED and ASK
that lead nowhere or in circles, a "cluster" that is a plain Redis.

The bytes come from tests/fixtures/fake_redis.py (a relay in front of a real redis-server
that replaces chosen replies). With [redis] cluster = on and the relay as the only seed,
CLUSTER SLOTS is answered by the test: a map that puts every slot on the relay itself makes
the plain Redis behind it a one-master cluster, and redirections are injected into its
replies. Every predict answer is judged by the integrity oracle; predcache must stay up,
answer every request (BYPASS while Redis cannot be used) and cache again afterwards.
"""

import time

import pytest
import requests

from conftest import GiveUp, free_port, wait_for
from oracle import Oracle, post_checked
from rcluster import key_slot


PATH = "/v1/models/m:predict"
FOREVER = 10 ** 6  # a rule that is never used up


def slots_map(*ranges):
    """A CLUSTER SLOTS reply: [(first, last, host, port), ...]."""
    out = [b"*%d\r\n" % len(ranges)]
    for first, last, host, port in ranges:
        h = host.encode()
        out.append(b"*3\r\n:%d\r\n:%d\r\n*2\r\n$%d\r\n%s\r\n:%d\r\n" % (first, last, len(h), h,
                                                                       port))
    return b"".join(out)


def start(start_predcache, injector, lock=False, **redis_extra):
    """Every lookup a Redis GET (no tier; without the lock, a whole body's lookup is not the
    lock script), or with lock the lock script (EVAL)."""
    conf = {"redis": {"cluster": "on", "port": str(injector.port), "timeout_ms": "300"},
            "cache": {"l1_max_bytes": "0", "lock_timeout_ms": "5000" if lock else "0"}}
    conf["redis"].update(redis_extra)
    return start_predcache(conf=conf)


def one_master(injector):
    """Every CLUSTER SLOTS answered: all slots on the relay (the plain Redis behind it)."""
    injector.replace_reply(b"CLUSTER", slots_map((0, 16383, "127.0.0.1", injector.port)),
                           count=FOREVER)


def alive(p, pid):
    if p.proc.poll() is not None or p.pid != pid:
        raise GiveUp("predcache exited (%s):\n%s" % (p.proc.returncode, p.stderr_text()[-3000:]))
    return True


def post(p, oracle, name, seen):
    r = post_checked(p.url(), oracle, PATH, {"instances": [[name]]})
    seen.append(r.headers.get("X-Cache"))
    return r


def wait_hit(p, oracle, name, seen, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        alive(p, p.pid)
        if post(p, oracle, name, seen).headers["X-Cache"] == "HIT":
            return
        assert time.monotonic() < deadline, "no HIT: %s" % seen[-10:]
        time.sleep(0.1)


def test_a_one_master_map_through_the_relay_caches(start_predcache, injector, redis, model):
    one_master(injector)
    p = start(start_predcache, injector)
    wait_for(lambda: p.metric("predcache_redis_cluster_slots_covered") == 16384,
             what="the map read")
    oracle, seen = Oracle("one-master cluster", per_instance=False), []
    r = post(p, oracle, "a", seen)
    redis.wait_key(r.headers["X-Cache-Key"])
    assert post(p, oracle, "a", seen).headers["X-Cache"] == "HIT", seen
    assert p.metric("predcache_redis_cluster_masters") == 1
    assert p.metric("predcache_redis_cluster_masters_up") == 1
    oracle.assert_clean()


def test_moved_is_followed_and_a_moved_loop_ends(start_predcache, injector, redis, model):
    one_master(injector)
    p = start(start_predcache, injector)
    oracle, seen = Oracle("moved", per_instance=False), []
    r = post(p, oracle, "m", seen)
    redis.wait_key(r.headers["X-Cache-Key"])
    moved = b"-MOVED 866 127.0.0.1:%d\r\n" % injector.port
    # one MOVED to where it already was: followed, and the entry still found
    injector.replace_reply(b"GET", moved, count=1)
    assert post(p, oracle, "m", seen).headers["X-Cache"] == "HIT", seen
    assert p.metric("predcache_redis_redirects_total", kind="moved") >= 1
    # MOVED for ever: after a few redirections the lookup gives up (BYPASS), no hang
    injector.replace_reply(b"GET", moved, count=FOREVER)
    t0 = time.monotonic()
    assert post(p, oracle, "m", seen).headers["X-Cache"] == "BYPASS", seen
    assert time.monotonic() - t0 < 5
    assert 2 <= p.metric("predcache_redis_redirects_total", kind="moved") <= 10
    injector.rules.clear()
    one_master(injector)
    wait_hit(p, oracle, "m", seen)
    alive(p, p.pid)
    oracle.assert_clean()


@pytest.mark.parametrize("lookup", [b"GET"])
def test_ask_sends_asking_first(start_predcache, injector, redis, model, lookup):
    one_master(injector)
    p = start(start_predcache, injector)
    oracle, seen = Oracle("ask", per_instance=False), []
    r = post(p, oracle, "k", seen)
    redis.wait_key(r.headers["X-Cache-Key"])
    injector.replace_reply(lookup, b"-ASK 866 127.0.0.1:%d\r\n" % injector.port, count=1)
    # the plain Redis refuses ASKING (no cluster support): the lookup after it still answers
    assert post(p, oracle, "k", seen).headers["X-Cache"] == "HIT", seen
    assert p.metric("predcache_redis_redirects_total", kind="ask") == 1
    link = injector.wait_link(lambda l: l.sent(b"ASKING"))
    assert link is not None
    oracle.assert_clean()


def test_moved_to_a_node_that_is_not_there(start_predcache, injector, redis, model):
    """A MOVED to a dead address: that lookup bypasses, the next map puts the slot back and
    caching resumes."""
    one_master(injector)
    p = start(start_predcache, injector)
    oracle, seen = Oracle("moved nowhere", per_instance=False), []
    r = post(p, oracle, "n", seen)
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    maps = p.metric("predcache_redis_cluster_refreshes_total")
    injector.replace_reply(b"GET", b"-MOVED %d 127.0.0.1:%d\r\n" % (key_slot(key), free_port()),
                           count=1)
    assert post(p, oracle, "n", seen).headers["X-Cache"] == "BYPASS", seen
    wait_hit(p, oracle, "n", seen)
    assert p.metric("predcache_redis_cluster_refreshes_total") > maps
    oracle.assert_clean()


@pytest.mark.parametrize("reply", [
    b"-ERR This instance has cluster support disabled\r\n",
    b"*0\r\n",
    b"$3\r\nabc\r\n",
    b":7\r\n",
    b"*1\r\n*3\r\n:-5\r\n:99999\r\n*0\r\n",
    b"*2\r\n:1\r\n:2\r\n",
    b"*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n",
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n:1\r\n$4\r\n6379\r\n",
    b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:0\r\n",
], ids=["error", "empty", "bulk", "integer", "bad-range", "flat", "reversed", "types",
        "port-0"])
def test_maps_that_make_no_sense(start_predcache, injector, redis, model, reply):
    injector.replace_reply(b"CLUSTER", reply, count=FOREVER)
    p = start(start_predcache, injector)
    pid = p.pid
    oracle, seen = Oracle("bad map", per_instance=False), []
    for i in range(5):
        post(p, oracle, "x%d" % i, seen)
        time.sleep(0.1)
    assert set(seen) == {"BYPASS"}, seen
    assert p.metric("predcache_redis_cluster_slots_covered") == 0
    assert p.metric("predcache_redis_up") == 0
    r = p_ready(p)
    assert r.status_code == 200 and r.json()["redis"] == "down", r.text  # degraded, ready
    assert r.json()["redis_cluster"]["slots_covered"] == 0
    assert "no slot map from Redis 127.0.0.1:%d" % injector.port in p.stderr_text()
    alive(p, pid)
    oracle.assert_clean()


def p_ready(p):
    return requests.get(p.admin("/ready"), timeout=5)


def test_a_partial_map(start_predcache, injector, redis, model):
    """Slots without a master: their keys bypass, the others are cached; /ready says so."""
    injector.replace_reply(b"CLUSTER", slots_map((0, 8191, "127.0.0.1", injector.port)),
                           count=FOREVER)
    p = start(start_predcache, injector)
    wait_for(lambda: p.metric("predcache_redis_cluster_slots_covered") == 8192,
             what="half a map")
    oracle, seen = Oracle("partial map", per_instance=False), []
    results = {}
    for i in range(40):
        name = "p%d" % i
        post(p, oracle, name, seen)
        results[name] = seen[-1]
    assert set(results.values()) <= {"MISS", "BYPASS"}
    assert "MISS" in results.values() and "BYPASS" in results.values(), results
    ready = p_ready(p)  # degraded, not unready: every request is still answered
    assert ready.status_code == 200 and "redis unavailable" in ready.json()["degraded"], ready.text
    oracle.assert_clean()
