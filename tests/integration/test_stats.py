"""Admin /stats: latency timers (BigDL Cluster Serving metrics API fields), hit ratio,
bytes from the cache and the estimated model server time saved."""

import math

import requests

from conftest import HTTP_TIMEOUT, wait_for

TIMERS = ["predcache.request", "predcache.hit", "predcache.miss", "predcache.backend",
          "predcache.redis.get", "predcache.redis.set"]
ORDERED = ["min", "median", "_75thPercentile", "_95thPercentile", "_98thPercentile",
           "_99thPercentile", "_999thPercentile", "max"]
NUMBERS = ["meanRate", "mean", "stdDev"] + ORDERED
DELAY_MS = 30


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def get_stats(proxy):
    r = requests.get(proxy.admin("/stats"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, "GET /stats: %d %s" % (r.status_code, r.text[:200])
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    check_shape(doc)
    return doc


def check_shape(doc):
    """Types, names, finiteness and the order of the percentile fields."""
    assert set(doc) == {"uptime_s", "timers", "hit_ratio", "bytes_from_cache",
                        "backend_time_saved_s", "verify"}, sorted(doc)
    v = doc["verify"]
    assert set(v) == {"match", "mismatch", "error", "skipped", "mismatch_rate"}, sorted(v)
    assert all(isinstance(v[k], int) and v[k] >= 0 for k in ("match", "mismatch", "error",
                                                              "skipped"))
    assert v["mismatch_rate"] is None or 0 <= v["mismatch_rate"] <= 1
    assert is_number(doc["uptime_s"]) and doc["uptime_s"] >= 0
    assert doc["hit_ratio"] is None or (is_number(doc["hit_ratio"]) and
                                        0 <= doc["hit_ratio"] <= 1)
    assert isinstance(doc["bytes_from_cache"], int) and doc["bytes_from_cache"] >= 0
    assert is_number(doc["backend_time_saved_s"]) and doc["backend_time_saved_s"] >= 0
    assert [t["name"] for t in doc["timers"]] == TIMERS
    for t in doc["timers"]:
        assert set(t) == {"name", "count"} | set(NUMBERS), sorted(t)
        assert isinstance(t["count"], int) and not isinstance(t["count"], bool)
        assert t["count"] >= 0
        for field in NUMBERS:
            assert is_number(t[field]), "%s %s = %r" % (t["name"], field, t[field])
            assert t[field] >= 0
        values = [t[f] for f in ORDERED]
        assert values == sorted(values), "%s percentiles out of order: %s" % (
            t["name"], dict(zip(ORDERED, values)))
        if t["count"] == 0:
            assert all(t[f] == 0 for f in NUMBERS), t
        else:
            assert t["min"] <= t["mean"] <= t["max"], t
            assert t["meanRate"] > 0, t


def timers(doc):
    return {t["name"]: t for t in doc["timers"]}


def test_stats_empty(proxy):
    doc = get_stats(proxy)
    assert doc["hit_ratio"] is None
    assert doc["bytes_from_cache"] == 0
    assert doc["backend_time_saved_s"] == 0
    for name in ("predcache.request", "predcache.hit", "predcache.miss", "predcache.backend"):
        assert timers(doc)[name]["count"] == 0


def test_stats_after_miss_hit_pass(proxy, model, redis):
    model.control(delay_ms=DELAY_MS)
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["s"]})
    assert r.status_code == 200 and r.headers.get("X-Cache") == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    hit = proxy.post("/v1/models/m:predict", json_body={"instances": ["s"]})
    assert hit.status_code == 200 and hit.headers.get("X-Cache") == "HIT"
    assert proxy.get("/labels").status_code == 200  # not a cached route: PASS
    assert model.count() == 2

    doc = wait_for(lambda: (lambda d: d if timers(d)["predcache.redis.set"]["count"] >= 1
                            else None)(get_stats(proxy)),
                   timeout=5, what="/stats predcache.redis.set count 1")
    t = timers(doc)
    assert t["predcache.request"]["count"] == 3
    assert t["predcache.hit"]["count"] == 1
    assert t["predcache.miss"]["count"] == 1
    assert t["predcache.backend"]["count"] == 2
    assert t["predcache.redis.get"]["count"] >= 1
    assert t["predcache.redis.set"]["count"] == 1
    assert doc["hit_ratio"] == 0.5
    assert doc["bytes_from_cache"] == len(hit.content)

    # the model server's delay shows in the timers that wait for it, in milliseconds
    assert t["predcache.backend"]["min"] >= DELAY_MS
    assert t["predcache.miss"]["min"] >= DELAY_MS
    assert t["predcache.hit"]["max"] < t["predcache.miss"]["min"]
    assert t["predcache.request"]["max"] >= t["predcache.miss"]["max"]
    # one hit, each saving one model server call of the mean latency (an estimate)
    saved = doc["backend_time_saved_s"]
    assert abs(saved - t["predcache.backend"]["mean"] / 1000.0) < 1e-3, (saved, t)
    # meanRate: count over the uptime, per second
    for timer in t.values():
        if timer["count"]:
            expect = timer["count"] / doc["uptime_s"]
            assert abs(timer["meanRate"] - expect) <= 0.05 * expect + 1e-3, timer

    # admin requests count in no timer
    again = timers(get_stats(proxy))
    assert again["predcache.request"]["count"] == 3


def test_stats_only_on_admin_port(proxy, model):
    r = proxy.get("/stats")  # the data port forwards it to the model server like any path
    assert r.status_code == 200
    assert r.json() == {"path": "/stats", "query": ""}
    assert model.count("/stats") == 1
    assert timers(get_stats(proxy))["predcache.request"]["count"] == 1


def test_stats_methods(proxy):
    r = requests.head(proxy.admin("/stats"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    r = requests.post(proxy.admin("/stats"), data="{}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")
