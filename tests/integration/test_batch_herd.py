"""Coalescing of per-instance batches: concurrent batches missing the same instances make
one model server call, in one process and across processes, and every waiter is answered
with exactly the body the model server gives for its own batch (but for the test model's
"received" digest: a waiter's answer carries the shared call's). Every 200 answer of
these runs is also checked by the integrity oracle (tests/integration/oracle.py) against
its own request, and each test that gets one asserts 0 wrong answers (a run whose model
server is made to answer wrongly, mangle="short", is left out: its answers are the
model's own, and wrong)."""

import json
import time

import pytest

from conftest import command_calls, concurrently, wait_for, without_received
from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"
ON = {"cache": {"per_instance": "on"}}


def check(oracle, bodies, rs):
    """Judges response i against the JSON document bodies[i % len(bodies)] it answers."""
    for i, r in enumerate(rs):
        if not isinstance(r, Exception):
            oracle.check("POST", PREDICT, json.dumps(bodies[i % len(bodies)]), {},
                         r.status_code, r.content, r.headers.get("X-Cache"))
    return rs


def direct(model, body):
    """The model server's own answer for body (no predcache in between)."""
    import requests
    return requests.post(model.url(PREDICT), data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=10)


def ok(rs):
    assert all(not isinstance(r, Exception) for r in rs), [r for r in rs if isinstance(r, Exception)][:3]
    return rs


def test_fifty_identical_batches_make_one_model_call(start_predcache, model):
    p = start_predcache(conf=ON)
    model.control(delay_ms=400, stable=True)
    body = {"instances": [["herd", 1], ["herd", 2], ["herd", 3]]}
    oracle = Oracle("50 identical batches")
    rs = check(oracle, [body], ok(concurrently(50, lambda i: p.post(PREDICT, json_body=body))))
    assert [r.status_code for r in rs] == [200] * 50
    assert model.count(PREDICT) == 1
    model.control(stable=True)
    want = direct(model, body).content
    assert {without_received(r.content) for r in rs} == {without_received(want)}
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1, caches
    assert set(caches) <= {"MISS", "COALESCED", "HIT"}, caches
    coalesced = caches.count("COALESCED")
    assert coalesced >= 1
    wait_for(lambda: p.metric("predcache_requests_total", cache="coalesced") == coalesced,
             what="coalesced counter")
    assert p.metric("predcache_in_flight") == 0
    oracle.assert_clean()


def test_a_one_instance_miss_ends_its_flight_on_its_set(start_predcache, model, redis):
    """A batch of one instance: the SET's own answer ends its flight, no PING follows it
    (a miss alone on Redis makes MGET and SET only). The flight does end: once the entry
    has expired, the same request calls the model server again."""
    p = start_predcache(conf={"cache": {"per_instance": "on", "ttl_s": "1", "grace_s": "0",
                                        "lock_timeout_ms": "0"}})
    oracle = Oracle("one instance")
    bodies = [{"instances": [["one", i]]} for i in range(10)]
    redis.command("CONFIG", "RESETSTAT")
    keys = [post_checked(p.url(), oracle, PREDICT, b).headers["X-Cache-Key"] for b in bodies]
    for key in keys:
        redis.wait_key(key)
    assert command_calls(redis, "set") == 10
    assert command_calls(redis, "ping") == 0
    rs = [post_checked(p.url(), oracle, PREDICT, b) for b in bodies]
    assert [r.headers["X-Cache"] for r in rs] == ["HIT"] * 10
    assert model.count(PREDICT) == 10
    time.sleep(1.2)
    rs = [post_checked(p.url(), oracle, PREDICT, b) for b in bodies]
    assert [r.headers["X-Cache"] for r in rs] == ["MISS"] * 10
    assert model.count(PREDICT) == 20
    oracle.assert_clean()


def test_batches_missing_the_same_instances_share_one_call(start_predcache, model, redis):
    """Different batches whose cached parts differ but whose missing part is the same:
    one model call for that part, each answer merged in its own order."""
    p = start_predcache(conf=ON)
    model.control(stable=True)
    for warm in (["a"], ["b"], ["c"]):
        assert p.post(PREDICT, json_body={"instances": [warm]}).status_code == 200
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 3, what="warm stores")
    base = model.count(PREDICT)
    model.control(delay_ms=400, stable=True)
    bodies = [{"instances": [["a"], ["x"], ["y"]]},
              {"instances": [["x"], ["b"], ["y"], ["x"]]},
              {"instances": [["c"], ["x"], ["y"], ["a"]]}]
    oracle = Oracle("batches missing the same instances")
    rs = check(oracle, bodies,
               ok(concurrently(30, lambda i: p.post(PREDICT, json_body=bodies[i % 3]))))
    assert [r.status_code for r in rs] == [200] * 30
    assert model.count(PREDICT) == base + 1
    assert model.last()["body"] and json.loads(model.last()["body"])["instances"] == [["x"], ["y"]]
    model.control(stable=True)
    for i, r in enumerate(rs):
        assert without_received(r.content) == without_received(
            direct(model, bodies[i % 3]).content), (i, r.headers)
        assert r.headers["X-Cache"] in ("PARTIAL", "COALESCED", "HIT"), r.headers
    oracle.assert_clean()


def test_waiters_share_the_leaders_error_and_nothing_is_stored(start_predcache, model, redis):
    p = start_predcache(conf=ON)
    model.control(delay_ms=300, status=500, body='{"error": "boom"}')
    rs = ok(concurrently(10, lambda i: p.post(PREDICT, json_body={"instances": [["bad"]]})))
    assert model.count(PREDICT) == 1
    assert [r.status_code for r in rs] == [500] * 10
    assert {r.content for r in rs} == {b'{"error": "boom"}'}
    assert not [k for k in redis.keys() if not str(k).endswith(":lock")]
    model.control()
    r = p.post(PREDICT, json_body={"instances": [["bad"]]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    oracle = Oracle("after the leader's error")
    check(oracle, [{"instances": [["bad"]]}], [r])
    oracle.assert_clean()


def test_a_short_answer_is_passed_to_every_waiter(start_predcache, model, redis):
    p = start_predcache(conf=ON)
    model.control(delay_ms=300, mangle="short")
    body = {"instances": [["s1"], ["s2"]]}
    rs = ok(concurrently(8, lambda i: p.post(PREDICT, json_body=body)))
    assert model.count(PREDICT) == 1
    assert len({r.content for r in rs}) == 1
    assert not [k for k in redis.keys() if not str(k).endswith(":lock")]


def test_no_cache_batches_neither_join_nor_lead(start_predcache, model):
    p = start_predcache(conf=ON)
    model.control(delay_ms=300)
    rs = ok(concurrently(5, lambda i: p.post(PREDICT, json_body={"instances": [["fresh"]]},
                                             headers={"Cache-Control": "no-cache"})))
    assert [r.headers["X-Cache"] for r in rs] == ["MISS"] * 5
    assert model.count(PREDICT) == 5
    oracle = Oracle("no-cache batches")
    check(oracle, [{"instances": [["fresh"]]}], rs)
    oracle.assert_clean()


def test_fifty_identical_batches_across_two_processes_make_one_call(start_predcache, model):
    p1 = start_predcache(conf=ON)
    p2 = start_predcache(conf=ON)
    model.control(delay_ms=500, stable=True)
    body = {"instances": [["two", 1], ["two", 2]]}
    oracle = Oracle("50 identical batches, two processes")
    rs = check(oracle, [body], ok(concurrently(
        50, lambda i: (p1 if i % 2 == 0 else p2).post(PREDICT, json_body=body))))
    assert [r.status_code for r in rs] == [200] * 50
    assert model.count(PREDICT) == 1
    model.control(stable=True)
    assert {without_received(r.content) for r in rs} == {
        without_received(direct(model, body).content)}
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1, caches
    assert set(caches) <= {"MISS", "COALESCED", "HIT"}, caches
    waited = p1.metric("predcache_lock_waits_total") + p2.metric("predcache_lock_waits_total")
    assert waited >= 1
    assert p1.metric("predcache_lock_timeouts_total") + p2.metric(
        "predcache_lock_timeouts_total") == 0  # notified, not timed out
    oracle.assert_clean()


@pytest.mark.parametrize("per_instance", ["on", "off"])
def test_waiters_of_a_refused_leader_get_its_503(start_predcache, model, per_instance):
    """The leader is refused before the model server is called (its backend is marked
    down by failing health checks): the requests waiting on it get the same 503, not a
    502 of their own."""
    p = start_predcache(conf={"cache": {"per_instance": per_instance},
                              "backend": {"health_path": "/v1/models/m",
                                          "health_interval_ms": "100",
                                          "health_fails": "1", "health_passes": "1"}})
    model.control(status=503, body='{"error": "down"}')
    wait_for(lambda: p.metric("predcache_backend_up") == 0, what="backend marked down")
    rs = ok(concurrently(10, lambda i: p.post(PREDICT, json_body={"instances": [["refused"]]})))
    assert [r.status_code for r in rs] == [503] * 10, [(r.status_code, r.text) for r in rs]
    assert all("error" in r.json() for r in rs)
