"""Model version resolution ([cache] version_refresh_s): a request that names no version
is keyed on the version the model server's status endpoint says it serves, so a rollout
starts a fresh key space; a label resolves to its version; a status endpoint that fails
means the request is forwarded uncached (X-Cache: PASS, X-Cache-Reason: version-unknown),
and the endpoint is asked once per period, once for any number of waiting requests."""

import time

import pytest
import requests

import conftest
from conftest import HTTP_TIMEOUT, canonical, concurrently, expected_key, wait_for

BODY = {"instances": [[1, 2]]}


def set_version(model, name, version, labels=None):
    r = requests.post(model.url("/_version"), timeout=HTTP_TIMEOUT,
                      json={"model": name, "version": version, "labels": labels or {}})
    r.raise_for_status()


def versioned_key(name, version, body=BODY, backend=None):
    return expected_key("/v1/models/%s/versions/%s:predict" % (name, version), canonical(body),
                        backend=backend)


@pytest.fixture
def vp(start_predcache, model):
    return start_predcache(conf={"cache": {"version_refresh_s": "1"}})


def test_unversioned_request_is_keyed_on_the_served_version(vp, model, redis):
    r1 = vp.post("/v1/models/m:predict", json_body=BODY)
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
    assert r1.headers["X-Cache-Key"] == versioned_key("m", "1")
    assert model.count("/v1/models/m") == 1  # the status endpoint, asked once
    assert model.last()["path"] == "/v1/models/m:predict"  # forwarded as sent
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = vp.post("/v1/models/m:predict", json_body=BODY)
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
    # the explicit path shares the entry
    r3 = vp.post("/v1/models/m/versions/1:predict", json_body=BODY)
    assert r3.headers["X-Cache"] == "HIT"
    assert r3.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert model.count("/v1/models/m:predict") == 1
    # a versioned path needs no status lookup
    vp.post("/v1/models/other/versions/4:predict", json_body=BODY)
    assert model.count("/v1/models/other") == 0


def test_other_verbs_and_v2_are_resolved(vp, model, redis):
    set_version(model, "k2", "7")
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}
    r = vp.post("/v2/models/k2/infer", json_body=body)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert r.headers["X-Cache-Key"] == expected_key("/v2/models/k2/versions/7/infer",
                                                     canonical({"inputs": body["inputs"]}))
    assert r.json()["version"] == "7"
    assert model.count("/v2/models/k2") == 1
    redis.wait_key(r.headers["X-Cache-Key"])
    r2 = vp.post("/v2/models/k2/versions/7/infer", json_body=body)
    assert r2.headers["X-Cache"] == "HIT"

    # v2: :classify is read as TF Serving reads it (signature_name, context, examples), so
    # the body names examples (an "instances" body would be read as nothing at all)
    examples = {"examples": [{"x": [1, 2]}]}
    r = vp.post("/v1/models/m:classify", json_body=examples)
    assert r.headers["X-Cache-Key"] == expected_key("/v1/models/m/versions/1:classify",
                                                     canonical(examples))


def test_resolution_off_keys_the_path_as_sent(proxy, model):
    r = proxy.post("/v1/models/m:predict", json_body=BODY)
    assert r.headers["X-Cache-Key"] == expected_key("/v1/models/m:predict", canonical(BODY))
    assert model.count("/v1/models/m") == 0


def test_rollout_starts_a_fresh_key_space(vp, model, redis):
    set_version(model, "m", "1")
    r = vp.post("/v1/models/m:predict", json_body=BODY)
    assert (r.headers["X-Cache"], r.json()["version"]) == ("MISS", "1")
    redis.wait_key(r.headers["X-Cache-Key"])
    r = vp.post("/v1/models/m:predict", json_body=BODY)
    assert (r.headers["X-Cache"], r.json()["version"]) == ("HIT", "1")

    set_version(model, "m", "2")
    switched = time.monotonic()
    seen = []

    def new_version():
        r = vp.post("/v1/models/m:predict", json_body=BODY)
        assert r.status_code == 200
        seen.append((r.headers["X-Cache"], r.json()["version"], r.headers["X-Cache-Key"]))
        return r.json()["version"] == "2"

    wait_for(new_version, timeout=6, interval=0.1, what="an answer of version 2")
    elapsed = time.monotonic() - switched
    assert elapsed < 4, "version 2 seen only after %.1f s (version_refresh_s = 1)" % elapsed
    cache, version, key = seen[-1]
    assert cache == "MISS", seen
    assert key == versioned_key("m", "2")
    for c, v, k in seen[:-1]:
        assert (c, v, k) == ("HIT", "1", versioned_key("m", "1")), seen
    redis.wait_key(key)
    for _ in range(5):  # never back to version 1
        r = vp.post("/v1/models/m:predict", json_body=BODY)
        assert (r.headers["X-Cache"], r.json()["version"]) == ("HIT", "2")
        assert r.headers["X-Cache-Key"] == key
    assert model.count("/v1/models/m:predict") == 2
    # the version 1 entry is still there, under its own key
    assert redis.exists(versioned_key("m", "1"))


def test_label_resolves_to_its_version(vp, model, redis):
    set_version(model, "m", "2", labels={"stable": "1", "canary": "2"})
    r = vp.post("/v1/models/m/labels/stable:predict", json_body=BODY)
    assert r.headers["X-Cache"] == "MISS"
    assert r.headers["X-Cache-Key"] == versioned_key("m", "1")
    assert r.json()["version"] == "1"
    assert model.count("/v1/models/m/labels/stable") == 1

    r = vp.post("/v1/models/m/labels/canary:predict", json_body=BODY)
    assert r.headers["X-Cache"] == "MISS"
    assert r.headers["X-Cache-Key"] == versioned_key("m", "2")
    redis.wait_key(r.headers["X-Cache-Key"])
    # the model's own version is 2 too: the same entry
    r = vp.post("/v1/models/m:predict", json_body=BODY)
    assert r.headers["X-Cache"] == "HIT"
    assert r.headers["X-Cache-Key"] == versioned_key("m", "2")
    assert r.json()["version"] == "2"


def test_failing_status_endpoint_means_pass_asked_once_per_period(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"version_refresh_s": "3"}})
    model.control(versionless="error")  # the status endpoint answers 503
    path, status = "/v1/models/m:predict", "/v1/models/m"
    for i in range(3):
        r = p.post(path, json_body=BODY)
        assert r.status_code == 200, r.text
        # PASS, not BYPASS: the request cannot be keyed; Redis is fine
        assert (r.headers["X-Cache"], r.headers.get("X-Cache-Reason")) == \
            ("PASS", "version-unknown")
        assert "X-Cache-Key" not in r.headers
    assert model.count(path) == 3
    assert model.count(status) == 1  # not asked again within the 3 s period
    # the warning says what the endpoint did
    assert "status endpoint %s: it answered 503" % status in p.stderr_text()
    assert [k for k in redis.keys("predcache:*") if not k.startswith("predcache:gen:")] == []
    assert p.metric("predcache_requests_total", cache="pass") == 3
    assert p.metric("predcache_requests_total", cache="bypass") == 0
    assert p.metric("predcache_uncached_total", reason="version-unknown") == 3
    assert p.access_line_of(r).endswith(" reason=version-unknown")

    # after the period the endpoint is asked again; once it answers, requests are cached
    model.control()  # the status endpoint answers again
    time.sleep(3.1)

    def cached():
        r = p.post(path, json_body=BODY)
        return r.headers["X-Cache"] == "MISS" and r

    r = wait_for(cached, timeout=5, interval=0.2, what="a MISS once the endpoint answers")
    assert r.headers["X-Cache-Key"] == versioned_key("m", "1")
    assert model.count(status) >= 2
    redis.wait_key(r.headers["X-Cache-Key"])
    assert p.post(path, json_body=BODY).headers["X-Cache"] == "HIT"


@pytest.mark.parametrize("how,path,body,status,said", [
    ("no_status", "/v1/models/m:predict", BODY, "/v1/models/m", "it answered 404"),
    ("empty", "/v2/models/k:infer", None, "/v2/models/k", "its answer lists none"),
    ("absent", "/v2/models/k:infer", None, "/v2/models/k", "its answer lists none"),
], ids=["home-grown-404", "mlserver-empty", "kserve-absent"])
def test_a_model_without_versions_is_keyed_by_the_path(start_predcache, model, redis, how, path,
                                                        body, status, said):
    """A server with no status endpoint (it serves only the predict path: 404), or KServe v2
    metadata that lists no versions (MLServer, KServe Python): its requests are cached,
    keyed by the path as sent, and predcache says so once. They were never cached."""
    p = start_predcache(conf={"cache": {"version_refresh_s": "1"}})
    model.control(versionless=how)
    if body is None:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}
        path = "/v2/models/k/infer"
        keyed = canonical({"inputs": body["inputs"]})
    else:
        keyed = canonical(body)
    r1 = p.post(path, json_body=body)
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS", r1.headers
    assert r1.headers["X-Cache-Key"] == expected_key(path, keyed)
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = p.post(path, json_body=body)
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
    time.sleep(1.2)  # past version_refresh_s: asked again, still none, not said again
    wait_for(lambda: p.post(path, json_body=body).headers["X-Cache"] == "HIT" and
             model.count(status) >= 2, what="the status endpoint asked again")
    line = "model %s has no versions at the model server (status endpoint %s: %s)" % (
        status.rsplit("/", 1)[1], status, said)
    assert p.stderr_text().count(line) == 1, p.stderr_text()[-2000:]
    # and /ready names it (informative: the probe is not failed by it)
    ready = requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT)
    assert ready.status_code == 200
    assert ready.json()["models_without_versions"] == [status.rsplit("/", 1)[1]]



def test_status_lookup_is_shared_by_concurrent_requests(vp, model):
    model.control(delay_ms=400)
    results = concurrently(20, lambda i: vp.post("/v1/models/busy:predict",
                                                   json_body={"instances": ["c-%d" % i]}),
                           join_s=30)
    for i, r in enumerate(results):
        assert isinstance(r, requests.Response), r
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", (i, r.headers)
        assert r.headers["X-Cache-Key"] == versioned_key("busy", "1", {"instances": ["c-%d" % i]})
    assert model.count("/v1/models/busy") == 1
    assert model.count("/v1/models/busy:predict") == 20


def test_status_is_asked_of_the_routes_backend(start_predcache, model, tmp_path):
    model2 = conftest.ModelServer(tmp_path / "model2")
    model2.start()
    try:
        set_version(model2, "gpu", "5")
        p = start_predcache(conf={
            "cache": {"version_refresh_s": "1"},
            "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
            "backend b2": {"url": model2.url()},
        })
        r = p.post("/v1/models/gpu:predict", json_body=BODY)
        # v2: the key names the backend (its cache_id, else its URL): the route's b2
        assert r.headers["X-Cache-Key"] == versioned_key("gpu", "5", backend=model2.url())
        assert r.json()["version"] == "5"
        assert model2.count("/v1/models/gpu") == 1
        assert model.count() == 0
    finally:
        model2.stop()


def test_per_instance_batches_share_entries_across_paths(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf={"cache": {"version_refresh_s": "1", "per_instance": "on"}})
    batch = {"instances": ["a", "b"]}
    r = p.post("/v1/models/m:predict", json_body=batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/2")
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 2, what="2 stores")
    r = p.post("/v1/models/m/versions/1:predict", json_body=batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "2/2")
    r = p.post("/v1/models/m/versions/2:predict", json_body=batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/2")
