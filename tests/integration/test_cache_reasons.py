"""Cache status that explains itself: X-Cache-Reason, the access log's reason= and
predcache_uncached_total{reason} say why an answer did not come from the cache or was not
stored, and X-Cache: BYPASS means the store's trouble only.

    BYPASS  redis-unavailable, redis-error, generation-unknown     (the store)
    PASS    credentials, version-unknown, too-many-instances, ...   (the request)
    MISS    response-private, too-large, status, request-no-store  (the answer, not stored)
"""

import time

from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"


def reason(r):
    return r.headers.get("X-Cache"), r.headers.get("X-Cache-Reason")


def test_a_stored_miss_and_a_hit_carry_no_reason(proxy, model, redis):
    oracle = Oracle("no reason")
    r = post_checked(proxy.url(), oracle, PREDICT, {"instances": ["plain"]})
    assert reason(r) == ("MISS", None)
    redis.wait_key(r.headers["X-Cache-Key"])
    r = post_checked(proxy.url(), oracle, PREDICT, {"instances": ["plain"]})
    assert reason(r) == ("HIT", None)
    assert " reason=" not in proxy.access_line_of(r)
    oracle.assert_clean()


def test_answers_not_stored_say_why(start_predcache, model, redis):
    p = start_predcache()
    oracle = Oracle("not stored")
    cases = [
        ({"headers": {"Cache-Control": "private"}}, {}, "response-private"),
        ({"headers": {"Cache-Control": "no-cache"}}, {}, "response-no-cache"),
        ({"set_cookie": "s={call}"}, {}, "response-cookie"),
        ({}, {"Cache-Control": "no-store"}, "request-no-store"),
    ]
    for i, (control, hdrs, why) in enumerate(cases):
        model.control(**control)
        r = post_checked(p.url(), oracle, PREDICT, {"instances": ["ns-%d" % i]}, hdrs)
        assert reason(r) == ("MISS", why), (control, hdrs, dict(r.headers))
        assert p.access_line_of(r).endswith(" reason=" + why)
        assert p.metric("predcache_uncached_total", reason=why) == 1
    time.sleep(0.3)
    assert [k for k in redis.keys("predcache:v2:*")] == []
    assert p.metric("predcache_requests_total", cache="bypass") == 0
    oracle.assert_clean()


def test_an_answer_too_large_to_store(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"max_value_bytes": "64"}})  # every answer is larger
    oracle = Oracle("too large")
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["big"]})
    assert reason(r) == ("MISS", "too-large")
    assert p.metric("predcache_uncached_total", reason="too-large") == 1
    time.sleep(0.3)
    assert [k for k in redis.keys("predcache:v2:*")] == []
    oracle.assert_clean()


def test_redis_down_is_bypass_with_its_reason(proxy, model, redis):
    oracle = Oracle("redis down")
    redis.kill()
    for i in range(3):
        r = post_checked(proxy.url(), oracle, PREDICT, {"instances": ["down-%d" % i]})
        assert r.headers["X-Cache"] == "BYPASS"
        assert r.headers["X-Cache-Reason"] in ("redis-unavailable", "redis-error")
    batch = {"instances": ["b1", "b2"]}
    r = post_checked(proxy.url(), oracle, PREDICT, batch)
    assert r.headers["X-Cache"] == "BYPASS"
    assert r.headers["X-Cache-Reason"] in ("redis-unavailable", "redis-error")
    n = proxy.metric("predcache_uncached_total", reason="redis-unavailable") + \
        proxy.metric("predcache_uncached_total", reason="redis-error")
    assert n == 4
    assert proxy.metric("predcache_requests_total", cache="bypass") == 4
    oracle.assert_clean()


def test_every_reason_is_a_metric_series(proxy):
    text = proxy.metrics_text()
    for token in ("redis-unavailable", "redis-error", "generation-unknown", "credentials",
                  "too-many-instances", "version-unknown", "response-private", "too-large",
                  "status", "request-no-store"):
        assert 'predcache_uncached_total{reason="%s"} 0' % token in text, token
