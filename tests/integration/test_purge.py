"""Purge one cache entry on the admin port: DELETE /cache/<key>, optionally behind a
Bearer token; never on the data port, never a key outside predcache's prefix."""

import requests

from conftest import HTTP_TIMEOUT, wait_for

PREDICT = "/v1/models/m:predict"


def delete(p, key, token=None):
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    return requests.delete(p.admin("/cache/" + key), headers=headers, timeout=HTTP_TIMEOUT)


def test_delete_one_entry_then_miss(proxy, model, redis):
    r = proxy.post(PREDICT, json_body={"instances": ["purge-me"]})
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert proxy.post(PREDICT, json_body={"instances": ["purge-me"]}).headers["X-Cache"] == "HIT"
    d = delete(proxy, key)
    assert d.status_code == 200
    assert d.json() == {"key": key, "deleted": 1}
    assert not redis.exists(key)
    assert proxy.post(PREDICT, json_body={"instances": ["purge-me"]}).headers["X-Cache"] == "MISS"
    wait_for(lambda: redis.exists(key), what="stored again")
    assert delete(proxy, "predcache:v2:{" + "0" * 64 + "}").json()["deleted"] == 0


def test_only_cache_keys_and_only_delete(proxy, redis):
    redis.command("SET", "other:thing", "x")
    for bad in ("other:thing", ""):
        r = delete(proxy, bad)
        assert r.status_code == 400 and "error" in r.json()
    assert redis.get("other:thing") == b"x" or redis.get("other:thing") == "x"
    r = requests.get(proxy.admin("/cache/predcache:v2:{abc}"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE"


def test_admin_token_guards_purge(start_predcache, model, redis):
    p = start_predcache(conf={"server": {"admin_token": "s3cret"}})
    key = p.post(PREDICT, json_body={"instances": ["guarded"]}).headers["X-Cache-Key"]
    redis.wait_key(key)
    for token in (None, "wrong", "s3cret-longer", ""):
        r = delete(p, key, token)
        assert r.status_code == 401, token
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert redis.exists(key)
    assert delete(p, key, "s3cret").json()["deleted"] == 1
    assert requests.get(p.admin("/health"), timeout=HTTP_TIMEOUT).status_code == 200  # reads stay open


def test_purge_with_redis_down_is_503(proxy, redis):
    redis.kill()
    wait_for(lambda: proxy.metric("predcache_redis_up") == 0, what="redis down")
    r = delete(proxy, "predcache:v2:{" + "1" * 64 + "}")
    assert r.status_code == 503 and "error" in r.json()


def test_data_port_does_not_purge(proxy, model, redis):
    key = proxy.post(PREDICT, json_body={"instances": ["kept"]}).headers["X-Cache-Key"]
    redis.wait_key(key)
    r = requests.delete(proxy.url("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert model.last()["method"] == "DELETE"  # forwarded like any other path
    assert redis.exists(key)
    assert r.status_code in (200, 404)
