"""Invalidation on the admin port: POST /cache/invalidate?model=NAME[&version=V]
[&namespace=NS] or ?all=1[&namespace=NS] moves a generation counter in Redis (the hash
<prefix>gen:<ns>) that is part of the keys, so the entries it covers are out of reach at
once, in this process and in every other one sharing the Redis."""

import http.client
import json

import pytest
import requests

from conftest import HTTP_TIMEOUT, canonical, expected_key, wait_for, trusted

BODY = {"instances": ["inv"]}


class Answer:
    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)


def invalidate(p, query, token=None, method="POST"):
    """The query goes out byte for byte (requests would re-quote a bad %-escape)."""
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    target = "/cache/invalidate" + ("?" + query if query is not None else "")
    conn = http.client.HTTPConnection("127.0.0.1", p.admin_port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, target, headers=headers)
        r = conn.getresponse()
        return Answer(r.status, requests.structures.CaseInsensitiveDict(r.getheaders()), r.read())
    finally:
        conn.close()


def path_of(model, version=None):
    if version is None:
        return "/v1/models/%s:predict" % model
    return "/v1/models/%s/versions/%s:predict" % (model, version)


def warm(p, redis, path, headers=None, body=BODY):
    """MISS then HIT; returns the key."""
    r = p.post(path, json_body=body, headers=headers)
    assert r.status_code == 200, r.text
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    r = p.post(path, json_body=body, headers=headers)
    assert r.headers["X-Cache"] == "HIT", (path, headers)
    return key


def cache_of(p, path, headers=None, body=BODY):
    r = p.post(path, json_body=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["X-Cache"], r.headers.get("X-Cache-Key")


def generations(redis, ns="default"):
    raw = redis.command("HGETALL", "predcache:gen:" + ns)
    return {raw[i].decode(): int(raw[i + 1]) for i in range(0, len(raw), 2)}


def test_invalidate_one_model(proxy, model, redis):
    key_a = warm(proxy, redis, path_of("a"))
    key_b = warm(proxy, redis, path_of("b"))
    assert key_b == expected_key(path_of("b"), canonical(BODY))

    r = invalidate(proxy, "model=a")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"invalidated": "model", "namespace": "default", "model": "a",
                        "generation": 1}
    assert generations(redis) == {"m/a": 1}

    cache, new_key = cache_of(proxy, path_of("a"))
    assert cache == "MISS"
    assert new_key != key_a
    assert redis.exists(key_a)  # nothing deleted: out of reach
    assert cache_of(proxy, path_of("b")) == ("HIT", key_b)  # another model: untouched
    redis.wait_key(new_key)
    assert cache_of(proxy, path_of("a")) == ("HIT", new_key)
    assert model.count(path_of("a")) == 2 and model.count(path_of("b")) == 1

    r = invalidate(proxy, "model=a")
    assert r.json()["generation"] == 2
    cache, third_key = cache_of(proxy, path_of("a"))
    assert cache == "MISS" and third_key not in (key_a, new_key)


def test_invalidate_one_version(proxy, model, redis):
    # version_refresh_s = 0 here: explicit version paths
    k1 = warm(proxy, redis, path_of("m", "1"))
    k2 = warm(proxy, redis, path_of("m", "2"))
    r = invalidate(proxy, "model=m&version=1")
    assert r.status_code == 200, r.text
    assert r.json() == {"invalidated": "version", "namespace": "default", "model": "m",
                        "version": "1", "generation": 1}
    assert generations(redis) == {"v/m/1": 1}
    cache, new_k1 = cache_of(proxy, path_of("m", "1"))
    assert cache == "MISS" and new_k1 != k1
    assert cache_of(proxy, path_of("m", "2")) == ("HIT", k2)

    # the model as a whole: every version
    redis.wait_key(new_k1)
    assert invalidate(proxy, "model=m").status_code == 200
    assert cache_of(proxy, path_of("m", "1"))[0] == "MISS"
    assert cache_of(proxy, path_of("m", "2"))[0] == "MISS"


def test_invalidate_resolved_version(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"version_refresh_s": "30"}})
    key = warm(p, redis, path_of("m"))
    assert key == expected_key(path_of("m", "1"), canonical(BODY))
    assert invalidate(p, "model=m&version=2").status_code == 200  # not the served one
    assert cache_of(p, path_of("m")) == ("HIT", key)
    assert invalidate(p, "model=m&version=1").status_code == 200
    cache, new_key = cache_of(p, path_of("m"))
    assert cache == "MISS" and new_key != key


def test_invalidate_all_of_a_namespace(proxy, model, redis):
    tenant = trusted({"X-Predcache-Namespace": "t2"})
    key_a = warm(proxy, redis, path_of("a"))
    key_b = warm(proxy, redis, path_of("b"))
    key_t = warm(proxy, redis, path_of("a"), headers=tenant)

    r = invalidate(proxy, "all=1")
    assert r.status_code == 200, r.text
    assert r.json() == {"invalidated": "namespace", "namespace": "default", "generation": 1}
    assert generations(redis) == {"*": 1}
    ca, new_a = cache_of(proxy, path_of("a"))
    cb, new_b = cache_of(proxy, path_of("b"))
    assert (ca, cb) == ("MISS", "MISS")
    assert new_a != key_a and new_b != key_b
    assert cache_of(proxy, path_of("a"), headers=tenant) == ("HIT", key_t)

    r = invalidate(proxy, "all=1&namespace=t2")
    assert r.json() == {"invalidated": "namespace", "namespace": "t2", "generation": 1}
    assert generations(redis, "t2") == {"*": 1}
    cache, new_t = cache_of(proxy, path_of("a"), headers=tenant)
    assert cache == "MISS" and new_t != key_t

    # a model of another namespace
    redis.wait_key(new_t)
    r = invalidate(proxy, "model=a&namespace=t2")
    assert r.json() == {"invalidated": "model", "namespace": "t2", "model": "a",
                        "generation": 1}
    assert cache_of(proxy, path_of("a"), headers=tenant)[0] == "MISS"
    redis.wait_key(new_a)
    assert cache_of(proxy, path_of("a")) == ("HIT", new_a)


def test_invalidate_per_instance_batches(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf={"cache": {"per_instance": "on"}})
    batch = {"instances": ["x", "y"]}
    p.post(path_of("m"), json_body=batch)
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 2, what="2 stores")
    r = p.post(path_of("m"), json_body=batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "2/2")
    assert invalidate(p, "model=m").status_code == 200
    r = p.post(path_of("m"), json_body=batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/2")


def test_a_second_process_sees_the_invalidation(start_predcache, model, redis):
    p1 = start_predcache()
    # p2 would re-read the counters only once a minute: it must hear of it by pub/sub
    p2 = start_predcache(conf={"cache": {"generation_refresh_ms": "60000"}})
    key = warm(p1, redis, path_of("a"))
    assert cache_of(p2, path_of("a")) == ("HIT", key)
    assert invalidate(p1, "model=a").status_code == 200

    def p2_misses():
        cache, new_key = cache_of(p2, path_of("a"))
        return cache == "MISS" and new_key != key

    wait_for(p2_misses, timeout=5, interval=0.1, what="p2 to miss after the invalidation")
    # and the other way round
    key_b = warm(p2, redis, path_of("b"))
    assert cache_of(p1, path_of("b")) == ("HIT", key_b)
    assert invalidate(p2, "all=1").status_code == 200
    wait_for(lambda: cache_of(p1, path_of("b"))[0] == "MISS", timeout=5, interval=0.1,
             what="p1 to miss after p2's invalidation")


def test_a_second_process_catches_up_without_pub_sub(start_predcache, model, redis):
    """An announcement missed (here: sent straight to Redis, as a process that died before
    PUBLISH would leave it) is caught up within generation_refresh_ms."""
    p = start_predcache(conf={"cache": {"generation_refresh_ms": "200"}})
    key = warm(p, redis, path_of("a"))
    redis.command("HINCRBY", "predcache:gen:default", "m/a", 1)

    def missed():
        cache, new_key = cache_of(p, path_of("a"))
        return cache == "MISS" and new_key != key

    wait_for(missed, timeout=5, interval=0.1, what="a miss once the counters are re-read")


def test_get_is_405(proxy):
    for method in ("GET", "DELETE", "PUT"):
        r = invalidate(proxy, "model=a", method=method)
        assert r.status_code == 405, method
        assert r.headers["Allow"] == "POST"
        assert "error" in r.json()


@pytest.mark.parametrize("query", [
    None, "", "model=a&all=1", "version=1", "all=1&version=1", "bogus=1", "model=a&bogus=1",
    "model=%zz", "model=a%2", "model=a/b", "model=a%2Fb", "model=", "all=2", "all=",
    "model=a&namespace=a+b", "model=a&namespace=", "model=a&version=1/2", "model=a%22b",
    "model=a+b", "model=a%09b",
    # a decoded NUL must not cut the name short (it would invalidate model "a" / ns "x")
    "model=a%00b", "all=1&namespace=x%00y",
], ids=lambda q: repr(q))
def test_bad_requests_are_400(proxy, redis, query):
    r = invalidate(proxy, query)
    assert r.status_code == 400, "%r -> %d %s" % (query, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert isinstance(r.json().get("error"), str) and r.json()["error"]
    assert redis.keys("predcache:gen:*") == []


@pytest.mark.parametrize("query", ["model", "all", "bogus", "model=a&version", "all=1&namespace"])
def test_parameter_without_value_is_400(proxy, query):
    try:
        r = invalidate(proxy, query)
    except (ConnectionError, http.client.HTTPException) as e:
        pytest.fail("POST /cache/invalidate?%s: no answer (%r); predcache exit status %s"
                    % (query, e, proxy.proc.poll()))
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert requests.get(proxy.admin("/health"), timeout=HTTP_TIMEOUT).status_code == 200


def test_admin_token(start_predcache, model, redis):
    p = start_predcache(conf={"server": {"admin_token": "T0ken"}})
    key = warm(p, redis, path_of("a"))
    for token in (None, "wrong", "T0ken-longer", ""):
        r = invalidate(p, "model=a", token=token)
        assert r.status_code == 401, token
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert redis.keys("predcache:gen:*") == []
    assert cache_of(p, path_of("a")) == ("HIT", key)
    r = invalidate(p, "model=a", token="T0ken")
    assert r.status_code == 200 and r.json()["generation"] == 1
    assert cache_of(p, path_of("a"))[0] == "MISS"


def test_redis_down_is_503_and_requests_still_answered(proxy, model, redis):
    warm(proxy, redis, path_of("a"))
    redis.kill()
    wait_for(lambda: proxy.metric("predcache_redis_up") == 0, what="redis down")
    r = invalidate(proxy, "model=a")
    assert r.status_code == 503, r.text
    assert "error" in r.json()
    for path in (path_of("a"), path_of("never-seen")):
        r = proxy.post(path, json_body=BODY)
        assert r.status_code == 200, r.text
        assert r.headers["X-Cache"] == "BYPASS"
