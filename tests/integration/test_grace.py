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
