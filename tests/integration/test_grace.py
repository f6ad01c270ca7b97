"""Never worse than the model server: stale answers within grace, active health checks
with fail-fast, and bounds on model server calls and pending stores."""

import threading
import time

import requests

from conftest import wait_for

PREDICT = "/v1/models/m:predict"


def test_stale_entry_answered_at_once_and_refreshed_behind(start_predcache, model):
    p = start_predcache(conf={"cache": {"ttl_s": "1", "grace_s": "60"}})
    r1 = p.post(PREDICT, json_body={"instances": ["swr"]})
    assert r1.headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1, what="stored")
    time.sleep(1.3)
    r2 = p.post(PREDICT, json_body={"instances": ["swr"]})
    assert r2.status_code == 200
    assert r2.headers["X-Cache"] == "STALE"
    assert r2.headers["Warning"] == '110 - "Response is Stale"'
    assert int(r2.headers["Age"]) >= 1
    assert r2.content == r1.content  # the old answer, at once
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh")
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 2, what="refresh stored")
    r3 = p.post(PREDICT, json_body={"instances": ["swr"]})
    assert r3.headers["X-Cache"] == "HIT"
    assert r3.json()["call"] == 2  # the refreshed answer
    assert model.count(PREDICT) == 2


def test_stale_answer_instead_of_an_error_when_the_model_is_down(start_predcache, model):
    p = start_predcache(conf={"cache": {"ttl_s": "1", "grace_s": "60"},
                              "backend": {"connect_timeout_ms": "200"}})
    r1 = p.post(PREDICT, json_body={"instances": ["down"]})
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1, what="stored")
    model.stop()
    time.sleep(1.3)
    for _ in range(3):
        r = p.post(PREDICT, json_body={"instances": ["down"]})
        assert r.status_code == 200 and r.headers["X-Cache"] == "STALE"
        assert r.content == r1.content
    wait_for(lambda: p.metric("predcache_refresh_failed_total") >= 1, what="refresh failed")
    r = p.post(PREDICT, json_body={"instances": ["never-seen"]})
    assert r.status_code == 502  # nothing stale to give: the model's failure shows


def test_health_checks_fail_fast_and_show(start_predcache, model):
    p = start_predcache(conf={"backend": {"health_path": "/v1/models/m",
                                          "health_interval_ms": "100", "health_fails": "2",
                                          "connect_timeout_ms": "200"}})
    assert p.metric("predcache_backend_up") == 1
    assert p.post(PREDICT, json_body={"instances": ["h1"]}).status_code == 200
    model.stop()
    wait_for(lambda: p.metric("predcache_backend_up") == 0, what="backend marked down")
    t0 = time.monotonic()
    r = p.post(PREDICT, json_body={"instances": ["h2"]})
    assert r.status_code == 503
    assert "down" in r.json()["error"]
    assert time.monotonic() - t0 < 5
    assert p.metric("predcache_backend_refused_total") >= 1
    r_ready = requests.get(p.admin("/ready"), timeout=10)
    assert r_ready.status_code == 503 and r_ready.json()["backend"] == "down"
    r = p.post(PREDICT, json_body={"instances": ["h1"]})  # cached answers still flow
    assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"


def test_max_in_flight_sheds_load_with_503(start_predcache, model):
    p = start_predcache(conf={"backend": {"max_in_flight": "2"}})
    model.control(delay_ms=1000)
    results = []

    def one(i):
        results.append(p.post(PREDICT, json_body={"instances": ["load-%d" % i]}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 2 and codes.count(503) == 3, codes
    assert all("too many" in r.json()["error"] for r in results if r.status_code == 503)


def test_pending_stores_are_bounded(start_predcache, model, redis):
    p = start_predcache(conf={"redis": {"max_pending": "2", "timeout_ms": "3000"}})
    redis.pause()
    try:
        for i in range(5):  # no-cache: no lookup, only stores, which queue on the paused Redis
            r = p.post(PREDICT, json_body={"instances": ["pend-%d" % i]},
                       headers={"Cache-Control": "no-cache"})
            assert r.status_code == 200
        wait_for(lambda: p.metric("predcache_store_dropped_total") == 3, what="dropped")
    finally:
        redis.resume()


def test_pending_store_bytes_are_bounded(start_predcache, model, redis):
    """[redis] max_pending_bytes: stores whose bytes would take the pending total past the
    bound are dropped (counted), the answers still go out; a value larger than the bound
    by itself is never stored."""
    p = start_predcache(conf={"redis": {"max_pending": "1000", "max_pending_bytes": "300",
                                        "timeout_ms": "3000"}})
    # ~90-byte body: an envelope of 120..150 bytes, so two fit in 300 and a third does not
    small = '{"predictions": ["%s"]}' % ("s" * 69)
    big = '{"predictions": ["%s"]}' % ("b" * 400)  # one value past the bound by itself
    assert len(small) == 90
    model.control(status=200, body=small)
    redis.pause()
    try:
        for i in range(5):  # no-cache: no lookup, only stores, which queue on the paused Redis
            r = p.post(PREDICT, json_body={"instances": ["pendb-%d" % i]},
                       headers={"Cache-Control": "no-cache"})
            assert r.status_code == 200 and r.text == small
        wait_for(lambda: p.metric("predcache_store_dropped_total") == 3, what="3 dropped")
        assert p.metric("predcache_store_pending") >= 2
        model.control(status=200, body=big)
        for i in range(4):
            r = p.post(PREDICT, json_body={"instances": ["pendb-big-%d" % i]},
                       headers={"Cache-Control": "no-cache"})
            assert r.status_code == 200 and r.text == big
        wait_for(lambda: p.metric("predcache_store_dropped_total") == 7, what="7 dropped")
    finally:
        redis.resume()
    # the two that fitted land once Redis is back; the dropped ones never do
    wait_for(lambda: p.metric("predcache_store_ok_total") == 2, what="2 stored")
    stored = redis.keys("predcache:*")
    assert len(stored) == 2
    for k in stored:  # what the sizes above assume
        assert 100 < len(redis.get(k)) <= 150, redis.get(k)
    # with nothing pending a value over the bound alone is still dropped, a small one stored
    r = p.post(PREDICT, json_body={"instances": ["pendb-big-after"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS" and r.text == big
    wait_for(lambda: p.metric("predcache_store_dropped_total") == 8, what="8 dropped")
    model.control(status=200, body=small)
    r = p.post(PREDICT, json_body={"instances": ["pendb-small-after"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") == 3, what="3 stored")
    r = p.post(PREDICT, json_body={"instances": ["pendb-small-after"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "HIT" and r.text == small
    assert p.metric("predcache_store_dropped_total") == 8
    assert p.proc.poll() is None


def stale_entry(start_predcache, instances, backend=None):
    """predcache with ttl_s 1 and a minute of grace, and an entry for instances stored and
    then past its TTL. Returns (predcache, the first answer)."""
    conf = {"cache": {"ttl_s": "1", "grace_s": "60", "per_instance": "off"}}
    if backend:
        conf["backend"] = backend
    p = start_predcache(conf=conf)
    r1 = p.post(PREDICT, json_body={"instances": instances})
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1, what="stored")
    time.sleep(1.3)
    return p, r1


def assert_stale(r, r1, max_s=None, t0=None):
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["X-Cache"] == "STALE", r.headers
    assert r.headers["Warning"] == '110 - "Response is Stale"'
    assert int(r.headers["Age"]) >= 1
    assert r.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert r.content == r1.content  # the old answer, not the model server's error
    if max_s is not None:
        assert time.monotonic() - t0 < max_s, "the stale answer waited for the model server"


def test_stale_answer_instead_of_a_5xx_from_the_model(start_predcache, model, redis):
    p, r1 = stale_entry(start_predcache, ["five-hundred"])
    key = r1.headers["X-Cache-Key"]
    stored = redis.get(key)
    for n, status in enumerate((500, 503), start=1):
        model.control(status=status, body='{"error": "model exploded"}')
        for _ in range(3):
            r = p.post(PREDICT, json_body={"instances": ["five-hundred"]})
            assert_stale(r, r1)
        # the refresh behind reached the model server, failed, and did not store its error
        wait_for(lambda: p.metric("predcache_refresh_failed_total") >= n,
                 what="refresh failed on %d" % status)
        assert p.metric("predcache_refresh_ok_total") == 0
        assert redis.get(key) == stored
    assert model.count(PREDICT) >= 3  # the first call, and at least one refresh per status
    # nothing stale to give: the model server's 5xx shows
    r = p.post(PREDICT, json_body={"instances": ["never-seen"]})
    assert r.status_code == 503 and r.headers["X-Cache"] == "MISS", (r.status_code, r.headers)
    # once the model server answers again the refresh replaces the entry
    model.control()
    r = p.post(PREDICT, json_body={"instances": ["five-hundred"]})
    assert_stale(r, r1)
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh ok")
    wait_for(lambda: redis.get(key) != stored, what="refreshed entry stored")
    r = p.post(PREDICT, json_body={"instances": ["five-hundred"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"
    assert r.content != r1.content


def test_stale_answer_instead_of_a_model_timeout(start_predcache, model, redis):
    p, r1 = stale_entry(start_predcache, ["slow"],
                        backend={"timeout_ms": "500", "connect_timeout_ms": "200"})
    key = r1.headers["X-Cache-Key"]
    stored = redis.get(key)
    model.control(delay_ms=3000)
    for _ in range(3):
        t0 = time.monotonic()
        r = p.post(PREDICT, json_body={"instances": ["slow"]})
        assert_stale(r, r1, max_s=0.5, t0=t0)  # at once: not after the 500 ms timeout
    wait_for(lambda: p.metric("predcache_refresh_failed_total") >= 1, what="refresh timed out")
    assert p.metric("predcache_refresh_ok_total") == 0
    assert redis.get(key) == stored
    t0 = time.monotonic()
    r = p.post(PREDICT, json_body={"instances": ["slow"]})  # after the failed refresh: still
    assert_stale(r, r1, max_s=0.5, t0=t0)
    # nothing stale to give: the timeout shows
    t0 = time.monotonic()
    r = p.post(PREDICT, json_body={"instances": ["never-seen"]})
    assert r.status_code == 504, (r.status_code, r.text[:300])
    assert 0.4 < time.monotonic() - t0 < 2.5
