"""Controls that belong to the operator (issue: hostile clients).

With the shipped default ([cache] client_controls_token empty) a client may narrow what it
gets for itself (no-cache, no-store, max-age, only-if-cached) but cannot change what
others get: X-Predcache-TTL and X-Predcache-Namespace are not heard. With a token, only a
request carrying it is heard, a TTL never lengthens a shared entry, and the token never
reaches the model server. DELETE /cache/<key> on the admin port deletes cache entries
only, never the invalidation counters, job records or the job stream that share the
prefix."""

import json
import time

import requests

from conftest import HTTP_TIMEOUT, CONTROLS_TOKEN, parse_envelope, trusted, wait_for
from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"
UNTRUSTED = {"cache": {"client_controls_token": None, "grace_s": "60", "ttl_s": "300"}}


def stored(p, n):
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="%d stores" % n)


def test_an_anonymous_client_cannot_lengthen_a_shared_entry(start_predcache, model, redis):
    p = start_predcache(conf=UNTRUSTED)
    oracle = Oracle("untrusted TTL")
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["week"]},
                     {"Cache-Control": "no-cache", "X-Predcache-TTL": "604800"})
    key = r.headers["X-Cache-Key"]
    env = parse_envelope(redis.wait_key(key))
    assert env["ttl_s"] == 0, "the client's TTL was recorded: %d" % env["ttl_s"]
    assert 350 <= redis.ttl(key) <= 360, "Redis TTL %d: not the route's" % redis.ttl(key)
    oracle.assert_clean()


def test_an_anonymous_client_cannot_shorten_a_shared_entry(start_predcache, model, redis):
    p = start_predcache(conf=UNTRUSTED)
    oracle = Oracle("untrusted short TTL")
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["short"]},
                     {"X-Predcache-TTL": "1"})
    key = r.headers["X-Cache-Key"]
    assert parse_envelope(redis.wait_key(key))["ttl_s"] == 0
    time.sleep(1.3)
    again = post_checked(p.url(), oracle, PREDICT, {"instances": ["short"]})
    assert again.headers["X-Cache"] == "HIT", "the next client got a stale answer"
    oracle.assert_clean()


def test_an_anonymous_client_cannot_read_another_namespace(start_predcache, model, redis):
    """Tenant A's entries are reached only through the operator's trusted caller; a client
    naming tenantA is keyed in the default namespace, as if it had not said it."""
    p = start_predcache(conf={"cache": {"client_controls_token": "s3cret"}})
    oracle = Oracle("namespaces")
    a = post_checked(p.url(), oracle, PREDICT, {"instances": ["private-a"]},
                     {"X-Predcache-Token": "s3cret", "X-Predcache-Namespace": "tenantA"})
    redis.wait_key(a.headers["X-Cache-Key"])
    plain = post_checked(p.url(), oracle, PREDICT, {"instances": ["private-a"]})
    assert plain.headers["X-Cache"] == "MISS"
    for headers in ({"X-Predcache-Namespace": "tenantA"},
                    {"X-Predcache-Namespace": "tenantA", "X-Predcache-Token": "wrong"},
                    {"X-Predcache-Namespace": "tenantA", "X-Predcache-Token": ""}):
        r = post_checked(p.url(), oracle, PREDICT, {"instances": ["private-a"]}, headers)
        # keyed in the default namespace, as if the header were not there
        assert r.headers["X-Cache-Key"] == plain.headers["X-Cache-Key"], headers
        assert r.headers["X-Cache-Key"] != a.headers["X-Cache-Key"], headers
    same = post_checked(p.url(), oracle, PREDICT, {"instances": ["private-a"]},
                        {"X-Predcache-Token": "s3cret", "X-Predcache-Namespace": "tenantA"})
    assert same.headers["X-Cache"] == "HIT"
    assert model.count() == 2
    oracle.assert_clean()


def test_the_token_never_reaches_the_model_server(proxy, model):
    oracle = Oracle("token")
    post_checked(proxy.url(), oracle, PREDICT, {"instances": ["tok"]},
                 trusted({"X-Predcache-Namespace": "t"}))
    last = model.last()
    assert "x-predcache-token" not in last["headers"], last["headers"]
    assert CONTROLS_TOKEN not in json.dumps(last)
    assert CONTROLS_TOKEN not in proxy.stdout_text() + proxy.stderr_text()
    oracle.assert_clean()


def test_narrowing_controls_need_no_token(start_predcache, model, redis):
    p = start_predcache(conf=UNTRUSTED)
    oracle = Oracle("narrowing")
    post_checked(p.url(), oracle, PREDICT, {"instances": ["n"]})
    stored(p, 1)
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["n"]}, {"Cache-Control": "no-cache"})
    assert r.headers["X-Cache"] == "MISS"
    r = requests.post(p.url(PREDICT), json={"instances": ["never"]},
                      headers={"Cache-Control": "only-if-cached"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 504
    oracle.assert_clean()


def test_purge_deletes_only_cache_entries(proxy, model, redis):
    oracle = Oracle("purge")
    r = post_checked(proxy.url(), oracle, PREDICT, {"instances": ["purge-me"]})
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    # the prefix's other keys: invalidation counters, a job record, the job stream
    assert requests.post(proxy.admin("/cache/invalidate?model=m"),
                         timeout=HTTP_TIMEOUT).status_code == 200
    redis.command("HSET", "predcache:job:{default}:00112233445566778899aabbccddeeff", "state", "done")
    redis.command("XADD", "predcache:jobs:{default}", "*", "id", "x")
    others = ["predcache:gen:default", "predcache:job:{default}:00112233445566778899aabbccddeeff",
              "predcache:jobs:{default}", key + ":lock", "predcache:v2:{" + "g" * 64 + "}",
              "predcache:v2:" + key[len("predcache:v2:{"):-1], key + "x"]
    redis.command("SET", key + ":lock", "1")
    for other in others:
        r = requests.delete(proxy.admin("/cache/" + other), timeout=HTTP_TIMEOUT)
        assert r.status_code == 400, (other, r.status_code, r.text)
        assert r.json()["error"].startswith("not a cache key")
    for other in others[:4]:
        assert redis.exists(other) == 1, "%s was deleted" % other
    quoted = key.replace("{", "%7B").replace("}", "%7D")
    r = requests.delete(proxy.admin("/cache/" + quoted), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["deleted"] == 1, r.text
    assert redis.exists(key) == 0
    oracle.assert_clean()
