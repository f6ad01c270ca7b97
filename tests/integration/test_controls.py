"""Per-request controls: Cache-Control max-age and only-if-cached, X-Predcache-Namespace,
and [cache] allow_client_controls = off for untrusted clients."""

import time

from conftest import trusted, wait_for

PREDICT = "/v1/models/m:predict"


def stored(p, n):
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="%d stores" % n)


def test_max_age_accepts_only_younger_entries(proxy, model):
    proxy.post(PREDICT, json_body={"instances": ["aged"]})
    stored(proxy, 1)
    time.sleep(1.2)
    r = proxy.post(PREDICT, json_body={"instances": ["aged"]}, headers={"Cache-Control": "max-age=60"})
    assert r.headers["X-Cache"] == "HIT"
    r = proxy.post(PREDICT, json_body={"instances": ["aged"]}, headers={"Cache-Control": "max-age=1"})
    assert r.headers["X-Cache"] == "MISS"  # older than 1 s: asked again, and stored again
    assert model.count(PREDICT) == 2
    stored(proxy, 2)
    r = proxy.post(PREDICT, json_body={"instances": ["aged"]}, headers={"Cache-Control": "max-age=1"})
    assert r.headers["X-Cache"] == "HIT"


def test_max_age_on_batches(start_predcache, model):
    p = start_predcache(conf={"cache": {"per_instance": "on"}})
    p.post(PREDICT, json_body={"instances": ["b1"]})
    stored(p, 1)
    time.sleep(1.2)
    r = p.post(PREDICT, json_body={"instances": ["b1", "b2"]}, headers={"Cache-Control": "max-age=1"})
    assert r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Hits"] == "0/2"


def test_only_if_cached(proxy, model):
    r = proxy.post(PREDICT, json_body={"instances": ["oic"]},
                   headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 504
    assert "only-if-cached" in r.json()["error"]
    assert model.count(PREDICT) == 0
    proxy.post(PREDICT, json_body={"instances": ["oic"]})
    stored(proxy, 1)
    r = proxy.post(PREDICT, json_body={"instances": ["oic"]},
                   headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"


def test_namespace_header_separates_tenants(proxy, model):
    a = proxy.post(PREDICT, json_body={"instances": ["t"]}, headers=trusted({"X-Predcache-Namespace": "tenant-a"}))
    stored(proxy, 1)
    b = proxy.post(PREDICT, json_body={"instances": ["t"]}, headers=trusted({"X-Predcache-Namespace": "tenant-b"}))
    assert b.headers["X-Cache"] == "MISS"
    assert a.headers["X-Cache-Key"] != b.headers["X-Cache-Key"]
    again = proxy.post(PREDICT, json_body={"instances": ["t"]},
                       headers=trusted({"X-Predcache-Namespace": "tenant-a"}))
    assert again.headers["X-Cache"] == "HIT"
    assert again.headers["X-Cache-Key"] == a.headers["X-Cache-Key"]
    plain = proxy.post(PREDICT, json_body={"instances": ["t"]})
    assert plain.headers["X-Cache"] == "MISS"  # the default namespace is its own too
    bad = proxy.post(PREDICT, json_body={"instances": ["t"]}, headers=trusted({"X-Predcache-Namespace": "a b"}))
    assert bad.status_code == 400 and "error" in bad.json()


def test_controls_off_ignores_the_client(start_predcache, model):
    p = start_predcache(conf={"cache": {"allow_client_controls": "off"}})
    p.post(PREDICT, json_body={"instances": ["strict"]})
    stored(p, 1)
    for h in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"},
              {"X-Predcache-Namespace": "other"}):
        r = p.post(PREDICT, json_body={"instances": ["strict"]}, headers=h)
        assert r.headers["X-Cache"] == "HIT", h
    r = p.post(PREDICT, json_body={"instances": ["strict-2"]}, headers={"Cache-Control": "no-store"})
    stored(p, 2)  # stored all the same
