"""The route table: [route NAME] sections (match, backend, cache, ttl_s, input_fields,
per_instance), [backend NAME] sections (a second model server, keys inherited from
[backend]), the longest match, unmatched requests forwarded uncached, and what
`predcache --check` says about a table that cannot work."""

import re
import subprocess
import threading

import pytest
import requests

import conftest
from conftest import canonical, expected_key, wait_for

DEFAULT = "/v1/models/m:predict"
KEY_RE = re.compile(r"^predcache:v2:\{[0-9a-f]{64}\}$")


@pytest.fixture
def model2(tmp_path):
    server = conftest.ModelServer(tmp_path / "model2")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def cache_keys(redis):
    return [k for k in redis.keys("predcache:v2:*") if KEY_RE.match(k)]


def stored(p, n):
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="%d stores" % n)


# --------------------------------------------------------------------------- routing


def test_route_to_a_second_backend(start_predcache, model, model2, redis):
    p = start_predcache(conf={
        "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
        "backend b2": {"url": model2.url()},
    })
    path = "/v1/models/gpu-big:predict"
    body = {"instances": [[1, 2]]}
    r1 = p.post(path, json_body=body)
    assert r1.status_code == 200, r1.text
    assert r1.headers["X-Cache"] == "MISS"
    # v2: the key names the backend (its cache_id, else its URL): the route's b2
    assert r1.headers["X-Cache-Key"] == expected_key(path, canonical(body), backend=model2.url())
    assert r1.json()["model"] == "gpu-big"
    assert model2.count(path) == 1 and model2.count() == 1
    assert model.count() == 0, "the [backend] model server must not see the gpu route"
    redis.wait_key(r1.headers["X-Cache-Key"])

    r2 = p.post(path, json_body=body)
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.content == r1.content
    assert model2.count() == 1

    # every other predict still goes to the [backend] model server
    r3 = p.post(DEFAULT, json_body=body)
    assert r3.status_code == 200 and r3.headers["X-Cache"] == "MISS"
    assert model.count(DEFAULT) == 1 and model2.count() == 1


def test_unmatched_request_goes_to_the_default_backend_uncached(start_predcache, model, model2,
                                                                redis):
    p = start_predcache(conf={
        "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
        "backend b2": {"url": model2.url()},
    })
    for _ in range(2):
        r = p.get("/v1/models/gpu-big/metadata")  # GET: no route matches
        assert r.status_code == 200, r.text
        assert "X-Cache" not in r.headers and "X-Cache-Key" not in r.headers
    r = p.post("/v1/models/gpu-big:explain", json_body={"instances": [1]})  # no route either
    assert r.status_code == 404  # the model server's own answer
    assert "X-Cache" not in r.headers
    assert model.count("/v1/models/gpu-big/metadata") == 2
    assert model.count("/v1/models/gpu-big:explain") == 1
    assert model2.count() == 0
    assert cache_keys(redis) == []


def test_cache_off_route_forwards_every_time(start_predcache, model, redis):
    p = start_predcache(conf={"route raw": {"match": "POST /v1/models/raw*:predict",
                                            "cache": "off"}})
    path = "/v1/models/raw-1:predict"
    for i in range(3):
        r = p.post(path, json_body={"instances": ["same"]})
        assert r.status_code == 200, r.text
        assert "X-Cache" not in r.headers and "X-Cache-Key" not in r.headers
        assert r.json()["call"] == i + 1
    assert model.count(path) == 3
    # a cached request afterwards: once its entry is there, it is the only one
    r = p.post(DEFAULT, json_body={"instances": ["same"]})
    assert r.headers["X-Cache"] == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    stored(p, 1)
    assert cache_keys(redis) == [r.headers["X-Cache-Key"]]
    assert p.metric("predcache_requests_total", cache="pass") == 3


def test_route_ttl(start_predcache, model, redis):
    p = start_predcache(conf={
        "cache": {"grace_s": "60"},
        "route short": {"match": "POST /v1/models/short*:predict", "ttl_s": "1"},
    })
    short = "/v1/models/short-lived:predict"
    r = p.post(short, json_body={"instances": ["t"]})
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert 55 <= redis.ttl(key) <= 61, "TTL %s, expected ttl_s 1 + grace_s 60" % redis.ttl(key)

    r = p.post(DEFAULT, json_body={"instances": ["t"]})
    other = r.headers["X-Cache-Key"]
    redis.wait_key(other)
    assert 350 <= redis.ttl(other) <= 360, "TTL %s, expected [cache] ttl_s 300 + 60" % (
        redis.ttl(other))

    assert p.post(short, json_body={"instances": ["t"]}).headers["X-Cache"] == "HIT"
    # past the route's 1 s: stale (within grace), while the default route is still fresh
    wait_for(lambda: p.post(short, json_body={"instances": ["t"]}).headers["X-Cache"] == "STALE",
             timeout=5, interval=0.2, what="the short route's entry to go stale")
    assert p.post(DEFAULT, json_body={"instances": ["t"]}).headers["X-Cache"] == "HIT"


def test_route_ttl_without_grace_expires(start_predcache, model, redis):
    p = start_predcache(conf={
        "cache": {"grace_s": "0"},
        "route short": {"match": "POST /v1/models/short*:predict", "ttl_s": "1"},
    })
    short = "/v1/models/short:predict"
    r = p.post(short, json_body={"instances": ["gone"]})
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert 0 < redis.pttl(key) <= 1000
    assert p.post(short, json_body={"instances": ["gone"]}).headers["X-Cache"] == "HIT"
    wait_for(lambda: not redis.exists(key), timeout=5, what="the entry to expire in Redis")
    r = p.post(short, json_body={"instances": ["gone"]})
    assert r.headers["X-Cache"] == "MISS"
    assert model.count(short) == 2


def test_route_input_fields(start_predcache, model, redis):
    p = start_predcache(conf={"route typed": {"match": "POST /v1/models/typed*:predict",
                                              "input_fields": "payload"}})
    typed = "/v1/models/typed:predict"
    first = {"payload": {"x": [1, 2]}, "request_id": "r-1"}
    second = {"request_id": "r-2", "payload": {"x": [1, 2]}}
    r1 = p.post(typed, json_body=first)
    assert r1.headers["X-Cache"] == "MISS"
    assert r1.headers["X-Cache-Key"] == expected_key(typed, canonical({"payload": {"x": [1, 2]}}),
                                                     form="fields")
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = p.post(typed, json_body=second)  # only the noise differs: same key
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    r3 = p.post(typed, json_body={"payload": {"x": [1, 3]}, "request_id": "r-1"})
    assert r3.headers["X-Cache"] == "MISS"
    assert model.count(typed) == 2

    # v2 change: v1 keyed the default route's body whole (raw), so the noise field split
    # the cache there. v2 reads a TF Serving :predict body as the server does; a body
    # holding no TF Serving input (no instances, no inputs) is not TF Serving's to read,
    # so it is read whole, as plain JSON, minus request_id.
    d1 = p.post(DEFAULT, body='{"payload":{"x":[1,2]},"request_id":"r-1"}')
    assert d1.headers["X-Cache"] == "MISS"
    assert d1.headers["X-Cache-Key"] == expected_key(DEFAULT, canonical({"payload": {"x": [1, 2]}}),
                                                     form="json")
    redis.wait_key(d1.headers["X-Cache-Key"])
    d2 = p.post(DEFAULT, body='{"payload":{"x":[1,2]},"request_id":"r-2"}')
    assert d2.headers["X-Cache-Key"] == d1.headers["X-Cache-Key"]
    assert d2.headers["X-Cache"] == "HIT" and d2.content == d1.content
    assert model.count(DEFAULT) == 1


def test_route_path_field(start_predcache, model, redis):
    # v2 change: the path field is read only from plain JSON bodies (a TF Serving path is
    # read the way TF Serving reads it), so the route is a plain JSON one, /predict, where
    # v1's was /v1/models/ocr:predict.
    p = start_predcache(conf={"route ocr": {"match": "POST /predict", "path_field": "img"}})
    ocr = "/predict"
    r1 = p.post(ocr, json_body={"img": "/data/a.png", "request_id": 1})
    assert r1.headers["X-Cache-Key"] == expected_key(ocr, "path:/data/a.png")
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = p.post(ocr, json_body={"request_id": 2, "img": "/data/a.png"})
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    # the [cache] path field (file_path) is not this route's: just a member of the body
    d = p.post(ocr, body='{"file_path": "/data/a.png", "request_id": 1}')
    assert d.headers["X-Cache-Key"] == expected_key(ocr, canonical({"file_path": "/data/a.png"}))
    # without the route, the path field is file_path: "img" is just a member of the body
    plain = start_predcache()
    raw = '{"img": "/data/a.png", "request_id": 1}'
    d = plain.post(ocr, body=raw)
    assert d.headers["X-Cache-Key"] == expected_key(ocr, canonical({"img": "/data/a.png"}))


def test_path_field_on_a_tf_serving_path(start_predcache, model, redis):
    """A body with no TF Serving input on a TF Serving path is read whole: two paths never
    share a key (a route that says path_field = img reads img), and the noise still does
    not split the cache."""
    p = start_predcache(conf={"route ocr": {"match": "POST /v1/models/ocr*:predict",
                                            "path_field": "img"}})
    ocr = "/v1/models/ocr:predict"
    a = p.post(ocr, json_body={"img": "/data/a.png", "request_id": 1})
    assert a.headers["X-Cache-Key"] == expected_key(ocr, "path:/data/a.png")
    redis.wait_key(a.headers["X-Cache-Key"])
    b = p.post(ocr, json_body={"img": "/data/b.png", "request_id": 1})
    assert b.headers["X-Cache"] == "MISS" and b.headers["X-Cache-Key"] != a.headers["X-Cache-Key"]
    again = p.post(ocr, json_body={"request_id": 2, "img": "/data/a.png"})
    assert again.headers["X-Cache"] == "HIT" and again.content == a.content
    assert model.count(ocr) == 2


def test_route_per_instance(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf={"route batched": {"match": "POST /v1/models/batched*:predict",
                                                "per_instance": "on"}})
    batched = "/v1/models/batched:predict"
    r = p.post(batched, json_body={"instances": ["a", "b"]})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/2")
    stored(p, 2)
    r = p.post(batched, json_body={"instances": ["b", "c"]})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("PARTIAL", "1/2")
    # the default route keeps [cache] per_instance = off (the harness's): one key per body
    r = p.post(DEFAULT, json_body={"instances": ["a", "b"]})
    assert r.headers["X-Cache"] == "MISS" and "X-Cache-Hits" not in r.headers
    assert r.headers["X-Cache-Key"] == expected_key(DEFAULT, canonical({"instances": ["a", "b"]}))


def test_longest_match_wins(start_predcache, model, redis):
    p = start_predcache(conf={
        "cache": {"grace_s": "0"},
        "route family": {"match": "POST /v1/models/spec*:predict", "ttl_s": "77"},
        "route exact": {"match": "POST /v1/models/special:predict", "cache": "off"},
        "route anymethod": {"match": "* /v1/models/dual:predict", "ttl_s": "55"},
        "route postonly": {"match": "POST /v1/models/dual:predict", "cache": "off"},
    })
    # most literal characters: the exact path over the family, the family over the default
    r = p.post("/v1/models/special:predict", json_body={"instances": [1]})
    assert r.status_code == 200 and "X-Cache" not in r.headers
    r = p.post("/v1/models/spectrum:predict", json_body={"instances": [1]})
    assert r.headers["X-Cache"] == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    assert 70 <= redis.ttl(r.headers["X-Cache-Key"]) <= 77
    r = p.post("/v1/models/other:predict", json_body={"instances": [1]})
    redis.wait_key(r.headers["X-Cache-Key"])
    assert 290 <= redis.ttl(r.headers["X-Cache-Key"]) <= 300
    # same literals: the exact method wins over '*', which still takes the other methods
    r = p.post("/v1/models/dual:predict", json_body={"instances": [1]})
    assert r.status_code == 200 and "X-Cache" not in r.headers
    r = requests.put(p.url("/v1/models/dual:predict"), data='{"instances": [1]}',
                     headers={"Content-Type": "application/json"}, timeout=conftest.HTTP_TIMEOUT)
    assert r.headers.get("X-Cache") == "MISS", dict(r.headers)
    assert model.last()["method"] == "PUT"


def test_section_overrides_a_default_route(start_predcache, model, redis):
    # same pattern as the [cache] routes entry: the section wins
    p = start_predcache(conf={"route predict": {"match": "POST /v1/models/*:predict",
                                                "cache": "off"}})
    for _ in range(2):
        r = p.post(DEFAULT, json_body={"instances": ["o"]})
        assert r.status_code == 200 and "X-Cache" not in r.headers
    assert model.count(DEFAULT) == 2
    r = p.post("/v1/models/m:classify", json_body={"instances": ["o"]})  # still cached
    assert r.headers["X-Cache"] == "MISS"


# --------------------------------------------------------------------------- backends


def test_named_backend_keys_override_and_inherit(start_predcache, model, model2):
    model2.control(delay_ms=800)
    p = start_predcache(conf={
        "backend": {"connect_timeout_ms": "200", "timeout_ms": "300"},
        "route slowok": {"match": "POST /v1/models/patient*:predict", "backend": "patient"},
        "route inherits": {"match": "POST /v1/models/hasty*:predict", "backend": "hasty"},
        "backend patient": {"url": model2.url(), "timeout_ms": "5000"},
        "backend hasty": {"url": model2.url()},  # timeout_ms from [backend]: 300
    })
    r = p.post("/v1/models/patient:predict", json_body={"instances": [1]})
    assert r.status_code == 200, r.text
    r = p.post("/v1/models/hasty:predict", json_body={"instances": [1]})
    assert r.status_code == 504, r.text
    assert "error" in r.json()
    assert model2.count("/v1/models/hasty:predict") == 1
    r = p.post(DEFAULT, json_body={"instances": [1]})  # the fast [backend]
    assert r.status_code == 200


def test_named_backend_limits(start_predcache, model, model2):
    p = start_predcache(conf={
        "route small": {"match": "POST /v1/models/small*:predict", "backend": "small"},
        "route one": {"match": "POST /v1/models/one*:predict", "backend": "one"},
        "backend small": {"url": model2.url(), "max_response_bytes": "20"},
        "backend one": {"url": model2.url(), "max_in_flight": "1"},
    })
    r = p.post("/v1/models/small:predict", json_body={"instances": [1]})
    assert r.status_code == 502, r.text  # the answer is larger than 20 bytes
    assert p.post(DEFAULT, json_body={"instances": [1]}).status_code == 200

    model2.control(delay_ms=800)
    results = {}

    def go(i):
        results[i] = p.post("/v1/models/one:predict", json_body={"instances": ["one-%d" % i]})

    first = threading.Thread(target=go, args=(0,))
    first.start()
    wait_for(lambda: model2.count("/v1/models/one:predict") == 1, what="the first transfer")
    go(1)
    first.join(15)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 503], [(r.status_code, r.text) for r in results.values()]
    assert "in flight" in results[1].json()["error"]


def test_named_backend_in_flight_bound_is_for_the_whole_process(start_predcache, model, model2):
    """Like [backend] max_in_flight, a named backend's bound is split between the workers:
    two workers and max_in_flight = 2 make at most two model calls at once, not four."""
    p = start_predcache(conf={
        "server": {"workers": "2"},
        "route one": {"match": "POST /v1/models/one*:predict", "backend": "one"},
        "backend one": {"url": model2.url(), "max_in_flight": "2"},
    })
    model2.control(delay_ms=1500)
    rs = conftest.concurrently(8, lambda i: p.post("/v1/models/one:predict",
                                                   json_body={"instances": ["w-%d" % i]}))
    assert all(not isinstance(r, Exception) for r in rs), rs
    statuses = sorted(r.status_code for r in rs)
    assert statuses.count(200) <= 2, statuses
    assert set(statuses) <= {200, 503}, statuses


def test_named_backend_health_checks_are_its_own(start_predcache, model, model2):
    p = start_predcache(conf={
        "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
        "backend b2": {"url": model2.url(), "health_path": "/healthz",
                       "health_interval_ms": "50", "health_fails": "1", "health_passes": "1",
                       "connect_timeout_ms": "200"},
    })
    assert p.post("/v1/models/gpu:predict", json_body={"instances": [1]}).status_code == 200
    assert p.metric("predcache_named_backend_up", backend="b2") == 1
    ready = requests.get(p.admin("/ready"), timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["backends"] == {"b2": "ok"}
    model2.stop()

    def refused():
        r = p.post("/v1/models/gpu:predict", json_body={"instances": [2]})
        return r.status_code == 503 and "health" in r.json()["error"]

    wait_for(refused, timeout=5, what="503 from the b2 route once its health checks fail")
    r = p.post(DEFAULT, json_body={"instances": [2]})
    assert r.status_code == 200, "the [backend] model server is still up: %s" % r.text
    # Its health shows: on /metrics by name, and in /ready, which stays ready while another
    # model server answers (predcache can still answer requests).
    assert p.metric("predcache_backend_up") == 1
    assert p.metric("predcache_named_backend_up", backend="b2") == 0
    ready = requests.get(p.admin("/ready"), timeout=5)
    assert ready.status_code == 200, ready.text
    doc = ready.json()
    assert doc["backends"] == {"b2": "down"} and doc["backend"] == "ok", doc
    assert "named backend" in doc["degraded"], doc


# --------------------------------------------------------------------------- --check


def run_check(binary, path):
    return subprocess.run([binary, "-c", path, "--check"], capture_output=True, text=True,
                          timeout=15, stdin=subprocess.DEVNULL)


BASE = "[backend]\nurl = http://127.0.0.1:8501\n"  # lines 1-2


@pytest.mark.parametrize("text,line,needles", [
    (BASE + "\n[route a]\nmatch = POST /v1/models/x*:predict\n"
     "\n[route b]\nmatch = POST /v1/models/x*:predict\n",
     7, ["'a'", "'b'", "POST /v1/models/x*:predict"]),
    (BASE + "[route a]\nmatch = POST /v1/models/a*:predict\n"
     "[route b]\nmatch = POST /v1/models/*b:predict\n",
     5, ["'a'", "'b'", "/v1/models/a*:predict", "/v1/models/*b:predict", "overlap"]),
    (BASE + "[route r]\nmatch = POST /v1/models/r*:predict\nbackend = nope\n",
     3, ["[route r] backend", "nope"]),
    (BASE + "[backend b2]\ntimeout_ms = 500\n", 3, ["[backend b2] url"]),
    (BASE + "[route bad name!]\nmatch = POST /x\n", 3, ["bad name!"]),
    (BASE + "[route r]\nmatch = POST /x\nbogus = 1\n", 5, ["[route r] bogus"]),
    (BASE + "[backend b2]\nurl = http://127.0.0.1:9000\nbogus = 1\n", 5, ["[backend b2] bogus"]),
    (BASE + "[route r]\nttl_s = 5\n", 3, ["[route r] match"]),
    (BASE + "[route r]\nmatch = FETCH /x\n", 4, ["[route r] match", "FETCH"]),
    (BASE + "[route r]\nmatch = POST /x\ncache = maybe\n", 5, ["[route r] cache"]),
    (BASE + "[route r]\nmatch = POST /x\nttl_s = 0\n", 5, ["[route r] ttl_s"]),
], ids=["identical-match", "same-priority-overlap", "missing-backend", "backend-without-url",
        "bad-section-name", "unknown-route-key", "unknown-backend-key", "route-without-match",
        "bad-method", "bad-bool", "ttl-zero"])
def test_check_rejects_bad_tables(predcache_bin, tmp_path, text, line, needles):
    path = str(tmp_path / "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    p = run_check(predcache_bin, path)
    assert p.returncode == 1, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)
    where = "%s:%d:" % (path, line)
    assert where in p.stderr, "expected %r in stderr:\n%s" % (where, p.stderr)
    for needle in needles:
        assert needle in p.stderr, "expected %r in stderr:\n%s" % (needle, p.stderr)


def test_check_rejects_overlapping_cache_routes_entries(predcache_bin, tmp_path):
    path = str(tmp_path / "bad.conf")
    with open(path, "w") as f:
        f.write(BASE + "[cache]\nroutes = POST /v1/models/a*:predict, POST /v1/models/*b:predict\n")
    p = run_check(predcache_bin, path)
    assert p.returncode == 1, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)
    assert path in p.stderr
    assert "/v1/models/a*:predict" in p.stderr and "/v1/models/*b:predict" in p.stderr


@pytest.mark.parametrize("text", [
    # a section overriding a default [cache] routes entry, same pattern
    BASE + "[route predict]\nmatch = POST /v1/models/*:predict\ncache = off\n",
    # more literal characters: no tie
    BASE + "[route a]\nmatch = POST /v1/models/a*:predict\n"
    "[route ab]\nmatch = POST /v1/models/ab*:predict\n",
    # same literals, but the exact method wins over '*'
    BASE + "[route any]\nmatch = * /v1/models/m:predict\n"
    "[route post]\nmatch = POST /v1/models/m:predict\n",
    # disjoint patterns of equal length
    BASE + "[route a]\nmatch = POST /v1/models/a*:predict\n"
    "[route b]\nmatch = POST /v1/models/b*:predict\n",
    # a full table: every key of both kinds of section, backends used and not
    BASE + "[backend gpu]\nurl = http://127.0.0.1:8502\nconnect_timeout_ms = 500\n"
    "timeout_ms = 2000\nmax_response_bytes = 1m\nmax_in_flight = 4\nhealth_path = /h\n"
    "health_interval_ms = 100\nhealth_fails = 2\nhealth_passes = 2\n"
    "[route gpu]\nmatch = POST /v1/models/gpu*:predict\nbackend = gpu\ncache = on\nttl_s = 60\n"
    "input_fields = instances, payload\npath_field = file\nper_instance = off\n",
], ids=["section-overrides-default", "longer-wins", "exact-method-wins", "disjoint", "full"])
def test_check_accepts_valid_tables(predcache_bin, tmp_path, text):
    path = str(tmp_path / "good.conf")
    with open(path, "w") as f:
        f.write(text)
    p = run_check(predcache_bin, path)
    assert p.returncode == 0, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)


def test_metrics_carry_per_route_labels(start_predcache, model):
    p = start_predcache(conf={
        "route resnet": {"match": "POST /v1/models/resnet*:predict", "ttl_s": "60"},
        "route meta": {"match": "GET /v1/models/*/metadata", "cache": "off"},
    })
    body = {"instances": ["per-route"]}
    assert p.post("/v1/models/resnet50:predict", json_body=body).headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") == 1, what="store")
    assert p.post("/v1/models/resnet50:predict", json_body=body).headers["X-Cache"] == "HIT"
    assert p.post("/v1/models/bert:predict", json_body=body).headers["X-Cache"] == "MISS"
    assert p.get("/v1/models/bert/metadata").status_code == 200
    assert p.get("/somewhere/else").status_code == 200

    def requests_of(route, cache):
        return p.metric("predcache_route_requests_total", route=route, cache=cache)

    assert requests_of("resnet", "miss") == 1
    assert requests_of("resnet", "hit") == 1
    assert requests_of("POST /v1/models/*:predict", "miss") == 1
    assert requests_of("meta", "pass") == 1
    assert requests_of("(none)", "pass") == 1
    # the route histograms count the same requests; model server time per route
    assert p.metric("predcache_route_request_seconds_count", route="resnet") == 2
    assert p.metric("predcache_route_backend_seconds_count", route="resnet") == 1
    assert p.metric("predcache_route_request_seconds_bucket", route="resnet", le="+Inf") == 2
    # the totals still agree with the per-route ones
    assert p.metric("predcache_requests_total", cache="hit") == 1
