"""Redis is never a reason to fail a request: down or slow -> BYPASS; back -> caching resumes."""

from conftest import wait_for

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
