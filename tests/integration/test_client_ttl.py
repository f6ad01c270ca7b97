"""X-Predcache-TTL: N (seconds): the client chooses how long its answer stays fresh. The
entry is stored in an envelope that carries N (so later requests judge it by N), Redis
keeps it N + grace_s, N is bounded by [cache] max_ttl_s, a malformed N is a 400, and the
header is ignored when [cache] allow_client_controls is off. It is the operator's: heard only
with X-Predcache-Token ([cache] client_controls_token), and never longer than the route's
TTL in a shared namespace (test_operator_controls.py covers the untrusted client)."""

import re
import time

import pytest

from conftest import parse_envelope, trusted, wait_for

PREDICT = "/v1/models/m:predict"
KEY_RE = re.compile(r"^predcache:v2:\{[0-9a-f]{64}\}$")


def ttl_header(n, ns=None):
    """The TTL header, with the controls token (only a trusted caller's TTL is heard); ns:
    a namespace of the caller's own, where a TTL may be longer than the route's."""
    h = trusted({"X-Predcache-TTL": str(n)})
    if ns is not None:
        h["X-Predcache-Namespace"] = ns
    return h


def parse_stored(value):
    """An entry as predcache writes it: a PC4 envelope (envelope.h), whose ttl_s is the
    client's TTL, 0 when none was given (the route's TTL applies). PC4 (PC3 and the key's
    tag) replaced PC3, PC2 (the client's TTL) and PC1 (the route's) as the written format."""
    assert value is not None, "no value in Redis"
    assert value.startswith(b"PC4\n"), "envelope magic is %r, expected b'PC4'" % value[:4]
    return parse_envelope(value)


def stored(p, n):
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="%d stores" % n)


def test_client_ttl_is_stored_with_the_entry(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"grace_s": "60"}})
    before_ms = int(time.time() * 1000)
    r = p.post(PREDICT, json_body={"instances": ["c"]}, headers=ttl_header(5))
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    key = r.headers["X-Cache-Key"]
    value = redis.wait_key(key)
    env = parse_stored(value)
    assert env["ttl_s"] == 5
    assert env["status"] == 200 and env["body"] == r.content
    assert env["content_type"].startswith("application/json")
    assert before_ms - 5000 <= env["stored_at_ms"] <= int(time.time() * 1000) + 5000
    assert 60 <= redis.ttl(key) <= 65, "TTL %s, expected 5 + grace_s 60" % redis.ttl(key)
    assert p.post(PREDICT, json_body={"instances": ["c"]}).headers["X-Cache"] == "HIT"

    # without the header: the route's TTL, and no TTL recorded in the envelope
    r = p.post(PREDICT, json_body={"instances": ["plain"]})
    value = redis.wait_key(r.headers["X-Cache-Key"])
    assert parse_stored(value)["ttl_s"] == 0
    assert parse_stored(value)["body"] == r.content
    assert 350 <= redis.ttl(r.headers["X-Cache-Key"]) <= 360


def test_entry_is_fresh_for_the_clients_ttl(start_predcache, model, redis):
    # the route's TTL is 1 s; the client asks for 100 s (in a namespace of its own: only
    # there may an entry outlive the route's TTL), then for 1 s
    p = start_predcache(conf={"cache": {"ttl_s": "1", "grace_s": "60"}})
    long_r = p.post(PREDICT, json_body={"instances": ["long"]}, headers=ttl_header(100, "own"))
    short_r = p.post(PREDICT, json_body={"instances": ["short"]}, headers=ttl_header(1))
    redis.wait_key(long_r.headers["X-Cache-Key"])
    redis.wait_key(short_r.headers["X-Cache-Key"])
    assert 155 <= redis.ttl(long_r.headers["X-Cache-Key"]) <= 160
    time.sleep(1.3)
    # judged by the TTL stored with the entry, whatever a later request says
    r = p.post(PREDICT, json_body={"instances": ["long"]},
               headers=trusted({"X-Predcache-Namespace": "own"}))
    assert r.headers["X-Cache"] == "HIT"
    r = p.post(PREDICT, json_body={"instances": ["short"]}, headers=ttl_header(1))
    assert r.headers["X-Cache"] == "STALE"
    assert r.content == short_r.content
    # the background refresh stores with the client's TTL
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh")
    key = short_r.headers["X-Cache-Key"]
    env = wait_for(lambda: (lambda v: v if parse_stored(v)["body"] !=
                            short_r.content else None)(redis.get(key)),
                   what="the refreshed entry")
    assert parse_stored(env)["ttl_s"] == 1
    assert 55 <= redis.ttl(key) <= 61


def test_client_ttl_without_grace_expires(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"grace_s": "0"}})
    r = p.post(PREDICT, json_body={"instances": ["brief"]}, headers=ttl_header(1))
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert 0 < redis.pttl(key) <= 1000
    assert p.post(PREDICT, json_body={"instances": ["brief"]}).headers["X-Cache"] == "HIT"
    wait_for(lambda: not redis.exists(key), timeout=5, what="the entry to expire")
    r = p.post(PREDICT, json_body={"instances": ["brief"]})
    assert r.headers["X-Cache"] == "MISS"
    assert model.count(PREDICT) == 2


def test_client_ttl_is_bounded_by_max_ttl_s(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"grace_s": "60", "max_ttl_s": "50", "ttl_s": "400"}})
    for n, body in ((100000, "big"), (999999999999, "huge"), (50, "equal")):
        r = p.post(PREDICT, json_body={"instances": [body]}, headers=ttl_header(n, "own"))
        assert r.status_code == 200, r.text
        key = r.headers["X-Cache-Key"]
        assert parse_stored(redis.wait_key(key))["ttl_s"] == 50, n
        assert 105 <= redis.ttl(key) <= 110, "TTL %s for %d" % (redis.ttl(key), n)
    r = p.post(PREDICT, json_body={"instances": ["below"]}, headers=ttl_header(7))
    assert parse_stored(redis.wait_key(r.headers["X-Cache-Key"]))["ttl_s"] == 7


def test_never_longer_than_the_route_in_a_shared_namespace(start_predcache, model, redis):
    """A shared entry (the [cache] namespace, or no namespace header) never outlives the
    route's TTL, whoever asks: a client TTL above it is lowered to it."""
    p = start_predcache(conf={"cache": {"grace_s": "60", "ttl_s": "30"}})
    for headers in (ttl_header(10 ** 6), ttl_header(10 ** 6, "default")):
        r = p.post(PREDICT, json_body={"instances": ["shared-%d" % len(headers)]},
                   headers=headers)
        key = r.headers["X-Cache-Key"]
        assert parse_stored(redis.wait_key(key))["ttl_s"] == 30
        assert 85 <= redis.ttl(key) <= 90


def test_default_max_ttl_s_is_a_week(proxy, model, redis):
    r = proxy.post(PREDICT, json_body={"instances": ["week"]}, headers=ttl_header(10 ** 9, "own"))
    key = r.headers["X-Cache-Key"]
    assert parse_stored(redis.wait_key(key))["ttl_s"] == 604800
    assert 604800 + 3600 - 10 <= redis.ttl(key) <= 604800 + 3600


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "1e3", "1.5", "+5", "0x10", "5s",
                                   "1 2", "00", "9" * 13])
def test_invalid_values_are_400(proxy, model, redis, value):
    r = proxy.post(PREDICT, json_body={"instances": ["bad"]},
                   headers=trusted({"X-Predcache-TTL": value}))
    assert r.status_code == 400, "%r -> %d %s" % (value, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert "X-Predcache-TTL" in r.json()["error"]
    assert model.count() == 0
    assert [k for k in redis.keys("predcache:*") if KEY_RE.match(k)] == []


def test_ignored_when_client_controls_are_off(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"grace_s": "60", "allow_client_controls": "off"}})
    r = p.post(PREDICT, json_body={"instances": ["strict"]}, headers=ttl_header(5))
    assert r.status_code == 200
    key = r.headers["X-Cache-Key"]
    assert parse_stored(redis.wait_key(key))["ttl_s"] == 0
    assert 350 <= redis.ttl(key) <= 360
    r = p.post(PREDICT, json_body={"instances": ["strict-2"]}, headers=ttl_header("abc"))
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"


def test_per_instance_entries_get_the_clients_ttl(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf={"cache": {"per_instance": "on", "grace_s": "60"}})
    r = p.post(PREDICT, json_body={"instances": ["i1", "i2", "i3"]}, headers=ttl_header(5))
    assert r.status_code == 200
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/3")
    stored(p, 3)
    keys = [k for k in redis.keys("predcache:*") if KEY_RE.match(k)]
    assert len(keys) == 3
    for key in keys:
        value = redis.get(key)
        assert parse_stored(value)["ttl_s"] == 5, value[:40]
        assert 60 <= redis.ttl(key) <= 65, "TTL %s" % redis.ttl(key)

    r = p.post(PREDICT, json_body={"instances": ["i4"]})  # no header: the route's TTL
    stored(p, 4)
    new = [k for k in redis.keys("predcache:*") if KEY_RE.match(k) and k not in keys]
    assert len(new) == 1
    assert parse_stored(redis.get(new[0]))["ttl_s"] == 0
    assert 350 <= redis.ttl(new[0]) <= 360

    r = p.post(PREDICT, json_body={"instances": ["i1", "i4"]},
               headers=trusted({"X-Predcache-TTL": "x"}))
    assert r.status_code == 400 and "X-Predcache-TTL" in r.json()["error"]


def test_per_instance_short_client_ttl_goes_stale(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf={"cache": {"per_instance": "on", "grace_s": "60"}})
    p.post(PREDICT, json_body={"instances": ["s1", "s2"]}, headers=ttl_header(1))
    stored(p, 2)
    r = p.post(PREDICT, json_body={"instances": ["s1", "s2"]})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "2/2")
    time.sleep(1.3)
    r = p.post(PREDICT, json_body={"instances": ["s1", "s2"]})
    assert r.status_code == 200
    # Past their 1 s TTL, within grace: stale (answered, marked, refreshed), never fresh.
    assert r.headers["X-Cache"] == "STALE", "instances past their 1 s TTL answered as fresh"
    assert r.headers["Warning"] == '110 - "Response is Stale"'


def test_lookup_header_does_not_change_freshness_of_route_entries(start_predcache, model, redis):
    # A client's TTL is a store directive: an entry stored with the route's TTL (ttl_s 0)
    # stays fresh for the route's TTL whatever a later request's header says.
    p = start_predcache(conf={"cache": {"ttl_s": "300", "grace_s": "60"}})
    r = p.post(PREDICT, json_body={"instances": ["route-ttl"]})
    assert parse_stored(redis.wait_key(r.headers["X-Cache-Key"]))["ttl_s"] == 0
    time.sleep(1.3)
    r = p.post(PREDICT, json_body={"instances": ["route-ttl"]}, headers=ttl_header(1))
    assert r.headers["X-Cache"] == "HIT"


def test_refresh_keeps_the_entrys_own_ttl(start_predcache, model, redis):
    # A stale entry with a client's TTL refreshed by a request without the header keeps its TTL: a 1 s
    # entry must not become a 300 s one.
    p = start_predcache(conf={"cache": {"ttl_s": "300", "grace_s": "60"}})
    first = p.post(PREDICT, json_body={"instances": ["keep"]}, headers=ttl_header(1))
    key = first.headers["X-Cache-Key"]
    redis.wait_key(key)
    time.sleep(1.3)
    r = p.post(PREDICT, json_body={"instances": ["keep"]})
    assert r.headers["X-Cache"] == "STALE"
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh")
    value = wait_for(lambda: (lambda v: v if v and parse_envelope(v)["body"] != first.content
                              else None)(redis.get(key)), what="the refreshed entry")
    assert parse_stored(value)["ttl_s"] == 1, value[:40]
    assert 55 <= redis.ttl(key) <= 61
