"""Redis is never a reason to fail a request: down or slow -> BYPASS; back -> caching resumes."""

import time

import pytest
import requests

from conftest import Resp, wait_for

RECOVER_S = 15.0


def post_ok(proxy, instances, seen):
    """POSTs, records (status, X-Cache) in seen, returns X-Cache when status is 200."""
    r = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    seen.append((r.status_code, r.headers.get("X-Cache"), r.text[:200]))
    return r


def assert_all_200(seen):
    bad = [s for s in seen if s[0] != 200]
    assert not bad, "requests failed while Redis was unavailable: %s" % bad


def warm_up(proxy, redis, instances):
    r1 = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    assert r1.status_code == 200 and r1.headers.get("X-Cache") == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    assert r2.headers.get("X-Cache") == "HIT"
    return r1.headers["X-Cache-Key"]


def wait_caching_resumes(proxy, redis, instances, seen):
    def cached():
        r = post_ok(proxy, instances, seen)
        return r.status_code == 200 and r.headers.get("X-Cache") in ("MISS", "HIT")

    wait_for(cached, timeout=RECOVER_S, interval=0.2,
             what="X-Cache MISS or HIT after Redis came back (saw %s)" % [s[1] for s in seen[-5:]])
    assert_all_200(seen)
    r = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    r = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    assert r.status_code == 200 and r.headers.get("X-Cache") == "HIT"


def test_redis_killed_then_restarted(proxy, model, redis):
    warm_up(proxy, redis, ["before"])
    calls_before = model.count()

    redis.kill()
    seen = []
    for i in range(4):
        r = post_ok(proxy, ["before"], seen)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS", seen
        assert r.json()["call"] == calls_before + i + 1, "a BYPASS answer comes from the model"
    r = post_ok(proxy, ["new while down"], seen)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "BYPASS"
    assert model.count() == calls_before + 5

    redis.start()  # same port, empty (no persistence)
    wait_caching_resumes(proxy, redis, ["after"], seen)


def test_redis_paused_times_out_to_bypass(start_predcache, model, redis):
    proxy = start_predcache(conf={"redis": {"timeout_ms": "100"}})
    warm_up(proxy, redis, ["warm"])
    seen = []
    redis.pause()
    try:
        r = post_ok(proxy, ["warm"], seen)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS"
        r = post_ok(proxy, ["cold"], seen)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS"
        r = proxy.get("/labels")
        assert r.status_code == 200
    finally:
        redis.resume()
    wait_caching_resumes(proxy, redis, ["resumed"], seen)


def test_redis_down_at_start(start_predcache, model, redis):
    redis.kill()
    proxy = start_predcache()
    seen = []
    r = post_ok(proxy, ["x"], seen)
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Cache") == "BYPASS"

    redis.start()
    wait_caching_resumes(proxy, redis, ["x"], seen)


def test_a_refused_connect_never_counts_as_connected(start_predcache, model, redis):
    """A connect refused (Redis down, its port closed) is met twice: by the connection's
    read, which takes the socket's error, and then by libevent's connect check, which finds
    no error left and reports the connection made. The store must stay not ready: no
    "connected" line, predcache_redis_up 0, and every answer BYPASS for redis-unavailable
    (a dead connection taken for ready answered one of them generation-unknown)."""
    redis.kill()
    proxy = start_predcache()
    seen = []
    ups = []
    deadline = time.monotonic() + 2.5  # several attempts: 200 ms, then doubling
    while time.monotonic() < deadline:
        r = post_ok(proxy, ["refused"], seen)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS", seen[-3:]
        assert r.headers.get("X-Cache-Reason") == "redis-unavailable", r.headers
        ups.append(proxy.metric("predcache_redis_up"))
        time.sleep(0.02)
    err = proxy.stderr_text()
    assert err.count("cannot connect to Redis") >= 2, err[-2000:]
    assert "connected to Redis" not in err, err[-2000:]
    assert set(ups) == {0}, ups

    redis.start()
    wait_caching_resumes(proxy, redis, ["refused"], seen)
    assert "connected to Redis" in proxy.stderr_text()


@pytest.mark.parametrize("password", ["wrong-pw", None], ids=["wrong-password", "no-password"])
def test_redis_auth_refused_is_bypass(start_predcache, model, redis, password):
    """A Redis that refuses predcache's AUTH (or wants one that is not sent) is a Redis that
    is unavailable: requests are answered by the model server with X-Cache: BYPASS."""
    redis.command("CONFIG", "SET", "requirepass", "right-pw")
    try:
        proxy = start_predcache(conf={"redis": {"password": password}})
        seen = []
        for i in range(3):
            r = post_ok(proxy, ["auth"], seen)
            assert r.status_code == 200, r.text
            assert r.headers.get("X-Cache") == "BYPASS", seen
            assert r.json()["call"] == i + 1, "a BYPASS answer comes from the model"
        assert proxy.get("/labels").status_code == 200
        # Each refusal ends in a reconnect, and those back off (100 ms doubling to 2 s)
        # as for a Redis that is down: the error reply is no sign of a healthy Redis.
        before = proxy.metric("predcache_redis_reconnects_total")
        time.sleep(3.0)
        grew = proxy.metric("predcache_redis_reconnects_total") - before
        assert grew <= 10, "%d reconnects in 3 s: no backoff after a refused AUTH" % grew
    finally:
        with Resp(redis.port) as c:
            c.command("AUTH", "right-pw")
            c.command("CONFIG", "SET", "requirepass", "")
    assert redis.keys("*") == [], "stored despite the refused AUTH"


def test_redis_refusing_writes_counts_store_failed(proxy, model, redis):
    """Redis out of memory (maxmemory, noeviction) refuses every SET: answers are still
    200, the failed stores are counted, and caching works again once Redis takes writes."""
    redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.command("CONFIG", "SET", "maxmemory", "1")
    try:
        before = proxy.metric("predcache_store_failed_total")
        seen = []
        for i in range(3):
            r = post_ok(proxy, ["oom-%d" % i], seen)
            assert r.status_code == 200, r.text
            assert r.json()["call"] == i + 1
        assert_all_200(seen)
        wait_for(lambda: proxy.metric("predcache_store_failed_total") >= before + 3,
                 what="predcache_store_failed_total to count the 3 refused stores "
                      "(before %s, X-Cache %s)" % (before, [s[1] for s in seen]))
        assert redis.keys("predcache:v2:*") == [], "a SET got through maxmemory 1?"
    finally:
        redis.command("CONFIG", "SET", "maxmemory", "0")
    wait_caching_resumes(proxy, redis, ["after-oom"], [])


def test_reconnect_backoff_while_redis_down(proxy, model, redis):
    """While Redis is down, reconnection attempts back off (100 ms doubling to 2 s): over
    3 s that is about 5 attempts, not one per request or per event loop turn."""
    warm_up(proxy, redis, ["backoff"])
    redis.kill()
    before = proxy.metric("predcache_redis_reconnects_total")
    seen = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        r = post_ok(proxy, ["backoff"], seen)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Cache") == "BYPASS", seen[-3:]
        time.sleep(0.05)
    grew = proxy.metric("predcache_redis_reconnects_total") - before
    assert 2 <= grew <= 10, "%d connection attempts in 3 s with Redis down (%d requests)" % (
        grew, len(seen))

    redis.start()
    wait_caching_resumes(proxy, redis, ["backoff-after"], seen)


def test_subscriber_with_a_redis_db(start_predcache, model, redis):
    """[redis] db != 0: the subscriber's SELECT goes before its SUBSCRIBE (Redis refuses
    SELECT on a subscribed connection, and hiredis drops the connection on that error), so
    it stays subscribed and a second process hears an invalidation at once."""
    p1 = start_predcache(conf={"redis": {"db": 1}})
    p2 = start_predcache(conf={"redis": {"db": 1}, "cache": {"generation_refresh_ms": "60000"}})

    def subscribers():
        return redis.command("PUBSUB", "NUMSUB", "predcache:done:default")[1]

    wait_for(lambda: subscribers() == 2, what="both processes subscribed")
    time.sleep(0.5)
    assert subscribers() == 2, "a subscriber lost its connection"

    path, body = "/v1/models/a:predict", {"instances": ["db1"]}
    key = p1.post(path, json_body=body).headers["X-Cache-Key"]
    with Resp(redis.port) as c:
        c.command("SELECT", 1)
        wait_for(lambda: c.command("EXISTS", key) == 1, what="the entry stored in db 1")
    assert p2.post(path, json_body=body).headers["X-Cache"] == "HIT"
    r = requests.post("http://127.0.0.1:%d/cache/invalidate?model=a" % p1.admin_port, timeout=5)
    assert r.status_code == 200, r.text
    wait_for(lambda: p2.post(path, json_body=body).headers["X-Cache"] == "MISS", timeout=5,
             what="p2 to miss after p1's invalidation (announced on the done channel)")
