"""The model server's directives: what predcache, a shared cache (RFC 9111), may store.

    no-store, private, no-cache (any form), max-age=0, s-maxage=0, Set-Cookie -> not stored
    max-age=N, s-maxage=N            -> bound the entry's TTL (s-maxage wins; with s-maxage
                                        the entry is never served stale)
    Vary: X-Tenant                   -> the first such answer is not stored; from then on the
                                        route's keys carry X-Tenant (A miss, A miss, A HIT,
                                        B MISS)
    Vary: *                          -> never stored
    [cache] / [route] response_cache_control = ignore -> Cache-Control is not read (TorchServe
                                        marks every answer uncacheable); Set-Cookie still is
    coalescing                       -> a waiter gets the leader's answer only when it may
                                        be stored: a Set-Cookie or private answer is never
                                        handed to another request

Every answer goes through the oracle (the model server varies its predictions by the
headers it names in Vary). Timed cases use 1 s lifetimes.
"""

import time

import pytest

from conftest import concurrently
from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"
TORCHSERVE = "no-cache; no-store, must-revalidate, private"


def stored_keys(redis):
    return [k for k in redis.keys() if (":v1:" in k or ":v2:" in k) and not k.endswith(":lock")]


def assert_not_stored(p, model, redis, oracle, body, calls, path=PREDICT):
    """Two more requests for body: both MISS, both reach the model, nothing new in Redis."""
    before = set(stored_keys(redis))
    for i in range(2):
        r = post_checked(p.url(), oracle, path, body)
        assert r.headers.get("X-Cache") == "MISS", r.headers.get("X-Cache")
    time.sleep(0.3)  # stores are asynchronous: give a wrong one the time to land
    assert model.count() == calls + 2
    assert sorted(set(stored_keys(redis)) - before) == []


def assert_stored(p, model, redis, oracle, body, path=PREDICT):
    r = post_checked(p.url(), oracle, path, body)
    assert r.headers.get("X-Cache") == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    h = post_checked(p.url(), oracle, path, body)
    assert h.headers.get("X-Cache") == "HIT", h.headers.get("X-Cache")
    assert model.count() == 1
    return r.headers["X-Cache-Key"]


# --------------------------------------------------------------------------- not stored


UNCACHEABLE = ["no-store", "private", "no-cache", 'no-cache="Set-Cookie"', "No-Cache",
               "max-age=0", "s-maxage=0", "public, max-age=0", "max-age=60, private",
               TORCHSERVE]


@pytest.mark.parametrize("directive", UNCACHEABLE)
def test_honoured_directive_is_not_stored(start_predcache, model, redis, directive):
    p = start_predcache()
    model.control(headers={"Cache-Control": directive})
    oracle = Oracle(directive)
    assert_not_stored(p, model, redis, oracle, {"instances": ["cc"]}, 0)
    oracle.assert_clean()


@pytest.mark.parametrize("directive", UNCACHEABLE)
def test_ignored_cache_control_is_stored(start_predcache, model, redis, directive):
    p = start_predcache(conf={"cache": {"response_cache_control": "ignore"}})
    model.control(headers={"Cache-Control": directive})
    oracle = Oracle("ignore " + directive)
    assert_stored(p, model, redis, oracle, {"instances": ["cc"]})
    oracle.assert_clean()


@pytest.mark.parametrize("mode", ["honour", "ignore"])
def test_set_cookie_is_never_stored(start_predcache, model, redis, mode):
    """Set-Cookie is not Cache-Control: ignoring the latter does not store the former."""
    p = start_predcache(conf={"cache": {"response_cache_control": mode}} if mode == "ignore"
                        else None)
    model.control(set_cookie="sid=s{call}")
    oracle = Oracle("set-cookie, " + mode)
    assert_not_stored(p, model, redis, oracle, {"instances": ["cookie"]}, 0)
    oracle.assert_clean()


def test_torchserve_route_ignores_cache_control(start_predcache, model, redis):
    """Per route: the TorchServe-like route is cached despite its header, the others
    honour it."""
    p = start_predcache(conf={"route torchserve": {"match": "POST /v1/models/ts*:predict",
                                                   "response_cache_control": "ignore"}})
    model.control(headers={"Cache-Control": TORCHSERVE})
    oracle = Oracle("torchserve route")
    body = {"instances": ["ts"]}
    assert_stored(p, model, redis, oracle, body, path="/v1/models/ts:predict")
    assert_not_stored(p, model, redis, oracle, body, 1, path=PREDICT)
    oracle.assert_clean()


# --------------------------------------------------------------------------- lifetimes


def test_max_age_bounds_the_ttl(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"ttl_s": "300", "grace_s": "0"}})
    oracle = Oracle("max-age")
    model.control(headers={"Cache-Control": "public, max-age=100"})
    key = assert_stored(p, model, redis, oracle, {"instances": ["max-age"]})
    assert 90 <= redis.ttl(key) <= 100, redis.ttl(key)
    model.reset()
    model.control(headers={"Cache-Control": "max-age=100, s-maxage=50"})
    key = assert_stored(p, model, redis, oracle, {"instances": ["s-maxage"]})
    assert 40 <= redis.ttl(key) <= 50, "s-maxage wins: TTL %d" % redis.ttl(key)
    model.reset()
    model.control(headers={"Cache-Control": "max-age=1000"})  # above ttl_s: ttl_s holds
    key = assert_stored(p, model, redis, oracle, {"instances": ["long"]})
    assert 290 <= redis.ttl(key) <= 300, redis.ttl(key)
    oracle.assert_clean()


# Cache-Control of the stored answer, then what the same request gets 1.3 s later (ttl_s
# and grace_s 300) and the model calls by then (None: not counted, a STALE answer may
# refresh the entry in the background).
PAST_ONE_SECOND = [
    pytest.param("s-maxage=1", "MISS", 2, id="s-maxage-not-served-stale"),
    pytest.param("max-age=1", "STALE", None, id="max-age-served-stale-in-grace"),
    pytest.param("max-age=1, s-maxage=100", "HIT", 1, id="s-maxage-wins-over-max-age"),
]


@pytest.mark.parametrize("directive,x_cache,calls", PAST_ONE_SECOND)
def test_lifetime_past_one_second(start_predcache, model, redis, directive, x_cache, calls):
    p = start_predcache(conf={"cache": {"ttl_s": "300", "grace_s": "300"}})
    oracle = Oracle("stale, " + directive)
    model.control(headers={"Cache-Control": directive})
    body = {"instances": [directive]}
    assert_stored(p, model, redis, oracle, body)
    time.sleep(1.3)
    r = post_checked(p.url(), oracle, PREDICT, body)
    assert r.headers.get("X-Cache") == x_cache, "%s, 1.3 s on: %s" % (
        directive, r.headers.get("X-Cache"))
    if calls is not None:
        assert model.count() == calls
    oracle.assert_clean()


# --------------------------------------------------------------------------- Vary


@pytest.mark.parametrize("per_instance", ["off", "on"])
def test_vary_is_learnt_then_splits(start_predcache, model, redis, per_instance):
    p = start_predcache(conf={"cache": {"per_instance": per_instance}})
    model.control(vary_on=["X-Tenant"])
    oracle = Oracle("vary, per_instance %s" % per_instance, per_instance=per_instance == "on")
    body = {"instances": ["tenant-input"]}
    a, b = {"X-Tenant": "acme"}, {"X-Tenant": "globex"}
    r1 = post_checked(p.url(), oracle, PREDICT, body, a)
    assert r1.headers.get("X-Cache") == "MISS"
    time.sleep(0.3)
    assert stored_keys(redis) == [], "an answer varying by a header the key lacked was stored"
    r2 = post_checked(p.url(), oracle, PREDICT, body, a)
    assert r2.headers.get("X-Cache") == "MISS"
    redis.wait_key(r2.headers["X-Cache-Key"])
    r3 = post_checked(p.url(), oracle, PREDICT, body, a)
    assert r3.headers.get("X-Cache") == "HIT" and r3.headers["X-Cache-Key"] == r2.headers["X-Cache-Key"]
    r4 = post_checked(p.url(), oracle, PREDICT, body, b)
    assert r4.headers.get("X-Cache") == "MISS", "another tenant got %s" % r4.headers.get("X-Cache")
    assert r4.headers["X-Cache-Key"] != r2.headers["X-Cache-Key"]
    redis.wait_key(r4.headers["X-Cache-Key"])
    assert post_checked(p.url(), oracle, PREDICT, body, b).headers.get("X-Cache") == "HIT"
    r6 = post_checked(p.url(), oracle, PREDICT, body)  # no X-Tenant at all: a value of its own
    assert r6.headers.get("X-Cache") == "MISS"
    oracle.assert_clean()
    assert model.count() == 4


def test_vary_star_is_never_stored(start_predcache, model, redis):
    p = start_predcache()
    model.control(headers={"Vary": "*"})
    oracle = Oracle("vary *")
    assert_not_stored(p, model, redis, oracle, {"instances": ["star"]}, 0)
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["star"]})
    assert r.headers.get("X-Cache") == "MISS"
    assert model.count() == 3
    oracle.assert_clean()


# --------------------------------------------------------------------------- coalescing


def two_at_once(p, oracle, body):
    """body sent twice at once: both answers right (the oracle) and 200."""
    out = concurrently(2, lambda i: post_checked(p.url(), oracle, PREDICT, body))
    for item in out:
        assert not isinstance(item, Exception), item
    return out


def test_coalescing_never_hands_over_a_cookie(start_predcache, model, redis):
    p = start_predcache()
    model.control(delay_ms=500, set_cookie="sid=s{call}")
    oracle = Oracle("coalescing, Set-Cookie")
    rs = two_at_once(p, oracle, {"instances": ["cookie-herd"]})
    assert model.count() == 2, "each request must make its own call"
    calls = sorted(r.json()["call"] for r in rs)
    assert calls == [1, 2], calls
    for r in rs:
        assert r.headers.get("X-Cache") == "MISS", r.headers.get("X-Cache")
        assert r.headers.get("Set-Cookie") == "sid=s%d" % r.json()["call"], \
            "a request was given another request's cookie: %r for call %d" % (
                r.headers.get("Set-Cookie"), r.json()["call"])
    oracle.assert_clean()


def test_coalescing_never_hands_over_a_private_answer(start_predcache, model, redis):
    p = start_predcache()
    model.control(delay_ms=500, headers={"Cache-Control": "private"})
    oracle = Oracle("coalescing, private")
    rs = two_at_once(p, oracle, {"instances": ["private-herd"]})
    assert model.count() == 2, "each request must make its own call"
    assert sorted(r.json()["call"] for r in rs) == [1, 2]
    assert all(r.headers.get("X-Cache") == "MISS" for r in rs), [r.headers.get("X-Cache") for r in rs]
    oracle.assert_clean()


def test_coalescing_shares_a_storable_answer(start_predcache, model, redis):
    """The contrast: an answer that may be stored is shared by the waiter."""
    p = start_predcache()
    model.control(delay_ms=500)
    oracle = Oracle("coalescing, storable")
    rs = two_at_once(p, oracle, {"instances": ["public-herd"]})
    assert model.count() == 1
    assert sorted(r.headers.get("X-Cache") for r in rs) == ["COALESCED", "MISS"]
    oracle.assert_clean()
