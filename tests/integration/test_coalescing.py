"""Request coalescing inside one predcache process: concurrent misses for one key make
one model server call, and every waiter gets its answer (X-Cache: COALESCED). Every 200
answer of these runs is checked by the integrity oracle (tests/integration/oracle.py)
against its own request, and each test that gets one asserts 0 wrong answers."""

import json
import time

from conftest import ChannelListener, concurrently, make_entry, wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"


def herd_oracle(name):
    """The harness conf keys whole bodies (per_instance off): a waiter's answer must be
    the model's answer to its very body."""
    return Oracle(name, per_instance=False)


def check(oracle, body, rs, headers=None):
    """Judges each response (exceptions are left to the test's own assertions) to
    POST PREDICT with the JSON document body."""
    for r in rs:
        if not isinstance(r, Exception):
            oracle.check("POST", PREDICT, json.dumps(body), headers or {}, r.status_code,
                         r.content, r.headers.get("X-Cache"))
    return rs


def burst(p, n, body, headers=None):
    """n clients send the same request at once; returns their responses."""
    return concurrently(n, lambda i: p.post(PREDICT, json_body=body, headers=headers))


def test_fifty_identical_misses_make_one_model_call(proxy, model):
    model.control(delay_ms=400)
    oracle = herd_oracle("50 identical misses")
    rs = check(oracle, {"instances": ["herd"]}, burst(proxy, 50, {"instances": ["herd"]}))
    assert all(not isinstance(r, Exception) and r.status_code == 200 for r in rs), rs[:3]
    assert model.count(PREDICT) == 1
    bodies = {r.content for r in rs}
    assert len(bodies) == 1
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1
    assert set(caches) <= {"MISS", "COALESCED", "HIT"}
    assert len({r.headers["X-Cache-Key"] for r in rs}) == 1
    coalesced = caches.count("COALESCED")
    wait_for(lambda: proxy.metric("predcache_requests_total", cache="coalesced") == coalesced,
             what="coalesced counter")
    assert proxy.metric("predcache_in_flight") == 0
    oracle.assert_clean()


def test_waiters_share_the_leaders_error(proxy, model):
    model.control(delay_ms=300, status=500, body='{"error": "boom"}')
    rs = burst(proxy, 10, {"instances": ["bad-herd"]})
    assert model.count(PREDICT) == 1
    assert [r.status_code for r in rs] == [500] * 10
    assert {r.content for r in rs} == {b'{"error": "boom"}'}
    model.control()
    r = proxy.post(PREDICT, json_body={"instances": ["bad-herd"]})
    assert r.headers["X-Cache"] == "MISS"  # errors are neither cached nor kept
    oracle = herd_oracle("after the leader's error")
    check(oracle, {"instances": ["bad-herd"]}, [r])
    oracle.assert_clean()


def test_waiters_share_the_leaders_timeout(start_predcache, model):
    p = start_predcache(conf={"backend": {"timeout_ms": 300, "connect_timeout_ms": 200}})
    model.control(delay_ms=1500)
    rs = burst(p, 8, {"instances": ["slow-herd"]})
    assert [r.status_code for r in rs] == [504] * 8
    assert all("error" in r.json() for r in rs)


def test_coalescing_without_redis(proxy, model, redis):
    redis.kill()
    model.control(delay_ms=300)
    oracle = herd_oracle("coalescing without Redis")
    body = {"instances": ["no-redis-herd"]}
    rs = check(oracle, body, burst(proxy, 20, body))
    assert [r.status_code for r in rs] == [200] * 20
    assert model.count(PREDICT) == 1
    caches = sorted(r.headers["X-Cache"] for r in rs)
    assert caches.count("BYPASS") == 1 and caches.count("COALESCED") == 19
    oracle.assert_clean()


def test_no_cache_requests_neither_join_nor_lead(proxy, model):
    model.control(delay_ms=300)
    oracle = herd_oracle("no-cache neither joins nor leads")
    rs = check(oracle, {"instances": ["fresh"]},
               burst(proxy, 5, {"instances": ["fresh"]}, headers={"Cache-Control": "no-cache"}))
    assert [r.headers["X-Cache"] for r in rs] == ["MISS"] * 5
    assert model.count(PREDICT) == 5
    oracle.assert_clean()


def test_sequential_misses_after_the_answer_hit_redis(proxy, model):
    r1 = proxy.post(PREDICT, json_body={"instances": ["seq"]})
    assert r1.headers["X-Cache"] == "MISS"
    wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 1, what="stored")
    r2 = proxy.post(PREDICT, json_body={"instances": ["seq"]})
    assert r2.headers["X-Cache"] == "HIT"
    assert model.count(PREDICT) == 1
    oracle = herd_oracle("a miss, then a hit")
    check(oracle, {"instances": ["seq"]}, [r1, r2])
    oracle.assert_clean()


def burst_two(p1, p2, n, body):
    """n clients at once, alternating between two predcache processes."""
    return concurrently(n, lambda i: (p1 if i % 2 == 0 else p2).post(PREDICT, json_body=body))


def test_fifty_identical_misses_across_two_processes_make_one_call(start_predcache, model):
    p1 = start_predcache()
    p2 = start_predcache()
    model.control(delay_ms=500)
    oracle = herd_oracle("50 identical misses, two processes")
    body = {"instances": ["two-process-herd"]}
    rs = check(oracle, body, burst_two(p1, p2, 50, body))
    assert all(not isinstance(r, Exception) and r.status_code == 200 for r in rs), rs[:3]
    assert model.count(PREDICT) == 1
    assert len({r.content for r in rs}) == 1
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1, caches
    assert set(caches) <= {"MISS", "COALESCED", "HIT"}
    waited = p1.metric("predcache_lock_waits_total") + p2.metric("predcache_lock_waits_total")
    assert waited >= 1
    assert p1.metric("predcache_lock_timeouts_total") + p2.metric(
        "predcache_lock_timeouts_total") == 0  # notified, not timed out
    oracle.assert_clean()


def test_a_dead_lock_holder_costs_at_most_lock_timeout(start_predcache, model, redis):
    """A lock whose holder died (never released) is waited out, then the model is called."""
    p = start_predcache(conf={"cache": {"lock_timeout_ms": "700"}})
    # no-cache: this first call takes no lock, so no announcement of its own can arrive
    # late and end the wait below early.
    r0 = p.post(PREDICT, json_body={"instances": ["orphan"]}, headers={"Cache-Control": "no-cache, no-store"})
    key = r0.headers["X-Cache-Key"]
    redis.command("SET", key + ":lock", "someone-else", "PX", "700")
    r = p.post(PREDICT, json_body={"instances": ["orphan"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert p.metric("predcache_lock_timeouts_total") == 1
    assert model.count(PREDICT) == 2
    oracle = herd_oracle("a dead lock holder")
    check(oracle, {"instances": ["orphan"]}, [r0, r])
    oracle.assert_clean()


def test_locks_off_means_no_lock_keys(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"lock_timeout_ms": "0"}})
    model.control(delay_ms=200)
    r = p.post(PREDICT, json_body={"instances": ["nolock"]})
    assert r.headers["X-Cache"] == "MISS"
    assert not [k for k in redis.keys() if str(k).endswith(":lock")]


def test_an_expired_entry_never_answers_through_the_lock(start_predcache, model, redis):
    """An entry past ttl_s + grace_s that Redis still holds is a miss: the lock script,
    which returns a value that landed since the GET, must not serve it as a HIT."""
    p = start_predcache(conf={"cache": {"ttl_s": "300", "grace_s": "0"}})
    r0 = p.post(PREDICT, json_body={"instances": ["expired"]}, headers={"Cache-Control": "no-cache, no-store"})
    key = r0.headers["X-Cache-Key"]
    old_ms = int(time.time() * 1000) - 600 * 1000
    redis.command("SET", key, make_entry(key, b'{"predictions": ["old"]}', stored_at_ms=old_ms),
                  "EX", "600")
    r = p.post(PREDICT, json_body={"instances": ["expired"]})
    assert r.status_code == 200
    assert r.headers["X-Cache"] == "MISS", r.headers
    assert b"old" not in r.content
    assert model.count(PREDICT) == 2
    oracle = herd_oracle("an expired entry behind the lock")
    check(oracle, {"instances": ["expired"]}, [r0, r])
    oracle.assert_clean()


def test_a_lock_wait_ends_with_the_request_deadline(start_predcache, model, redis):
    """Another process holds the lock for longer than this request may wait: the wait ends
    at the request's deadline, not after lock_timeout_ms: then the model server gets what
    is left of it (an answer, or 504 when nothing is left)."""
    p = start_predcache(conf={"server": {"request_timeout_ms": "1000"},
                              "cache": {"lock_timeout_ms": "4000"}})
    r0 = p.post(PREDICT, json_body={"instances": ["deadline"]}, headers={"Cache-Control": "no-cache, no-store"})
    key = r0.headers["X-Cache-Key"]
    redis.command("SET", key + ":lock", "someone-else", "PX", "4000")
    t0 = time.monotonic()
    r = p.post(PREDICT, json_body={"instances": ["deadline"]})
    took = time.monotonic() - t0
    assert r.status_code in (200, 504), (r.status_code, r.text)
    assert took < 3.0, "waited %.1f s for a lock past a 1 s deadline" % took
    oracle = herd_oracle("a lock wait ended by the deadline")
    check(oracle, {"instances": ["deadline"]}, [r0, r])
    oracle.assert_clean()


def test_a_miss_nobody_waited_for_announces_nothing(start_predcache, model, redis):
    """The holder of a lock announces its answer on the done channel only when a process
    waited for it (the lock script marks the wait): a lone miss wakes no subscriber."""
    p1 = start_predcache()
    # Every worker greets on the channel each second (peers.h): those are not counted.
    channel = ChannelListener(redis.port, "predcache:done:default")
    try:
        for i in range(5):
            r = p1.post(PREDICT, json_body={"instances": ["lone-%d" % i]})
            assert r.headers["X-Cache"] == "MISS"
        wait_for(lambda: not [k for k in redis.keys() if str(k).endswith(":lock")],
                 what="the locks released")
        wait_for(lambda: channel.messages(greetings=True), what="a greeting heard")
        assert channel.messages() == []
        assert not [k for k in redis.keys() if str(k).endswith(":wait")]
        waited_for_is_announced(start_predcache, p1, model, channel)
    finally:
        channel.close()


def waited_for_is_announced(start_predcache, p1, model, channel):
    # a process that waits is woken by the announcement, not by its timeout
    p2 = start_predcache()
    model.control(delay_ms=500)
    body = {"instances": ["waited-for"]}
    rs = burst_two(p1, p2, 10, body)
    assert all(not isinstance(r, Exception) and r.status_code == 200 for r in rs), rs[:3]
    assert model.count(PREDICT) == 6
    assert p1.metric("predcache_lock_waits_total") + p2.metric("predcache_lock_waits_total") >= 1
    assert p1.metric("predcache_lock_timeouts_total") + p2.metric(
        "predcache_lock_timeouts_total") == 0
    wait_for(lambda: len(channel.messages()) >= 1, what="the announcement")
    time.sleep(0.2)
    assert len(channel.messages()) == 1, channel.messages()
